"""TensorBoard scalars without the tensorboard package.

tf.summary.scalar lives in the tensorboard package, which TensorFlow no longer installs. The
event files only need the scalar plugin's metadata next to a float32 scalar tensor, which is what
tensorboard's own tf.summary.scalar writes, so TensorBoard reads these files unchanged.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow.core.framework import summary_pb2

_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
)


def scalar(name: str, value, step: int) -> bool:
    """Writes one scalar to the default tf.summary writer; returns False when none is set."""
    return tf.summary.write(
        tag=name, tensor=tf.cast(value, tf.float32), step=step, metadata=_SCALAR_METADATA
    )

"""TensorFlow's array namespace for the rules of ``dnet_tf.core`` (see ``dnet_tf.core.xp``)."""

from __future__ import annotations

import types

import tensorflow as tf

from dnet_tf.core.xp import FUNCTIONS

# NumPy's name -> TensorFlow's function, where the two differ; the rest share the name.
_RENAMED = {
    "clip": tf.clip_by_value,
    "any": tf.reduce_any,
    "amax": tf.reduce_max,
    "asarray": tf.constant,
}

TENSORFLOW = types.SimpleNamespace(
    name="tensorflow", **{f: _RENAMED.get(f) or getattr(tf, f) for f in FUNCTIONS}
)

"""Multi-scale windows of Algorithm 1 (paper §5.3) in the graph.

The layout (which windows, in which order) is ``dnet_tf.core.windows``; here it is scaled to an
image whose size is a tensor.
"""

from __future__ import annotations

import tensorflow as tf

from dnet_tf.core.windows import unit_windows

# Static Python only (no loops or branches over tensor values): autograph conversion would
# only cost tracing time.
_NOT_CONVERTED = tf.autograph.experimental.do_not_convert


@_NOT_CONVERTED
def scale_windows(height, width, num_scales: int, overlap: float):
    """Windows of every scale over an image of the given size.

    Worked: a 100 x 200 image, 2 scales, overlap 0.2: scale 0 is [0, 0, 100, 200]; scale 1 has
    3 x 3 windows of 50 x 100 at y in {0, 25, 50} and x in {0, 50, 100} (neighbours share
    25 of 50 rows, 50% >= 20%).

    Args:
      height, width: scalars (Python numbers or tensors), the image size (any unit: pixels, or
        1.0 for normalized windows).
      num_scales: int >= 1; overlap: float in [0, 1), the least overlap of neighbours, as a
        fraction of the window side.
    Returns:
      (windows_image_yxyx float32 [N, 4], scale_ids int32 [N]); N = sum over s of
      windows_per_axis(s, overlap)^2, static. Order: scale by scale, row-major within a scale.
    """
    unit, ids = unit_windows(num_scales, overlap)
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    return tf.constant(unit) * tf.stack([h, w, h, w]), tf.constant(ids)

"""Multi-scale windows of Algorithm 1 (paper §5.3).

Scale 0 is the whole image; the window of scale s is 2^-s of the image in both directions.
Along each axis, n = ``windows_per_axis(s, overlap)`` windows are spread evenly from the start to
the end of the image (``linspace(0, L - l, n)``), so neighbours overlap by at least ``overlap`` of
their side. For the paper's three scales and 20% overlap: 1 + 3^2 + 5^2 = 35 windows.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from dnet_tf.config import windows_per_axis

# Static Python only (no loops or branches over tensor values): autograph conversion would
# only cost tracing time.
_NOT_CONVERTED = tf.autograph.experimental.do_not_convert


def unit_windows(num_scales: int, overlap: float):
    """The windows of a 1 x 1 image, as NumPy arrays (the shape of the layout, static).

    Returns:
      (windows_norm_yxyx float32 [N, 4], scale_ids int32 [N]), scale by scale, row-major within a
      scale (top-left window first).
    Raises:
      ValueError: num_scales < 1 or overlap outside [0, 1).
    """
    if int(num_scales) < 1:
        raise ValueError(f"num_scales must be >= 1, got {num_scales}")
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    boxes, ids = [], []
    for s in range(int(num_scales)):
        side = 0.5**s
        n = windows_per_axis(s, float(overlap))
        starts = np.linspace(0.0, 1.0 - side, n) if n > 1 else np.zeros(1)
        for y in starts:
            for x in starts:
                boxes.append((y, x, y + side, x + side))
                ids.append(s)
    return np.asarray(boxes, np.float32), np.asarray(ids, np.int32)


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

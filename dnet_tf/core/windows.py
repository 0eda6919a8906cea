"""The multi-scale window layout of Algorithm 1 (paper §5.3), as static NumPy arrays.

Scale 0 is the whole image; the window of scale s is 2^-s of the image in both directions.
Along each axis, n = ``windows_per_axis(s, overlap)`` windows are spread evenly from the start to
the end of the image (``linspace(0, L - l, n)``), so neighbours overlap by at least ``overlap`` of
their side. For the paper's three scales and 20% overlap: 1 + 3^2 + 5^2 = 35 windows.

The layout depends on the config only (not on the image), so it is computed once here and both
pipelines scale the unit windows by the image size (``dnet_tf.ops.windows.scale_windows`` in the
graph).
"""

from __future__ import annotations

import math

import numpy as np


def windows_per_axis(scale: int, overlap: float) -> int:
    """Windows per axis at scale ``scale`` (0 = full image), window side = 2^-scale of the image.

    Neighbours step by at most (1 - overlap) window sides, so with n windows the first starts at 0
    and the last ends at the image edge: n = ceil((L - w) / ((1 - overlap) w)) + 1. The ratio
    L / w = 2^scale, so n depends on neither the image size nor its aspect ratio.
    Worked: scale 1, overlap 0.2: ceil(1 / 0.8) + 1 = 3; scale 2: ceil(3 / 0.8) + 1 = 5.
    """
    if scale == 0:
        return 1
    ratio = 2.0**scale
    # The small epsilon keeps exact multiples (e.g. overlap 0) from rounding up.
    return int(math.ceil((ratio - 1.0) / (1.0 - overlap) - 1e-9)) + 1


def windows_per_scale(num_scales: int, overlap: float) -> tuple:
    """Window count per scale: n_s^2 with n_s = windows_per_axis(s, overlap). 3, 0.2 -> (1, 9,
    25)."""
    return tuple(windows_per_axis(s, overlap) ** 2 for s in range(int(num_scales)))


def unit_windows(num_scales: int, overlap: float):
    """The windows of a 1 x 1 image.

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


def size_fractions_at_scale(size_fractions, scale: int, bounds) -> list:
    """The box sizes searched on scale ``scale``'s merged canvas.

    A size fraction f (mean box side over the mean image side) is searched at scale s when
    lo <= f / 2^-s <= hi, (lo, hi) = ``bounds``: f / 2^-s is the box's side in windows of that
    scale. A box far smaller than a window is a few mask cells there (the finer scales see it
    better); a box larger than a window is seen whole by none of the scale's windows, and its
    merged half masks are the halves of each window's clipped view, not of the box. When no size
    of ``size_fractions`` falls in the bounds, the one nearest to them is kept (every scale
    searches at least one size).

    Args:
      size_fractions: floats in (0, 1]; scale: 0 = the whole image; bounds: (lo, hi), lo <= hi.
    Returns:
      the kept fractions, in their given order.
    """
    lo, hi = float(bounds[0]), float(bounds[1])
    side = 0.5**scale
    # a relative tolerance: 0.1 / 0.5 counts as 0.2 however the division rounds
    kept = [f for f in size_fractions if lo * (1 - 1e-9) <= f / side <= hi * (1 + 1e-9)]
    if kept:
        return kept
    distance = [max(lo - f / side, f / side - hi) for f in size_fractions]
    return [size_fractions[int(np.argmin(distance))]]


def scale_windows(height, width, num_scales: int, overlap: float):
    """Windows of an H x W image: (windows_image_yxyx float32 [N, 4], scale_ids int32 [N])."""
    norm, ids = unit_windows(num_scales, overlap)
    return norm * np.array([height, width, height, width], np.float32), ids

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

from dnet_tf.core.xp import NUMPY


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


def coarser_cells(num_scales: int, overlap: float, mask_size: int) -> list:
    """Which mask cells of the coarser scales' windows lie over each finer window (the window
    gate's regions, ``window_peaks``).

    A window's d x d mask covers the window: cell row r of window v spans rows
    [y0 + r h / d, y0 + (r + 1) h / d) of the unit image (h = v's height), columns alike. It lies
    over window n when the two overlap by a positive length on that axis (touching is not
    overlapping; the 1e-6 guards the float32 corners).

    Worked: 2 scales, overlap 0.2, d = 4: scale 1's windows start at 0, 0.25 and 0.5; the middle
    row of windows spans [0.25, 0.75), over the whole image's cell rows 1 and 2 ([0.25, 0.5),
    [0.5, 0.75)): rows [0, 1, 1, 0].

    Args:
      num_scales, overlap: the window layout (``unit_windows``); mask_size: d >= 1.
    Returns:
      one (rows, cols) pair per scale s >= 1, each float32 [n_s, n_<s, d] of 0 / 1: entry
      [i, v, r] is 1 when cell row (column) r of the v-th window of the scales before s lies
      over the i-th window of scale s.
    """
    unit, ids = unit_windows(num_scales, overlap)
    d = int(mask_size)
    if d < 1:
        raise ValueError(f"mask_size must be >= 1, got {mask_size}")
    edges = np.arange(d + 1, dtype=np.float64) / d
    out = []
    for s in range(1, int(num_scales)):
        fine, coarse = unit[ids == s].astype(np.float64), unit[ids < s].astype(np.float64)
        per_axis = []
        for lo, hi in ((0, 2), (1, 3)):  # rows (y), then columns (x)
            # [n_<s, d + 1] cell edges of each coarse window on this axis
            cut = coarse[:, lo, None] + edges[None, :] * (coarse[:, hi] - coarse[:, lo])[:, None]
            start, end = cut[None, :, :-1], cut[None, :, 1:]
            length = np.minimum(end, fine[:, None, hi, None]) - np.maximum(
                start, fine[:, None, lo, None]
            )
            per_axis.append((length > 1e-6).astype(np.float32))
        out.append(tuple(per_axis))
    return out


def window_peaks(coarser_full, rows, cols, xp=NUMPY):
    """The highest full mask (any class) the coarser scales show over each window of a scale.

    Args:
      coarser_full: float32 [..., n_<s, d, d] >= 0, the max over classes of each coarser window's
        full mask (0 for a window that was not run).
      rows, cols: float32 [n_s, n_<s, d], the scale's pair from ``coarser_cells``.
    Returns:
      float32 [..., n_s]: max over the coarser windows v and their cells (r, c) lying over the
      window of coarser_full[v, r, c] (0 where none lies over it).
    """
    # max over (r, c) of F[v, r, c] rows[r] cols[c] = max over r of rows[r] (max over c of
    # F[v, r, c] cols[c]), all values >= 0: [..., n_s, n_<s, d] before the last two maxima.
    by_row = xp.amax(coarser_full[..., None, :, :, :] * cols[:, :, None, :], axis=-1)
    return xp.amax(xp.amax(by_row * rows, axis=-1), axis=-1)


def windows_to_run(peaks, gate: float):
    """The window gate: a window of a finer scale is run through the localizer only when the
    coarser scales' full masks over it exceed ``gate`` (``window_peaks``); gate 0 runs every
    window (the paper). bool, the shape of ``peaks``."""
    if gate <= 0:
        return peaks > -1.0  # full masks are >= 0: every window
    return peaks > gate


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

"""The box search's geometry rules (paper §5.2), shared by the graph and the edge pipeline.

  * Shapes: mean side (w + h) / 2 = f * mean_side for each size fraction f, aspect ratio
    a = w / h for each ratio: h = 2 f mean_side / (1 + a), w = a h; fraction-major order.
  * Whole cells: a shape's sides are rounded half up to whole canvas cells and clipped to
    [1, grid side]; the stride is rounded half up, at least one cell. The masks carry nothing
    finer than a cell, and whole cells keep every lookup of the dense search on the integral
    image's grid.
  * The ring (Eq. (3)'s "opposite" of the full mask): the box grown by ``ring_width(height)``
    cells on top and bottom and ``ring_width(width)`` cells left and right, clipped to the
    grid, minus the box. Its width is ring_margin x side rounded half up, at least one cell
    (0 only when ring_margin is 0).

Each rule is written once over an array namespace ``xp`` (``dnet_tf.core.xp``); callers pass
float32 arrays or tensors, so both pipelines round the same float32 values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dnet_tf.constants import BOTTOM, FULL, LEFT, RIGHT, TOP
from dnet_tf.core.policy import REFINE_CANDIDATES
from dnet_tf.core.xp import NUMPY


def box_shapes(
    mean_side, size_fractions: Sequence[float], aspect_ratios: Sequence[float], xp=NUMPY
):
    """The search's box shapes for an image (or crop) of mean side ``mean_side``.

    Worked: mean_side 100, f 0.5, a 2 -> h = 100/3, w = 200/3.

    Args:
      mean_side: float32 scalar, (H + W) / 2 in the unit wanted for the shapes (canvas cells).
      size_fractions: S fractions in (0, 1], e.g. the paper's 0.1 ... 0.9.
      aspect_ratios: A ratios w / h > 0, e.g. k-means of the training boxes.
      xp: array namespace.
    Returns:
      shapes_hw float32 [S * A, 2] (height, width), fraction-major: row i * A + j is fraction i,
      ratio j.
    Raises:
      ValueError: an empty list, a fraction outside (0, 1] or a ratio <= 0.
    """
    fractions = np.asarray(size_fractions, np.float32).reshape(-1)
    ratios = np.asarray(aspect_ratios, np.float32).reshape(-1)
    if fractions.size == 0 or np.any(fractions <= 0) or np.any(fractions > 1):
        raise ValueError(
            f"box_shapes: size_fractions must be non-empty values in (0, 1], got {size_fractions}"
        )
    if ratios.size == 0 or np.any(ratios <= 0):
        raise ValueError(
            f"box_shapes: aspect_ratios must be non-empty values > 0, got {aspect_ratios}"
        )
    f = xp.asarray(np.repeat(fractions, ratios.size))  # fraction-major
    a = xp.asarray(np.tile(ratios, fractions.size))
    h = 2.0 * f * mean_side / (1.0 + a)
    return xp.stack([h, a * h], axis=-1)


# Halves within this many cells below x.5 round up too. The same shape side is 22.5 when NumPy
# or eager TensorFlow computes it and 22.499998 in the traced graph (its rewrites reorder the
# float products of the mean side), which rounded the graph's shape a cell smaller than the
# edge pipeline's; a few float32 ulps of a side <= 1024 cells are far below 1e-4.
ROUNDING_TIE_TOLERANCE = 1e-4


def round_half_up(x, xp=NUMPY):
    """floor(x + 0.5 + ROUNDING_TIE_TOLERANCE): the rounding of every whole-cell rule here
    (halves up, also when float noise puts them a few ulps below the half)."""
    return xp.floor(x + (0.5 + ROUNDING_TIE_TOLERANCE))


def shape_cells(shapes_hw, grid_height, grid_width, xp=NUMPY):
    """Shapes [S, 2] (float32 cells) as whole cells inside a grid: (heights [S], widths [S]),
    float32, each rounded half up and clipped to [1, grid side]."""
    heights = xp.clip(round_half_up(shapes_hw[:, 0], xp), 1.0, grid_height)
    widths = xp.clip(round_half_up(shapes_hw[:, 1], xp), 1.0, grid_width)
    return heights, widths


def stride_cells(stride, xp=NUMPY):
    """The search stride (float32 cells) in whole cells: rounded half up, at least 1."""
    return xp.maximum(round_half_up(stride, xp), 1.0)


def ring_width(side, ring_margin: float, xp=NUMPY):
    """Width in cells of the ring on each side of a box of the given side length.

    round_half_up(ring_margin * side), at least 1 cell; 0 when ring_margin is 0.
    Worked: margin 0.2, side 12 -> 2.4 -> 2; side 13 -> 2.6 -> 3; side 2 -> 0.4 -> 1.

    Args:
      side: float32 [...] (cells); ring_margin: float >= 0; xp: array namespace.
    Returns:
      float32 [...], whole numbers of cells.
    """
    if ring_margin < 0:
        raise ValueError(f"ring_margin must be >= 0, got {ring_margin}")
    if ring_margin == 0:
        return xp.zeros_like(side)
    return xp.maximum(round_half_up(float(ring_margin) * side, xp), 1.0)


def eq3(s, ring):
    """Eq. (3) of a box from its parts' Eq. (2) means: S(bb) = [S(bb, m_full) - S(ring, m_full)]
    + sum over the halves h of [S(h, m_h) - S(h-bar, m_h)], h-bar the opposite half.

    Args:
      s: s(part, mask_type) -> S(part, m_type), parts and mask types indexed by FULL, TOP,
        BOTTOM, LEFT, RIGHT (the part FULL is the box itself).
      ring: S(ring, m_full).
    Returns:
      the score, in [-5, 5] (each bracket lies in [-1, 1]).
    """
    return (
        s(FULL, FULL)
        - ring
        + s(TOP, TOP)
        - s(BOTTOM, TOP)
        + s(BOTTOM, BOTTOM)
        - s(TOP, BOTTOM)
        + s(LEFT, LEFT)
        - s(RIGHT, LEFT)
        + s(RIGHT, RIGHT)
        - s(LEFT, RIGHT)
    )


def refine_ring_pad(ring_margin: float, canvas: int) -> int:
    """Cells of edge-replicated mask added around a refinement crop's canvas, so that the ring of
    any box in it is read past the crop's edge (beyond a crop the image goes on, unlike beyond the
    image's edge: a crop cut from inside an object must not make the box hugging its edge look
    perfect). At least the widest ring, ring_margin x canvas side rounded up, plus one."""
    return int(math.ceil(ring_margin * canvas)) + 1


def refine_search_args(inference_config) -> tuple:
    """(stride, ring_margin, coverage_threshold, max_candidates) of the refinement's box search:
    no coverage threshold (the paper takes the best box of the crop), the REFINE_CANDIDATES best
    boxes kept for rescoring with the ring past the crop's edge."""
    cfg = inference_config
    return (cfg.refine_stride, cfg.ring_margin, -1.0, REFINE_CANDIDATES)

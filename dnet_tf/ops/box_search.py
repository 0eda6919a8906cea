"""Box inference from the five masks (paper §5.2): Eq. (3) scores and the exhaustive search.

Frames: everything here is in cell_yxyx of a mask canvas (one unit = one canvas cell); the caller
maps boxes to the image. Masks are [..., H, W, 5, C] with axis -2 in MASK_TYPES order
(full, top, bottom, left, right).

Eq. (3) for a box bb and one class:

    S(bb) = [S(bb, m_full) - S(ring, m_full)]
          + [S(top, m_top) - S(bottom, m_top)] + [S(bottom, m_bottom) - S(top, m_bottom)]
          + [S(left, m_left) - S(right, m_left)] + [S(right, m_right) - S(left, m_right)]

with S(b, m) the Eq. (2) mean of m over b (``integral.box_coverage``), top = [ymin, xmin,
(ymin+ymax)/2, xmax] and so on. Each bracket lies in [-1, 1], so S(bb) lies in [-5, 5].

The ring, the shape grid and the whole-cell roundings are the rules of ``dnet_tf.core.search``
(one definition for the graph and the edge pipeline); S(ring) = 0 when the ring has no area (bb
covers the whole grid). The canvas resolution is the search resolution, so callers choose the
canvas so that one cell is the wanted stride (the paper's 5 px).

The halves terms only depend on the differences top - bottom and left - right, so the search
works on three planes per class: M = m_full, V = m_top - m_bottom, L = m_left - m_right:

    S(bb) = S(bb, M) - S(ring, M) + [S(top, V) - S(bottom, V)] + [S(left, L) - S(right, L)].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from dnet_tf.constants import BOTTOM, FULL, LEFT, NUM_MASK_TYPES, RIGHT, TOP
from dnet_tf.core import search as search_rules
from dnet_tf.ops import integral as integral_ops
from dnet_tf.ops.xp import TENSORFLOW

# Static Python only (no loops or branches over tensor values): autograph conversion would
# only cost tracing time.
_NOT_CONVERTED = tf.autograph.experimental.do_not_convert

# Positions per block in the dense search's two-level top-k (see ``search_boxes``).
_BLOCK = 16


class SearchResult(NamedTuple):
    """Best boxes per class of ``search_boxes``; M = max_candidates, sorted by score.

    boxes_cell_yxyx: float32 [..., C, M, 4] cell_yxyx of the searched canvas; zeros when invalid.
    scores: float32 [..., C, M] Eq. (3); -inf when invalid.
    coverage: float32 [..., C, M] Eq. (2) of the box on the full mask; 0 when invalid.
    valid: bool [..., C, M]; False for padding slots (fewer than M boxes passed the threshold).
    """

    boxes_cell_yxyx: tf.Tensor
    scores: tf.Tensor
    coverage: tf.Tensor
    valid: tf.Tensor


@_NOT_CONVERTED
def box_shapes(
    mean_side, size_fractions: Sequence[float], aspect_ratios: Sequence[float]
) -> tf.Tensor:
    """The search's box shapes float32 [S * A, 2] (height, width) for a mean side (a Python or
    tensor scalar, canvas cells): ``dnet_tf.core.search.box_shapes`` in the graph."""
    mean_side = tf.cast(mean_side, tf.float32)
    return search_rules.box_shapes(mean_side, size_fractions, aspect_ratios, TENSORFLOW)


@_NOT_CONVERTED
def ring_width(side, ring_margin: float) -> tf.Tensor:
    """Ring width in whole cells, float32 [...], of boxes of side ``side`` [...] (cells):
    ``dnet_tf.core.search.ring_width`` in the graph."""
    return search_rules.ring_width(tf.cast(side, tf.float32), ring_margin, TENSORFLOW)


def _halves(boxes_yxyx: tf.Tensor) -> tf.Tensor:
    """[..., N, 4] -> [..., N, 5, 4]: the box and its top, bottom, left, right halves."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes_yxyx, axis=-1)
    ymid, xmid = (ymin + ymax) / 2.0, (xmin + xmax) / 2.0
    return tf.stack(
        [
            tf.stack([ymin, xmin, ymax, xmax], -1),
            tf.stack([ymin, xmin, ymid, xmax], -1),
            tf.stack([ymid, xmin, ymax, xmax], -1),
            tf.stack([ymin, xmin, ymax, xmid], -1),
            tf.stack([ymin, xmid, ymax, xmax], -1),
        ],
        axis=-2,
    )


def _ring_terms(integral_full: tf.Tensor, boxes: tf.Tensor, bb_sums: tf.Tensor, ring_margin: float):
    """S(ring, m_full) for boxes [..., N, 4] given their own sums bb_sums [..., N, C]."""
    grid_h = tf.cast(tf.shape(integral_full)[-3] - 1, boxes.dtype)
    grid_w = tf.cast(tf.shape(integral_full)[-2] - 1, boxes.dtype)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    gy = ring_width(tf.maximum(ymax - ymin, 0.0), ring_margin)
    gx = ring_width(tf.maximum(xmax - xmin, 0.0), ring_margin)
    outer = tf.stack([ymin - gy, xmin - gx, ymax + gy, xmax + gx], axis=-1)
    outer_sums = integral_ops.box_sums(integral_full, outer)

    def clipped_area(b):
        h = tf.clip_by_value(b[..., 2], 0.0, grid_h) - tf.clip_by_value(b[..., 0], 0.0, grid_h)
        w = tf.clip_by_value(b[..., 3], 0.0, grid_w) - tf.clip_by_value(b[..., 1], 0.0, grid_w)
        return tf.maximum(h, 0.0) * tf.maximum(w, 0.0)

    ring_area = clipped_area(outer) - clipped_area(boxes)
    inv_area = tf.where(ring_area > 0, 1.0 / tf.where(ring_area > 0, ring_area, 1.0), 0.0)
    return (outer_sums - bb_sums) * inv_area[..., None]


def _outside_strips(boxes: tf.Tensor, ring_margin: float) -> tf.Tensor:
    """[..., N, 4] -> [..., N, 4, 4]: the strips just outside each box's top, bottom, left and
    right side, ring_width(height) cells tall (top, bottom) or ring_width(width) wide (left,
    right), as long as the side; the regions the ring of the full mask is made of."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    gy = ring_width(tf.maximum(ymax - ymin, 0.0), ring_margin)
    gx = ring_width(tf.maximum(xmax - xmin, 0.0), ring_margin)
    return tf.stack(
        [
            tf.stack([ymin - gy, xmin, ymin, xmax], -1),
            tf.stack([ymax, xmin, ymax + gy, xmax], -1),
            tf.stack([ymin, xmin - gx, ymax, xmin], -1),
            tf.stack([ymin, xmax, ymax, xmax + gx], -1),
        ],
        axis=-2,
    )


@_NOT_CONVERTED
def outside_half_terms(
    integral: tf.Tensor, boxes_cell_yxyx: tf.Tensor, ring_margin: float, floor: float = 0.0
):
    """Evidence against a box from its half masks: sum over h of S(out(h), m_h), in [0, 4].

    out(top) is the strip just above the box (``_outside_strips``), out(bottom) the strip below,
    and so on; S is the mean of the mask over the strip's part inside the grid (0 when nothing
    of it is). For the whole object every half mask ends at the box's side, so the term is ~0;
    for a box inside the object (a part), the top mask goes on above it, the bottom mask below
    it..., and the term approaches 4, the amount by which Eq. (3) overrates such a box (its four
    halves terms agree as well as the whole box's do). With ``floor`` f > 0 each side counts
    max(0, S - f) / (1 - f): a predicted mask blurs a little past the object's edge, and that
    leak (S well below 1) must not push the best box outwards; an object going on (S near 1)
    still counts nearly fully.

    Args:
      integral: float32 [..., H+1, W+1, 5 * C] as for ``eq3_scores``.
      boxes_cell_yxyx: float32 [..., N, 4] cell_yxyx.
      ring_margin: float >= 0, see ``ring_width``.
      floor: in [0, 1), the strip mean below which a side counts 0.
    Returns:
      float32 [..., N, C] in [0, 4].
    """
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"outside_half_terms: floor must be in [0, 1), got {floor}")
    integral = tf.convert_to_tensor(integral, tf.float32)
    boxes = tf.convert_to_tensor(boxes_cell_yxyx, tf.float32)
    num_classes = tf.shape(integral)[-1] // NUM_MASK_TYPES
    grid_h = tf.cast(tf.shape(integral)[-3] - 1, tf.float32)
    grid_w = tf.cast(tf.shape(integral)[-2] - 1, tf.float32)
    strips = _outside_strips(boxes, ring_margin)  # [..., N, 4 sides, 4]
    hh = tf.clip_by_value(strips[..., 2], 0.0, grid_h) - tf.clip_by_value(
        strips[..., 0], 0.0, grid_h
    )
    ww = tf.clip_by_value(strips[..., 3], 0.0, grid_w) - tf.clip_by_value(
        strips[..., 1], 0.0, grid_w
    )
    area = tf.maximum(hh, 0.0) * tf.maximum(ww, 0.0)  # [..., N, 4]
    inv_area = tf.where(area > 0, 1.0 / tf.where(area > 0, area, 1.0), 0.0)
    total = 0.0
    for side, mask_type in enumerate((TOP, BOTTOM, LEFT, RIGHT)):
        sums = integral_ops.box_sums(
            integral[..., mask_type * num_classes : (mask_type + 1) * num_classes],
            strips[..., side, :],
        )  # [..., N, C]
        mean = sums * inv_area[..., side, None]
        total += tf.maximum(mean - floor, 0.0) * (1.0 / (1.0 - floor)) if floor > 0 else mean
    return total


@_NOT_CONVERTED
def eq3_scores(integral: tf.Tensor, boxes_cell_yxyx: tf.Tensor, ring_margin: float):
    """Eq. (3) and Eq. (2) for explicit boxes, by integral-image lookups (the reference).

    Args:
      integral: float32 [..., H+1, W+1, 5 * C], ``integral_image`` of masks [..., H, W, 5, C]
        reshaped to [..., H, W, 5 * C] (channel t * C + c = mask type t, class c).
      boxes_cell_yxyx: float32 [..., N, 4] cell_yxyx, same batch dimensions; fractional corners
        are exact; parts outside the grid count as mask 0.
      ring_margin: float >= 0, see ``ring_width``.
    Returns:
      (eq3 float32 [..., N, C] in [-5, 5], coverage float32 [..., N, C]: Eq. (2) of bb on m_full).
    """
    integral = tf.convert_to_tensor(integral, tf.float32)
    boxes = tf.convert_to_tensor(boxes_cell_yxyx, tf.float32)
    channels = tf.shape(integral)[-1]
    num_classes = channels // NUM_MASK_TYPES
    n = tf.shape(boxes)[-2]
    batch_shape = tf.shape(boxes)[:-2]
    parts = _halves(boxes)  # [..., N, 5, 4]
    flat_parts = tf.reshape(parts, tf.concat([batch_shape, [n * NUM_MASK_TYPES, 4]], 0))
    cov = integral_ops.box_coverage(integral, flat_parts)  # [..., 5N, 5C]
    # [..., N, part, type, C]
    cov = tf.reshape(
        cov, tf.concat([batch_shape, [n, NUM_MASK_TYPES, NUM_MASK_TYPES, num_classes]], 0)
    )

    def s(part, mask_type):
        return cov[..., part, mask_type, :]

    full_integral = integral[..., FULL * num_classes : (FULL + 1) * num_classes]
    bb_sums = integral_ops.box_sums(full_integral, boxes)
    ring = _ring_terms(full_integral, boxes, bb_sums, ring_margin)
    eq3 = search_rules.eq3(s, ring)
    return eq3, s(FULL, FULL)


@_NOT_CONVERTED
def search_boxes(
    masks: tf.Tensor,
    shapes_hw,
    stride,
    ring_margin: float,
    coverage_threshold: float,
    max_candidates: int,
    local_max: bool = False,
) -> SearchResult:
    """Exhaustive Eq. (3) search over every shape at every stride position, all classes at once.

    A box of shape (h, w) (rounded to whole cells, clipped to the grid) has its top-left corner at
    (i * s, j * s), s = the stride rounded to whole cells (>= 1), for every i, j with the box
    inside the grid. Boxes whose Eq. (2) coverage of the full mask is > coverage_threshold
    (strictly) are candidates; the best ``max_candidates`` per class by Eq. (3) are returned,
    best first. With ``local_max``, a candidate must also score at least as high as each of its
    8 neighbours of the same shape (corners one stride away, up, down, left, right and
    diagonally; neighbours off the grid or below the threshold do not count): one object then
    gives about one candidate per shape instead of dozens of shifted near-copies, so a weaker
    second object of the class still reaches the top ``max_candidates``.

    How it is fast (the detector's hot path):
      * Classes whose full mask never exceeds the threshold cannot have a candidate (a box's
        coverage is at most the mask's maximum) and are skipped. A box's sum of the full mask
        is at most that of its rows across the whole grid, so each shape is searched only over
        the corner rows whose band of h rows holds more than threshold |bb| on some class, from
        the first such row to the last; a shape with none (on a trained detector's sparse masks,
        most of the largest shapes) is not searched at all.
      * The three planes of each class (module docstring) are integrated once, by two matrix
        products. Every Eq. (3) ingredient of one shape at all positions is then a sum of shifted
        integral images: 8 lattice terms for S(bb, M) and the halves, 4 for the box sum, 8 for
        the ring's sum (outer box minus box). Each shifted image is a 64-byte-aligned slice of a
        flat buffer, which TensorFlow returns as a view, so one AddN per group reads the views
        and writes its result once; six elementwise ops then give the level-1 score. The shapes
        run in a while loop (a small graph, ~30 ops per shape).
      * A two-level top-k: the max of every block of 16 positions, the best M blocks per class,
        then the exact best M among those blocks' boxes (all of the true best M are in them).
      * Leading batch dimensions (e.g. the scales of one image) fold into the class axis: one
        pass over the shapes for all of them.

    Args:
      masks: float32 [..., H, W, 5, C] cell frame, values in [0, 1]; leading batch dimensions are
        searched independently (they are folded into the class axis).
      shapes_hw: float [S, 2] (height, width) in cells, S known at trace time (``box_shapes``);
        the values may be tensors.
      stride: float scalar (Python or tensor), cells between neighbouring corners.
      ring_margin: float >= 0, see ``ring_width``.
      coverage_threshold: float; candidates need coverage > this (a negative value keeps all).
      max_candidates: int M >= 1.
      local_max: keep only the local maxima of each shape's score map (see above).
    Returns:
      SearchResult with fields [..., C, M(, 4)]; scores -inf, boxes and coverage 0 where invalid.
    Raises:
      ValueError: masks not [..., H, W, 5, C], S unknown, max_candidates < 1.
    """
    masks = tf.convert_to_tensor(masks, tf.float32)
    rank = masks.shape.rank
    if (
        rank is None
        or rank < 4
        or (masks.shape[-2] is not None and masks.shape[-2] != NUM_MASK_TYPES)
    ):
        raise ValueError(
            f"search_boxes: masks must be [..., H, W, {NUM_MASK_TYPES}, C], got shape {masks.shape}"
        )
    if int(max_candidates) < 1:
        raise ValueError(f"search_boxes: max_candidates must be >= 1, got {max_candidates}")
    shapes_hw = tf.convert_to_tensor(shapes_hw, tf.float32)
    if shapes_hw.shape.rank != 2 or shapes_hw.shape[0] is None or shapes_hw.shape[1] != 2:
        raise ValueError(
            "search_boxes: shapes_hw must be [S, 2] with S known at trace time, got "
            f"{shapes_hw.shape}"
        )
    m = int(max_candidates)
    threshold = float(coverage_threshold)

    # Fold batch dimensions into the class axis: [H, W, 5, K], k = flat batch index * C + c.
    perm = [rank - 4, rank - 3, rank - 2] + list(range(rank - 4)) + [rank - 1]
    mshape = tf.shape(masks)
    height, width = mshape[-4], mshape[-3]
    folded = tf.reshape(tf.transpose(masks, perm), [height, width, NUM_MASK_TYPES, -1])
    total = tf.shape(folded)[3]

    # Only classes whose full mask exceeds the threshold somewhere, padded with empty classes for
    # the aligned views: to a multiple of 16 (views at any column, one phase) when that adds at
    # most a quarter, else to a multiple of 4 (4 phases), at least 4.
    peak = tf.reduce_max(folded[:, :, FULL], axis=[0, 1])  # [K]
    active = tf.cast(tf.where(peak > threshold)[:, 0], tf.int32)
    num_active = tf.shape(active)[0]
    by_4 = tf.maximum((num_active + 3) // 4, 1) * 4
    by_16 = (num_active + 15) // 16 * 16
    padded = tf.where(4 * by_16 <= 5 * by_4, by_16, by_4)
    # Index `total` is out of one_hot's range: an all-zero class. The selection is a product
    # with a 0/1 matrix, exact for finite masks (x * 1 plus zeros) and ~3x faster than
    # tf.gather on the last axis.
    pick = tf.concat([active, tf.fill([padded - num_active], total)], 0)
    selection = tf.one_hot(pick, total, dtype=tf.float32)  # [padded, K]
    picked = tf.matmul(tf.reshape(folded, [-1, total]), selection, transpose_b=True)
    boxes, scores, coverage = _dense_search(
        tf.reshape(picked, tf.stack([height, width, NUM_MASK_TYPES, padded])),
        shapes_hw,
        stride,
        float(ring_margin),
        threshold,
        m,
        bool(local_max),
    )
    # Back to all K classes; skipped ones are invalid.
    into = active[:, None]
    scores = tf.tensor_scatter_nd_update(tf.fill([total, m], -np.inf), into, scores[:num_active])
    boxes = tf.scatter_nd(into, boxes[:num_active], [total, m, 4])
    coverage = tf.scatter_nd(into, coverage[:num_active], [total, m])

    out_shape = tf.concat([mshape[:-4], mshape[-1:], [m]], axis=0)
    return SearchResult(
        boxes_cell_yxyx=tf.reshape(boxes, tf.concat([out_shape, [4]], 0)),
        scores=tf.reshape(scores, out_shape),
        coverage=tf.reshape(coverage, out_shape),
        valid=tf.reshape(scores > -np.inf, out_shape),
    )


# --- The dense search -------------------------------------------------------------------------
#
# Every Eq. (3) ingredient of one shape at all positions is a sum of shifted integral images
# ("views"). With F_M, F_V, F_L the integrals of the three planes and (y0, ym, y1) x (x0, xm, x1)
# the box's 3 x 3 corner lattice:
#   T = |bb| [S(bb, M) + S(top, V) - S(bottom, V) + S(left, L) - S(right, L)]
#     = F_M(bb) + 2 [F_V(top) - F_V(bottom)] + 2 [F_L(left) - F_L(right)]   (F(b): box sum)
# and collecting the coefficient of each lattice point gives the images below (the centre has
# none). B = F_M(bb) is four corners, the ring's sum R = F_M(outer box) - F_M(bb) eight.
#
# Images, grouped into one buffer per group; groups with two variants hold the whole-cell and
# the half-cell shifted version (for odd heights or widths, whose midline falls mid-cell).
#   c00 = F_M + 2 F_V + 2 F_L at (y0, x0)     c01 = -F_M - 2 F_V + 2 F_L at (y0, x1)
#   c10 = -F_M + 2 F_V - 2 F_L at (y1, x0)    c11 = F_M - 2 F_V - 2 F_L at (y1, x1)
#   vneg/vpos = -/+ 4 F_V at (ym, x0)/(ym, x1)   lneg/lpos = -/+ 4 F_L at (y0, xm)/(y1, xm)
#   mpos/mneg = +/- F_M;   bpos/bneg = +/- F_M * 2^33 (B, pre-scaled for the validity test)
# Terms: (group, variant parity from "h"/"w"/None, dy coefficients of (h, h // 2, ring_y),
# dx coefficients of (w, w // 2, ring_x)). T terms first, then B, then R.
_TERMS = (
    # T: the 3 x 3 lattice less its centre.
    ("c00", None, (0, 0, 0), (0, 0, 0)),
    ("c01", None, (0, 0, 0), (1, 0, 0)),
    ("c10", None, (1, 0, 0), (0, 0, 0)),
    ("c11", None, (1, 0, 0), (1, 0, 0)),
    ("vneg", "h", (0, 1, 0), (0, 0, 0)),
    ("vpos", "h", (0, 1, 0), (1, 0, 0)),
    ("lneg", "w", (0, 0, 0), (0, 1, 0)),
    ("lpos", "w", (1, 0, 0), (0, 1, 0)),
    # B = F_M(bb), scaled by _VALIDITY_SCALE.
    ("bpos", None, (1, 0, 0), (1, 0, 0)),
    ("bneg", None, (1, 0, 0), (0, 0, 0)),
    ("bneg", None, (0, 0, 0), (1, 0, 0)),
    ("bpos", None, (0, 0, 0), (0, 0, 0)),
    # R = F_M(outer box) - F_M(bb), the ring's sum.
    ("mpos", None, (1, 0, 1), (1, 0, 1)),
    ("mneg", None, (1, 0, 1), (0, 0, -1)),
    ("mneg", None, (0, 0, -1), (1, 0, 1)),
    ("mpos", None, (0, 0, -1), (0, 0, -1)),
    ("mneg", None, (1, 0, 0), (1, 0, 0)),
    ("mpos", None, (1, 0, 0), (0, 0, 0)),
    ("mpos", None, (0, 0, 0), (1, 0, 0)),
    ("mneg", None, (0, 0, 0), (0, 0, 0)),
)
_T_TERMS, _B_TERMS = 8, 4  # then 8 R terms
# Phase copies per image: with the class axis padded to a multiple of 4, every column offset is
# a multiple of 4 columns (16 floats) from the start of one of 4 phases (1 phase when the class
# axis is a multiple of 16).
_PHASES = 4
# Groups only read at column offset 0 (x0): one phase suffices (pad_left is a multiple of 4).
_SINGLE_PHASE = frozenset({"c00", "c10", "vneg"})
# Scale of B in the level-1 validity test: a power of two, so the scaling is exact.
_VALIDITY_SCALE = 2.0**33


def _term_starts(h, w, ry, rx, pad_top, pad_left, padded_h, row, k, phases):
    """Flat start of every term's view for every shape: int32 [S, 20] (see ``_TERMS``)."""
    starts = []
    for group, parity, (cy, chy, cry), (cx, chx, crx) in _TERMS:
        dy = cy * h + chy * (h // 2) + cry * ry
        dx = cx * w + chx * (w // 2) + crx * rx
        variant = 0 if parity is None else (h % 2 if parity == "h" else w % 2)
        col = pad_left + dx
        group_phases = 1 if group in _SINGLE_PHASE else phases
        phase = col % group_phases
        starts.append(
            ((variant * group_phases + phase) * padded_h + pad_top + dy) * row * k
            + (col - phase) * k
        )
    return tf.stack(starts, axis=1)


def _coverage_matrix(n_out, n_in, offset):
    """[n_out, n_in]: entry (i, r) = length of [r, r+1) inside [0, i - offset), i.e. the weights
    that integrate n_in cells up to the sample i (offset: padding before the grid, minus 1/2 for
    samples in mid-cell)."""
    ends = tf.cast(tf.range(n_out), tf.float32)[:, None] - offset
    return tf.clip_by_value(ends - tf.cast(tf.range(n_in), tf.float32)[None, :], 0.0, 1.0)


def _integrals(plane_m, plane_v, plane_l, pad_top, padded_h, pad_left, padded_w):
    """Integral images of the planes [H, W, K] on a padded sample grid, by matrix products.

    Sample (i, j) is F at y = i - pad_top, x = j - pad_left (zero before the grid, the last value
    repeated after it). Returns F_M, F_V, F_L, F_V at half-cell rows (y + 1/2) and F_L at
    half-cell columns (x + 1/2), each float32 [padded_h, padded_w, K]. Matrix products rather
    than cumsum: several times faster on CPU at canvas sizes (~100 cells).
    """
    height, width = tf.shape(plane_m)[0], tf.shape(plane_m)[1]
    pad_top_f, pad_left_f = tf.cast(pad_top, tf.float32), tf.cast(pad_left, tf.float32)
    rows_full = _coverage_matrix(padded_h, height, pad_top_f)
    rows_half = _coverage_matrix(padded_h, height, pad_top_f - 0.5)
    cols_full = _coverage_matrix(padded_w, width, pad_left_f)
    cols_half = _coverage_matrix(padded_w, width, pad_left_f - 0.5)

    # Columns first, on [W, H * K] (one plain matrix product each), then back to rows-major and
    # over the rows. The two transposes touch the small unpadded planes only.
    def over_cols(cols, plane):  # [H, W, K] -> [H, padded_w * K]
        by_col = tf.reshape(tf.transpose(plane, [1, 0, 2]), [width, -1])
        summed = tf.reshape(tf.matmul(cols, by_col), [padded_w, height, -1])
        return tf.reshape(tf.transpose(summed, [1, 0, 2]), [height, -1])

    def over_rows(rows, partial):  # [H, padded_w * K] -> [padded_h, padded_w, K]
        return tf.reshape(tf.matmul(rows, partial), [padded_h, padded_w, -1])

    x_m, x_v, x_l = (
        over_cols(cols_full, plane_m),
        over_cols(cols_full, plane_v),
        over_cols(cols_full, plane_l),
    )
    return (
        over_rows(rows_full, x_m),
        over_rows(rows_full, x_v),
        over_rows(rows_full, x_l),
        over_rows(rows_half, x_v),
        over_rows(rows_full, over_cols(cols_half, plane_l)),
    )


def _keep_local_maxima(score, step):
    """score float32 [R, X, K] of one shape's positions (rows, columns, classes), -inf or below -5
    where no candidate -> the same with every value below one of its 8 neighbours `step` positions
    away set to -inf (equal neighbours both stay; outside the map counts as -inf). step: int32
    scalar tensor, or a Python int when known as the graph is built."""
    rows, cols = tf.shape(score)[0], tf.shape(score)[1]

    def any_step():
        padded = tf.pad(score, [[step, step], [step, step], [0, 0]], constant_values=-np.inf)
        across = tf.maximum(
            tf.maximum(padded[:, :cols], padded[:, step : step + cols]),
            padded[:, 2 * step : 2 * step + cols],
        )
        return tf.maximum(
            tf.maximum(across[:rows], across[step : step + rows]),
            across[2 * step : 2 * step + rows],
        )

    def unit_step():  # the common case (one canvas cell = the stride): one pooling op
        return tf.nn.max_pool2d(score[None], 3, 1, "SAME")[0]

    if isinstance(step, int):  # known when the graph is built: no tf.cond in the loop's body
        around = unit_step() if step == 1 else any_step()
    else:
        around = tf.cond(tf.equal(step, 1), unit_step, any_step)
    return tf.where(score >= around, score, -np.inf)


def _dense_search(masks, shapes_hw, stride, ring_margin, threshold, m, local_max=False):
    """search_boxes on masks [H, W, 5, K] (K a multiple of 4): boxes [K, M, 4], scores, coverage
    [K, M]."""
    num_shapes = int(shapes_hw.shape[0])
    mshape = tf.shape(masks)
    height, width, k = mshape[0], mshape[1], mshape[3]
    hf, wf = tf.cast(height, tf.float32), tf.cast(width, tf.float32)

    # Shapes in whole cells inside the grid; ring widths; the stride in whole cells.
    sh, sw = search_rules.shape_cells(shapes_hw, hf, wf, TENSORFLOW)
    shi, swi = tf.cast(sh, tf.int32), tf.cast(sw, tf.int32)
    ryi = tf.cast(ring_width(sh, ring_margin), tf.int32)
    rxi = tf.cast(ring_width(sw, ring_margin), tf.int32)
    step = tf.cast(search_rules.stride_cells(tf.cast(stride, tf.float32), TENSORFLOW), tf.int32)
    # The same as a Python int when the stride is a number (the exported graphs' case).
    step_known = (
        int(search_rules.stride_cells(np.float32(stride)))
        if isinstance(stride, (int, float, np.number))
        else step
    )

    # The sample grid of the integrals: pad_top rows and pad_left columns before the grid so that
    # outer-box corners outside the grid read the clipped integral. A view row holds `row`
    # positions (a multiple of 16): columns W - w + 1 .. row - 1 are not positions of the shape
    # (they read past the row) and are excluded below.
    gmax = tf.reduce_max(tf.concat([ryi, rxi, [0]], 0))
    pad_top = gmax
    pad_left = (gmax + _PHASES - 1) // _PHASES * _PHASES
    row = (width + pad_left + gmax + 1 + _BLOCK - 1) // _BLOCK * _BLOCK
    padded_h = height + gmax + 3 + pad_top  # +3: the last view row may run one row further
    padded_w = row + _PHASES - 1

    f_m, f_v, f_l, f_vh, f_lh = _integrals(
        masks[:, :, FULL],
        masks[:, :, TOP] - masks[:, :, BOTTOM],
        masks[:, :, LEFT] - masks[:, :, RIGHT],
        pad_top,
        padded_h,
        pad_left,
        padded_w,
    )

    def build_buffers(phases):
        """The image groups as flat buffers [variants * phases * padded_h * row * K] (groups in
        _SINGLE_PHASE: one phase)."""

        def phased(*images):  # -> [variants * phases, padded_h, row, K]
            return tf.stack([image[:, j : j + row] for image in images for j in range(phases)])

        m_ph = phased(f_m)
        v_ph = phased(f_v, f_vh)  # variant 0: whole cells, 1: half-cell rows
        l_ph = phased(f_l, f_lh)
        v0, l0 = v_ph[:phases], l_ph[:phases]
        s2, d2 = 2.0 * (v0 + l0), 2.0 * (v0 - l0)
        neg_m = -m_ph
        buffers = {
            "c00": m_ph[:1] + s2[:1],
            "c01": neg_m - d2,
            "c10": neg_m[:1] + d2[:1],
            "c11": m_ph - s2,
            "vneg": -4.0 * v_ph[::phases],
            "vpos": 4.0 * v_ph,
            "lneg": -4.0 * l_ph,
            "lpos": 4.0 * l_ph,
            "mpos": m_ph,
            "mneg": neg_m,
            # The box sum B scaled by 2^33 (exact), for the validity test below.
            "bpos": m_ph * _VALIDITY_SCALE,
            "bneg": neg_m * _VALIDITY_SCALE,
        }
        return {name: tf.reshape(b, [-1]) for name, b in buffers.items()}

    # K a multiple of 16: any column offset is 64-byte aligned, one phase does.
    one_phase = k % 16 == 0
    buffers = tf.cond(one_phase, lambda: build_buffers(1), lambda: build_buffers(_PHASES))
    phases = tf.where(one_phase, 1, _PHASES)
    starts = _term_starts(
        shi, swi, ryi, rxi, pad_top, pad_left, padded_h, row, k, phases
    )  # [S, 20]
    area = tf.cast(shi * swi, tf.float32)
    # Rows of corners that can hold a candidate. A box's sum of the full mask is at most the sum
    # of its h rows across the whole canvas, F_M(y + h, W) - F_M(y, W), so a corner row y whose
    # band falls to threshold |bb| on every canvas holds none; each shape is searched from its
    # first such row to its last (on sparse masks a third fewer positions), and a shape with no
    # such row (e.g. area at least every canvas's total / threshold) not at all. The margin, a
    # 1e-4 of the integral's magnitude (float32 rounding is ~1e-7 of it), keeps rounding from
    # dropping a row whose best box sits at the threshold.
    across = f_m[pad_top : pad_top + height + 1, pad_left + width]  # [H + 1, K]: F_M(y, W)
    corner_rows = tf.range(height)
    band_end = tf.gather(across, tf.minimum(corner_rows[None, :] + shi[:, None], height))
    band = band_end - across[None, :height]  # [S, H, K]
    row_ok = tf.reduce_any(
        band + 1e-4 * tf.abs(band_end) + 1e-3 > threshold * area[:, None, None], axis=-1
    ) & (corner_rows[None, :] <= height - shi[:, None])  # [S, H]
    searched = tf.reduce_any(row_ok, axis=1)  # [S]
    ok_int = tf.cast(row_ok, tf.int32)
    first_row = tf.argmax(ok_int, axis=1, output_type=tf.int32)  # [S]
    last_row = height - 1 - tf.argmax(tf.reverse(ok_int, [1]), axis=1, output_type=tf.int32)
    rows_searched = tf.where(searched, last_row - first_row + 1, 0)  # [S]
    block_counts = rows_searched * (row // _BLOCK)

    # The searched shapes, in shape order.
    order = tf.cast(tf.where(searched)[:, 0], tf.int32)
    num_searched = tf.size(order)

    # Per-position maps of the searched shapes, flat [searched * H * row] (rows outside the
    # searched ones unused): 1 / ring area, and -threshold |bb| 2^33 for the validity test (-inf
    # off the stride grid and for columns > W - w, which are no positions of the shape: their
    # views read past the row).
    yy, xx = tf.range(height)[None, :], tf.range(row)[None, :]  # [1, H], [1, row]
    h3, w3 = tf.gather(shi, order)[:, None], tf.gather(swi, order)[:, None]
    ry3, rx3 = tf.gather(ryi, order)[:, None], tf.gather(rxi, order)[:, None]
    area3 = tf.gather(area, order)[:, None]
    # Outer-box extents per row and per column: [searched, H] and [searched, row] (the ring area
    # is separable).
    outer_h = tf.minimum(yy + h3 + ry3, height) - tf.maximum(yy - ry3, 0)
    outer_w = tf.minimum(xx + w3 + rx3, width) - tf.maximum(xx - rx3, 0)
    ring = (
        tf.cast(outer_h, tf.float32)[:, :, None] * tf.cast(outer_w, tf.float32)[:, None, :]
        - area3[:, :, None]
    )
    inv_ring = tf.reshape(tf.math.divide_no_nan(1.0, ring), [-1])  # 0: no ring
    # The bias as a row term plus a column term: 0 / -inf by row, -threshold |bb| 2^33 / -inf by
    # column.
    row_term = tf.where((yy % step == 0) & (yy <= height - h3), 0.0, -np.inf)  # [searched, H]
    col_term = tf.where(
        (xx % step == 0) & (xx <= width - w3), -_VALIDITY_SCALE * (threshold * area3), -np.inf
    )  # [searched, row]
    bias = tf.reshape(row_term[:, :, None] + col_term[:, None, :], [-1])

    # One row of int32 per searched shape holds everything its loop iteration needs, as
    # 1-element vectors (begins and sizes of tf.slice): the 20 views' starts from the first
    # searched row, the views' size, the start and size of its part of the maps. So an
    # iteration is the slices and the arithmetic, with no index arithmetic of its own (op
    # dispatch, not arithmetic, is most of a small canvas's search time).
    skip = tf.gather(first_row * row, order)  # positions before the first searched row
    positions = tf.gather(rows_searched * row, order)
    per_shape = tf.concat(
        [
            tf.gather(starts, order) + (skip * k)[:, None],
            (positions * k)[:, None],
            (tf.range(num_searched) * (height * row) + skip)[:, None],
            positions[:, None],
        ],
        axis=1,
    )[..., None]  # [searched, 23, 1]
    inv_area = tf.gather(1.0 / area, order)  # [searched]
    by_class = tf.stack([-1, k])
    by_block = tf.stack([-1, _BLOCK, k])
    by_row = tf.stack([-1, row, k])

    def shape_block_max(j):
        """Eq. (3) of the j-th searched shape at every position of its searched rows, reduced to
        the max per block of 16: [rows searched * row / 16, K]."""
        *begins, size, map_begin, map_size = tf.unstack(per_shape[j], num=len(_TERMS) + 3)
        # 64-byte aligned slices of 1-D tensors: views, no copies.
        views = [
            tf.slice(buffers[group], begin, size) for (group, *_), begin in zip(_TERMS, begins)
        ]
        t_sum = tf.reshape(tf.add_n(views[:_T_TERMS]), by_class)
        b_sum = tf.reshape(tf.add_n(views[_T_TERMS : _T_TERMS + _B_TERMS]), by_class)
        r_sum = tf.reshape(tf.add_n(views[_T_TERMS + _B_TERMS :]), by_class)
        ring_j = tf.reshape(tf.slice(inv_ring, map_begin, map_size), [-1, 1])
        bias_j = tf.reshape(tf.slice(bias, map_begin, map_size), [-1, 1])
        eq3 = t_sum * inv_area[j] - r_sum * ring_j
        # eq3 where B > threshold |bb|, else below -5 (the least Eq. (3) value): the min with
        # (B - threshold |bb|) 2^33 - 6, cheaper than a select. b_sum is B 2^33 already and
        # bias = -threshold |bb| 2^33 (-inf off the grid), so their sum is exact near the
        # threshold (Sterbenz) and at least 2^33 ulp(threshold |bb|) >> 11 above it.
        score = tf.minimum(eq3, (b_sum + bias_j) - 6.0)
        if local_max:
            # Rows outside the searched ones hold no candidate: as neighbours they count as
            # off the map, which a candidate (>= -5) beats either way.
            score = tf.reshape(_keep_local_maxima(tf.reshape(score, by_row), step_known), by_class)
        return tf.reduce_max(tf.reshape(score, by_block), axis=1)

    # The searched shapes in a while loop: a small graph (one shape's views and ~10 ops, once).
    # The last slot holds no blocks, so the array is never empty.
    def body(j, acc):
        return j + 1, acc.write(j, shape_block_max(j))

    acc = tf.TensorArray(
        tf.float32,
        size=num_searched + 1,
        infer_shape=False,
        element_shape=tf.TensorShape([None, None]),
    )
    _, acc = tf.while_loop(
        lambda j, _: j < num_searched, body, (tf.constant(0), acc), parallel_iterations=2
    )
    acc = acc.write(num_searched, tf.zeros([0, k], tf.float32))
    acc_concat = acc.concat()  # [sum of blocks, K]

    # Level 1: the best M blocks per class (M extra -inf blocks keep top_k's k <= #blocks).
    all_blocks = tf.concat([acc_concat, tf.fill([m, k], -np.inf)], axis=0)
    _, block_ids = tf.math.top_k(tf.transpose(all_blocks), k=m)  # [K, M]
    block_starts = tf.concat([[0], tf.cumsum(block_counts)], 0)  # [S + 1]
    shape_id = tf.searchsorted(block_starts, tf.reshape(block_ids, [-1]), side="right") - 1
    shape_id = tf.reshape(shape_id, tf.shape(block_ids))
    real = shape_id < num_shapes
    shape_id = tf.minimum(shape_id, num_shapes - 1)
    # Each chosen block: 16 positions of one row of one shape's score map, from (y0, xb).
    first = (block_ids - tf.gather(block_starts, shape_id)) * _BLOCK  # [K, M]
    y0, xb = first // row + tf.gather(first_row, shape_id), first % row
    bh, bw = tf.gather(shi, shape_id), tf.gather(swi, shape_id)
    block_terms = tf.gather(starts, shape_id)  # [K, M, 20 terms]
    class_index = tf.range(k)[:, None]
    block_ry, block_rx = tf.gather(ryi, shape_id), tf.gather(rxi, shape_id)

    def exact(dy, dx):
        """Score (-inf: no candidate) and Eq. (2) coverage of every block's shape at corners
        (y0 + dy, xb + dx), dy int32 [R], dx int32 [X]: float32 [K, M, R, X] each."""

        def per_block(t):  # [K, M] -> [K, M, 1, 1]
            return t[..., None, None]

        y = per_block(y0) + dy[:, None]
        x = per_block(xb) + dx[None, :]
        h, w = per_block(bh), per_block(bw)
        ok = (
            per_block(real)
            & (y >= 0)
            & (x >= 0)
            & (y <= height - h)
            & (x <= width - w)
            & (x % step == 0)
            & (y % step == 0)
        )
        # Where not ok the offset is 0: the index is the view's start, inside its buffer.
        offset = tf.where(ok, (y * row + x) * k + per_block(class_index), 0)
        terms = [
            tf.gather(buffers[group], per_block(block_terms[..., j]) + offset)
            for j, (group, *_) in enumerate(_TERMS)
        ]
        t_sum = tf.add_n(terms[:_T_TERMS])
        b_sum = tf.add_n(terms[_T_TERMS : _T_TERMS + _B_TERMS])
        r_sum = tf.add_n(terms[_T_TERMS + _B_TERMS :])
        area = tf.cast(h * w, tf.float32)
        inv_ring = _inverse_ring_area(
            y, x, h, w, per_block(block_ry), per_block(block_rx), height, width
        )
        eq3 = t_sum * (1.0 / area) - r_sum * inv_ring
        b_sum = b_sum * (1.0 / _VALIDITY_SCALE)  # exact
        return tf.where(ok & (b_sum > threshold * area), eq3, -np.inf), b_sum / area

    columns = tf.range(_BLOCK)
    if local_max:
        # The same test as level 1 on exact scores. The 8 neighbours of the block's positions lie
        # in the rows y0 - step, y0, y0 + step and the columns xb - step .. xb + 15 + step: one
        # evaluation of that 3 x (16 + 2 step) window (each neighbour a slice of it) instead of
        # one per neighbour and position.
        window = exact(tf.stack([-step, 0, step]), tf.range(-step, _BLOCK + step))
        centre = window[0][:, :, 1, step : step + _BLOCK]
        coverage = window[1][:, :, 1, step : step + _BLOCK]
        neighbours = [
            window[0][:, :, r, c * step : c * step + _BLOCK]
            for r in range(3)
            for c in range(3)
            if (r, c) != (1, 1)
        ]
        score = tf.where(centre >= tf.reduce_max(tf.stack(neighbours), axis=0), centre, -np.inf)
    else:
        score, coverage = (t[:, :, 0] for t in exact(tf.zeros([1], tf.int32), columns))
    x0 = xb[..., None] + columns  # [K, M, 16]
    y0 = tf.broadcast_to(y0[..., None], tf.shape(x0))
    bh, bw = (
        tf.broadcast_to(bh[..., None], tf.shape(x0)),
        tf.broadcast_to(bw[..., None], tf.shape(x0)),
    )
    cand_boxes = tf.cast(tf.stack([y0, x0, y0 + bh, x0 + bw], axis=-1), tf.float32)
    best, idx = tf.math.top_k(tf.reshape(score, [k, m * _BLOCK]), k=m)
    valid = best > -np.inf
    boxes = tf.gather(tf.reshape(cand_boxes, [k, m * _BLOCK, 4]), idx, batch_dims=1)
    coverage = tf.gather(tf.reshape(coverage, [k, m * _BLOCK]), idx, batch_dims=1)
    return tf.where(valid[..., None], boxes, 0.0), best, tf.where(valid, coverage, 0.0)


def _inverse_ring_area(y0, x0, h, w, ry, rx, height, width):
    """1 / (clipped outer-box area - box area) for int32 corners (broadcasting); 0 for no ring."""
    oh = tf.minimum(y0 + h + ry, height) - tf.maximum(y0 - ry, 0)
    ow = tf.minimum(x0 + w + rx, width) - tf.maximum(x0 - rx, 0)
    ring = tf.cast(oh * ow - h * w, tf.float32)
    return tf.where(ring > 0, 1.0 / tf.maximum(ring, 1.0), 0.0)

"""NumPy equivalents of the inference graph's ops, for the edge pipeline (no TensorFlow).

Each function mirrors one op of ``dnet_tf.ops`` that ``DetectorModule.detect`` uses, with the same
frames and the same arithmetic, written to be read and ported (a mobile port can follow it line
by line). The rules both pipelines share -- the window layout, the search's shape grid and ring,
box maths, NMS and part demotion -- are ``dnet_tf.core``'s, re-exported here where a port looks
for them; what stays here is the NumPy mechanics (resampling, the readable search).

Frames: ``image_yxyx`` absolute pixels, pixel (r, c) covering [r, r+1) x [c, c+1);
``cell_yxyx`` cells of a mask canvas; ``norm_yxyx`` in [0, 1] of a frame.

Scalars that decide a rounding (cell sizes, box shapes) are computed in float32 as the graph does,
so the whole-cell roundings agree exactly; sums over masks are in float64 (the graph's are
float32), so scores agree to ~1e-6 and only near-exact ties may be ordered differently.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from dnet_tf.constants import BOTTOM, FULL, LEFT, NUM_MASK_TYPES, RIGHT, TOP
from dnet_tf.core import boxes as core_boxes
from dnet_tf.core import policy
from dnet_tf.core import search as search_rules
from dnet_tf.core.nms import class_nms, non_max_suppression, top_k  # noqa: F401 (re-exported)
from dnet_tf.core.search import (  # noqa: F401 (box_shapes re-exported)
    box_shapes,
    ring_width,
    shape_cells,
    stride_cells,
)
from dnet_tf.core.windows import scale_windows, unit_windows  # noqa: F401 (re-exported)

f32 = np.float32


# ----------------------------------------------------------------------------------------------
# Boxes (dnet_tf.ops.boxes).


def clip_boxes(boxes_yxyx: np.ndarray, height, width) -> np.ndarray:
    """Clips [..., 4] boxes to [0, height] x [0, width] of their frame."""
    boxes_yxyx = np.asarray(boxes_yxyx, np.float32)
    return core_boxes.clip(boxes_yxyx, f32(height), f32(width))


def from_frame(
    boxes_yxyx: np.ndarray, frame_yxyx: np.ndarray, frame_height, frame_width
) -> np.ndarray:
    """Boxes in a sub-rectangle's frame resized to frame_height x frame_width -> the outer frame
    (``dnet_tf.core.boxes``), float32."""
    return core_boxes.from_frame(
        np.asarray(boxes_yxyx, np.float32),
        np.asarray(frame_yxyx, np.float32),
        f32(frame_height),
        f32(frame_width),
    )


def iou_matrix(a_yxyx: np.ndarray, b_yxyx: np.ndarray) -> np.ndarray:
    """Pairwise Jaccard [N, M] in float64 of boxes [N, 4] and [M, 4] (``dnet_tf.core.boxes``)."""
    a = np.asarray(a_yxyx, np.float64).reshape(-1, 4)
    return core_boxes.iou(a, np.asarray(b_yxyx, np.float64).reshape(-1, 4))


# ----------------------------------------------------------------------------------------------
# Resampling.


def _resize_axis_weights(in_size: int, out_size: int):
    """tf.image.resize bilinear (half-pixel centres) along one axis: lower, upper indices, lerp."""
    scale = f32(in_size) / f32(out_size)
    src = (np.arange(out_size, dtype=np.float32) + f32(0.5)) * scale - f32(0.5)
    floor = np.floor(src)
    lower = np.clip(floor, 0, in_size - 1).astype(np.int64)
    upper = np.clip(np.ceil(src), 0, in_size - 1).astype(np.int64)
    return lower, upper, (src - floor).astype(np.float32)


def resize_bilinear(images: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """``tf.image.resize(images, [out_h, out_w], "bilinear")`` (half-pixel centres, no antialias).

    Args: images float [N, H, W, K]. Returns: float32 [N, out_h, out_w, K].
    """
    x = np.asarray(images, np.float32)
    y0, y1, ty = _resize_axis_weights(x.shape[1], out_h)
    x0, x1, tx = _resize_axis_weights(x.shape[2], out_w)
    top, bottom = x[:, y0], x[:, y1]
    rows = top + (bottom - top) * ty[None, :, None, None]
    left, right = rows[:, :, x0], rows[:, :, x1]
    return (left + (right - left) * tx[None, None, :, None]).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Windows (dnet_tf.ops.windows).


# ----------------------------------------------------------------------------------------------
# Crops and paste-back (dnet_tf.ops.crops).


def _tf_crop_and_resize(
    images: np.ndarray,
    boxes_norm: np.ndarray,
    box_indices: np.ndarray,
    crop_h: int,
    crop_w: int,
    extrapolation_value: float = 0.0,
) -> np.ndarray:
    """``tf.image.crop_and_resize(..., method="bilinear")``, same float32 arithmetic.

    Output sample i of a box with normalized y1, y2 over an image of Hi rows reads row
    in_y = y1 (Hi - 1) + i (y2 - y1)(Hi - 1) / (crop_h - 1) (the box centre when crop_h = 1),
    bilinearly; samples with in_y outside [0, Hi - 1] (same for x) get extrapolation_value.

    Args: images float [B, Hi, Wi, K]; boxes_norm float32 [N, 4]; box_indices int [N].
    Returns: float32 [N, crop_h, crop_w, K].
    """
    images = np.asarray(images, np.float32)
    boxes = np.asarray(boxes_norm, np.float32)
    _, hi, wi, _ = images.shape

    def axis(lo, hi_, size_in, size_out):
        lo, hi_ = lo[:, None], hi_[:, None]
        last = f32(size_in - 1)
        if size_out > 1:
            scale = (hi_ - lo) * last / f32(size_out - 1)
            pos = lo * last + np.arange(size_out, dtype=np.float32)[None, :] * scale
        else:
            pos = (0.5 * (lo + hi_).astype(np.float64) * float(last)).astype(
                np.float32
            )  # C++: double
        inside = (pos >= 0) & (pos <= last)
        p = np.clip(pos, 0, last)
        low = np.floor(p).astype(np.int64)
        high = np.ceil(p).astype(np.int64)
        return low, high, (p - low).astype(np.float32), inside

    y0, y1, ty, in_y = axis(boxes[:, 0], boxes[:, 2], hi, crop_h)  # [N, crop_h]
    x0, x1, tx, in_x = axis(boxes[:, 1], boxes[:, 3], wi, crop_w)
    out = np.empty((len(boxes), crop_h, crop_w, images.shape[3]), np.float32)
    for n, b in enumerate(np.asarray(box_indices, np.int64)):  # one box at a time: plain takes
        upper, lower = (
            images[b].take(y0[n], axis=0),
            images[b].take(y1[n], axis=0),
        )  # [crop_h, Wi, K]
        txe = tx[n][None, :, None]
        top_left, top_right = upper.take(x0[n], axis=1), upper.take(x1[n], axis=1)
        bottom_left, bottom_right = lower.take(x0[n], axis=1), lower.take(x1[n], axis=1)
        top = top_left + (top_right - top_left) * txe
        bottom = bottom_left + (bottom_right - bottom_left) * txe
        out[n] = top + (bottom - top) * ty[n][:, None, None]
    inside = (in_y[:, :, None] & in_x[:, None, :])[..., None]
    return np.where(inside, out, f32(extrapolation_value)).astype(np.float32)


def _sample_range(start, end, samples, size):
    """Normalized crop_and_resize coordinates (over an axis of ``size`` cells padded by one cell on
    each side) of the first and last of ``samples`` pixel-centre samples of [start, end)."""
    step = (end - start) / f32(samples)
    first = (
        start + f32(0.5) * step + f32(0.5)
    )  # continuous p -> index p - 0.5 -> padded index p + 0.5
    last = end - f32(0.5) * step + f32(0.5)
    return first / (f32(size) + f32(1.0)), last / (f32(size) + f32(1.0))


def _replicate_pad(x: np.ndarray) -> np.ndarray:
    """[B, H, W, K] -> [B, H + 2, W + 2, K], the border pixels repeated once."""
    return np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")


def crop_and_resize(image: np.ndarray, boxes_image_yxyx: np.ndarray, size: int) -> np.ndarray:
    """Crops continuous boxes of one image, each resized affinely to size x size (bilinear).

    Output sample i of a crop [y0, y1) sits at the continuous point p = y0 + (i + 0.5)(y1 - y0) / S,
    i.e. pixel index p - 0.5 (tf.image.resize's half-pixel centres), interpolated between pixel
    centres; inside the image but within half a pixel of its border it reads the border pixel;
    outside the image (p < 0 or p > H: refinement crops grown past the image) it is 0.

    Args: image float [H, W, 3] 0..255; boxes_image_yxyx float32 [N, 4] (may leave the image);
    size S.
    Returns: float32 [N, S, S, 3].
    """
    image = np.asarray(image, np.float32)
    boxes = np.asarray(boxes_image_yxyx, np.float32).reshape(-1, 4)
    h, w = f32(image.shape[0]), f32(image.shape[1])
    y0, x0, y1, x1 = (boxes[:, i] for i in range(4))
    ny0, ny1 = _sample_range(y0, y1, size, h)
    nx0, nx1 = _sample_range(x0, x1, size, w)
    norm = np.stack([ny0, nx0, ny1, nx1], axis=-1)
    out = _tf_crop_and_resize(
        _replicate_pad(image[None]), norm, np.zeros(len(boxes), np.int64), size, size
    )

    def outside(start, end, limit):  # [N, S]: sample i of [start, end) outside [0, limit]
        i = np.arange(size, dtype=np.float32)[None, :]
        pos = start[:, None] + (i + f32(0.5)) * ((end - start) / f32(size))[:, None]
        return (pos < 0) | (pos > limit)

    inside = ~outside(y0, y1, h)[:, :, None] & ~outside(x0, x1, w)[:, None, :]
    return np.where(inside[..., None], out, f32(0)).astype(np.float32)


def paste_max(
    masks: np.ndarray, window_cell_yxyx: np.ndarray, canvas_height: int, canvas_width: int
) -> np.ndarray:
    """Pastes each window's d x d masks onto its extent of a canvas, merged over windows by max.

    Canvas cell (r, c) of window n reads the window's masks bilinearly at the cell centre
    (r + 0.5, c + 0.5) expressed in the window's mask cells (within half a mask cell of the
    window's edge it reads the edge cell); cells whose centre is outside [wy0, wy1) x [wx0, wx1)
    get nothing from it; cells no window covers are 0 (masks are >= 0).

    As the graph does it: each window is resampled over a patch of canvas cells starting at the
    first cell whose centre is inside it (the patch as large as the largest window, plus one).

    Args: masks float32 [N, d, d, K]; window_cell_yxyx float32 [N, 4]; canvas size in cells.
    Returns: float32 [canvas_height, canvas_width, K].
    """
    masks = np.asarray(masks, np.float32)
    windows = np.asarray(window_cell_yxyx, np.float32)
    d = f32(masks.shape[1])
    wy0, wx0, wy1, wx1 = (windows[:, i] for i in range(4))
    r0 = np.ceil(wy0 - f32(0.5))
    c0 = np.ceil(wx0 - f32(0.5))
    ph = int(np.ceil((wy1 - wy0).max())) + 1
    pw = int(np.ceil((wx1 - wx0).max())) + 1
    scale_y, scale_x = d / (wy1 - wy0), d / (wx1 - wx0)
    ny0, ny1 = _sample_range((r0 - wy0) * scale_y, (r0 + f32(ph) - wy0) * scale_y, ph, d)
    nx0, nx1 = _sample_range((c0 - wx0) * scale_x, (c0 + f32(pw) - wx0) * scale_x, pw, d)
    patches = _tf_crop_and_resize(
        _replicate_pad(masks),
        np.stack([ny0, nx0, ny1, nx1], axis=-1),
        np.arange(len(masks)),
        ph,
        pw,
    )  # [N, ph, pw, K]
    rows = r0[:, None] + np.arange(ph, dtype=np.float32)[None, :]  # [N, ph] canvas rows
    cols = c0[:, None] + np.arange(pw, dtype=np.float32)[None, :]
    in_y = (
        (rows + f32(0.5) >= wy0[:, None])
        & (rows + f32(0.5) < wy1[:, None])
        & (rows >= 0)
        & (rows < canvas_height)
    )
    in_x = (
        (cols + f32(0.5) >= wx0[:, None])
        & (cols + f32(0.5) < wx1[:, None])
        & (cols >= 0)
        & (cols < canvas_width)
    )
    canvas = np.zeros((canvas_height, canvas_width, masks.shape[3]), np.float32)
    for n in range(len(masks)):
        ry, rx = rows[n, in_y[n]].astype(np.int64), cols[n, in_x[n]].astype(np.int64)
        if ry.size and rx.size:
            block = patches[n][np.ix_(in_y[n], in_x[n])]
            canvas[np.ix_(ry, rx)] = np.maximum(canvas[np.ix_(ry, rx)], block)
    return canvas


# ----------------------------------------------------------------------------------------------
# Non-maximum suppression (dnet_tf.ops.nms: TensorFlow's greedy NonMaxSuppressionV4 kernel).


def parts_of_better(
    boxes_yxyx: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    valid: np.ndarray,
    containment: float,
    rank_ratio: float = 1.0,
) -> np.ndarray:
    """``dnet_tf.ops.nms.parts_of_better`` in NumPy (the rule ``dnet_tf.core.policy.part_of``,
    float32 as the graph): boxes [..., K, 4], scores, classes and ``valid`` [..., K] (the slots
    holding detections, in any pattern). Returns bool [..., K]."""
    return policy.part_of(
        np.asarray(boxes_yxyx, np.float32),
        np.asarray(scores, np.float32),
        np.asarray(classes),
        np.asarray(valid, bool),
        containment,
        rank_ratio=rank_ratio,
    )


def demote_parts(
    boxes_yxyx: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    num: int,
    containment: float,
    factor: float,
    rank_ratio: float = 1.0,
):
    """One image's ``dnet_tf.ops.nms.demote_parts``: the first ``num`` slots hold detections.

    Parts as ``parts_of_better``; a part's score is multiplied by ``factor`` (ranks from the
    scores before any change); with factor 0 the parts are removed. Returns boxes [K, 4],
    scores [K], classes [K] sorted again by decreasing score (stable), detections first, and the
    number of detections left.
    """
    boxes = np.asarray(boxes_yxyx, np.float32)
    scores = np.asarray(scores, np.float32)
    valid = np.arange(len(scores)) < num
    is_part = parts_of_better(boxes, scores, classes, valid, containment, rank_ratio)
    new_scores = policy.demoted_scores(scores, is_part, f32(factor))
    kept = np.arange(num)
    if factor == 0:
        kept = kept[~is_part[:num]]
    rest = np.setdiff1d(np.arange(len(scores)), kept)
    order = np.concatenate([kept[np.argsort(-new_scores[kept], kind="stable")], rest])
    return boxes[order], new_scores[order], np.asarray(classes)[order], len(kept)


# ----------------------------------------------------------------------------------------------
# Box search (dnet_tf.ops.box_search, dnet_tf.ops.integral).


class SearchResult(NamedTuple):
    """Best boxes per channel of ``search_boxes``; M = max_candidates, best first.

    boxes_cell_yxyx float32 [K, M, 4] (zeros when invalid); scores float64 [K, M] Eq. (3) (-inf
    when invalid); coverage float64 [K, M] Eq. (2) on the full mask (0 when invalid); valid bool
    [K, M].
    """

    boxes_cell_yxyx: np.ndarray
    scores: np.ndarray
    coverage: np.ndarray
    valid: np.ndarray


def _integral(planes: np.ndarray) -> np.ndarray:
    """[H, W, K] -> float64 [H+1, W+1, K], I[y, x] = sum of planes[:y, :x]."""
    out = np.zeros((planes.shape[0] + 1, planes.shape[1] + 1, planes.shape[2]), np.float64)
    out[1:, 1:] = np.cumsum(np.cumsum(planes, axis=0, dtype=np.float64), axis=1)
    return out


def _take(values: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    """np.take, as a strided view when the indices are an arithmetic progression (the search's
    corner rows and columns are), which saves the copy."""
    if index.size >= 2:
        step = int(index[1] - index[0])
        if step >= 1 and np.array_equal(index, index[0] + step * np.arange(index.size)):
            sl = [slice(None)] * values.ndim
            sl[axis] = slice(int(index[0]), int(index[-1]) + 1, step)
            return values[tuple(sl)]
    return np.take(values, index, axis=axis)


def _interp_axis(values: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``values`` along ``axis`` at coordinates in [0, size - 1]."""
    coords = np.asarray(coords, np.float64)
    lower = np.floor(coords).astype(np.int64)
    frac = coords - lower
    if not frac.any():  # whole cells: a plain lookup (the common case)
        return _take(values, lower, axis)
    lower = np.minimum(lower, values.shape[axis] - 2)
    frac = (coords - lower).reshape([-1 if a == axis else 1 for a in range(values.ndim)])
    return _take(values, lower, axis) * (1.0 - frac) + _take(values, lower + 1, axis) * frac


def _keep_local_maxima(score: np.ndarray) -> np.ndarray:
    """[ny, nx, K] scores on one shape's position grid (-inf: no candidate) -> the same with
    every value below one of its 8 grid neighbours set to -inf (equal neighbours both stay)."""
    ny, nx = score.shape[:2]
    padded = np.pad(score, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    around = np.max(
        [padded[dy : dy + ny, dx : dx + nx] for dy in range(3) for dx in range(3)], axis=0
    )
    return np.where(score >= around, score, -np.inf)


def search_boxes(
    masks: np.ndarray,
    shapes_hw: np.ndarray,
    stride,
    ring_margin: float,
    coverage_threshold: float,
    max_candidates: int,
    local_max: bool = False,
) -> SearchResult:
    """Exhaustive Eq. (3) search of ``dnet_tf.ops.box_search.search_boxes`` (same boxes, same
    rules).

    Every shape (h, w), rounded half up to whole cells and clipped to the grid, is placed with its
    top-left corner at (i s, j s), s = the stride rounded half up (>= 1), wherever it fits. For a
    box bb with halves top, bottom, left, right (mid lines may fall on half cells) and the planes
    M = m_full, V = m_top - m_bottom, L = m_left - m_right:

      coverage = S(bb, M)                                            Eq. (2)
      score    = S(bb, M) - S(ring, M) + S(top, V) - S(bottom, V)
                 + S(left, L) - S(right, L)                          Eq. (3)

    S(b, m) = sum of m over b / area(b). The ring is bb grown by ring_width(h) cells up and down
    and ring_width(w) left and right, clipped to the grid, minus bb (S = 0 for an empty ring).
    Boxes with coverage > coverage_threshold are candidates; the best max_candidates by score are
    returned per channel (ties: shape order, then row, then column). With ``local_max`` a
    candidate must also score at least as high as each of its 8 neighbours of the same shape one
    stride away (neighbours off the grid or below the threshold do not count).

    Args:
      masks: float [H, W, 5, K] cell frame (K independent channels: classes, or crops).
      shapes_hw: float [S, 2] (height, width) in cells; stride: cells; ring_margin: >= 0.
      coverage_threshold: candidates need coverage > this (-1 keeps every box).
      max_candidates: M >= 1; local_max: keep only each shape's local maxima.
    Returns:
      SearchResult with [K, M] fields.
    """
    masks = np.asarray(masks, np.float32)
    if masks.ndim != 4 or masks.shape[2] != NUM_MASK_TYPES:
        raise ValueError(
            f"search_boxes: masks must be [H, W, {NUM_MASK_TYPES}, K], got shape {masks.shape}"
        )
    height, width, _, k = masks.shape
    m = int(max_candidates)
    planes = np.concatenate(
        [
            masks[:, :, FULL],
            masks[:, :, TOP] - masks[:, :, BOTTOM],
            masks[:, :, LEFT] - masks[:, :, RIGHT],
        ],
        axis=-1,
    )  # [H, W, 3K]
    integral = _integral(planes)
    i_m, i_v, i_l = integral[..., :k], integral[..., k : 2 * k], integral[..., 2 * k :]

    shapes_hw = np.asarray(shapes_hw, np.float32)
    sh, sw = (v.astype(np.int64) for v in shape_cells(shapes_hw, height, width))
    gy = ring_width(sh.astype(np.float32), ring_margin).astype(np.int64)
    gx = ring_width(sw.astype(np.float32), ring_margin).astype(np.int64)
    step = int(stride_cells(f32(stride)))

    all_boxes, all_scores, all_cov = [], [], []
    for h, w, ry, rx in zip(sh, sw, gy, gx):
        y0 = np.arange(0, height - h + 1, step)
        x0 = np.arange(0, width - w + 1, step)
        y1, x1 = y0 + h, x0 + w
        ym, xm = y0 + h / 2.0, x0 + w / 2.0  # half cells for odd sides
        area = float(h * w)
        # Differences of the integral across each box's columns, at every row: a box's sum is
        # then the difference of two rows of it. [H+1, nx, K]
        cols_m = _interp_axis(i_m, x1, 1) - _interp_axis(i_m, x0, 1)
        cols_v = _interp_axis(i_v, x1, 1) - _interp_axis(i_v, x0, 1)
        bb = _interp_axis(cols_m, y1, 0) - _interp_axis(cols_m, y0, 0)  # [ny, nx, K]
        coverage = bb / area
        # S(top, V) - S(bottom, V) = [(F(ym) - F(y0)) - (F(y1) - F(ym))] / (area / 2), F the column
        # differences of V; the same across the rows for L.
        top_minus_bottom = (
            2.0 * _interp_axis(cols_v, ym, 0)
            - _interp_axis(cols_v, y0, 0)
            - _interp_axis(cols_v, y1, 0)
        )
        rows_l = _interp_axis(i_l, y1, 0) - _interp_axis(i_l, y0, 0)  # [ny, W+1, K]
        left_minus_right = (
            2.0 * _interp_axis(rows_l, xm, 1)
            - _interp_axis(rows_l, x0, 1)
            - _interp_axis(rows_l, x1, 1)
        )
        halves = (top_minus_bottom + left_minus_right) / (area / 2.0)
        # The ring: the box grown by (ry, rx) cells, clipped to the grid, minus the box.
        oy0, oy1 = np.maximum(y0 - ry, 0), np.minimum(y1 + ry, height)
        ox0, ox1 = np.maximum(x0 - rx, 0), np.minimum(x1 + rx, width)
        cols_outer = _interp_axis(i_m, ox1, 1) - _interp_axis(i_m, ox0, 1)
        outer = _interp_axis(cols_outer, oy1, 0) - _interp_axis(cols_outer, oy0, 0)
        ring_area = ((oy1 - oy0)[:, None] * (ox1 - ox0)[None, :] - area)[..., None].astype(
            np.float64
        )
        ring = np.where(ring_area > 0, (outer - bb) / np.where(ring_area > 0, ring_area, 1.0), 0.0)
        score = coverage - ring + halves
        score = np.where(coverage > coverage_threshold, score, -np.inf)
        if local_max:
            score = _keep_local_maxima(score)
        boxes = np.stack(
            np.broadcast_arrays(y0[:, None], x0[None, :], y1[:, None], x1[None, :]), axis=-1
        )
        all_boxes.append(boxes.reshape(-1, 4))
        all_scores.append(score.reshape(-1, k))
        all_cov.append(coverage.reshape(-1, k))
    boxes = np.concatenate(all_boxes).astype(np.float32)  # [P, 4]
    scores = np.concatenate(all_scores)  # [P, K]
    cov = np.concatenate(all_cov)
    if len(boxes) < m:  # fewer positions than candidates wanted: pad with invalid ones
        pad = m - len(boxes)
        boxes = np.concatenate([boxes, np.zeros((pad, 4), np.float32)])
        scores = np.concatenate([scores, np.full((pad, k), -np.inf)])
        cov = np.concatenate([cov, np.zeros((pad, k))])
    idx = top_k(scores.T, m)  # [K, M]
    best = np.take_along_axis(scores.T, idx, axis=1)
    valid = best > -np.inf
    return SearchResult(
        boxes_cell_yxyx=np.where(valid[..., None], boxes[idx], 0.0).astype(np.float32),
        scores=best,
        coverage=np.where(valid, np.take_along_axis(cov.T, idx, axis=1), 0.0),
        valid=valid,
    )


def _point_values(integral: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """F(y[n], x[n]) for points inside the grid: exact bilinear interpolation -> [N, K]."""
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    r0 = np.clip(np.floor(y), 0, h - 1).astype(np.int64)
    c0 = np.clip(np.floor(x), 0, w - 1).astype(np.int64)
    ty, tx = (y - r0)[:, None], (x - c0)[:, None]
    top = integral[r0, c0] * (1.0 - tx) + integral[r0, c0 + 1] * tx
    bottom = integral[r0 + 1, c0] * (1.0 - tx) + integral[r0 + 1, c0 + 1] * tx
    return top * (1.0 - ty) + bottom * ty


def box_sums(integral: np.ndarray, boxes_cell_yxyx: np.ndarray) -> np.ndarray:
    """Sums of a piecewise-constant mask over boxes [N, 4] (fractional corners exact; boxes
    clipped to the grid, inverted ones empty). integral [H+1, W+1, K] -> float64 [N, K]."""
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    b = np.asarray(boxes_cell_yxyx, np.float64).reshape(-1, 4)
    y0, x0 = np.clip(b[:, 0], 0, h), np.clip(b[:, 1], 0, w)
    y1, x1 = np.maximum(np.clip(b[:, 2], 0, h), y0), np.maximum(np.clip(b[:, 3], 0, w), x0)
    return (
        _point_values(integral, y1, x1)
        - _point_values(integral, y1, x0)
        - _point_values(integral, y0, x1)
        + _point_values(integral, y0, x0)
    )


def eq3_scores(masks: np.ndarray, boxes_cell_yxyx: np.ndarray, ring_margin: float):
    """Eq. (3) and Eq. (2) of explicit boxes on one canvas (``box_search.eq3_scores``).

    Each of the five parts (bb, top, bottom, left, right halves) is read on each mask type:
    S(part, m) = sum of m over the part (clipped to the grid) / the part's own area. The ring is
    bb grown by ring_width(h), ring_width(w) cells, clipped to the grid, minus bb.

    Args: masks float [H, W, 5, C]; boxes_cell_yxyx float [N, 4]; ring_margin >= 0.
    Returns: (eq3 float64 [N, C], coverage float64 [N, C]).
    """
    masks = np.asarray(masks, np.float32)
    height, width, _, c = masks.shape
    integral = _integral(masks.reshape(height, width, NUM_MASK_TYPES * c))
    b = np.asarray(boxes_cell_yxyx, np.float32).reshape(-1, 4)
    ymid, xmid = (b[:, 0] + b[:, 2]) / f32(2), (b[:, 1] + b[:, 3]) / f32(2)
    parts = [
        b,
        np.stack([b[:, 0], b[:, 1], ymid, b[:, 3]], -1),
        np.stack([ymid, b[:, 1], b[:, 2], b[:, 3]], -1),
        np.stack([b[:, 0], b[:, 1], b[:, 2], xmid], -1),
        np.stack([b[:, 0], xmid, b[:, 2], b[:, 3]], -1),
    ]

    def coverage(part):  # [N, 5, C]: S(part, each mask type)
        area = np.maximum(part[:, 2] - part[:, 0], 0.0).astype(np.float64) * np.maximum(
            part[:, 3] - part[:, 1], 0.0
        ).astype(np.float64)
        sums = box_sums(integral, part).reshape(-1, NUM_MASK_TYPES, c)
        return np.where(
            area[:, None, None] > 0, sums / np.where(area > 0, area, 1.0)[:, None, None], 0.0
        )

    cov = [coverage(p) for p in parts]  # indexed by part (FULL, TOP, BOTTOM, LEFT, RIGHT)
    full_integral = integral[..., FULL * c : (FULL + 1) * c]
    gy = ring_width(np.maximum(b[:, 2] - b[:, 0], f32(0)), ring_margin)
    gx = ring_width(np.maximum(b[:, 3] - b[:, 1], f32(0)), ring_margin)
    outer = np.stack([b[:, 0] - gy, b[:, 1] - gx, b[:, 2] + gy, b[:, 3] + gx], -1)

    def clipped_area(x):
        hh = np.clip(x[:, 2], 0, height) - np.clip(x[:, 0], 0, height)
        ww = np.clip(x[:, 3], 0, width) - np.clip(x[:, 1], 0, width)
        return np.maximum(hh, 0.0).astype(np.float64) * np.maximum(ww, 0.0).astype(np.float64)

    ring_area = clipped_area(outer) - clipped_area(b)
    ring_sum = box_sums(full_integral, outer) - box_sums(full_integral, b)
    ring = np.where(
        ring_area[:, None] > 0, ring_sum / np.where(ring_area > 0, ring_area, 1.0)[:, None], 0.0
    )

    def s(part, mask_type):
        return cov[part][:, mask_type]

    eq3 = search_rules.eq3(s, ring)
    return eq3, s(FULL, FULL)


def outside_half_terms(
    masks: np.ndarray, boxes_cell_yxyx: np.ndarray, ring_margin: float, floor: float = 0.0
):
    """Sum over h of S(out(h), m_h) of ``box_search.outside_half_terms``, in [0, 4].

    out(top) is the strip ring_width(h) cells tall just above the box, as wide as the box;
    out(bottom) the strip below, out(left) / out(right) ring_width(w) wide beside it. S is the
    mask's mean over the strip's part inside the grid (0 when none of it is); with floor f > 0
    each side counts max(0, S - f) / (1 - f).

    Args: masks float [H, W, 5, C]; boxes_cell_yxyx float [N, 4]; ring_margin >= 0;
      floor in [0, 1).
    Returns: float64 [N, C].
    """
    masks = np.asarray(masks, np.float32)
    height, width, _, c = masks.shape
    b = np.asarray(boxes_cell_yxyx, np.float32).reshape(-1, 4)
    gy = ring_width(np.maximum(b[:, 2] - b[:, 0], f32(0)), ring_margin)
    gx = ring_width(np.maximum(b[:, 3] - b[:, 1], f32(0)), ring_margin)
    strips = {
        TOP: np.stack([b[:, 0] - gy, b[:, 1], b[:, 0], b[:, 3]], -1),
        BOTTOM: np.stack([b[:, 2], b[:, 1], b[:, 2] + gy, b[:, 3]], -1),
        LEFT: np.stack([b[:, 0], b[:, 1] - gx, b[:, 2], b[:, 1]], -1),
        RIGHT: np.stack([b[:, 0], b[:, 3], b[:, 2], b[:, 3] + gx], -1),
    }
    total = np.zeros((len(b), c))
    for mask_type, strip in strips.items():
        hh = np.clip(strip[:, 2], 0, height) - np.clip(strip[:, 0], 0, height)
        ww = np.clip(strip[:, 3], 0, width) - np.clip(strip[:, 1], 0, width)
        area = np.maximum(hh, 0.0).astype(np.float64) * np.maximum(ww, 0.0).astype(np.float64)
        sums = box_sums(_integral(masks[:, :, mask_type]), strip)
        mean = np.where(area[:, None] > 0, sums / np.where(area > 0, area, 1.0)[:, None], 0.0)
        total += np.maximum(mean - floor, 0.0) / (1.0 - floor) if floor > 0 else mean
    return total

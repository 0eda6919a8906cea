"""Greedy non-maximum suppression in NumPy, with TensorFlow's tie and threshold rules.

The rule, stated once for the whole project (the graph runs TensorFlow's NonMaxSuppressionV4
kernel, which follows it; ``tests/test_tflite_edge_ops.py`` pins the two together):

  * boxes are visited by decreasing score; equal scores in increasing index order (the order of
    ``tf.math.top_k``);
  * boxes with score <= score_threshold are dropped;
  * a box is suppressed by an already kept box when their IoU is strictly greater than
    iou_threshold (IoU exactly at the threshold survives); IoU is computed in float32 as the
    kernel does, 0 when either box has no area;
  * at most max_output boxes are kept, best first.

Used by the edge pipeline, the sliding-window baseline and the evaluation's tools, so every row
of Table 1 suppresses with the same meaning.
"""

from __future__ import annotations

import numpy as np

f32 = np.float32


def top_k(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values along the last axis, best first, ties: lower index first.

    The order of ``tf.math.top_k`` (sorted=True). Args: values float [..., N], k <= N.
    Returns: int64 [..., k].
    """
    values = np.asarray(values, np.float64)
    n = values.shape[-1]
    if k >= n or n < 4096:
        return np.argsort(-values, axis=-1, kind="stable")[..., :k]
    # Large rows (the search's positions): partition first, then order the few selected exactly.
    flat = values.reshape(-1, n)
    out = np.empty((len(flat), k), np.int64)
    for r, row in enumerate(flat):
        kth = -np.partition(-row, k - 1)[k - 1]  # the k-th largest value
        above = np.flatnonzero(row > kth)
        ties = np.flatnonzero(row == kth)[: k - len(above)]  # lowest indices first
        chosen = np.concatenate([above, ties])
        out[r] = chosen[np.lexsort((chosen, -row[chosen]))]
    return out.reshape(values.shape[:-1] + (k,))


def kernel_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one box [4] with boxes [M, 4] in float32, as TensorFlow's NMS kernel computes it
    (0 when either box has no area)."""
    box = np.asarray(box, np.float32)
    others = np.asarray(others, np.float32).reshape(-1, 4)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    ih = np.maximum(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), f32(0))
    iw = np.maximum(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), f32(0))
    inter = ih * iw
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / (area + areas - inter)
    return np.where((area > 0) & (areas > 0), iou, f32(0))


def greedy_nms(
    boxes_yxyx: np.ndarray,
    scores: np.ndarray,
    max_output: int,
    iou_threshold: float,
    score_threshold: float = float("-inf"),
) -> np.ndarray:
    """Indices kept by greedy NMS of one set of boxes [N, 4] (ymin <= ymax, xmin <= xmax), best
    first, under the module's rule; score_threshold -inf keeps every box, -inf scores too.

    Returns: int64 [n <= max_output].
    """
    boxes = np.asarray(boxes_yxyx, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    if not np.isfinite(score_threshold):
        scores = np.maximum(scores, np.finfo(np.float32).min)  # as the graph: -inf scores kept too
    alive = scores > f32(score_threshold)
    keep = []
    for i in top_k(np.where(alive, scores, -np.inf), len(scores)):
        if len(keep) >= max_output or not alive[i]:
            break
        if keep and (kernel_iou(boxes[i], boxes[keep]) > f32(iou_threshold)).any():
            continue
        keep.append(int(i))
    return np.asarray(keep, np.int64)


def non_max_suppression(
    boxes_yxyx: np.ndarray,
    scores: np.ndarray,
    max_output: int,
    iou_threshold: float,
    score_threshold: float = float("-inf"),
):
    """``greedy_nms`` per row of a batch, padded to max_output (``dnet_tf.ops.nms`` in NumPy).

    Args: boxes_yxyx float [B, N, 4]; scores [B, N].
    Returns: (indices int64 [B, max_output] into N, best first, padding 0; num_valid int64 [B]).
    """
    boxes_yxyx = np.asarray(boxes_yxyx, np.float32)
    scores = np.asarray(scores, np.float32)
    idx = np.zeros((len(scores), max_output), np.int64)
    num = np.zeros(len(scores), np.int64)
    for b in range(len(scores)):
        keep = greedy_nms(boxes_yxyx[b], scores[b], max_output, iou_threshold, score_threshold)
        idx[b, : len(keep)] = keep
        num[b] = len(keep)
    return idx, num


def class_nms(
    boxes_yxyx: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    max_total: int,
    iou_threshold: float,
    score_threshold: float,
    with_indices: bool = False,
):
    """Per-class NMS of one image (classes never suppress each other), best first, padded.

    Class c is moved to its own region of the plane (shifted by c times the span of all boxes
    plus one along both axes), then one class-agnostic NMS runs, as in the graph.

    Args: boxes_yxyx float32 [N, 4] (any frame); scores [N] (<= score_threshold: dropped);
      classes int [N] 0-based; max_total K.
    Returns: boxes float32 [K, 4], scores float32 [K], classes int64 [K], num int (padding zeroed);
      with ``with_indices`` also int64 [K], the index in N of each kept detection (padding 0).
    """
    boxes = np.asarray(boxes_yxyx, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32)
    classes = np.asarray(classes, np.int64)
    out_boxes = np.zeros((max_total, 4), np.float32)
    out_scores = np.zeros(max_total, np.float32)
    out_classes = np.zeros(max_total, np.int64)
    out_indices = np.zeros(max_total, np.int64)
    n = 0
    if len(boxes):
        lo = boxes.min()
        span = boxes.max() - lo + f32(1.0)
        shifted = boxes - lo + classes.astype(np.float32)[:, None] * span
        keep = greedy_nms(shifted, scores, max_total, iou_threshold, score_threshold)
        n = len(keep)
        out_boxes[:n], out_scores[:n], out_classes[:n] = boxes[keep], scores[keep], classes[keep]
        out_indices[:n] = keep
    if with_indices:
        return out_boxes, out_scores, out_classes, n, out_indices
    return out_boxes, out_scores, out_classes, n

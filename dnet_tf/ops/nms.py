"""Greedy non-maximum suppression in the yxyx convention, batched, padded to a fixed size.

Semantics: the rule of ``dnet_tf.core.nms`` (TensorFlow's kernel's): boxes visited by decreasing
score, suppressed by a kept box at IoU strictly above ``iou_threshold``, dropped at score <=
``score_threshold``.

Built on TensorFlow's greedy NMS kernel (NonMaxSuppressionV4, padded output), mapped over the
batch. ``tf.image.non_max_suppression_padded`` batches natively but pads every row to 512-box
tiles and iterates on 512 x 512 IoU matrices: on CPU it took 0.8 s for 60 rows of 100 boxes
(3 scales x 20 classes of one image) where the mapped kernel takes 3 ms.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from dnet_tf.core import policy
from dnet_tf.ops.xp import TENSORFLOW

# Static Python only (no loops or branches over tensor values): autograph conversion would
# only cost tracing time.
_NOT_CONVERTED = tf.autograph.experimental.do_not_convert


@_NOT_CONVERTED
def non_max_suppression(
    boxes_yxyx,
    scores,
    max_output: int,
    iou_threshold: float,
    score_threshold: float = float("-inf"),
):
    """Greedy NMS over the last axis, batched over leading dimensions, padded to ``max_output``.

    Args:
      boxes_yxyx: float32 [..., N, 4], any frame.
      scores: float32 [..., N].
      max_output: K (Python int >= 1), boxes kept at most per batch entry.
      iou_threshold: a box is suppressed by a better kept one with IoU > this.
      score_threshold: boxes with score <= this are dropped (-inf keeps all, -inf scores too).
    Returns:
      indices int32 [..., K] into N, best first; slots >= num_valid hold 0 (mask them);
      num_valid int32 [...].
    """
    if int(max_output) < 1:
        raise ValueError(f"non_max_suppression: max_output must be >= 1, got {max_output}")
    k = int(max_output)
    boxes = tf.convert_to_tensor(boxes_yxyx, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    if boxes.shape.rank is None or boxes.shape.rank < 2:
        raise ValueError(f"non_max_suppression: boxes must be [..., N, 4], got shape {boxes.shape}")
    batch_shape = tf.shape(boxes)[:-2]
    n = tf.shape(boxes)[-2]
    boxes = tf.reshape(boxes, [-1, n, 4])
    scores = tf.reshape(scores, [-1, n])
    if not np.isfinite(score_threshold):
        # The kernel keeps score > threshold: lift -inf scores so that "no threshold" keeps all.
        scores = tf.maximum(scores, float(np.finfo(np.float32).min))
    iou = tf.constant(iou_threshold, tf.float32)
    threshold = tf.constant(score_threshold, tf.float32)

    def one(args):
        row_boxes, row_scores = args
        idx, num = tf.raw_ops.NonMaxSuppressionV4(
            boxes=row_boxes,
            scores=row_scores,
            max_output_size=k,
            iou_threshold=iou,
            score_threshold=threshold,
            pad_to_max_output_size=True,
        )
        return tf.where(tf.range(k) < num, idx, 0), num

    idx, num = tf.map_fn(
        one,
        (boxes, scores),
        fn_output_signature=(tf.TensorSpec([k], tf.int32), tf.TensorSpec([], tf.int32)),
    )
    return (tf.reshape(idx, tf.concat([batch_shape, [k]], 0)), tf.reshape(num, batch_shape))


@_NOT_CONVERTED
def class_nms(
    boxes_norm_yxyx,
    scores,
    classes,
    max_total: int,
    iou_threshold: float,
    score_threshold: float,
    with_indices: bool = False,
):
    """Per-class NMS (boxes of different classes never suppress each other), best first.

    Each class is moved to its own region of the plane (class c shifted by c times the span of
    all boxes plus one along both axes), then one class-agnostic NMS runs.

    Args:
      boxes_norm_yxyx: float32 [B, N, 4] (normalized yxyx; any frame works).
      scores: float32 [B, N]; entries <= score_threshold are dropped.
      classes: int32 [B, N], class ids >= 0.
      max_total: K (Python int), detections kept at most per image.
      iou_threshold: suppression at IoU > this, within a class.
      score_threshold: float.
      with_indices: also return where each kept detection came from.
    Returns:
      (boxes float32 [B, K, 4], scores float32 [B, K], classes int32 [B, K], num int32 [B]),
      sorted by decreasing score; slots >= num are zero. With ``with_indices``, a fifth:
      int32 [B, K], the index in N of each kept detection (0 in slots >= num).
    """
    boxes = tf.convert_to_tensor(boxes_norm_yxyx, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    classes = tf.convert_to_tensor(classes, tf.int32)
    k = int(max_total)
    lo = tf.reduce_min(boxes, axis=[1, 2], keepdims=True)
    span = tf.reduce_max(boxes, axis=[1, 2], keepdims=True) - lo + 1.0
    shifted = boxes - lo + tf.cast(classes, tf.float32)[..., None] * span
    idx, num = non_max_suppression(shifted, scores, k, iou_threshold, score_threshold)
    valid = tf.range(k)[None, :] < num[:, None]
    out_boxes = tf.where(valid[..., None], tf.gather(boxes, idx, batch_dims=1), 0.0)
    out_scores = tf.where(valid, tf.gather(scores, idx, batch_dims=1), 0.0)
    out_classes = tf.where(valid, tf.gather(classes, idx, batch_dims=1), 0)
    if with_indices:
        return out_boxes, out_scores, out_classes, num, tf.where(valid, idx, 0)
    return out_boxes, out_scores, out_classes, num


@_NOT_CONVERTED
def parts_of_better(boxes_yxyx, scores, classes, valid, containment: float, rank_ratio=1.0):
    """Which detections are parts of a larger, better detection of their class.

    The rule is ``dnet_tf.core.policy.part_of``, on tensors.

    Args:
      boxes_yxyx: float32 [..., K, 4], any frame with the same scale on both axes' ratios.
      scores: float32 [..., K]; classes: int32 [..., K]; valid: bool [..., K].
      containment: (0, 1]; rank_ratio: (0, 1] (``policy.part_of``).
    Returns:
      bool [..., K], False where not valid.
    """
    boxes = tf.convert_to_tensor(boxes_yxyx, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    classes = tf.convert_to_tensor(classes, tf.int32)
    valid = tf.convert_to_tensor(valid, tf.bool)
    return policy.part_of(boxes, scores, classes, valid, containment, TENSORFLOW, rank_ratio)


@_NOT_CONVERTED
def demote_parts(
    boxes_yxyx, scores, classes, valid, containment: float, factor: float, rank_ratio=1.0
):
    """Lowers the score of detections that are parts of a larger, better detection of their class.

    Parts as ``parts_of_better``; a part's score is multiplied by ``factor``
    (``dnet_tf.core.policy.demoted_scores``); the detections are then sorted again. With
    factor 0 the parts are removed: their slots are no longer valid.

    Args:
      boxes_yxyx: float32 [B, K, 4], any frame with the same scale on both axes' ratios
        (image pixels or normalized: containment is a ratio of areas).
      scores: float32 [B, K].
      classes: int32 [B, K].
      valid: bool [B, K], the slots that hold detections.
      containment: (0, 1].
      factor: [0, 1]; 1 changes nothing, 0 removes the parts.
      rank_ratio: (0, 1] (``policy.part_of``).
    Returns:
      (boxes [B, K, 4], scores [B, K], classes [B, K], valid [B, K]) sorted by decreasing score,
      valid slots first.
    """
    boxes = tf.convert_to_tensor(boxes_yxyx, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    classes = tf.convert_to_tensor(classes, tf.int32)
    valid = tf.convert_to_tensor(valid, tf.bool)
    is_part = parts_of_better(boxes, scores, classes, valid, containment, rank_ratio)
    new_scores = policy.demoted_scores(scores, is_part, factor, TENSORFLOW)
    if factor == 0:
        valid = valid & ~is_part
    order = tf.argsort(
        tf.where(valid, new_scores, -np.inf), axis=1, direction="DESCENDING", stable=True
    )

    def take(t):
        return tf.gather(t, order, batch_dims=1)

    return take(boxes), take(new_scores), take(classes), take(valid)

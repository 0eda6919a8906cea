"""Greedy non-maximum suppression in the yxyx convention, batched, padded to a fixed size.

Semantics (those of ``tf.image.non_max_suppression``): boxes are visited by decreasing score; a
box is kept unless a kept box overlaps it with Jaccard (IoU) strictly above ``iou_threshold``;
boxes with score <= ``score_threshold`` are dropped.

Built on ``tf.image.non_max_suppression_padded`` (batched, fixed-size output), with three of its
quirks handled here: it suppresses at IoU >= threshold (we pass the next float above the
threshold, so suppression is at IoU > threshold); it recognises kept boxes by a positive
coordinate (we translate all boxes to positive coordinates first, which leaves every IoU
unchanged); it needs at least ``max_output`` boxes (we pad with dropped ones).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Static Python only (no loops or branches over tensor values): autograph conversion would
# only cost tracing time.
_NOT_CONVERTED = tf.autograph.experimental.do_not_convert


@_NOT_CONVERTED
def non_max_suppression(boxes_yxyx, scores, max_output: int, iou_threshold: float,
                        score_threshold: float = float("-inf")):
    """Greedy NMS over the last axis, batched over leading dimensions, padded to ``max_output``.

    Args:
      boxes_yxyx: float32 [..., N, 4], any frame, ymin <= ymax and xmin <= xmax.
      scores: float32 [..., N].
      max_output: K (Python int >= 1), boxes kept at most per batch entry.
      iou_threshold: a box is suppressed by a better kept one with IoU > this.
      score_threshold: boxes with score <= this are dropped (-inf keeps all).
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
    # All coordinates >= 1 (IoU is translation invariant); padding boxes with the lowest score.
    boxes = boxes - tf.reduce_min(boxes, axis=[1, 2], keepdims=True) + 1.0
    pad = tf.maximum(k - n, 0)
    boxes = tf.pad(boxes, [[0, 0], [0, pad], [0, 0]], constant_values=1.0)
    if np.isfinite(score_threshold):
        drop = float(score_threshold)  # padding is dropped: its score is not above the threshold
    else:
        # No threshold: padding must sort after every real box, -inf scores included.
        scores = tf.maximum(scores, -3.0e38)
        drop = float(np.finfo(np.float32).min)
    scores = tf.pad(scores, [[0, 0], [0, pad]], constant_values=drop)
    # The op suppresses at IoU >= its threshold: the next float32 above ours gives IoU > ours.
    strict = float(np.nextafter(np.float32(iou_threshold), np.float32(np.inf)))
    threshold = score_threshold if np.isfinite(score_threshold) else float("-inf")
    idx, num = tf.image.non_max_suppression_padded(
        boxes, scores, max_output_size=k, iou_threshold=strict, score_threshold=threshold,
        pad_to_max_output_size=True, sorted_input=False, canonicalized_coordinates=True)
    # Padding boxes sort after every real box, so the real selections are a prefix.
    num = tf.reduce_sum(tf.cast((tf.range(k) < num[:, None]) & (idx < n), tf.int32), axis=1)
    idx = tf.where(tf.range(k) < num[:, None], idx, 0)
    return (tf.reshape(idx, tf.concat([batch_shape, [k]], 0)),
            tf.reshape(tf.cast(num, tf.int32), batch_shape))


@_NOT_CONVERTED
def class_nms(boxes_norm_yxyx, scores, classes, max_total: int, iou_threshold: float,
              score_threshold: float):
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
    Returns:
      (boxes float32 [B, K, 4], scores float32 [B, K], classes int32 [B, K], num int32 [B]),
      sorted by decreasing score; slots >= num are zero.
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
    return out_boxes, out_scores, out_classes, num

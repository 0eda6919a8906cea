"""Box utilities in the continuous yxyx convention: [ymin, xmin, ymax, xmax].

Pixel (r, c) covers [r, r+1) x [c, c+1), so a box [0, 0, H, W] covers an H x W image exactly.
Pascal VOC XML is 1-based and inclusive: continuous xmin = xmin_voc - 1, xmax = xmax_voc (same for
y), written once in ``dnet_tf.core.boxes``.

The arithmetic of area, intersection, IoU, the frame changes and the VOC conversion is
``dnet_tf.core.boxes``' (one definition for the graph and NumPy); these are its TensorFlow entry
points, which convert their inputs to tensors.
"""

from __future__ import annotations

import tensorflow as tf

from dnet_tf.core import boxes as core_boxes
from dnet_tf.ops.xp import TENSORFLOW


def area(boxes_yxyx: tf.Tensor) -> tf.Tensor:
    """Area of boxes float [..., 4] (any frame) -> [...]; inverted boxes count as 0."""
    return core_boxes.area(tf.convert_to_tensor(boxes_yxyx), TENSORFLOW)


def intersection(a_yxyx: tf.Tensor, b_yxyx: tf.Tensor) -> tf.Tensor:
    """Pairwise intersection areas [..., N, M] of boxes [..., N, 4] and [..., M, 4], batched over
    any leading dimensions (same frame)."""
    a_yxyx = tf.convert_to_tensor(a_yxyx)
    b_yxyx = tf.convert_to_tensor(b_yxyx, dtype=a_yxyx.dtype)
    return core_boxes.intersection(a_yxyx, b_yxyx, TENSORFLOW)


def iou(a_yxyx: tf.Tensor, b_yxyx: tf.Tensor) -> tf.Tensor:
    """Pairwise Jaccard similarity [N, M] in [0, 1] of boxes [N, 4] and [M, 4] (same frame); 0
    where the union is empty."""
    a_yxyx = tf.convert_to_tensor(a_yxyx)
    b_yxyx = tf.convert_to_tensor(b_yxyx, dtype=a_yxyx.dtype)
    return core_boxes.iou(a_yxyx, b_yxyx, TENSORFLOW)


def clip(boxes_yxyx: tf.Tensor, height, width) -> tf.Tensor:
    """Clips boxes to [0, height] x [0, width] of their frame.

    Args:
      boxes_yxyx: float [..., 4]; height, width: scalars (float or int) of the frame.
    Returns:
      float [..., 4], same frame.
    """
    boxes_yxyx = tf.convert_to_tensor(boxes_yxyx)
    h = tf.cast(height, boxes_yxyx.dtype)
    w = tf.cast(width, boxes_yxyx.dtype)
    return core_boxes.clip(boxes_yxyx, h, w, TENSORFLOW)


def scale_about_center(boxes_yxyx: tf.Tensor, factor) -> tf.Tensor:
    """Grows (factor > 1) or shrinks boxes [..., 4] about their centres; height and width both
    x factor (scalar or broadcastable to [...]). Same frame out."""
    boxes_yxyx = tf.convert_to_tensor(boxes_yxyx)
    factor = tf.cast(factor, boxes_yxyx.dtype)
    return core_boxes.scale_about_center(boxes_yxyx, factor, TENSORFLOW)


def voc_to_yxyx(voc_xyxy: tf.Tensor) -> tf.Tensor:
    """Pascal VOC 1-based inclusive [xmin, ymin, xmax, ymax] [..., 4] -> float32 image_yxyx."""
    voc = tf.convert_to_tensor(voc_xyxy, dtype=tf.float32)
    return core_boxes.voc_to_yxyx(voc, TENSORFLOW)


def yxyx_to_voc(boxes_yxyx: tf.Tensor) -> tf.Tensor:
    """Inverse of ``voc_to_yxyx``: continuous image_yxyx -> VOC 1-based [xmin, ymin, xmax, ymax]."""
    boxes = tf.convert_to_tensor(boxes_yxyx, dtype=tf.float32)
    return core_boxes.yxyx_to_voc(boxes, TENSORFLOW)


def normalize(boxes_yxyx: tf.Tensor, height, width) -> tf.Tensor:
    """Absolute yxyx of an H x W frame -> norm_yxyx in [0, 1] of that frame."""
    boxes_yxyx = tf.convert_to_tensor(boxes_yxyx)
    h = tf.cast(height, boxes_yxyx.dtype)
    w = tf.cast(width, boxes_yxyx.dtype)
    return boxes_yxyx / tf.stack([h, w, h, w])


def denormalize(norm_yxyx: tf.Tensor, height, width) -> tf.Tensor:
    """norm_yxyx of an H x W frame -> absolute yxyx of that frame."""
    norm_yxyx = tf.convert_to_tensor(norm_yxyx)
    h = tf.cast(height, norm_yxyx.dtype)
    w = tf.cast(width, norm_yxyx.dtype)
    return norm_yxyx * tf.stack([h, w, h, w])


def to_frame(boxes_yxyx: tf.Tensor, frame_yxyx: tf.Tensor, frame_height, frame_width) -> tf.Tensor:
    """Maps boxes into the frame of a sub-rectangle resized to frame_height x frame_width.

    E.g. image_yxyx -> cell_yxyx of a window: ``to_frame(b, window_image_yxyx, d, d)``.
    Args:
      boxes_yxyx: float [..., 4] in the outer frame.
      frame_yxyx: float [..., 4] (broadcastable) the sub-rectangle in the outer frame.
      frame_height, frame_width: scalars, the size of the inner frame.
    Returns:
      float [..., 4] in the inner frame.
    """
    boxes_yxyx = tf.convert_to_tensor(boxes_yxyx)
    frame_yxyx = tf.cast(frame_yxyx, boxes_yxyx.dtype)
    fy, fx = frame_yxyx[..., 0:1], frame_yxyx[..., 1:2]
    sy = tf.cast(frame_height, boxes_yxyx.dtype) / (frame_yxyx[..., 2:3] - fy)
    sx = tf.cast(frame_width, boxes_yxyx.dtype) / (frame_yxyx[..., 3:4] - fx)
    origin = tf.concat([fy, fx, fy, fx], axis=-1)
    scale = tf.concat([sy, sx, sy, sx], axis=-1)
    return (boxes_yxyx - origin) * scale


def from_frame(
    boxes_yxyx: tf.Tensor, frame_yxyx: tf.Tensor, frame_height, frame_width
) -> tf.Tensor:
    """Inverse of ``to_frame``: boxes in a sub-rectangle's resized frame -> the outer frame."""
    boxes_yxyx = tf.convert_to_tensor(boxes_yxyx)
    frame_yxyx = tf.cast(frame_yxyx, boxes_yxyx.dtype)
    h = tf.cast(frame_height, boxes_yxyx.dtype)
    w = tf.cast(frame_width, boxes_yxyx.dtype)
    return core_boxes.from_frame(boxes_yxyx, frame_yxyx, h, w, TENSORFLOW)

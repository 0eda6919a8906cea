"""Box utilities in the continuous yxyx convention: [ymin, xmin, ymax, xmax].

Pixel (r, c) covers [r, r+1) x [c, c+1), so a box [0, 0, H, W] covers an H x W image exactly.
Pascal VOC XML is 1-based and inclusive: continuous xmin = xmin_voc - 1, xmax = xmax_voc (same for
y). ``voc_to_yxyx`` / ``yxyx_to_voc`` are the only places that conversion is written.
"""

from __future__ import annotations

import tensorflow as tf


def area(boxes_yxyx: tf.Tensor) -> tf.Tensor:
    """Area of boxes; inverted boxes count as 0.

    Args:
      boxes_yxyx: float [..., 4], any frame.
    Returns:
      float [...], in squared units of that frame.
    """
    boxes_yxyx = tf.convert_to_tensor(boxes_yxyx)
    ymin, xmin, ymax, xmax = tf.unstack(boxes_yxyx, axis=-1)
    return tf.maximum(ymax - ymin, 0.0) * tf.maximum(xmax - xmin, 0.0)


def intersection(a_yxyx: tf.Tensor, b_yxyx: tf.Tensor) -> tf.Tensor:
    """Pairwise intersection areas, batched over any leading dimensions.

    Args:
      a_yxyx: float [..., N, 4]; b_yxyx: float [..., M, 4], same frame and leading dimensions.
    Returns:
      float [..., N, M].
    """
    a_yxyx = tf.convert_to_tensor(a_yxyx)
    b_yxyx = tf.convert_to_tensor(b_yxyx, dtype=a_yxyx.dtype)
    a = a_yxyx[..., :, None, :]
    b = b_yxyx[..., None, :, :]
    h = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
    w = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
    return h * w


def iou(a_yxyx: tf.Tensor, b_yxyx: tf.Tensor) -> tf.Tensor:
    """Pairwise Jaccard similarity (intersection over union); 0 where the union is empty.

    Args:
      a_yxyx: float [N, 4]; b_yxyx: float [M, 4], same frame.
    Returns:
      float [N, M] in [0, 1].
    """
    inter = intersection(a_yxyx, b_yxyx)
    union = area(a_yxyx)[:, None] + area(b_yxyx)[None, :] - inter
    return tf.math.divide_no_nan(inter, union)


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
    hi = tf.stack([h, w, h, w])
    return tf.clip_by_value(boxes_yxyx, tf.zeros_like(hi), hi)


def scale_about_center(boxes_yxyx: tf.Tensor, factor) -> tf.Tensor:
    """Grows (factor > 1) or shrinks boxes about their centres; height and width both x factor.

    Args:
      boxes_yxyx: float [..., 4]; factor: scalar or broadcastable to [...].
    Returns:
      float [..., 4], same frame.
    """
    boxes_yxyx = tf.convert_to_tensor(boxes_yxyx)
    factor = tf.cast(factor, boxes_yxyx.dtype)
    ymin, xmin, ymax, xmax = tf.unstack(boxes_yxyx, axis=-1)
    cy, cx = (ymin + ymax) / 2.0, (xmin + xmax) / 2.0
    hh, hw = (ymax - ymin) * factor / 2.0, (xmax - xmin) * factor / 2.0
    return tf.stack([cy - hh, cx - hw, cy + hh, cx + hw], axis=-1)


def voc_to_yxyx(voc_xyxy: tf.Tensor) -> tf.Tensor:
    """Pascal VOC 1-based inclusive [xmin, ymin, xmax, ymax] -> continuous image_yxyx.

    A VOC box (1, 1, W, H) covers the whole W x H image and becomes [0, 0, H, W].
    Args:
      voc_xyxy: float [..., 4] as written in VOC XML.
    Returns:
      float [..., 4] image_yxyx.
    """
    voc_xyxy = tf.convert_to_tensor(voc_xyxy, dtype=tf.float32)
    xmin, ymin, xmax, ymax = tf.unstack(voc_xyxy, axis=-1)
    return tf.stack([ymin - 1.0, xmin - 1.0, ymax, xmax], axis=-1)


def yxyx_to_voc(boxes_yxyx: tf.Tensor) -> tf.Tensor:
    """Inverse of ``voc_to_yxyx``: continuous image_yxyx -> VOC 1-based [xmin, ymin, xmax, ymax]."""
    boxes_yxyx = tf.convert_to_tensor(boxes_yxyx, dtype=tf.float32)
    ymin, xmin, ymax, xmax = tf.unstack(boxes_yxyx, axis=-1)
    return tf.stack([xmin + 1.0, ymin + 1.0, xmax, ymax], axis=-1)


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
    fy, fx = frame_yxyx[..., 0:1], frame_yxyx[..., 1:2]
    sy = (frame_yxyx[..., 2:3] - fy) / tf.cast(frame_height, boxes_yxyx.dtype)
    sx = (frame_yxyx[..., 3:4] - fx) / tf.cast(frame_width, boxes_yxyx.dtype)
    origin = tf.concat([fy, fx, fy, fx], axis=-1)
    scale = tf.concat([sy, sx, sy, sx], axis=-1)
    return boxes_yxyx * scale + origin

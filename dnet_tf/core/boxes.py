"""Box maths in the continuous yxyx convention, written once over an array namespace.

Boxes are [ymin, xmin, ymax, xmax]; pixel (r, c) covers [r, r+1) x [c, c+1), so [0, 0, H, W]
covers an H x W image exactly. Pascal VOC XML is 1-based and inclusive: continuous
xmin = xmin_voc - 1, xmax = xmax_voc (same for y); ``voc_to_yxyx`` / ``yxyx_to_voc`` are the
only places that conversion is written.

Every function takes ``xp`` (``dnet_tf.core.xp``; NumPy by default) and keeps its inputs'
dtype: the graph's ops (``dnet_tf.ops.boxes``) call them with TensorFlow's namespace on float32
tensors, the edge pipeline with NumPy on float32 arrays, the evaluation on float64 arrays.
"""

from __future__ import annotations

from dnet_tf.core.xp import NUMPY


def area(boxes_yxyx, xp=NUMPY):
    """Areas [...] of boxes [..., 4] (any frame); inverted boxes count as 0."""
    h = xp.maximum(boxes_yxyx[..., 2] - boxes_yxyx[..., 0], 0.0)
    w = xp.maximum(boxes_yxyx[..., 3] - boxes_yxyx[..., 1], 0.0)
    return h * w


def intersection(a_yxyx, b_yxyx, xp=NUMPY):
    """Pairwise intersection areas [..., N, M] of boxes [..., N, 4] and [..., M, 4] (same frame
    and leading dimensions)."""
    a = a_yxyx[..., :, None, :]
    b = b_yxyx[..., None, :, :]
    h = xp.maximum(xp.minimum(a[..., 2], b[..., 2]) - xp.maximum(a[..., 0], b[..., 0]), 0.0)
    w = xp.maximum(xp.minimum(a[..., 3], b[..., 3]) - xp.maximum(a[..., 1], b[..., 1]), 0.0)
    return h * w


def iou(a_yxyx, b_yxyx, xp=NUMPY):
    """Pairwise Jaccard similarity [..., N, M] (intersection over union) of boxes [..., N, 4] and
    [..., M, 4]; 0 where the union is empty. Continuous boxes: no +1 on widths."""
    inter = intersection(a_yxyx, b_yxyx, xp)
    union = area(a_yxyx, xp)[..., :, None] + area(b_yxyx, xp)[..., None, :] - inter
    safe = xp.where(union > 0, union, xp.ones_like(union))
    return xp.where(union > 0, inter / safe, xp.zeros_like(union))


def clip(boxes_yxyx, height, width, xp=NUMPY):
    """Boxes [..., 4] cut to [0, height] x [0, width] of their frame; height, width: scalars or
    broadcastable to [...] (one frame per box), of the boxes' dtype. Same frame out."""
    ymin, xmin, ymax, xmax = (boxes_yxyx[..., i] for i in range(4))
    return xp.stack(
        [
            xp.minimum(xp.maximum(ymin, 0.0), height),
            xp.minimum(xp.maximum(xmin, 0.0), width),
            xp.minimum(xp.maximum(ymax, 0.0), height),
            xp.minimum(xp.maximum(xmax, 0.0), width),
        ],
        axis=-1,
    )


def scale_about_center(boxes_yxyx, factor, xp=NUMPY):
    """Grows (factor > 1) or shrinks boxes [..., 4] about their centres; height and width both
    x factor (a scalar or broadcastable to [...]). Same frame out."""
    ymin, xmin, ymax, xmax = (boxes_yxyx[..., i] for i in range(4))
    cy, cx = (ymin + ymax) / 2.0, (xmin + xmax) / 2.0
    hh, hw = (ymax - ymin) * factor / 2.0, (xmax - xmin) * factor / 2.0
    return xp.stack([cy - hh, cx - hw, cy + hh, cx + hw], axis=-1)


def from_frame(boxes_yxyx, frame_yxyx, frame_height, frame_width, xp=NUMPY):
    """Boxes [..., 4] in the frame of a sub-rectangle resized to frame_height x frame_width ->
    the outer frame. frame_yxyx [..., 4] (broadcastable): the sub-rectangle in the outer frame.

    E.g. the cell_yxyx of a refinement crop's canvas -> image_yxyx.
    """
    sy = (frame_yxyx[..., 2] - frame_yxyx[..., 0]) / frame_height
    sx = (frame_yxyx[..., 3] - frame_yxyx[..., 1]) / frame_width
    scale = xp.stack([sy, sx, sy, sx], axis=-1)
    y0, x0 = frame_yxyx[..., 0], frame_yxyx[..., 1]
    origin = xp.stack([y0, x0, y0, x0], axis=-1)
    return boxes_yxyx * scale + origin


def voc_to_yxyx(voc_xyxy, xp=NUMPY):
    """Pascal VOC 1-based inclusive [xmin, ymin, xmax, ymax] [..., 4] -> continuous image_yxyx.

    A VOC box (1, 1, W, H) covers the whole W x H image and becomes [0, 0, H, W].
    """
    v = voc_xyxy
    return xp.stack([v[..., 1] - 1.0, v[..., 0] - 1.0, v[..., 3], v[..., 2]], axis=-1)


def yxyx_to_voc(boxes_yxyx, xp=NUMPY):
    """Inverse of ``voc_to_yxyx``: continuous image_yxyx -> VOC 1-based [xmin, ymin, xmax, ymax]."""
    b = boxes_yxyx
    return xp.stack([b[..., 1] + 1.0, b[..., 0] + 1.0, b[..., 3], b[..., 2]], axis=-1)

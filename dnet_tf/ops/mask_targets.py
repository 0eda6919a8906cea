"""Eq. (1) of the paper: the five ground-truth masks of a crop, per class.

For a d x d grid over the crop, cell T(i, j) covers [i/d, (i+1)/d) x [j/d, (j+1)/d) of the
crop's normalized frame (norm_yxyx). The target of mask type h at cell (i, j) is

    m_h(i, j) = area(bb(h) ∩ T(i, j)) / area(T(i, j)),

with bb(full) the object box and bb(top), bb(bottom), bb(left), bb(right) "the four halves of the
original box" (§5.1). Several objects of one class: the max over those objects, per cell.

The ratio is separable for axis-aligned boxes: the overlap of a box with a cell along y times
its overlap along x, each divided by the cell side 1/d. So one box costs two length-d vectors and
an outer product, never a d x d rasterisation loop.

Halves are taken of the whole (original) box, then intersected with the crop's cells: a crop that
sees only the top of an object is taught "top half here, bottom half outside the crop", so the
half masks of several windows agree where they are merged by max on one canvas, and a
refinement crop cut from inside an object does not show what looks like a whole object's halves.
Only the cells' overlap counts, so nothing outside the crop needs clipping.

``halves_of_original=False`` halves the box clipped to the crop instead (the visible part split
in two): a departure from the paper kept as a choice, since validation AP has not settled it
(README, Ablations).
"""

from __future__ import annotations

import tensorflow as tf

from dnet_tf.constants import NUM_MASK_TYPES


def half_boxes(boxes_yxyx: tf.Tensor) -> tf.Tensor:
    """The box and its four halves, in MASK_TYPES order (full, top, bottom, left, right).

    Args:
      boxes_yxyx: float [..., 4], any frame.
    Returns:
      float [..., 5, 4], same frame.
    """
    boxes_yxyx = tf.convert_to_tensor(boxes_yxyx)
    ymin, xmin, ymax, xmax = tf.unstack(boxes_yxyx, axis=-1)
    ymid = (ymin + ymax) / 2.0
    xmid = (xmin + xmax) / 2.0
    full = tf.stack([ymin, xmin, ymax, xmax], axis=-1)
    top = tf.stack([ymin, xmin, ymid, xmax], axis=-1)
    bottom = tf.stack([ymid, xmin, ymax, xmax], axis=-1)
    left = tf.stack([ymin, xmin, ymax, xmid], axis=-1)
    right = tf.stack([ymin, xmid, ymax, xmax], axis=-1)
    return tf.stack([full, top, bottom, left, right], axis=-2)


def _axis_coverage(lo: tf.Tensor, hi: tf.Tensor, mask_size: int) -> tf.Tensor:
    """Fraction of each of d cells of [0, 1] covered by the interval [lo, hi).

    Args:
      lo, hi: float [...], normalized coordinates (any values: only [0, 1] holds cells).
    Returns:
      float [..., d] in [0, 1].
    """
    d = float(mask_size)
    # Cell edges as k / d (not k * (1/d)) so that e.g. 0.5 lands exactly on an edge when d is even.
    edges = tf.range(mask_size + 1, dtype=lo.dtype) / d
    cell_lo, cell_hi = edges[:-1], edges[1:]
    overlap = tf.minimum(hi[..., None], cell_hi) - tf.maximum(lo[..., None], cell_lo)
    # Clipped to [0, 1]: float rounding of (hi - lo) * d can land a hair above 1.
    return tf.clip_by_value(overlap * d, 0.0, 1.0)


def mask_targets_batch(
    boxes_norm_yxyx: tf.Tensor,
    class_ids: tf.Tensor,
    num_classes: int,
    mask_size: int,
    halves_of_original: bool = True,
) -> tf.Tensor:
    """Eq. (1) targets for K crops at once, the same N objects seen in each crop's frame.

    Args:
      boxes_norm_yxyx: float32 [K, N, 4], the objects' boxes in each crop's normalized frame
        (norm_yxyx, [0, 1] = the crop); parts outside [0, 1] lie outside every cell.
      class_ids: int32 [N] (shared by all K crops) or [K, N], 0-based class ids in [0, num_classes).
      num_classes: C, a Python int >= 1.
      mask_size: d, a Python int >= 1.
      halves_of_original: halves of the whole box (the paper) or of the box clipped to the crop.
    Returns:
      float32 [K, d, d, 5, C] in [0, 1]; axis 3 in MASK_TYPES order.
    Raises:
      InvalidArgumentError (at run time) when a class id is outside [0, num_classes).
    """
    if num_classes < 1 or mask_size < 1:
        raise ValueError(f"num_classes and mask_size must be >= 1, got {num_classes}, {mask_size}")
    boxes = tf.cast(boxes_norm_yxyx, tf.float32)
    if not halves_of_original:
        boxes = tf.clip_by_value(boxes, 0.0, 1.0)
    class_ids = tf.cast(class_ids, tf.int32)
    k = tf.shape(boxes)[0]
    n = tf.shape(boxes)[1]
    class_ids = tf.broadcast_to(class_ids, [k, n])
    with tf.control_dependencies(
        [
            tf.debugging.assert_non_negative(class_ids, message="mask_targets: negative class id"),
            tf.debugging.assert_less(
                class_ids,
                num_classes,
                message=f"mask_targets: class id >= num_classes ({num_classes})",
            ),
        ]
    ):
        halves = half_boxes(boxes)  # [K, N, 5, 4]
    rows = _axis_coverage(halves[..., 0], halves[..., 2], mask_size)  # [K, N, 5, d] along y
    cols = _axis_coverage(halves[..., 1], halves[..., 3], mask_size)  # [K, N, 5, d] along x
    per_object = rows[..., :, None] * cols[..., None, :]  # [K, N, 5, d(i), d(j)]
    per_object = tf.reshape(per_object, [k * n, NUM_MASK_TYPES, mask_size, mask_size])
    # One segment per (crop, class): the max over that crop's objects of that class.
    segment = tf.reshape(tf.range(k)[:, None] * num_classes + class_ids, [-1])
    merged = tf.math.unsorted_segment_max(per_object, segment, num_segments=k * num_classes)
    # Empty segments (classes absent from a crop) come back as the lowest float: make them 0.
    merged = tf.maximum(merged, 0.0)
    merged = tf.reshape(merged, [k, num_classes, NUM_MASK_TYPES, mask_size, mask_size])
    return tf.transpose(merged, [0, 3, 4, 2, 1])  # [K, d, d, 5, C]


def mask_targets(
    boxes_norm_yxyx: tf.Tensor, class_ids: tf.Tensor, num_classes: int, mask_size: int
) -> tf.Tensor:
    """Eq. (1) targets of one crop: five masks per class, max over objects of the same class.

    Args:
      boxes_norm_yxyx: float32 [N, 4], object boxes in the crop's normalized frame (norm_yxyx),
        possibly reaching past the crop. N may be 0.
      class_ids: int32 [N], 0-based class ids in [0, num_classes).
      num_classes: C, a Python int >= 1.
      mask_size: d, a Python int >= 1.
    Returns:
      float32 [d, d, 5, C] in [0, 1]. Cell (i, j) covers rows [i/d, (i+1)/d) and columns
      [j/d, (j+1)/d) of the crop; axis 2 in MASK_TYPES order (full, top, bottom, left, right).
    """
    boxes = tf.reshape(tf.cast(boxes_norm_yxyx, tf.float32), [1, -1, 4])
    ids = tf.reshape(tf.cast(class_ids, tf.int32), [1, -1])
    return mask_targets_batch(boxes, ids, num_classes, mask_size)[0]

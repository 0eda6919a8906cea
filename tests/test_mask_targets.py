"""Eq. (1) mask targets: hand-worked cells, a NumPy brute force over several seeds, edge cases."""

import numpy as np
import pytest
import tensorflow as tf

from dnet_tf.constants import BOTTOM, FULL, LEFT, RIGHT, TOP
from dnet_tf.ops.mask_targets import half_boxes, mask_targets, mask_targets_batch


def brute_force(boxes, class_ids, num_classes, d, supersample=None, clip_first=False):
    """Eq. (1) as §5.1 of the paper defines it, cell by cell, object by object:
    m_h(i, j) = area(bb(h) & T(i, j)) / area(T(i, j)), bb(full) the object box and bb(h) "the
    four halves of the original box" — the whole box, wherever it reaches past the crop; T(i, j)
    the cells of the crop."""
    out = np.zeros((d, d, 5, num_classes), np.float64)
    for box, c in zip(boxes, class_ids):
        y0, x0, y1, x1 = np.asarray(box, np.float64)
        if clip_first:  # the departure: halves of the box clipped to the crop
            y0, x0, y1, x1 = np.clip([y0, x0, y1, x1], 0.0, 1.0)
        ym, xm = (y0 + y1) / 2, (x0 + x1) / 2
        parts = [
            (y0, x0, y1, x1),
            (y0, x0, ym, x1),
            (ym, x0, y1, x1),
            (y0, x0, y1, xm),
            (y0, xm, y1, x1),
        ]
        for t, (a0, b0, a1, b1) in enumerate(parts):
            for i in range(d):
                for j in range(d):
                    ty0, ty1, tx0, tx1 = i / d, (i + 1) / d, j / d, (j + 1) / d
                    inter = max(0.0, min(a1, ty1) - max(a0, ty0)) * max(
                        0.0, min(b1, tx1) - max(b0, tx0)
                    )
                    out[i, j, t, c] = max(out[i, j, t, c], inter / (1.0 / d) ** 2)
    return out


def test_half_boxes_order_full_top_bottom_left_right():
    got = half_boxes(tf.constant([[0.0, 0.0, 2.0, 4.0]])).numpy()[0]
    np.testing.assert_allclose(got[FULL], [0, 0, 2, 4])
    np.testing.assert_allclose(got[TOP], [0, 0, 1, 4])
    np.testing.assert_allclose(got[BOTTOM], [1, 0, 2, 4])
    np.testing.assert_allclose(got[LEFT], [0, 0, 2, 2])
    np.testing.assert_allclose(got[RIGHT], [0, 2, 2, 4])


def test_hand_worked_fractional_box():
    # d = 4: cells 0.25 wide. Box y in [0.1, 0.6), x in [0.3, 0.55).
    # Along y: row 0 covers [0.1, 0.25) -> 0.15 / 0.25 = 0.6; row 1 -> 1; row 2 [0.5, 0.6) -> 0.4.
    # Along x: col 1 [0.3, 0.5) -> 0.2 / 0.25 = 0.8; col 2 [0.5, 0.55) -> 0.2.
    m = mask_targets(tf.constant([[0.1, 0.3, 0.6, 0.55]]), tf.constant([0]), 1, 4).numpy()
    full = m[:, :, FULL, 0]
    expected = np.zeros((4, 4))
    expected[0, 1], expected[0, 2] = 0.6 * 0.8, 0.6 * 0.2
    expected[1, 1], expected[1, 2] = 1.0 * 0.8, 1.0 * 0.2
    expected[2, 1], expected[2, 2] = 0.4 * 0.8, 0.4 * 0.2
    np.testing.assert_allclose(full, expected, atol=1e-6)
    # Top half: y in [0.1, 0.35): row 0 -> 0.6, row 1 [0.25, 0.35) -> 0.4.
    top = np.zeros((4, 4))
    top[0, 1], top[0, 2], top[1, 1], top[1, 2] = 0.6 * 0.8, 0.6 * 0.2, 0.4 * 0.8, 0.4 * 0.2
    np.testing.assert_allclose(m[:, :, TOP, 0], top, atol=1e-6)
    # Bottom half: y in [0.35, 0.6): row 1 [0.35, 0.5) -> 0.6, row 2 -> 0.4.
    bottom = np.zeros((4, 4))
    bottom[1, 1], bottom[1, 2], bottom[2, 1], bottom[2, 2] = (
        0.6 * 0.8,
        0.6 * 0.2,
        0.4 * 0.8,
        0.4 * 0.2,
    )
    np.testing.assert_allclose(m[:, :, BOTTOM, 0], bottom, atol=1e-6)
    # Left half: x in [0.3, 0.425): col 1 -> 0.125 / 0.25 = 0.5; right half x in [0.425, 0.55):
    # col 1 [0.425, 0.5) -> 0.3, col 2 -> 0.2.
    rows = np.array([0.6, 1.0, 0.4, 0.0])
    np.testing.assert_allclose(m[:, :, LEFT, 0], np.outer(rows, [0, 0.5, 0, 0]), atol=1e-6)
    np.testing.assert_allclose(m[:, :, RIGHT, 0], np.outer(rows, [0, 0.3, 0.2, 0]), atol=1e-6)


def test_hand_worked_two_classes_max_and_clipping():
    # d = 2. Class 0: box covering the top-left cell exactly, and a second class-0 box covering
    # half of the top-left cell and all of the top-right one -> per cell max, not sum.
    # Class 1: a box reaching outside the crop, [-0.5, 0.5, 0.5, 1.5]; its full mask is what the
    # crop shows of it, [0, 0.5, 0.5, 1].
    boxes = tf.constant([[0.0, 0.0, 0.5, 0.5], [0.0, 0.25, 0.5, 1.0], [-0.5, 0.5, 0.5, 1.5]])
    m = mask_targets(boxes, tf.constant([0, 0, 1]), 2, 2).numpy()
    np.testing.assert_allclose(m[:, :, FULL, 0], [[1.0, 1.0], [0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(m[:, :, FULL, 1], [[0.0, 1.0], [0.0, 0.0]], atol=1e-6)
    # Class 1's halves are those of the original box [-0.5, 0.5, 0.5, 1.5]: the top half, y in
    # [-0.5, 0), lies outside the crop; the bottom half, y in [0, 0.5), covers cell (0, 1); the
    # left half, x in [0.5, 1), too; the right half, x in [1, 1.5), nothing.
    np.testing.assert_allclose(m[:, :, TOP, 1], [[0.0, 0.0], [0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(m[:, :, BOTTOM, 1], [[0.0, 1.0], [0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(m[:, :, LEFT, 1], [[0.0, 1.0], [0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(m[:, :, RIGHT, 1], [[0.0, 0.0], [0.0, 0.0]], atol=1e-6)
    # Class 0 left halves: box 1 x in [0, 0.25) -> 0.5 of cell (0,0); box 2 x in [0.25, 0.625)
    # -> 0.5 of cell (0,0) and 0.25 of cell (0,1). Max per cell: [0.5, 0.25].
    np.testing.assert_allclose(m[:, :, LEFT, 0], [[0.5, 0.25], [0.0, 0.0]], atol=1e-6)


def test_window_seeing_only_the_top_of_an_object():
    # d = 4; the object [0.5, 0.0, 1.5, 1.0] covers the crop's lower half and goes on below it.
    # Its top half [0.5, 1.0) fills rows 2-3; its bottom half [1.0, 1.5) lies outside the crop:
    # "top half here, bottom half outside". (Halving the clipped box [0.5, 1] would put a bottom
    # half in row 3.) Left and right halves: columns 0-1 and 2-3 of rows 2-3.
    m = mask_targets(tf.constant([[0.5, 0.0, 1.5, 1.0]]), tf.constant([0]), 1, 4).numpy()[..., 0]
    lower = np.repeat([[0.0], [0.0], [1.0], [1.0]], 4, 1)
    np.testing.assert_allclose(m[:, :, FULL], lower, atol=1e-6)
    np.testing.assert_allclose(m[:, :, TOP], lower, atol=1e-6)
    np.testing.assert_allclose(m[:, :, BOTTOM], np.zeros((4, 4)), atol=1e-6)
    np.testing.assert_allclose(m[:, :, LEFT], lower * [1, 1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(m[:, :, RIGHT], lower * [0, 0, 1, 1], atol=1e-6)
    # The clipped variant halves [0.5, 1]: top half row 2, bottom half row 3.
    c = mask_targets_batch(
        tf.constant([[[0.5, 0.0, 1.5, 1.0]]]), tf.constant([0]), 1, 4, halves_of_original=False
    ).numpy()[0, ..., 0]
    np.testing.assert_allclose(c[:, :, TOP], np.repeat([[0.0], [0.0], [1.0], [0.0]], 4, 1))
    np.testing.assert_allclose(c[:, :, BOTTOM], np.repeat([[0.0], [0.0], [0.0], [1.0]], 4, 1))


def test_no_objects_gives_zeros():
    m = mask_targets(tf.zeros([0, 4]), tf.zeros([0], tf.int32), 3, 5).numpy()
    assert m.shape == (5, 5, 5, 3)
    assert np.all(m == 0.0)


def test_box_outside_crop_gives_zeros_and_whole_crop_gives_ones():
    m = mask_targets(
        tf.constant([[1.2, 0.0, 1.5, 1.0], [0.0, 0.0, 1.0, 1.0]]), tf.constant([0, 1]), 2, 6
    )
    m = m.numpy()
    assert np.all(m[..., 0] == 0.0)
    np.testing.assert_allclose(m[:, :, FULL, 1], np.ones((6, 6)), atol=1e-6)
    # Top half of the whole crop: rows 0..2 of 6 are full, rows 3..5 empty.
    np.testing.assert_allclose(
        m[:, :, TOP, 1], np.repeat([[1.0], [1.0], [1.0], [0.0], [0.0], [0.0]], 6, 1), atol=1e-6
    )
    assert m.max() <= 1.0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, c, d = int(rng.integers(1, 7)), 3, 7
    centre = rng.uniform(-0.1, 1.1, (n, 2))
    size = rng.uniform(0.02, 0.9, (n, 2))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)
    ids = rng.integers(0, c, n).astype(np.int32)
    got = mask_targets(tf.constant(boxes), tf.constant(ids), c, d).numpy()
    np.testing.assert_allclose(got, brute_force(boxes, ids, c, d), atol=2e-6)
    clipped = mask_targets_batch(
        tf.constant(boxes[None]), tf.constant(ids), c, d, halves_of_original=False
    ).numpy()[0]
    np.testing.assert_allclose(clipped, brute_force(boxes, ids, c, d, clip_first=True), atol=2e-6)


def test_batch_matches_single_crops():
    rng = np.random.default_rng(7)
    boxes = rng.uniform(0, 1, (3, 4, 4)).astype(np.float32)
    boxes = np.concatenate(
        [np.minimum(boxes[..., :2], boxes[..., 2:]), np.maximum(boxes[..., :2], boxes[..., 2:])], -1
    )
    ids = np.array([0, 1, 1, 0], np.int32)
    got = mask_targets_batch(tf.constant(boxes), tf.constant(ids), 2, 5).numpy()
    for k in range(3):
        np.testing.assert_allclose(got[k], brute_force(boxes[k], ids, 2, 5), atol=2e-6)


def test_bad_class_id_raises():
    with pytest.raises(tf.errors.InvalidArgumentError, match="class id"):
        mask_targets(tf.constant([[0.0, 0.0, 1.0, 1.0]]), tf.constant([2]), 2, 4)

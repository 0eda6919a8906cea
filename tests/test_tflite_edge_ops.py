"""The edge pipeline's NumPy ops against the graph's TensorFlow ops (dnet_tf.ops), plus hand-worked
cases.

The NumPy ops are a port spec: where the graph's arithmetic is float32 end to end (windows,
crops, paste-back, NMS) they must agree bit for bit; the box search sums in float64 where the
graph sums in float32, so scores agree to ~1e-5 and boxes exactly when no two scores tie.
"""

import numpy as np
import pytest
import tensorflow as tf

from dnet_tf.constants import BOTTOM, FULL, LEFT, RIGHT, TOP
from dnet_tf.core import policy
from dnet_tf.ops import box_search, crops, integral, nms, windows
from dnet_tf.tflite import edge_ops


def random_boxes(rng, n, low, high, min_side=0.5, max_side=15.0):
    corner = rng.uniform(low, high, (n, 2))
    return np.concatenate([corner, corner + rng.uniform(min_side, max_side, (n, 2))], 1).astype(
        np.float32
    )


def test_windows_equal_the_graph_and_the_paper_count():
    got, ids = edge_ops.scale_windows(37.0, 53.0, 3, 0.2)
    want, want_ids = windows.scale_windows(37.0, 53.0, 3, 0.2)
    np.testing.assert_array_equal(got, want.numpy())
    np.testing.assert_array_equal(ids, want_ids.numpy())
    assert np.bincount(ids).tolist() == [1, 9, 25]
    # Scale 1 on a 1 x 1 image: side 0.5, starts 0, 0.25, 0.5.
    np.testing.assert_allclose(edge_ops.unit_windows(2, 0.2)[0][1:4, 1], [0.0, 0.25, 0.5])


@pytest.mark.parametrize("size", [1, 2, 17])
def test_crop_and_resize_bit_equal_to_the_graph_inside_and_outside_the_image(size):
    rng = np.random.default_rng(size)
    image = rng.uniform(0, 255, (31, 45, 3)).astype(np.float32)
    boxes = random_boxes(rng, 20, -6.0, 40.0, max_side=30.0)  # some leave the image
    got = edge_ops.crop_and_resize(image, boxes, size)
    want = crops.crop_and_resize(image[None], boxes, np.zeros(20, np.int32), size).numpy()
    np.testing.assert_array_equal(got, want)


def test_crop_hand_worked_one_sample_is_the_box_centre():
    image = np.arange(4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)
    # Box [1, 2, 3, 4] resized to 1 sample: the centre (2, 3) = pixel index (1.5, 2.5), the mean
    # of pixels (1, 2), (1, 3), (2, 2), (2, 3).
    got = edge_ops.crop_and_resize(image, np.array([[1, 2, 3, 4]], np.float32), 1)[0, 0, 0]
    np.testing.assert_allclose(got, image[1:3, 2:4].mean(axis=(0, 1)))


@pytest.mark.parametrize("canvas_hw", [(13, 17), (1, 5), (25, 25)])
def test_paste_max_bit_equal_to_the_graph(canvas_hw):
    rng = np.random.default_rng(sum(canvas_hw))
    masks = rng.uniform(0, 1, (9, 8, 8, 6)).astype(np.float32)
    wins = random_boxes(rng, 9, 0.0, 10.0, min_side=3.0, max_side=15.0)
    got = edge_ops.paste_max(masks, wins, *canvas_hw)
    want = crops.paste_max(masks, wins, *canvas_hw).numpy()
    np.testing.assert_array_equal(got, want)


def test_resize_bilinear_equals_tf_image_resize():
    own = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 5)).astype(np.float32)
    np.testing.assert_allclose(
        edge_ops.resize_bilinear(own, 20, 20), tf.image.resize(own, [20, 20]).numpy(), atol=1e-6
    )


def test_nms_hand_worked_threshold_and_ties():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 5, 10, 10], [20, 20, 30, 30]], np.float32)
    # IoU(0, 1) = 50 / 100 = 0.5 exactly: kept at threshold 0.5 (suppression needs IoU > 0.5).
    idx, num = edge_ops.non_max_suppression(
        boxes[None], np.array([[4, 3, 2, 1]], np.float32), 4, 0.5
    )
    assert num.tolist() == [4] and idx[0].tolist() == [0, 1, 2, 3]
    idx, num = edge_ops.non_max_suppression(
        boxes[None], np.array([[4, 3, 2, 1]], np.float32), 4, 0.49
    )
    assert num.tolist() == [2] and idx[0, :2].tolist() == [0, 3]
    # Equal scores: lower index first; score threshold strict.
    idx, num = edge_ops.non_max_suppression(
        boxes[None, [3, 1]], np.array([[2, 2]], np.float32), 2, 0.5, 2.0
    )
    assert num.tolist() == [0]
    idx, num = edge_ops.non_max_suppression(
        boxes[None, [3, 1]], np.array([[2, 2]], np.float32), 2, 0.5
    )
    assert idx[0].tolist() == [0, 1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_and_class_nms_equal_the_graph(seed):
    rng = np.random.default_rng(seed)
    boxes = np.stack([random_boxes(rng, 60, 0.0, 30.0, 1.0, 15.0) for _ in range(3)])
    scores = rng.uniform(-2, 2, (3, 60)).astype(np.float32)
    scores[:, :10] = -1e9
    if seed == 1:
        scores = np.round(scores)  # many exact ties
    want_idx, want_num = nms.non_max_suppression(boxes, scores, 5, 0.5, score_threshold=-5e8)
    idx, num = edge_ops.non_max_suppression(boxes, scores, 5, 0.5, score_threshold=-5e8)
    assert num.tolist() == want_num.numpy().tolist()
    for b in range(3):
        assert idx[b, : num[b]].tolist() == want_idx.numpy()[b, : num[b]].tolist()
    norm = random_boxes(rng, 60, 0.0, 0.7, 0.05, 0.3)
    classes = rng.integers(0, 3, 60)
    s = rng.uniform(-1, 1, 60).astype(np.float32)
    want = nms.class_nms(norm[None], s[None], classes[None].astype(np.int32), 10, 0.5, 0.0)
    got = edge_ops.class_nms(norm, s, classes, 10, 0.5, 0.0)
    assert got[3] == int(want[3][0])
    np.testing.assert_array_equal(got[0], want[0][0].numpy())
    np.testing.assert_array_equal(got[1], want[1][0].numpy())
    np.testing.assert_array_equal(got[2], want[2][0].numpy())


def planted_masks(height, width, box, num_classes=1, cls=0):
    """Eq. (1) masks of one whole-cell box [y0, x0, y1, x1] (even sides) on an empty canvas."""
    m = np.zeros((height, width, 5, num_classes), np.float32)
    y0, x0, y1, x1 = box
    ym, xm = (y0 + y1) // 2, (x0 + x1) // 2
    m[y0:y1, x0:x1, FULL, cls] = 1
    m[y0:ym, x0:x1, TOP, cls] = 1
    m[ym:y1, x0:x1, BOTTOM, cls] = 1
    m[y0:y1, x0:xm, LEFT, cls] = 1
    m[y0:y1, xm:x1, RIGHT, cls] = 1
    return m


def test_search_hand_worked_planted_box_scores_five():
    masks = planted_masks(20, 24, (4, 6, 12, 14), num_classes=2, cls=1)
    # Shapes 8 x 8 (the box) and 4 x 4; every bracket of Eq. (3) is 1 - 0 on the exact box.
    found = edge_ops.search_boxes(masks, np.array([[8, 8], [4, 4]], np.float32), 1, 0.2, 0.5, 3)
    np.testing.assert_array_equal(found.boxes_cell_yxyx[1, 0], [4, 6, 12, 14])
    assert found.scores[1, 0] == pytest.approx(5.0) and found.coverage[1, 0] == pytest.approx(1.0)
    assert not found.valid[0].any()  # class 0 is empty: no box covers > 0.5


@pytest.mark.parametrize("seed,stride", [(0, 1.0), (1, 2.0), (2, 1.4)])
def test_search_equals_the_graph_on_random_masks(seed, stride):
    rng = np.random.default_rng(seed)
    h, w, k = 14 + seed * 5, 21 - seed * 3, 3
    masks = rng.uniform(0, 1, (h, w, 5, k)).astype(np.float32)  # continuous: no exact ties
    shapes = edge_ops.box_shapes((h + w) / 2, [0.2, 0.35, 0.5, 0.7], [0.5, 1.0, 1.7])
    np.testing.assert_array_equal(
        shapes, box_search.box_shapes((h + w) / 2, [0.2, 0.35, 0.5, 0.7], [0.5, 1.0, 1.7]).numpy()
    )
    want = box_search.search_boxes(tf.constant(masks), tf.constant(shapes), stride, 0.2, 0.3, 20)
    got = edge_ops.search_boxes(masks, shapes, stride, 0.2, 0.3, 20)
    np.testing.assert_array_equal(got.valid, want.valid.numpy())
    np.testing.assert_array_equal(got.boxes_cell_yxyx, want.boxes_cell_yxyx.numpy())
    ok = got.valid
    np.testing.assert_allclose(got.scores[ok], want.scores.numpy()[ok], atol=1e-5)
    np.testing.assert_allclose(got.coverage[ok], want.coverage.numpy()[ok], atol=1e-5)


@pytest.mark.parametrize("seed,stride", [(0, 1.0), (1, 2.0)])
def test_local_max_search_equals_the_graph_on_random_masks(seed, stride):
    rng = np.random.default_rng(seed)
    h, w, k = 16 + seed * 5, 23 - seed * 3, 3
    masks = rng.uniform(0, 1, (h, w, 5, k)).astype(np.float32)
    shapes = edge_ops.box_shapes((h + w) / 2, [0.2, 0.35, 0.5], [0.5, 1.0, 1.7])
    args = (stride, 0.2, 0.3, 15)
    want = box_search.search_boxes(tf.constant(masks), tf.constant(shapes), *args, local_max=True)
    got = edge_ops.search_boxes(masks, shapes, *args, local_max=True)
    np.testing.assert_array_equal(got.valid, want.valid.numpy())
    np.testing.assert_array_equal(got.boxes_cell_yxyx, want.boxes_cell_yxyx.numpy())
    ok = got.valid
    np.testing.assert_allclose(got.scores[ok], want.scores.numpy()[ok], atol=1e-5)
    # Not vacuous: the local maxima are a different list from the plain best boxes.
    plain = edge_ops.search_boxes(masks, shapes, *args)
    assert not np.array_equal(plain.boxes_cell_yxyx, got.boxes_cell_yxyx)


def test_outside_half_terms_equal_the_graph_with_fractional_and_outside_boxes():
    rng = np.random.default_rng(1)
    masks = rng.uniform(0, 1, (14, 17, 5, 3)).astype(np.float32)
    boxes = random_boxes(rng, 40, -3.0, 15.0, 0.5, 9.0)
    want = box_search.outside_half_terms(
        integral.integral_image(tf.constant(masks.reshape(14, 17, 15))), tf.constant(boxes), 0.2
    )
    got = edge_ops.outside_half_terms(masks, boxes, 0.2)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
    assert got.max() > 1.0  # boxes with strips inside the grid: not all zeros
    want = box_search.outside_half_terms(
        integral.integral_image(tf.constant(masks.reshape(14, 17, 15))),
        tf.constant(boxes),
        0.2,
        0.4,
    )
    # The floor scales float32 rounding by 1 / (1 - 0.4).
    np.testing.assert_allclose(edge_ops.outside_half_terms(masks, boxes, 0.2, 0.4), want, atol=2e-4)


def test_eq3_scores_equal_the_graph_with_fractional_and_outside_boxes():
    rng = np.random.default_rng(0)
    masks = rng.uniform(0, 1, (14, 17, 5, 3)).astype(np.float32)
    boxes = random_boxes(rng, 40, -3.0, 15.0, 0.5, 9.0)
    boxes[:10] = np.round(boxes[:10] * 2) / 2
    want_eq3, want_cov = box_search.eq3_scores(
        integral.integral_image(tf.constant(masks.reshape(14, 17, 15))), tf.constant(boxes), 0.2
    )
    got_eq3, got_cov = edge_ops.eq3_scores(masks, boxes, 0.2)
    np.testing.assert_allclose(got_eq3, want_eq3.numpy(), atol=1e-4)
    np.testing.assert_allclose(got_cov, want_cov.numpy(), atol=1e-5)


def test_top_k_orders_ties_by_index_like_tf():
    values = np.array([[1.0, 3.0, 3.0, 2.0, 3.0]])
    np.testing.assert_array_equal(
        edge_ops.top_k(values, 4), tf.math.top_k(values, 4).indices.numpy()
    )


@pytest.mark.parametrize(
    "seed,factor,ratio",
    [(0, 0.5, 1.0), (1, 0.5, 1.0), (2, 0.5, 1.0), (3, 0.5, 1.0), (0, 0.0, 1.0), (1, 0.5, 0.8)]
    + [(2, 0.5, 0.8), (3, 0.0, 0.8)],
)
def test_demote_parts_equals_the_graph(seed, factor, ratio):
    rng = np.random.default_rng(seed)
    k, num = 12, 9
    # Nested boxes on purpose: half of them inside the first three.
    boxes = random_boxes(rng, k, 0.0, 0.6, 0.05, 0.4)
    inner = boxes[rng.integers(0, 3, k // 2)]
    frac = rng.uniform(0.05, 0.6, (k // 2, 2)).astype(np.float32)
    side = inner[:, 2:] - inner[:, :2]
    boxes[k // 2 :, :2] = inner[:, :2] + rng.uniform(0, 0.3, (k // 2, 2)).astype(np.float32) * side
    boxes[k // 2 :, 2:] = boxes[k // 2 :, :2] + side * frac
    scores = np.sort(rng.uniform(0, 1, k).astype(np.float32))[::-1].copy()
    if seed == 1:
        scores = np.round(scores, 1)  # exact ties
    classes = rng.integers(0, 2, k)
    scores[num:], boxes[num:], classes[num:] = 0.0, 0.0, 0
    valid = np.arange(k) < num
    want = nms.demote_parts(
        boxes[None], scores[None], classes[None].astype(np.int32), valid[None], 0.7, factor, ratio
    )
    got = edge_ops.demote_parts(boxes, scores, classes, num, 0.7, factor, ratio)
    left = got[3]
    assert left == int(want[3][0].numpy().sum())
    np.testing.assert_array_equal(got[1][:left], want[1][0].numpy()[:left])
    np.testing.assert_array_equal(got[0][:left], want[0][0].numpy()[:left])
    assert got[2][:left].tolist() == want[2][0].numpy()[:left].tolist()
    if factor > 0:  # the case is exercised: some parts were demoted
        assert left == num and (got[1][:num] < scores[:num]).any()
    else:  # removed: fewer detections, none of them a part of another
        assert left < num
        assert not policy.part_of(
            got[0][:left], got[1][:left], got[2][:left], np.ones(left, bool), 0.7, rank_ratio=ratio
        ).any()

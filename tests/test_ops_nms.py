"""NMS: hand-worked threshold cases, a greedy NumPy oracle, batching, padding, per-class NMS."""

import numpy as np
import pytest
import tensorflow as tf

from dnet_tf.ops import nms


def np_iou(a, b):
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ih * iw
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def np_nms(boxes, scores, k, iou_threshold, score_threshold=-np.inf):
    keep = []
    for i in np.argsort(-scores, kind="stable"):
        if scores[i] <= score_threshold:
            continue
        if all(np_iou(boxes[i], boxes[j]) <= iou_threshold for j in keep):
            keep.append(int(i))
        if len(keep) == k:
            break
    return keep


def random_boxes(rng, shape, low=-5.0, high=10.0):
    corner = rng.uniform(low, high, size=shape + (2,))
    size = rng.uniform(0.5, 5.0, size=shape + (2,))
    return np.concatenate([corner, corner + size], axis=-1).astype(np.float32)


def test_iou_exactly_at_threshold_is_kept():
    # [0, 0, 2, 3] and [0, 1, 2, 4]: intersection 2 x 2 = 4, union 6 + 6 - 4 = 8, IoU 0.5.
    # Suppression needs IoU > threshold: kept at 0.5, suppressed at 0.49.
    boxes = np.array([[0, 0, 2, 3], [0, 1, 2, 4]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    idx, num = nms.non_max_suppression(boxes, scores, 3, 0.5)
    assert int(num) == 2 and idx.numpy().tolist() == [0, 1, 0]  # padding points to 0
    idx, num = nms.non_max_suppression(boxes, scores, 3, 0.49)
    assert int(num) == 1 and idx.numpy().tolist() == [0, 0, 0]


def test_score_threshold_is_strict_and_boxes_at_negative_coordinates_count():
    # Scores 0.5 and 0.2 with threshold 0.2: only the first survives. Boxes entirely at negative
    # coordinates and a zero-area box are ordinary boxes.
    boxes = np.array([[-9, -9, -5, -5], [-4, -4, -1, -1], [3, 3, 3, 6]], np.float32)
    scores = np.array([0.5, 0.2, 0.7], np.float32)
    idx, num = nms.non_max_suppression(boxes, scores, 3, 0.5, score_threshold=0.2)
    assert int(num) == 2 and idx.numpy()[:2].tolist() == [2, 0]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_greedy_oracle_batched(seed):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, (2, 3, 40))  # batch dims [2, 3]
    scores = rng.permutation(240).reshape(2, 3, 40).astype(np.float32) / 240.0  # no ties
    idx, num = nms.non_max_suppression(boxes, scores, 10, 0.3, score_threshold=0.1)
    assert idx.shape == (2, 3, 10) and num.shape == (2, 3)
    for a in range(2):
        for b in range(3):
            expected = np_nms(boxes[a, b], scores[a, b], 10, 0.3, 0.1)
            assert int(num[a, b]) == len(expected)
            assert idx.numpy()[a, b, : len(expected)].tolist() == expected
            assert not idx.numpy()[a, b, len(expected) :].any()


def test_fewer_boxes_than_max_output_and_minus_inf_scores():
    # 2 boxes, K = 5, no threshold: both kept (a -inf score is still a score), best first.
    boxes = np.array([[0, 0, 1, 1], [5, 5, 6, 6]], np.float32)
    idx, num = nms.non_max_suppression(boxes, np.array([-np.inf, 0.3], np.float32), 5, 0.5)
    assert int(num) == 2 and idx.numpy().tolist() == [1, 0, 0, 0, 0]


def test_traced_with_unknown_sizes():
    fn = tf.function(
        lambda b, s: nms.non_max_suppression(b, s, 4, 0.5),
        input_signature=[
            tf.TensorSpec([None, None, 4], tf.float32),
            tf.TensorSpec([None, None], tf.float32),
        ],
    )
    rng = np.random.default_rng(9)
    boxes = random_boxes(rng, (3, 12))
    scores = rng.permutation(36).reshape(3, 12).astype(np.float32)
    idx, num = fn(boxes, scores)
    for b in range(3):
        expected = np_nms(boxes[b], scores[b], 4, 0.5)
        assert idx.numpy()[b, : len(expected)].tolist() == expected


@pytest.mark.parametrize("seed", [0, 1])
def test_class_nms_matches_per_class_oracle(seed):
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, (2, 30), 0.0, 0.7) / 6.0  # normalized-ish
    scores = rng.permutation(60).reshape(2, 30).astype(np.float32) / 60.0
    classes = rng.integers(0, 3, size=(2, 30)).astype(np.int32)
    out_boxes, out_scores, out_classes, num = nms.class_nms(boxes, scores, classes, 12, 0.4, 0.05)
    for b in range(2):
        kept = []
        for c in range(3):
            members = np.flatnonzero(classes[b] == c)
            kept += [
                members[i] for i in np_nms(boxes[b, members], scores[b, members], 12, 0.4, 0.05)
            ]
        kept = sorted(kept, key=lambda i: -scores[b, i])[:12]
        n = int(num[b])
        assert n == len(kept)
        np.testing.assert_allclose(out_scores.numpy()[b, :n], scores[b, kept])
        np.testing.assert_allclose(out_boxes.numpy()[b, :n], boxes[b, kept], atol=1e-6)
        np.testing.assert_array_equal(out_classes.numpy()[b, :n], classes[b, kept])
        assert not out_scores.numpy()[b, n:].any() and not out_boxes.numpy()[b, n:].any()


def test_class_nms_same_box_different_classes_both_kept():
    # Identical boxes: class 0 twice (the lower one suppressed), class 1 once (kept).
    boxes = np.array([[[0.1, 0.1, 0.5, 0.5]] * 3], np.float32)
    out_boxes, out_scores, out_classes, num = nms.class_nms(
        boxes, np.array([[0.9, 0.8, 0.7]], np.float32), np.array([[0, 0, 1]], np.int32), 4, 0.5, 0.0
    )
    assert int(num[0]) == 2
    np.testing.assert_allclose(out_scores.numpy()[0], [0.9, 0.7, 0, 0])
    np.testing.assert_array_equal(out_classes.numpy()[0], [0, 1, 0, 0])


def test_class_nms_indices_name_the_kept_inputs_in_both_twins():
    # Slots 0..3: class 0 at 0.6 (suppressed by slot 2, same box, 0.9), class 1 at 0.8, class 0
    # elsewhere at 0.7. Kept best first: slot 2 (0.9), slot 1 (0.8), slot 3 (0.7); padding 0.
    from dnet_tf.core import nms as core_nms

    boxes = np.array(
        [[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]],
        np.float32,
    )
    scores = np.array([0.6, 0.8, 0.9, 0.7], np.float32)
    classes = np.array([0, 1, 0, 0], np.int32)
    *_, num, idx = nms.class_nms(boxes[None], scores[None], classes[None], 5, 0.5, 0.0, True)
    assert int(num[0]) == 3
    np.testing.assert_array_equal(idx.numpy()[0], [2, 1, 3, 0, 0])
    *_, n, idx_np = core_nms.class_nms(boxes, scores, classes, 5, 0.5, 0.0, with_indices=True)
    assert n == 3
    np.testing.assert_array_equal(idx_np, [2, 1, 3, 0, 0])


def test_demote_parts_hand_worked():
    boxes = np.array(
        [
            [
                [0, 0, 10, 10],  # A: the whole object, best
                [1, 1, 4, 4],  # B: inside A, same class -> part: 0.8 * 0.5
                [1, 1, 4, 4],  # C: the same box, another class -> untouched
                [8, 8, 12, 12],  # D: 4 of its 16 inside A (0.25 < 0.5) -> untouched
                [0, 0, 20, 20],  # F: contains A but ranks below it -> A untouched
                [0, 0, 0, 0],
            ]
        ],  # padding
        np.float32,
    )
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, 0.0]], np.float32)
    classes = np.array([[0, 0, 1, 0, 0, 0]], np.int32)
    valid = np.array([[True] * 5 + [False]])
    b, s, c, v = nms.demote_parts(boxes, scores, classes, valid, 0.5, 0.5)
    np.testing.assert_allclose(s.numpy()[0], [0.9, 0.7, 0.6, 0.5, 0.4, 0.0])
    np.testing.assert_array_equal(b.numpy()[0], boxes[0, [0, 2, 3, 4, 1, 5]])
    assert c.numpy()[0].tolist() == [0, 1, 0, 0, 0, 0]
    assert v.numpy()[0].tolist() == [True] * 5 + [False]
    # Factor 0: the part B is removed (no longer valid, after the detections), nothing else moves.
    b, s, c, v = nms.demote_parts(boxes, scores, classes, valid, 0.5, 0.0)
    assert v.numpy()[0].tolist() == [True] * 4 + [False] * 2
    np.testing.assert_allclose(s.numpy()[0][:4], [0.9, 0.7, 0.6, 0.5])
    np.testing.assert_array_equal(b.numpy()[0][:4], boxes[0, [0, 2, 3, 4]])


def test_a_container_scoring_a_little_below_its_part_claims_it():
    # B (1, 1, 4, 4) lies inside A (0, 0, 10, 10) and outscores it, 0.8 against 0.75 (a part
    # whose refinement looked whole). rank_ratio 1: A must rank above B, so nothing changes.
    # 0.9: 0.75 >= 0.9 * 0.8 = 0.72, so B is A's part, 0.8 * 0.5 = 0.4, and sorts below A.
    # 0.95: 0.75 < 0.76, untouched. A is never B's part (it is the larger), at any ratio;
    # D (20, 20, 30, 30), far from both, ranks below everything and is untouched.
    boxes = np.array([[[1, 1, 4, 4], [0, 0, 10, 10], [20, 20, 30, 30]]], np.float32)
    scores = np.array([[0.8, 0.75, 0.1]], np.float32)
    classes = np.zeros((1, 3), np.int32)
    valid = np.ones((1, 3), bool)
    for ratio, want_scores, want_order in (
        (1.0, [0.8, 0.75, 0.1], [0, 1, 2]),
        (0.9, [0.75, 0.4, 0.1], [1, 0, 2]),
        (0.95, [0.8, 0.75, 0.1], [0, 1, 2]),
    ):
        b, s, _, _ = nms.demote_parts(boxes, scores, classes, valid, 0.7, 0.5, ratio)
        np.testing.assert_allclose(s.numpy()[0], want_scores, rtol=1e-6)
        np.testing.assert_array_equal(b.numpy()[0], boxes[0, want_order])
    # Another class's container never claims it.
    other = np.array([[0, 1, 0]], np.int32)
    s = nms.demote_parts(boxes, scores, other, valid, 0.7, 0.5, 0.5)[1]
    np.testing.assert_allclose(s.numpy()[0], [0.8, 0.75, 0.1], rtol=1e-6)


def test_demote_parts_threshold_ties_and_equal_areas():
    # i = [0, 0, 1, 10] (area 10) has exactly 5 of its area inside j = [0, 5, 2, 20]: demoted at
    # containment 0.5 (>=), kept at 0.51. Equal areas are never parts; equal scores rank by index.
    boxes = np.array([[[0, 5, 2, 20], [0, 0, 1, 10]]], np.float32)
    classes = np.zeros((1, 2), np.int32)
    valid = np.ones((1, 2), bool)
    for containment, want in ((0.5, 0.25), (0.51, 0.5)):
        s = nms.demote_parts(
            boxes, np.array([[0.9, 0.5]], np.float32), classes, valid, containment, 0.5
        )[1]
        assert s.numpy()[0, 1] == pytest.approx(want)
    same = np.array([[[0, 0, 4, 4], [1, 1, 5, 5]]], np.float32)  # equal areas, 9/16 overlap
    s = nms.demote_parts(same, np.array([[0.9, 0.8]], np.float32), classes, valid, 0.5, 0.5)[1]
    np.testing.assert_allclose(s.numpy()[0], [0.9, 0.8])
    tie = np.array([[[0, 0, 10, 10], [2, 2, 4, 4]]], np.float32)
    for order in ([0, 1], [1, 0]):  # the part keeps its tie with the whole only when it comes first
        s = nms.demote_parts(
            tie[:, order], np.full((1, 2), 0.6, np.float32), classes, valid, 0.9, 0.5
        )[1]
        np.testing.assert_allclose(
            sorted(s.numpy()[0]), [0.3, 0.6] if order == [0, 1] else [0.6, 0.6]
        )
    # factor 1: nothing changes, not even the order
    s = nms.demote_parts(tie, np.array([[0.6, 0.7]], np.float32), classes, valid, 0.9, 1.0)[1]
    np.testing.assert_allclose(s.numpy()[0], [0.7, 0.6])

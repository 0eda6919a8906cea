"""Pascal VOC AP: hand-worked cases and an exact brute-force oracle (fractions) on random cases."""

from fractions import Fraction

import numpy as np
import pytest

from dnet_tf.evaluation.voc_ap import average_precision, evaluate_detections, iou_matrix


def _gt(boxes, classes, difficult=None):
    d = {
        "boxes_yxyx": np.array(boxes, np.float32).reshape(-1, 4),
        "classes": np.array(classes, np.int32),
    }
    if difficult is not None:
        d["difficult"] = np.array(difficult, bool)
    return d


def _det(boxes, scores, classes):
    return {
        "boxes_yxyx": np.array(boxes, np.float32).reshape(-1, 4),
        "scores": np.array(scores, np.float32),
        "classes": np.array(classes, np.int32),
    }


A = [0, 0, 10, 10]
B = [20, 20, 40, 30]
C = [5, 30, 15, 50]


@pytest.mark.parametrize("use_07", [True, False])
def test_perfect_detector_scores_one(use_07):
    gt = [_gt([A, B], [0, 1]), _gt([C], [0])]
    det = [_det([A, B], [0.9, 0.8], [0, 1]), _det([C], [0.7], [0])]
    res = evaluate_detections(gt, det, num_classes=2, use_07_metric=use_07)
    assert res.per_class[0].ap == 1.0 and res.per_class[1].ap == 1.0
    assert res.mean_ap == 1.0
    assert res.per_class[0].num_positives == 2 and res.per_class[1].num_positives == 1


def test_one_false_positive_ranked_first():
    # 3 positives; ranking FP, TP, TP, TP.
    # precision after each: 0/1, 1/2, 2/3, 3/4; recall: 0, 1/3, 2/3, 1.
    # The envelope max_{r' >= r} p(r') is 3/4 at every recall level, so
    # all-point AP = 3/4 and 11-point AP = 11 * (3/4) / 11 = 3/4.
    gt = [_gt([A, B, C], [0, 0, 0])]
    far = [60, 60, 70, 70]
    det = [_det([far, A, B, C], [0.95, 0.9, 0.8, 0.7], [0, 0, 0, 0])]
    for use_07 in (True, False):
        res = evaluate_detections(gt, det, 1, use_07_metric=use_07)
        assert res.per_class[0].ap == pytest.approx(0.75, abs=1e-12)
    np.testing.assert_allclose(res.per_class[0].precision, [0, 1 / 2, 2 / 3, 3 / 4])
    np.testing.assert_allclose(res.per_class[0].recall, [0, 1 / 3, 2 / 3, 1])


def test_false_positive_between_true_positives_11_point_vs_all_point():
    # 2 positives; ranking TP, FP, TP: precision 1, 1/2, 2/3; recall 1/2, 1/2, 1.
    # All-point: recall 0 -> 1/2 at envelope 1, recall 1/2 -> 1 at envelope 2/3:
    #   AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    # 11-point: t in {0, .1, .2, .3, .4, .5} -> 1 (six points), t in {.6, .7, .8, .9, 1} -> 2/3
    # (five):
    #   AP = (6 * 1 + 5 * 2/3) / 11 = 28/33.
    gt = [_gt([A, B], [0, 0])]
    det = [_det([A, [60, 60, 70, 70], B], [0.9, 0.8, 0.7], [0, 0, 0])]
    assert evaluate_detections(gt, det, 1, use_07_metric=False).per_class[0].ap == pytest.approx(
        5 / 6, abs=1e-12
    )
    assert evaluate_detections(gt, det, 1, use_07_metric=True).per_class[0].ap == pytest.approx(
        28 / 33, abs=1e-12
    )


def test_recall_exactly_on_eleven_point_thresholds():
    # 4 positives, two TPs: recall 1/4, 1/2 at precision 1. All-point AP = 1/2.
    # 11-point: t = 0, .1, .2, .3, .4, .5 reached (recall 0.5 >= 0.5 counts) -> 6/11.
    assert (
        average_precision(np.array([0.25, 0.5]), np.array([1.0, 1.0]), use_07_metric=False) == 0.5
    )
    assert average_precision(
        np.array([0.25, 0.5]), np.array([1.0, 1.0]), use_07_metric=True
    ) == pytest.approx(6 / 11)
    # 10 positives, three TPs: recall 3/10 must reach t = 0.3 -> 4 of 11 points (0, .1, .2, .3) at
    # precision 1.
    rec = np.array([1, 2, 3]) / 10
    assert average_precision(rec, np.ones(3), use_07_metric=True) == pytest.approx(4 / 11)


def test_difficult_objects_neither_counted_nor_penalised():
    hard = [50, 50, 60, 60]
    gt = [_gt([A, hard], [0, 0], difficult=[False, True])]
    # A detection on the difficult box, ranked first, is ignored: no FP, no TP.
    det = [_det([hard, A], [0.9, 0.8], [0, 0])]
    res = evaluate_detections(gt, det, 1, use_07_metric=False)
    assert res.per_class[0].ap == 1.0
    assert res.per_class[0].num_positives == 1
    assert list(res.per_class[0].tp) == [True] and list(res.per_class[0].fp) == [False]
    # Missing the difficult box costs nothing.
    res = evaluate_detections(gt, [_det([A], [0.8], [0])], 1, use_07_metric=False)
    assert res.per_class[0].ap == 1.0
    # The same box not marked difficult is a positive: recall stops at 1/2 -> all-point AP 1/2.
    gt_easy = [_gt([A, hard], [0, 0], difficult=[False, False])]
    res = evaluate_detections(gt_easy, [_det([A], [0.8], [0])], 1, use_07_metric=False)
    assert res.per_class[0].ap == 0.5


def test_duplicates_are_false_positives():
    # Image 0: box A detected twice (IoU of the copy with A = 9*10/100 = 0.9), image 1: box B once.
    # Ranking TP, FP (duplicate), TP -> same curve as above: all-point AP = 5/6.
    a_copy = [1, 0, 10, 10]
    gt = [_gt([A], [0]), _gt([B], [0])]
    det = [_det([A, a_copy], [0.9, 0.8], [0, 0]), _det([B], [0.7], [0])]
    res = evaluate_detections(gt, det, 1, use_07_metric=False)
    assert list(res.per_class[0].tp) == [True, False, True]
    assert list(res.per_class[0].fp) == [False, True, False]
    assert res.per_class[0].ap == pytest.approx(5 / 6)


def test_iou_threshold_inclusive_and_no_plus_one():
    gt = [_gt([[0, 0, 10, 10]], [0])]
    # [0,0,10,5]: inter 50, union 100 -> IoU exactly 0.5 -> matches (>=).
    assert evaluate_detections(gt, [_det([[0, 0, 10, 5]], [1], [0])], 1).per_class[0].ap == 1.0
    # [0,0,10,4.9]: 49 / 100 < 0.5 -> false positive.
    assert evaluate_detections(gt, [_det([[0, 0, 10, 4.9]], [1], [0])], 1).per_class[0].ap == 0.0
    # Continuous widths: [0,0,10,10] vs [0,0,10,20] is 100 / 200 = 0.5 exactly. The devkit's +1 on
    # the 1-based VOC boxes (1,1,10,10) and (1,1,20,10) (x first) gives 10*10 / (10*20) = 0.5 too,
    # i.e. converting with voc_to_yxyx (xmin - 1, xmax) reproduces the devkit's overlaps.
    assert iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 20]]))[0, 0] == 0.5


def test_detection_takes_best_box_even_if_taken():
    # The devkit compares with the best-overlapping box only: if it is taken, the detection is a
    # FP even when another box would match. Boxes P=[0,0,10,10], Q=[0,6,10,16] (IoU(P,Q)=40/160).
    # Detection 1 = P (TP on P). Detection 2 = [0,2,10,12]: IoU with P = 80/120 = 2/3, with Q =
    # 60/140 = 3/7 < 0.5 anyway -> FP. Detection 3 = [0,4,10,14]: IoU with P = 60/140 = 3/7,
    # with Q = 80/120 = 2/3 -> best is Q, TP.
    gt = [_gt([[0, 0, 10, 10], [0, 6, 10, 16]], [0, 0])]
    det = [_det([[0, 0, 10, 10], [0, 2, 10, 12], [0, 4, 10, 14]], [0.9, 0.8, 0.7], [0, 0, 0])]
    res = evaluate_detections(gt, det, 1)
    assert list(res.per_class[0].tp) == [True, False, True]


def test_class_without_positives_is_nan_and_left_out_of_map():
    gt = [_gt([A], [0])]
    det = [_det([A, B], [0.9, 0.5], [0, 1])]
    res = evaluate_detections(gt, det, 2)
    assert res.per_class[0].ap == 1.0
    assert np.isnan(res.per_class[1].ap)
    assert res.mean_ap == 1.0
    assert res.to_dict(["cat", "dog"])["per_class"]["dog"]["ap"] is None


def test_pooled_curve_ranks_all_classes_together():
    # class 0: A (TP, .9); class 1: FP at .8, B (TP, .7). Pooled ranking TP, FP, TP over 2
    # positives.
    gt = [_gt([A, B], [0, 1])]
    det = [_det([A, [60, 60, 70, 70], B], [0.9, 0.8, 0.7], [0, 1, 1])]
    rec, prec = evaluate_detections(gt, det, 2).pooled_curve()
    np.testing.assert_allclose(rec, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(prec, [1.0, 0.5, 2 / 3])


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="ground_truth has 1 images but detections has 2"):
        evaluate_detections([_gt([A], [0])], [_det([], [], []), _det([], [], [])], 1)
    with pytest.raises(ValueError, match=r"detections\[0\].*'classes'.*outside"):
        evaluate_detections([_gt([A], [0])], [_det([A], [0.5], [3])], 2)
    with pytest.raises(ValueError, match=r"ground_truth\[0\]: missing field 'classes'"):
        evaluate_detections([{"boxes_yxyx": np.zeros((1, 4))}], [_det([], [], [])], 1)
    with pytest.raises(ValueError, match=r"detections\[0\]: field 'boxes_yxyx' has shape"):
        evaluate_detections(
            [_gt([A], [0])], [{"boxes_yxyx": np.zeros((1, 3)), "scores": [1.0], "classes": [0]}], 1
        )


# ----------------------------------------------------------------------------------------------
# Exact oracle: everything in fractions, loops written out, a different AP formula.


def _frac_iou(a, b):
    a = [Fraction(int(v)) for v in a]
    b = [Fraction(int(v)) for v in b]
    ih = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
    iw = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    inter = ih * iw
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else Fraction(0)


def _oracle(gt, det, num_classes):
    """Per-class (AP 11-point, AP all-point) as Fractions; None where no positives."""
    out = []
    for c in range(num_classes):
        npos = sum(int(((g["classes"] == c) & ~g["difficult"]).sum()) for g in gt)
        entries = []  # (-score, image, index) sorts exactly as the stable descending sort
        for i, d in enumerate(det):
            for k in range(len(d["scores"])):
                if d["classes"][k] == c:
                    entries.append((-float(d["scores"][k]), i, k))
        entries.sort()
        used = set()
        flags = []
        for _, i, k in entries:
            best, best_j = Fraction(-1), None
            for j in range(len(gt[i]["classes"])):
                if gt[i]["classes"][j] != c:
                    continue
                o = _frac_iou(det[i]["boxes_yxyx"][k], gt[i]["boxes_yxyx"][j])
                if o > best:
                    best, best_j = o, j
            if best_j is not None and best >= Fraction(1, 2):
                if gt[i]["difficult"][best_j]:
                    continue
                flags.append((i, best_j) not in used)
                used.add((i, best_j))
            else:
                flags.append(False)
        if npos == 0:
            out.append(None)
            continue
        prec, rec, tp = [], [], 0
        for n, f in enumerate(flags, start=1):
            tp += f
            prec.append(Fraction(tp, n))
            rec.append(Fraction(tp, npos))

        def best_prec(t, prec=prec, rec=rec):
            vals = [p for p, r in zip(prec, rec) if r >= t]
            return max(vals) if vals else Fraction(0)

        ap07 = sum(best_prec(Fraction(k, 10)) for k in range(11)) / 11
        # All-point AP: each positive adds 1/npos of recall, at the best precision reaching it.
        ap_all = sum(best_prec(Fraction(k, npos)) for k in range(1, npos + 1)) / npos
        out.append((ap07, ap_all))
    return out


def _random_boxes(rng, n):
    y0, x0 = rng.integers(0, 8, size=(2, n))
    h, w = rng.integers(1, 6, size=(2, n))
    return np.stack([y0, x0, y0 + h, x0 + w], 1).astype(np.float32).reshape(-1, 4)


def _random_case(rng, num_images, num_classes):
    """Integer boxes on a small grid: many overlaps sit exactly on IoU 0.5 (e.g. 2x2 vs 2x1)."""
    gt, det = [], []
    for _ in range(num_images):
        n = int(rng.integers(0, 5))
        g_boxes = _random_boxes(rng, n)
        g_classes = rng.integers(0, num_classes, n).astype(np.int32)
        gt.append({"boxes_yxyx": g_boxes, "classes": g_classes, "difficult": rng.random(n) < 0.25})
        # Half the detections are ground-truth boxes moved by -1..1 per side (near-threshold
        # overlaps,
        # duplicates, hits on difficult boxes), the rest random; scores coarse so that ties occur.
        k_near = int(rng.integers(0, 2 * n + 1))
        src = rng.integers(0, max(n, 1), k_near)
        near = (
            g_boxes[src] + rng.integers(-1, 2, size=(k_near, 4))
            if n
            else np.zeros((0, 4), np.float32)
        )
        near = (
            np.concatenate([np.minimum(near[:, :2], near[:, 2:] - 1), near[:, 2:]], 1)
            if n
            else near
        )
        near_classes = g_classes[src] if n else np.zeros(0, np.int32)
        k_far = int(rng.integers(0, 4))
        boxes = np.concatenate([near, _random_boxes(rng, k_far)]).astype(np.float32)
        classes = np.concatenate([near_classes, rng.integers(0, num_classes, k_far)]).astype(
            np.int32
        )
        det.append(
            {
                "boxes_yxyx": boxes,
                "scores": (rng.integers(0, 10, len(boxes)) / 10).astype(np.float32),
                "classes": classes,
            }
        )
    return gt, det


@pytest.mark.parametrize("seed", range(8))
def test_matches_exact_oracle_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    gt, det = _random_case(rng, num_images=8, num_classes=3)
    expected = _oracle(gt, det, 3)
    for use_07, slot in ((True, 0), (False, 1)):
        res = evaluate_detections(gt, det, 3, use_07_metric=use_07)
        defined = []
        for c, exp in enumerate(expected):
            if exp is None:
                assert np.isnan(res.per_class[c].ap)
            else:
                assert res.per_class[c].ap == pytest.approx(float(exp[slot]), abs=1e-12), (
                    seed,
                    c,
                    use_07,
                )
                defined.append(float(exp[slot]))
        if defined:
            assert res.mean_ap == pytest.approx(np.mean(defined), abs=1e-12)


def test_size_subset_small_objects_worked_by_hand():
    """AP over small objects (COCO's rule): in a 100 x 100 image, small = side < 0.15 of the
    image's, i.e. box area < 225 px². Ground truth: S1, S2 (10 x 10, small) and L (40 x 40,
    large). Detections, best first: L (matches large ground truth: ignored), a large false
    positive far away (outside the range, matches nothing: ignored), S1 (true positive), a small
    false positive (counted), then nothing for S2.
    Ranked and kept: TP, FP -> precision 1, 1/2 at recall 1/2, 1/2; 11-point AP = 6/11 * 1 = 6/11
    (recall levels 0 .. 0.5 reach precision 1, levels 0.6 .. 1 none)."""
    from dnet_tf.evaluation.voc_ap import size_subset

    s1, s2, big = [0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 60, 60]
    big_fp, small_fp = [60, 0, 100, 40], [80, 80, 90, 90]
    gt = [_gt([s1, s2, big], [0, 0, 0])]
    det = [_det([big, big_fp, s1, small_fp], [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0])]
    sub_gt, sub_det = size_subset(gt, det, [(100, 100)], max_side=0.15)
    np.testing.assert_array_equal(sub_gt[0]["difficult"], [False, False, True])
    np.testing.assert_array_equal(sub_det[0]["ignore_unmatched"], [True, True, False, False])
    res = evaluate_detections(sub_gt, sub_det, 1, use_07_metric=True)
    assert res.per_class[0].num_positives == 2
    np.testing.assert_array_equal(res.per_class[0].tp, [True, False])
    assert res.per_class[0].ap == pytest.approx(6 / 11, abs=1e-12)
    # Without the subset the same detections score on all three objects: TP, FP, TP, FP ->
    # recall 1/3, 1/3, 2/3, 2/3, precision 1, 1/2, 2/3, 1/2: the flags change the result.
    full = evaluate_detections(gt, det, 1, use_07_metric=True)
    np.testing.assert_array_equal(full.per_class[0].tp, [True, False, True, False])


def test_size_subset_checks_lengths():
    from dnet_tf.evaluation.voc_ap import size_subset

    with pytest.raises(ValueError, match="differ in length"):
        size_subset([_gt([A], [0])], [_det([A], [1.0], [0])], [])

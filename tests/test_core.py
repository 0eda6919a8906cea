"""dnet_tf.core: the shared rules, worked by hand, equal under NumPy and TensorFlow, TF-free."""

import io
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from dnet_tf.core import boxes, nms, policy, search, windows
from dnet_tf.core.detections import Detections
from dnet_tf.core.xp import NUMPY
from dnet_tf.ops.xp import TENSORFLOW


def test_core_never_imports_tensorflow():
    code = (
        "import sys, pkgutil, importlib, dnet_tf.core as c\n"
        "for m in pkgutil.iter_modules(c.__path__):\n"
        "    importlib.import_module('dnet_tf.core.' + m.name)\n"
        "bad = [m for m in sys.modules if m == 'tensorflow' or m.startswith('tensorflow.')\n"
        "       or m == 'keras']\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("mode,want", [("classifier", 0.8), ("eq3", 0.5), ("product", 0.4)])
def test_confidence_hand_worked_in_both_namespaces(mode, want):
    # Eq. (3) = 2.5 of a possible 5 -> agreement 0.5; P(class) 0.8.
    got_np = policy.confidence(np.float32([0.8]), np.float32([2.5]), mode)
    got_tf = policy.confidence(tf.constant([0.8]), tf.constant([2.5]), mode, TENSORFLOW)
    assert got_np[0] == pytest.approx(want) and got_tf.numpy()[0] == got_np[0]
    # Eq. (3) outside [0, 5] is clipped: 7 -> 1, -3 -> 0.
    assert policy.confidence(np.float32([1.0, 1.0]), np.float32([7, -3]), "eq3").tolist() == [1, 0]
    with pytest.raises(ValueError, match="score_mode"):
        policy.confidence(np.float32([1.0]), np.float32([1.0]), "sum")


def test_refined_agreement_hand_worked():
    first, refined = np.float32([3.0, 1.0]), np.float32([1.0, 4.0])
    assert policy.refined_agreement(first, refined, "mean").tolist() == [2.0, 2.5]
    assert policy.refined_agreement(first, refined, "min").tolist() == [1.0, 1.0]
    assert policy.refined_agreement(first, refined, "refined").tolist() == [1.0, 4.0]
    assert policy.refined_agreement(first, refined, "first").tolist() == [3.0, 1.0]
    got = policy.refined_agreement(tf.constant(first), tf.constant(refined), "min", TENSORFLOW)
    assert got.numpy().tolist() == [1.0, 1.0]


def test_refinement_crop_hand_worked_in_both_namespaces():
    # Image 100 x 200 (h x w). Box rows 80-100, cols 10-50 grown 1.6x: rows 74-106, cols -2-62.
    # The image's own box grown: rows -30-130, cols -60-260. Rows 40-60, cols 80-120 grown: rows
    # 34-66, cols 68-132, inside.
    b = np.float32([[80, 10, 100, 50], [0, 0, 100, 200], [40, 80, 60, 120]])
    grown = [[74, -2, 106, 62], [-30, -60, 130, 260], [34, 68, 66, 132]]
    clip = [[74, 0, 100, 62], [0, 0, 100, 200], [34, 68, 66, 132]]
    # shift: 32 rows moved up to end at 100 (68-100); 64 cols moved right to start at 0 (0-64);
    # the crop longer than the image on both axes becomes the image.
    shift = [[68, 0, 100, 64], [0, 0, 100, 200], [34, 68, 66, 132]]
    for mode, want in (("grow", grown), ("clip", clip), ("shift", shift)):
        np.testing.assert_allclose(
            policy.refinement_crop(b, 100.0, 200.0, 1.6, mode), want, atol=1e-4
        )
        got = policy.refinement_crop(tf.constant(b), 100.0, 200.0, 1.6, mode, TENSORFLOW)
        np.testing.assert_allclose(got.numpy(), want, atol=1e-4)
    with pytest.raises(ValueError, match="refine_crop must be one of"):
        policy.refinement_crop(b, 100.0, 200.0, 1.6, "pad")


def test_is_candidate_and_refined_box_hand_worked_in_both_namespaces():
    scores = np.float32([policy.INVALID_SCORE, -2.0, 0.5, 1.5, 4.0])
    assert policy.is_candidate(scores, -10.0).tolist() == [False, True, True, True, True]
    assert policy.is_candidate(scores, 1.5).tolist() == [False, False, False, True, True]
    got = policy.is_candidate(tf.constant(scores), 1.5).numpy()
    assert got.tolist() == [False, False, False, True, True]
    first, refined = np.float32([[10, 20, 50, 60]]), np.float32([[14, 16, 58, 60]])
    assert policy.refined_box(first, refined, 0.25).tolist() == [[11, 19, 52, 60]]
    assert policy.refined_box(first, refined, 1.0) is refined
    assert policy.refined_box(first, refined, 0.0).tolist() == first.tolist()
    got = policy.refined_box(tf.constant(first), tf.constant(refined), 0.5).numpy()
    assert got.tolist() == [[12, 18, 54, 60]]
    # The gate: the refined box only where its Eq. (3) reaches the first stage's plus the margin.
    first2 = np.float32([[0, 0, 10, 10], [0, 0, 20, 20]])
    refined2 = np.float32([[1, 1, 9, 9], [2, 2, 18, 18]])
    first_eq3, refined_eq3 = np.float32([3.0, 3.0]), np.float32([3.5, 2.9])
    got = policy.refinement_kept(first2, refined2, first_eq3, refined_eq3, 0.0)
    assert got.tolist() == [[1, 1, 9, 9], [0, 0, 20, 20]]
    got = policy.refinement_kept(first2, refined2, first_eq3, refined_eq3, 0.5)
    assert got.tolist() == [[1, 1, 9, 9], [0, 0, 20, 20]]  # 3.5 reaches 3.0 + 0.5 exactly
    got = policy.refinement_kept(first2, refined2, first_eq3, refined_eq3, 0.6)
    assert got.tolist() == first2.tolist()
    assert policy.refinement_kept(first2, refined2, first_eq3, refined_eq3, -10.0) is refined2
    args = [tf.constant(a) for a in (first2, refined2, first_eq3, refined_eq3)]
    got = policy.refinement_kept(*args, 0.0, TENSORFLOW).numpy()
    assert got.tolist() == [[1, 1, 9, 9], [0, 0, 20, 20]]
    # The shrink guard: refined areas 64 / 100 = 0.64 and 256 / 400 = 0.64 of the first stage's.
    # At ratio 0.64 both are kept (reached exactly); at 0.65 neither; with the margin 0 as well,
    # the second falls to the margin (2.9 < 3.0) whatever the ratio.
    for ratio, want in ((0.64, refined2), (0.65, first2)):
        got = policy.refinement_kept(first2, refined2, first_eq3, refined_eq3, -10.0, NUMPY, ratio)
        assert got.tolist() == want.tolist(), ratio
        got = policy.refinement_kept(*args, -10.0, TENSORFLOW, ratio).numpy()
        assert got.tolist() == want.tolist(), ratio
    got = policy.refinement_kept(first2, refined2, first_eq3, refined_eq3, 0.0, NUMPY, 0.5)
    assert got.tolist() == [[1, 1, 9, 9], [0, 0, 20, 20]]
    got = policy.refinement_kept(*args, 0.0, TENSORFLOW, 0.7).numpy()
    assert got.tolist() == first2.tolist()
    # A refined box larger than the first-stage box always passes the guard.
    grown = np.float32([[0, 0, 12, 12], [0, 0, 30, 30]])
    got = policy.reported_box(first2, grown, first_eq3, refined_eq3, 1.0, -10.0, NUMPY, 1.0)
    assert got.tolist() == grown.tolist()


def test_part_of_hand_worked():
    b = np.array(
        [
            [0, 0, 10, 10],  # 0: the whole object, best
            [2, 2, 6, 6],  # 1: inside 0, same class, ranked below -> part
            [2, 2, 6, 6],  # 2: same box, other class -> not a part
            [0, 0, 10, 10],  # 3: as large as 0 -> not a part (not smaller)
            [8, 8, 12, 12],  # 4: 4 of its 16 inside 0 = 0.25 < 0.7 -> not a part
            [1, 1, 5, 5],  # 5: inside 0 but not valid (padding) -> not a part
        ],
        np.float32,
    )
    scores = np.float32([0.9, 0.8, 0.8, 0.5, 0.4, 0.3])
    classes = np.array([0, 0, 1, 0, 0, 0])
    valid = np.array([True] * 5 + [False])
    got = policy.part_of(b, scores, classes, valid, 0.7)
    assert got.tolist() == [False, True, False, False, False, False]
    # A better-ranked small box is not a part of a worse large one.
    swapped = policy.part_of(b[[1, 0]], np.float32([0.9, 0.8]), classes[:2], valid[:2], 0.7)
    assert swapped.tolist() == [False, False]
    on_tf = policy.part_of(
        tf.constant(b),
        tf.constant(scores),
        tf.constant(classes),
        tf.constant(valid),
        0.7,
        TENSORFLOW,
    )
    assert on_tf.numpy().tolist() == got.tolist()


def test_box_maths_hand_worked_and_equal_in_both_namespaces():
    a = np.array([[0, 0, 10, 10], [5, 5, 6, 6]], np.float32)
    c = np.array([[0, 5, 10, 15], [20, 20, 20, 30]], np.float32)  # the second has no area
    np.testing.assert_allclose(boxes.iou(a, c), [[50 / 150, 0], [1 / 100, 0]], rtol=1e-6)
    np.testing.assert_array_equal(
        boxes.iou(tf.constant(a), tf.constant(c), TENSORFLOW).numpy(), boxes.iou(a, c)
    )
    # VOC (1, 1, W, H) is the whole W x H image; and back.
    np.testing.assert_array_equal(
        boxes.voc_to_yxyx(np.array([1.0, 1.0, 500, 375])), [0, 0, 375, 500]
    )
    np.testing.assert_array_equal(boxes.yxyx_to_voc(np.array([0.0, 0, 375, 500])), [1, 1, 500, 375])
    # A 2 x 4 box grown x1.5 about its centre (1, 2).
    np.testing.assert_array_equal(
        boxes.scale_about_center(np.array([0.0, 0, 2, 4]), 1.5), [-0.5, -1, 2.5, 5]
    )
    # Cell (2, 3) of a 10 x 10 canvas over the window [100, 200, 150, 300] of an image.
    got = boxes.from_frame(np.array([2.0, 3, 3, 4]), np.array([100.0, 200, 150, 300]), 10, 10)
    np.testing.assert_array_equal(got, [110, 230, 115, 240])


def test_nms_rule_matches_tensorflow_on_ties_and_exact_threshold():
    # Box 1 overlaps box 0 at IoU 0.5 exactly (kept: suppression is strictly above); boxes 2 and
    # 3 tie in score and are identical: the lower index wins.
    b = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [20, 0, 30, 10], [20, 0, 30, 10]], np.float32)
    s = np.float32([0.9, 0.8, 0.7, 0.7])
    want = tf.image.non_max_suppression(b, s, 10, iou_threshold=0.5).numpy().tolist()
    assert nms.greedy_nms(b, s, 10, 0.5).tolist() == want == [0, 1, 2]
    assert nms.greedy_nms(b, s, 10, 0.5, score_threshold=0.75).tolist() == [0, 1]


def test_windows_layout_is_the_papers_35():
    assert windows.windows_per_scale(3, 0.2) == (1, 9, 25)
    unit, ids = windows.unit_windows(3, 0.2)
    assert unit.shape == (35, 4) and np.bincount(ids).tolist() == [1, 9, 25]
    # Scale 1: side 1/2 at 0, 1/4, 1/2: neighbours overlap by half a side (>= 20%).
    np.testing.assert_array_equal(unit[1:4, 1], [0.0, 0.25, 0.5])


def test_size_fractions_at_scale_hand_worked():
    sizes = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    # Bounds (0.2, 1): a box 0.2 to 1 window side. Scale 0 (window = image): 0.2 .. 0.9; scale 1
    # (half the image): 0.1 .. 0.5 (0.1 / 0.5 = 0.2 and 0.5 / 0.5 = 1 both count); scale 2
    # (a quarter): 0.1 and 0.2 (0.3 / 0.25 = 1.2 is past the window).
    assert windows.size_fractions_at_scale(sizes, 0, (0.2, 1.0)) == sizes[1:]
    assert windows.size_fractions_at_scale(sizes, 1, (0.2, 1.0)) == sizes[:5]
    assert windows.size_fractions_at_scale(sizes, 2, (0.2, 1.0)) == [0.1, 0.2]
    # The paper's (every size at every scale), and a scale no size fits: the nearest is kept.
    assert windows.size_fractions_at_scale(sizes, 2, (0.0, 100.0)) == sizes
    assert windows.size_fractions_at_scale(sizes, 3, (0.9, 1.0)) == [0.1]  # 0.1 / 0.125 = 0.8
    assert windows.size_fractions_at_scale(sizes, 0, (0.0, 0.05)) == [0.1]


def test_search_rules_hand_worked():
    h, w = search.box_shapes(np.float32(100.0), [0.5], [2.0])[0]
    assert (h, w) == pytest.approx((100 / 3, 200 / 3))
    assert search.ring_width(np.float32([12, 13, 2]), 0.2).tolist() == [2, 3, 1]
    hs, ws = search.shape_cells(np.float32([[2.5, 0.2], [40.0, 7.49]]), 30, 30)
    assert hs.tolist() == [3, 30] and ws.tolist() == [1, 7]
    assert search.stride_cells(np.float32(0.4)) == 1 and search.stride_cells(np.float32(2.5)) == 3


def test_halves_round_up_also_a_few_ulps_below():
    # 22.499998 is what the traced graph computes for a side NumPy computes as 22.5: both must
    # give the same whole cells; a genuine 22.4998 still rounds down.
    sides = np.float32([22.5, 22.499998, 22.4998, 4.4999995, 13.499999])
    assert search.round_half_up(sides).tolist() == [23, 23, 22, 5, 14]
    hs, _ = search.shape_cells(np.stack([sides, sides], axis=1), 100, 100)
    assert hs.tolist() == [23, 23, 22, 5, 14]


def _outputs():
    """Two images' padded outputs as the SavedModel returns them (K = 3)."""
    return {
        "num_detections": np.float32([2, 1]),
        "detection_boxes": np.float32(
            [
                [[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1], [0, 0, 0, 0]],
                [[0.5, 0.5, 1, 1], [0] * 4, [0] * 4],
            ]
        ),
        "detection_scores": np.float32([[0.9, 0.3, 0], [0.7, 0, 0]]),
        "detection_classes": np.float32([[2, 1, 0], [1, 0, 0]]),
        "detection_class_names": np.array([[b"dog", b"cat", b""], [b"cat", b"", b""]], object),
    }


def test_detections_from_outputs_pixels_names_json_and_select():
    a, b = Detections.batch_from_outputs(_outputs(), [(100, 200), (10, 20)], ["a.jpg", "b.jpg"])
    assert len(a) == 2 and len(b) == 1
    np.testing.assert_allclose(a.boxes_image_yxyx[0], [10, 40, 50, 120], rtol=1e-6)
    assert a.classes.tolist() == [1, 0] and a.class_names == ("dog", "cat")
    d = a.to_dict()
    assert d["source"] == "a.jpg" and d["detections"][0]["class_name"] == "dog"
    assert d["detections"][1]["image_yxyx"] == [0.0, 0.0, 100.0, 200.0]
    only_cats = a.select(a.classes == 0)
    assert only_cats.class_names == ("cat",) and only_cats.source == "a.jpg"
    # Names looked up from a class list instead of the names output; unknown ids refused.
    one = Detections.from_outputs(_outputs(), 10, 20, ["cat", "dog"], index=1)
    assert one.class_names == ("cat",)
    with pytest.raises(ValueError, match="outside"):
        Detections.from_outputs(_outputs(), 10, 20, ["cat"], index=0)
    with pytest.raises(ValueError, match="lack"):
        Detections.from_outputs({"num_detections": np.float32([1])}, 10, 20)


def test_detections_draw_reads_back_the_box_colour():
    (a, _) = Detections.batch_from_outputs(_outputs(), [(100, 200), (10, 20)], ["a", "b"])
    png = a.select([0]).draw(np.full((100, 200, 3), 255, np.uint8), line_width=1)
    drawn = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    # Box [10, 40, 50, 120): its outline runs along row 49 and column 119 (Pillow inclusive).
    colour = tuple(int(v) for v in drawn[49, 80])
    assert colour == (60, 180, 75)  # class id 1's palette colour
    assert tuple(drawn[80, 150]) == (255, 255, 255)
    with pytest.raises(ValueError, match="detections are for 200x100"):
        a.draw(np.zeros((10, 10, 3), np.uint8))

"""Error analysis (dnet_tf.evaluation.errors) on cases worked by hand."""

import json

import numpy as np
import pytest

from dnet_tf.evaluation.errors import analyse_errors, containment, touching, write_error_analysis

NAMES = ["ball", "star"]


def gt(boxes, classes, difficult=None):
    return {
        "boxes_yxyx": np.asarray(boxes, np.float32).reshape(-1, 4),
        "classes": np.asarray(classes, np.int32),
        "difficult": np.zeros(len(classes), bool) if difficult is None else np.asarray(difficult),
    }


def dets(boxes, scores, classes):
    return {
        "boxes_yxyx": np.asarray(boxes, np.float32).reshape(-1, 4),
        "scores": np.asarray(scores, np.float32),
        "classes": np.asarray(classes, np.int32),
    }


A, B, C = [0, 0, 10, 10], [0, 10, 10, 20], [30, 30, 40, 40]  # balls: A and B touch
D, H = [50, 50, 60, 60], [70, 70, 80, 80]  # stars: H difficult
E, F, G = [0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]  # balls of image 2, all missed

GROUND_TRUTH = [gt([A, B, C, D, H], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1]), gt([E, F, G], [0, 0, 0])]
DETECTIONS = [
    dets(
        [
            A,  # 0.9 the ball A: true positive
            [0, 0, 10, 9],  # 0.8 IoU 0.9 with A, taken: duplicate
            [2, 2, 6, 6],  # 0.7 all inside A, IoU 0.16: part
            [30, 35, 40, 45],  # 0.6 IoU 50 / 150 = 0.33 with C, half inside it: localization
            D,  # 0.5 a ball on the star D: other class
            [80, 0, 90, 10],  # 0.4 nothing near: background
            B,  # 0.3 the 7th ball detection, past N = 6 balls: only in the recall
            H,  # 0.9 star on the difficult star: ignored
        ],
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.9],
        [0, 0, 0, 0, 0, 0, 0, 1],
    ),
    dets([], [], []),
]


def test_containment_and_touching_hand_worked():
    # [2, 2, 6, 6] (area 16) lies wholly inside A; [30, 35, 40, 45] half inside C; A in the part:
    # 16 / 100.
    got = containment([[2, 2, 6, 6], [30, 35, 40, 45]], [A, C])
    np.testing.assert_allclose(got, [[1.0, 0.0], [0.0, 0.5]])
    np.testing.assert_allclose(containment([A], [[2, 2, 6, 6]]), [[0.16]])
    # A and B share the edge x = 10: touching; C is 20 px away; a box 1 px from C touches it,
    # 1.5 px does not.
    np.testing.assert_array_equal(touching([A, B, C]), [True, True, False])
    np.testing.assert_array_equal(touching([C, [41, 30, 50, 40]]), [True, True])
    np.testing.assert_array_equal(touching([C, [41.5, 30, 50, 40]]), [False, False])


def test_each_error_type_counted_once_at_the_top_n_point():
    rep = analyse_errors(GROUND_TRUTH, DETECTIONS, NAMES)
    ball, star = rep.per_class
    assert ball["num_positives"] == 6
    for kind, n in [
        ("true_positive", 1),
        ("duplicate", 1),
        ("part", 1),
        ("localization", 1),
        ("other_class", 1),
        ("background", 1),
        ("missed", 5),  # B (found only past N), C, E, F, G
    ]:
        assert ball[kind] == n, kind
    # Recall over all detections: the touching A and B are both found (B by the 7th
    # detection); of the isolated C, E, F, G none.
    assert (ball["recall_touching"], ball["num_touching"]) == (1.0, 2)
    assert (ball["recall_isolated"], ball["num_isolated"]) == (0.0, 4)
    # Stars: the difficult H is not an object to find, and the detection on it is ignored.
    assert star["num_positives"] == 1 and star["missed"] == 1
    assert sum(star[k] for k in ("true_positive", "duplicate", "part", "background")) == 0
    assert star["recall_touching"] is None and star["recall_isolated"] == 0.0
    assert rep.totals["part"] == 1 and rep.totals["missed"] == 6
    assert rep.totals["recall_touching"] == 1.0 and rep.totals["recall_isolated"] == 0.0
    assert rep.to_dict()["part_false_positives_per_image"] == 0.5


def test_part_of_a_box_needs_the_fraction_and_its_own_class():
    # [0, 0, 10, 7]: inside A with IoU 0.7 -> a true positive, not a part. [0, 0, 10, 4]: inside
    # A, IoU 0.4 -> a part. [0, 0, 10, 12] (IoU 100 / 120 = 0.83) after A is taken: duplicate.
    g = [gt([A, [40, 40, 50, 50], [60, 60, 70, 70]], [0, 0, 0])]
    d = [dets([[0, 0, 10, 7], [0, 0, 10, 4], [0, 0, 10, 12]], [0.9, 0.8, 0.7], [0, 0, 0])]
    row = analyse_errors(g, d, NAMES).per_class[0]
    assert (row["true_positive"], row["part"], row["duplicate"]) == (1, 1, 1)
    # With no stars in the split (N = 0), no star detection is counted at all.
    d = [dets([[0, 0, 10, 4]], [0.9], [1])]
    assert analyse_errors(g, d, NAMES).per_class[1]["other_class"] == 0
    # A star box inside a ball is not a part of the ball: an "other class" error.
    g2 = [gt([A, D], [0, 1])]
    row = analyse_errors(g2, [dets([[0, 0, 10, 4]], [0.9], [1])], NAMES).per_class[1]
    assert row["other_class"] == 1 and row["part"] == 0


def test_write_error_analysis_files(tmp_path):
    rep = analyse_errors(GROUND_TRUTH, DETECTIONS, NAMES)
    paths = write_error_analysis({"refined": rep}, str(tmp_path))
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["errors.md", "errors.json", "errors.png"]
    data = json.loads((tmp_path / "errors.json").read_text())
    assert data["refined"]["per_class"]["ball"]["part"] == 1
    assert data["refined"]["totals"]["missed"] == 6
    md = (tmp_path / "errors.md").read_text()
    assert "| ball | 6 | 1 | 1 | 1 | 1 | 1 | 1 | 5 | 1.000 (2) | 0.000 (4) |" in md
    assert (tmp_path / "pictures" / "errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mismatched_inputs_are_rejected():
    with pytest.raises(ValueError, match="2 ground-truth images but 1"):
        analyse_errors(GROUND_TRUTH, DETECTIONS[:1], NAMES)
    with pytest.raises(ValueError, match="part_fraction"):
        analyse_errors(GROUND_TRUTH, DETECTIONS, NAMES, part_fraction=0.0)

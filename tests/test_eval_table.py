"""Table 1 layout: markdown cells, block split as in the paper, JSON round trip."""

import json
import math

import numpy as np
import pytest

from dnet_tf.constants import VOC_CLASSES
from dnet_tf.evaluation.table import PAPER_TABLE1, Table, TableRow, is_voc_class_list
from dnet_tf.evaluation.voc_ap import evaluate_detections


def _two_class_result():
    # class 0 ("cat"): one box, found -> AP 1. class 1 ("dog"): two boxes, ranking TP, FP, TP ->
    # all-point AP 1/2 * 1 + 1/2 * 2/3 = 5/6 = 0.833; mAP (1 + 5/6) / 2 = 11/12 = 0.917.
    gt = [
        {
            "boxes_yxyx": np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]]),
            "classes": np.array([0, 1, 1]),
        }
    ]
    det = [
        {
            "boxes_yxyx": np.array(
                [[0, 0, 10, 10], [20, 20, 30, 30], [60, 60, 70, 70], [40, 40, 50, 50]]
            ),
            "scores": np.array([0.9, 0.8, 0.7, 0.6]),
            "classes": np.array([0, 1, 1, 1]),
        }
    ]
    return evaluate_detections(gt, det, 2, use_07_metric=False)


def test_markdown_cells_worked_by_hand():
    res = _two_class_result()
    table = Table(
        ["cat", "dog"],
        [
            TableRow.from_result(
                "DetectorNet", res, seconds_per_image=1.234, network_evaluations_per_image=36
            ),
            TableRow("Sliding windows", [0.5, float("nan")], 0.5, num_images=1),
        ],
        metric="VOC2010 all-point",
    )
    md = table.to_markdown().splitlines()
    assert md[0] == "Average precision (VOC2010 all-point, IoU >= 0.5)."
    assert md[2] == "| method | cat | dog | mAP | images | s / image | network evals / image |"
    assert md[4] == "| DetectorNet | 1.000 | 0.833 | 0.917 | 1 | 1.23 | 36.0 |"
    assert md[5] == "| Sliding windows | 0.500 | — | 0.500 | 1 | — | — |"


def test_json_round_trip_keeps_values_and_undefined_cells():
    res = _two_class_result()
    table = Table(
        ["cat", "dog"],
        [
            TableRow.from_result("DetectorNet", res, 2.0, 36.0),
            TableRow("Sliding windows", [0.25, float("nan")], 0.25, 1, None, 1234.0),
        ],
    )
    d = json.loads(table.to_json())
    assert d["rows"][0]["ap"] == {"cat": 1.0, "dog": pytest.approx(5 / 6)}
    assert d["rows"][0]["mAP"] == pytest.approx(11 / 12)
    assert d["rows"][1]["ap"]["dog"] is None and d["rows"][1]["seconds_per_image"] is None
    back = Table.from_dict(d)
    assert back.to_markdown() == table.to_markdown()
    assert math.isnan(back.rows[1].aps[1])


def test_twenty_voc_classes_split_in_two_blocks_with_paper_names(tmp_path):
    assert is_voc_class_list(VOC_CLASSES) and not is_voc_class_list(["cat", "dog"])
    table = Table(
        list(VOC_CLASSES),
        [
            TableRow.from_paper("DetectorNet (paper)"),
            TableRow.from_paper("Sliding windows (paper)"),
        ],
    )
    md_path, json_path = table.write(str(tmp_path))
    md = open(md_path).read().split("\n\n")
    # Block 1: method + 10 classes; block 2: method + 10 classes + mAP + 3 cost columns.
    first = md[1].splitlines()
    second = md[2].splitlines()
    assert (
        first[0]
        == "| method | aero | bicycle | bird | boat | bottle | bus | car | cat | chair | cow |"
    )
    assert second[0].startswith(
        "| method | table | dog | horse | m-bike | person | plant | sheep | sofa | train | tv | mAP"
    )
    # Paper values: aero .292 (block 1, DetectorNet), tv .119 (block 2, sliding windows).
    assert first[2].split(" | ")[1] == "0.292"
    assert second[3].split(" | ")[10] == "0.119"
    # The row mean is the mean of the 20 copied values.
    assert table.rows[0].mean_ap == pytest.approx(sum(PAPER_TABLE1["DetectorNet (paper)"]) / 20)
    assert json.loads(open(json_path).read())["rows"][0]["ap"]["aeroplane"] == 0.292


def test_row_length_mismatch_is_refused():
    with pytest.raises(ValueError, match="table row 'x' has 1 APs for 2 classes"):
        Table(["a", "b"], [TableRow("x", [0.1], 0.1)])

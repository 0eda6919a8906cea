"""The evaluation command end to end on a hand-made VOC set with a stand-in detector and
classifier."""

import json

import keras
import numpy as np
import pytest
from PIL import Image

from dnet_tf.core.detections import Detections
from dnet_tf.evaluation import cli
from dnet_tf.evaluation.runner import read_detections
from dnet_tf.evaluation.sliding_window import SlidingWindowConfig, count_boxes
from dnet_tf.evaluation.voc_ap import evaluate_detections
from dnet_tf.inference.detector import DetectionResult

H, W = 60, 80
CLASSES = ["cat", "dog"]
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)
# image id -> list of (class, image_yxyx, colour, difficult). Cats are red, dogs blue; the
# difficult dog is green, which the stand-in detector does not see.
IMAGES = {
    "img0": [("cat", (10, 10, 30, 40), RED, 0), ("dog", (35, 50, 55, 75), BLUE, 0)],
    "img1": [("cat", (5, 40, 25, 70), RED, 0), ("dog", (40, 5, 55, 25), GREEN, 1)],
    "img2": [("dog", (20, 20, 50, 60), BLUE, 0)],
}


def _write_voc(root):
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    for image_id, objects in IMAGES.items():
        pixels = np.full((H, W, 3), 128, np.uint8)
        xml = [
            f"<annotation><filename>{image_id}.png</filename>"
            f"<size><width>{W}</width><height>{H}</height><depth>3</depth></size>"
        ]
        for name, (y0, x0, y1, x1), colour, difficult in objects:
            pixels[y0:y1, x0:x1] = colour
            # VOC is 1-based inclusive: continuous [x0, x1) -> xmin = x0 + 1, xmax = x1.
            xml.append(
                f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
                f"<xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax>"
                f"</bndbox></object>"
            )
        xml.append("</annotation>")
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{image_id}.png")
        (root / "Annotations" / f"{image_id}.xml").write_text("".join(xml))
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(IMAGES) + "\n")


def _colour_box(image, colour):
    ys, xs = np.nonzero(np.all(image == colour, axis=-1))
    if ys.size == 0:
        return None
    return np.array([ys.min(), xs.min(), ys.max() + 1, xs.max() + 1], np.float32)


class FakeDetector:
    """Finds the red (cat) and blue (dog) rectangles exactly, score 1 - (ymin + xmin) / 200:
    cat img0 0.9, dog img0 0.575, cat img1 0.775, dog img2 0.8. The first stage misplaces the cat
    of img1 (the third call, after the warm-up on img0) by the box's own width."""

    class_names = CLASSES

    def __init__(self):
        self.calls = 0

    def detect(self, images):
        out = []
        for image in images:
            self.calls += 1
            boxes, scores, classes = [], [], []
            masks = np.zeros((12, 16, 5, 2), np.float32)
            for cls, colour in enumerate((RED, BLUE)):
                box = _colour_box(image, colour)
                if box is None:
                    continue
                boxes.append(box)
                classes.append(cls)
                y0, x0, y1, x1 = (box / 5).astype(int)  # 5 px per mask cell
                masks[y0:y1, x0:x1, 0, cls] = 1.0
            boxes = np.array(boxes, np.float32).reshape(-1, 4)
            first = boxes.copy()
            if (
                self.calls == 3 and len(classes) and classes[0] == 0
            ):  # img1 after the warm-up on img0
                first[0, [1, 3]] += first[0, 3] - first[0, 1]
            scores = (1.0 - (boxes[:, 0] + boxes[:, 1]) / 200.0).astype(np.float32)
            h, w = image.shape[:2]
            scale = np.array([h, w, h, w], np.float64)

            def dets(b, classes=classes, scores=scores, scale=scale, h=h, w=w):
                names = [CLASSES[c] for c in classes]
                return Detections(h, w, b / scale, np.array(classes), names, scores)

            out.append(
                DetectionResult(
                    detections=dets(boxes),
                    first_stage=dets(first),
                    full_masks=masks,
                    network_evaluations=36,
                )
            )
        return out


def _colour_classifier(size=16):
    """P(cat) = half the red fraction of the crop, P(dog) = half the blue fraction, rest
    background."""
    inp = keras.Input((size, size, 3))

    class Head(keras.layers.Layer):
        def call(self, x):
            red = keras.ops.mean(
                keras.ops.cast((x[..., 0] > 200) & (x[..., 2] < 50), "float32"), axis=(1, 2)
            )
            blue = keras.ops.mean(
                keras.ops.cast((x[..., 2] > 200) & (x[..., 0] < 50), "float32"), axis=(1, 2)
            )
            return keras.ops.stack([1.0 - 0.5 * (red + blue), 0.5 * red, 0.5 * blue], axis=-1)

    return keras.Model(inp, Head()(inp))


def test_cli_end_to_end_with_stand_ins(tmp_path, capsys):
    voc = tmp_path / "voc"
    _write_voc(voc)
    out = tmp_path / "eval"
    detector = FakeDetector()
    code = cli.main(
        [
            "--model",
            str(tmp_path / "model"),
            "--data",
            str(voc),
            "--out",
            str(out),
            "--pictures",
            "2",
            "--baseline",
            "--run-dir",
            str(tmp_path / "run"),
            "--baseline-stride-multiplier",
            "4",
            "--quiet",
        ],
        detector_loader=lambda path: detector,
        classifier_loader=lambda run_dir: _colour_classifier(),
    )
    assert code == 0
    assert detector.calls == 4  # one untimed warm-up + three images

    table = json.loads((out / "table.json").read_text())
    rows = {r["method"]: r for r in table["rows"]}
    assert table["metric"] == "VOC2007 11-point"
    # Refined: every non-difficult object found exactly -> AP 1 for both classes.
    assert rows["DetectorNet"]["ap"] == {"cat": 1.0, "dog": 1.0}
    assert rows["DetectorNet"]["num_images"] == 3
    assert rows["DetectorNet"]["network_evaluations_per_image"] == 36.0
    assert rows["DetectorNet"]["seconds_per_image"] > 0
    # First stage: cat ranking TP (img0, .9), FP (img1 misplaced, .775) over 2 positives: precision
    # 1, 1/2 at recall 1/2 -> 11-point AP 6/11 (t = 0 .. 0.5); dog still 1. mAP (6/11 + 1) / 2.
    assert rows["DetectorNet (first stage)"]["ap"]["cat"] == pytest.approx(6 / 11)
    assert rows["DetectorNet (first stage)"]["ap"]["dog"] == 1.0
    assert rows["DetectorNet (first stage)"]["mAP"] == pytest.approx(17 / 22)
    assert rows["DetectorNet (first stage)"]["seconds_per_image"] is None
    # Baseline: every image is 60 x 80, so every image costs exactly the grid's box count.
    n = count_boxes(H, W, SlidingWindowConfig(stride_multiplier=4))
    assert rows["Sliding windows"]["network_evaluations_per_image"] == n
    # The colour classifier peaks on crops inside the rectangles, so the baseline finds something.
    assert rows["Sliding windows"]["mAP"] > 0

    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["methods"]["DetectorNet (first stage)"]["voc10"]["per_class"]["cat"][
        "ap"
    ] == pytest.approx(0.5)
    assert (
        summary["methods"]["DetectorNet"]["voc07"]["per_class"]["dog"]["num_positives"] == 2
    )  # difficult excluded
    assert summary["sliding_window_config"]["stride_multiplier"] == 4

    # detections.json holds what the table was scored on: scored again, the same APs.
    saved = read_detections(out)
    assert saved["image_ids"] == ["img0", "img1", "img2"] and saved["class_names"] == ["cat", "dog"]
    for method in ("DetectorNet", "DetectorNet (first stage)", "Sliding windows"):
        again = evaluate_detections(saved["ground_truth"], saved["methods"][method], 2)
        assert again.mean_ap == pytest.approx(rows[method]["mAP"], abs=1e-12)

    md = (out / "table.md").read_text()
    assert "| DetectorNet | 1.000 | 1.000 | 1.000 | 3 |" in md
    # Pictures: Figure 4 and Figure 3 for the first two images (3 panels of 80 x 60).
    assert Image.open(out / "pictures" / "figure4_pr.png").size == (900, 250)  # 3 panels x 300 px
    fig3 = np.asarray(Image.open(out / "pictures" / "figure3_img0.png"))
    assert fig3.shape[:2] == (H, 3 * W)
    assert (out / "pictures" / "figure3_img1.png").is_file()
    assert not (out / "pictures" / "figure3_img2.png").exists()
    # img0's pictured class is its best detection's (cat, 0.9): the full-mask panel is hot inside
    # the cat's box (row 20, col 25) and cold inside the dog's (row 45, col 62).
    hot, cold = fig3[20, W + 25, :3].astype(int), fig3[45, W + 62, :3].astype(int)
    assert hot[0] > 100 and hot[2] < 50 and cold[2] > 100 and cold[0] < 50
    assert "DetectorNet: mAP 1.000" in capsys.readouterr().out


def test_cli_errors_are_clear(tmp_path, capsys):
    voc = tmp_path / "voc"
    _write_voc(voc)
    args = [
        "--model",
        str(tmp_path / "model"),
        "--data",
        str(voc),
        "--out",
        str(tmp_path / "o"),
        "--quiet",
    ]
    assert cli.main(args + ["--baseline"], detector_loader=lambda p: FakeDetector()) == 2
    assert "--baseline needs the classifier of a run directory" in capsys.readouterr().err
    assert cli.main(args + ["--split", "val"], detector_loader=lambda p: FakeDetector()) == 2
    assert "split file not found" in capsys.readouterr().err

    def missing(path):
        raise FileNotFoundError(f"{path}: neither a SavedModel nor a run directory")

    assert cli.main(args, detector_loader=missing) == 2
    assert "cannot load model" in capsys.readouterr().err


def test_cli_subset_chosen_pictures_and_all_point_metric(tmp_path):
    voc = tmp_path / "voc"
    _write_voc(voc)
    out = tmp_path / "eval"
    code = cli.main(
        [
            "--model",
            "m",
            "--data",
            str(voc),
            "--out",
            str(out),
            "--quiet",
            "--max-images",
            "2",
            "--picture-ids",
            "img1",
            "--metric",
            "voc10",
        ],
        detector_loader=lambda p: FakeDetector(),
    )
    assert code == 0
    table = json.loads((out / "table.json").read_text())
    assert table["metric"] == "VOC2010 all-point"
    first = {r["method"]: r for r in table["rows"]}["DetectorNet (first stage)"]
    # img0 and img1 only: cat TP then FP over 2 positives -> all-point AP 1/2; dog (img0)
    # found -> 1.
    assert first["num_images"] == 2 and first["ap"] == {"cat": 0.5, "dog": 1.0}
    assert sorted(p.name for p in (out / "pictures").iterdir()) == [
        "errors.png",
        "figure3_img1.png",
        "figure4_pr.png",
    ]
    # The error analysis of the same two images: cat's second detection is the false positive.
    errors = json.loads((out / "errors.json").read_text())["DetectorNet (first stage)"]
    assert errors["num_images"] == 2
    assert errors["per_class"]["dog"]["true_positive"] == 1


@pytest.mark.slow
def test_cli_on_a_freshly_trained_run(tmp_path):
    """The whole chain with the team's real pieces: synthetic data, a few training steps, the
    detector loaded from the run directory, the baseline with the run's classifier."""
    import subprocess
    import sys

    from dnet_tf.data.synthetic import SyntheticConfig, write_synthetic_voc
    from dnet_tf.data.voc import read_voc_split

    data, run, out = tmp_path / "data", tmp_path / "run", tmp_path / "eval"
    write_synthetic_voc(
        data,
        SyntheticConfig(num_train=16, num_val=2, num_test=3, max_side=260),
        workers=1,
        progress=False,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "dnet_tf.training.cli",
            "--run_dir",
            str(run),
            "--data",
            str(data),
            "--classifier_steps",
            "4",
            "--localizer_steps",
            "4",
            "--batch_size",
            "4",
            "--input_size",
            "64",
            "--mask_size",
            "8",
            "--width",
            "0.25",
            "--eval_crops",
            "0",
            "--noprogress",
        ],
        check=True,
    )
    code = cli.main(
        [
            "--model",
            str(run),
            "--data",
            str(data),
            "--out",
            str(out),
            "--baseline",
            "--baseline-stride-multiplier",
            "16",
            "--pictures",
            "1",
            "--quiet",
        ]
    )
    assert code == 0
    rows = {r["method"]: r for r in json.loads((out / "table.json").read_text())["rows"]}
    assert set(rows) == {"DetectorNet", "DetectorNet (first stage)", "Sliding windows"}
    assert (
        rows["DetectorNet"]["num_images"] == 3
        and rows["DetectorNet"]["network_evaluations_per_image"] >= 1
    )
    # The baseline's reported cost is exactly the grid size of each test image, averaged.
    records = read_voc_split(data, "test")
    cfg = SlidingWindowConfig(stride_multiplier=16)
    expected = np.mean([count_boxes(r.height, r.width, cfg) for r in records])
    assert rows["Sliding windows"]["network_evaluations_per_image"] == pytest.approx(expected)
    pictured = records[0].image_id
    assert Image.open(out / "pictures" / f"figure3_{pictured}.png").size == (
        3 * records[0].width,
        records[0].height,
    )
    # The inference-knob benchmark scores the same detector on the same images: the same mAP
    # and evaluation count as the evaluation's DetectorNet row.
    from bench.inference_sweep import run_setting
    from dnet_tf.training.run_dir import load_run

    named = read_voc_split(data, "test", load_run(str(run)).class_names)
    swept = run_setting(str(run), named, {})
    assert swept["mAP"] == pytest.approx(rows["DetectorNet"]["mAP"], abs=1e-6)
    assert swept["evaluations_mean"] == pytest.approx(
        rows["DetectorNet"]["network_evaluations_per_image"]
    )


def test_set_overrides_parse_json_values_and_name_bad_knobs():
    from dnet_tf.evaluation.cli import parse_overrides

    got = parse_overrides(
        ["outside_halves_weight=0.5", "candidate_selection=top_k", "size_fractions=[0.2, 0.4]"]
    )
    assert got == {
        "outside_halves_weight": 0.5,
        "candidate_selection": "top_k",
        "size_fractions": [0.2, 0.4],
    }
    with pytest.raises(ValueError, match="no knob 'nms'"):
        parse_overrides(["nms=0.3"])
    with pytest.raises(ValueError, match="expected KNOB=VALUE"):
        parse_overrides(["nms_iou"])


def test_cli_smaller_baseline_grid_counts_its_boxes(tmp_path, capsys):
    # --baseline-scales 2 --baseline-aspect-ratios 1: scales 0.1 and 1.0, ratio 1, so on a 60 x
    # 80 image (mean side 70) a 7 px and a 70 px square, the latter clipped to 60 x 70; at a
    # 5 px x 4 stride: (ceil(53 / 20) + 1) x (ceil(73 / 20) + 1) = 4 x 5 = 20, and 1 x
    # (ceil(10 / 20) + 1) = 2 boxes.
    voc = tmp_path / "voc"
    _write_voc(voc)
    args = ["--model", "m", "--data", str(voc), "--run-dir", "r", "--quiet", "--baseline"]
    args += ["--baseline-stride-multiplier", "4", "--baseline-aspect-ratios", "1"]
    code = cli.main(
        args + ["--out", str(tmp_path / "eval"), "--baseline-scales", "2"],
        detector_loader=lambda path: FakeDetector(),
        classifier_loader=lambda run_dir: _colour_classifier(),
    )
    assert code == 0
    table = json.loads((tmp_path / "eval" / "table.json").read_text())
    rows = {r["method"]: r for r in table["rows"]}
    assert rows["Sliding windows"]["network_evaluations_per_image"] == 20 + 2
    summary = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert summary["sliding_window_config"]["scales"] == [0.1, 1.0]
    assert summary["sliding_window_config"]["aspect_ratios"] == [1.0]
    bad = args + ["--out", str(tmp_path / "bad"), "--baseline-scales", "0"]
    assert cli.main(bad, detector_loader=lambda path: FakeDetector()) == 2
    assert "--baseline-scales must be >= 1" in capsys.readouterr().err

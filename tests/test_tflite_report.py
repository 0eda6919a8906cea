"""The TFLite report: its measurements on hand-worked inputs, the command end to end on a tiny run
(slow), and the whole-pipeline conversion attempt (slow)."""

import dataclasses
import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from dnet_tf.tflite.report import evaluate_pipeline, format_report, output_errors


def test_output_errors_hand_worked():
    reference = np.array([[0.1, 0.9], [0.6, 0.4]])
    outputs = np.array([[0.2, 0.8], [0.3, 0.7]])
    got = output_errors(reference, outputs, classifier=True)
    # |diffs| = 0.1, 0.1, 0.3, 0.3: max 0.3, mean 0.2; arg-max agrees on the first row only.
    assert got["max_abs_error"] == pytest.approx(0.3)
    assert got["mean_abs_error"] == pytest.approx(0.2)
    assert got["argmax_agreement"] == 0.5
    assert "argmax_agreement" not in output_errors(reference, outputs, classifier=False)


def write_voc(root: pathlib.Path, objects_per_image):
    """A VOC directory with one 60 x 80 image per entry; objects as (name, xmin, ymin, xmax, ymax)
    1-based."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    ids = []
    for i, objects in enumerate(objects_per_image):
        image_id = f"im{i}"
        ids.append(image_id)
        Image.fromarray(np.full((60, 80, 3), 40 * i, np.uint8)).save(
            root / "JPEGImages" / f"{image_id}.png"
        )
        objs = "".join(
            f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            for n, x0, y0, x1, y1 in objects
        )
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.png</filename><size><width>80</width><height>60</height>"
            f"<depth>3</depth></size>{objs}</annotation>"
        )
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(ids) + "\n")


class StubPipeline:
    """Returns prepared detections (SavedModel layout, one image) in call order."""

    class_names = ["cat", "dog"]

    def __init__(self, per_image):
        self.per_image = list(per_image)

    def detect(self, image):
        boxes_px, classes, scores = self.per_image.pop(0)
        h, w = image.shape[:2]
        n, k = len(scores), 5
        out = {"num_detections": float(n), "network_evaluations": 35 + 2 * n}
        boxes = np.zeros((k, 4), np.float32)
        boxes[:n] = np.asarray(boxes_px, np.float32).reshape(-1, 4) / np.array(
            [h, w, h, w], np.float32
        )
        cls = np.zeros(k, np.float32)
        cls[:n] = np.asarray(classes) + 1
        sc = np.zeros(k, np.float32)
        sc[:n] = scores
        for prefix in ("detection_", "first_stage_"):
            out[prefix + "boxes"], out[prefix + "classes"], out[prefix + "scores"] = boxes, cls, sc
        out["first_stage_num_detections"] = float(n)
        return out


def test_evaluate_pipeline_hand_worked_map(tmp_path):
    from dnet_tf.data import voc

    # Image 0: a cat at VOC (11, 11)-(40, 30) = yxyx [10, 10, 30, 40]; image 1: a dog at [20, 40,
    # 50, 70].
    write_voc(tmp_path, [[("cat", 11, 11, 40, 30)], [("dog", 41, 21, 70, 50)]])
    records = voc.read_voc_split(str(tmp_path), "test", ["cat", "dog"])
    # The cat found exactly; for the dog only a box beside it (IoU 0) -> AP(cat) = 1, AP(dog) = 0.
    stub = StubPipeline([([[10, 10, 30, 40]], [0], [0.9]), ([[0, 0, 15, 15]], [1], [0.8])])
    got = evaluate_pipeline(stub, records)
    assert got["num_images"] == 2
    assert got["per_class_ap07"] == {"cat": 1.0, "dog": 0.0}
    assert got["voc07_map"] == pytest.approx(0.5) and got["voc10_map"] == pytest.approx(0.5)
    assert got["first_stage_voc07_map"] == pytest.approx(0.5)
    assert got["network_evaluations_per_image"] == 37.0


def small_report():
    errs = {
        "max_abs_error": 0.0123,
        "mean_abs_error": 0.00123,
        "p99_abs_error": 0.01,
        "argmax_agreement": 0.98,
    }
    lat = {"threads_1": {"batch_1": 2.5, "batch_35": 1.25}}
    per_variant = lambda value: {"float32": value, "int8": value}  # noqa: E731
    mapped = {
        "num_images": 100,
        "voc07_map": 0.61,
        "voc10_map": 0.63,
        "first_stage_voc07_map": 0.5,
        "seconds_per_image": 1.5,
        "network_evaluations_per_image": 60.0,
    }
    return {
        "run_dir": "runs/x",
        "variants": ["float32", "int8"],
        "machine": {
            "cpus": 2,
            "platform": "linux",
            "tensorflow": "2.21.0",
            "ai_edge_litert": "2.3.0",
        },
        "files": {
            "localizer": per_variant({"bytes": 2 * 2**20}),
            "classifier": per_variant({"bytes": 2**20}),
        },
        "crop_errors": {
            "localizer": {"crops": 256, "split": "val", **per_variant(errs)},
            "classifier": {"crops": 256, "split": "val", **per_variant(errs)},
        },
        "map": {
            "split": "test",
            "keras": mapped,
            "float32": mapped,
            "int8": {**mapped, "voc07_map": 0.6},
            "delta_vs_float32_voc07": {"keras": 0.0, "float32": 0.0, "int8": -0.01},
        },
        "latency_ms": {
            n: {"keras": {"tensorflow": {"batch_1": 9.0, "batch_35": 3.0}}, **per_variant(lat)}
            for n in ("localizer", "classifier")
        },
        "whole_pipeline": {
            "attempts": [
                {
                    "signature": "image_tensor",
                    "ops_set": "builtins",
                    "converted": False,
                    "errors": ["x"],
                },
                {
                    "signature": "image_tensor",
                    "ops_set": "builtins+select",
                    "converted": True,
                    "bytes": 3 * 2**20,
                    "flex_ops": ["FlexCropAndResize"],
                    "runs_on_litert": {"ok": False, "error": "needs Flex"},
                },
                {
                    "signature": "serving_default",
                    "ops_set": "builtins+select",
                    "converted": False,
                    "unsupported_ops": ["ExtractJpegShape", "StatelessCase"],
                },
            ]
        },
    }


def test_format_report_tables_carry_the_numbers():
    text = format_report(small_report())
    assert "| int8 | 2.0 | 1.23e-02 | 1.23e-03 | 1.0 | 1.23e-02 | 1.23e-03 | 0.980 |" in text
    assert "| int8 | 0.6000 | -0.0100 | 0.6300 | 0.5000 | 1.50 | 60.0 |" in text
    assert "| float32 | 2.50 | 1.25 |" in text
    assert (
        "| image_tensor | builtins+select | yes | 3.0 | no: needs Flex | Flex: FlexCropAndResize |"
        in text
    )
    assert (
        "| serving_default | builtins+select | no | - | - | ExtractJpegShape, StatelessCase |"
        in text
    )


def make_tiny_run(run_dir: pathlib.Path, class_names):
    import keras

    from dnet_tf.config import DetectorConfig, InferenceConfig, ModelConfig
    from dnet_tf.models.classifier import build_classifier
    from dnet_tf.models.localizer import build_localizer
    from dnet_tf.training import run_dir as rd

    keras.utils.set_random_seed(0)
    model = ModelConfig(input_size=64, mask_size=8, width=0.25, num_classes=len(class_names))
    cfg = DetectorConfig(
        model=model, inference=dataclasses.replace(InferenceConfig(), max_refine=4)
    )
    run_dir.mkdir(parents=True)
    rd.atomic_write_text(run_dir / rd.CONFIG, cfg.to_json())
    rd.write_class_names(run_dir / rd.CLASS_NAMES, class_names)
    rd.atomic_write_json(run_dir / rd.DATASET_STATS, {"aspect_ratios": [0.5, 1.0, 2.0]})
    rd.atomic_save_model(build_localizer(model), run_dir / rd.LOCALIZER)
    rd.atomic_save_model(build_classifier(model), run_dir / rd.CLASSIFIER)
    return cfg


@pytest.mark.slow
def test_command_writes_bundle_and_report_on_a_tiny_run(tmp_path):
    from dnet_tf.data.synthetic import SyntheticConfig, write_synthetic_voc
    from dnet_tf.tflite import cli
    from dnet_tf.tflite.report import load_bundle_pipeline

    data = tmp_path / "data"
    write_synthetic_voc(
        data,
        SyntheticConfig(num_train=6, num_val=3, num_test=2, min_side=96, max_side=160),
        progress=False,
    )
    names = json.loads((data / "synthetic.json").read_text())["classes"]
    make_tiny_run(tmp_path / "run", names)
    out = tmp_path / "tflite"
    argv = [
        "cli",
        f"--run_dir={tmp_path / 'run'}",
        f"--out={out}",
        f"--data={data}",
        "--calibration_crops=8",
        "--held_out_crops=8",
        "--latency_repeats=2",
        "--nowhole_pipeline",
        "--noprogress",
    ]
    cli.FLAGS(argv)
    assert cli.main(argv[:1]) == 0
    report = json.loads((out / "report.json").read_text())
    for network in ("localizer", "classifier"):
        for variant in ("float32", "float16", "dynamic_int8", "int8"):
            assert (out / f"{network}_{variant}.tflite").stat().st_size == report["files"][network][
                variant
            ]["bytes"]
        assert report["crop_errors"][network]["float32"]["max_abs_error"] < 1e-5
    m = report["map"]
    assert m["keras"]["num_images"] == 2
    assert m["float32"]["voc07_map"] == pytest.approx(m["keras"]["voc07_map"], abs=1e-6)
    assert "| float16 |" in (out / "report.md").read_text()
    # The bundle alone (no run directory) runs the pipeline.
    pipeline = load_bundle_pipeline(out, "int8")
    assert pipeline.class_names == names


@pytest.mark.slow
def test_whole_pipeline_conversion_attempt_records_what_fails(tmp_path):
    from dnet_tf.export.saved_model import export_module
    from dnet_tf.inference.loading import module_from_run
    from dnet_tf.tflite.whole_pipeline import attempt_whole_pipeline

    make_tiny_run(tmp_path / "run", ["cat"])
    module, stats = module_from_run(tmp_path / "run")
    saved = export_module(module, tmp_path / "models", "dnet", dataset_stats=stats)
    results = {
        (r["signature"], r["ops_set"]): r for r in attempt_whole_pipeline(saved, tmp_path / "out")
    }
    builtins = results[("image_tensor", "builtins")]
    assert not builtins["converted"] and any("tensor list" in e.lower() for e in builtins["errors"])
    select = results[("image_tensor", "builtins+select")]
    assert select["converted"] and "FlexCropAndResize" in select["flex_ops"]
    assert pathlib.Path(select["path"]).stat().st_size == select["bytes"]
    assert not select["runs_on_litert"]["ok"]  # the LiteRT wheel has no Flex delegate
    encoded = results[("serving_default", "builtins+select")]
    assert not encoded["converted"] and "ExtractJpegShape" in encoded["unsupported_ops"]

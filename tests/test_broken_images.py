"""Datasets with broken image files, written in the test: a JPEG truncated in its entropy-coded
data (TF recovers it: kept, with a warning) and one cut inside its headers (nothing to recover:
skipped under on_error="skip", an error naming the file otherwise), in the VOC reader, the
evaluation command and a short training run."""

import io
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from dnet_tf.core.detections import Detections
from dnet_tf.data import image_files, voc
from dnet_tf.evaluation import cli as eval_cli
from dnet_tf.inference.detector import DetectionResult

H, W = 96, 128
CLASSES = ["cat", "dog"]


def _jpeg(seed):
    rng = np.random.RandomState(seed)
    pixels = np.full((H, W, 3), 90, np.uint8)
    pixels[20:70, 30:100] = rng.randint(0, 256, (50, 70, 3))
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _write_voc(root, split="train"):
    """img0 and img3 intact, img1 truncated at 60% (recoverable), img2 cut inside its headers."""
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True, exist_ok=True)
    ids = ["img0", "img1", "img2", "img3"]
    for i, image_id in enumerate(ids):
        data = _jpeg(i)
        if image_id == "img1":
            data = data[: int(len(data) * 0.6)]
        elif image_id == "img2":
            data = data[: data.index(b"\xff\xda")]  # everything before the start of scan
        (root / "JPEGImages" / f"{image_id}.jpg").write_bytes(data)
        name = CLASSES[i % 2]
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename>"
            f"<size><width>{W}</width><height>{H}</height><depth>3</depth></size>"
            f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>31</xmin>"
            f"<ymin>21</ymin><xmax>100</xmax><ymax>70</ymax></bndbox></object></annotation>"
        )
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def test_decoder_recovers_a_truncated_jpeg_and_names_an_undecodable_one(tmp_path):
    root = _write_voc(tmp_path / "voc")
    good, truncated, cut = (root / "JPEGImages" / f"img{i}.jpg" for i in range(3))
    assert image_files.check_image_file(good) == image_files.ImageCheck(True)
    # Pillow refuses the truncated file; TF recovers it at its full size.
    with pytest.raises(OSError, match="truncated"):
        Image.open(truncated).convert("RGB")
    check = image_files.check_image_file(truncated)
    assert check.ok and check.recovered and str(truncated) in check.problem
    recovered = image_files.read_rgb(truncated)
    assert recovered.shape == (H, W, 3)
    # The rows before the cut decode exactly as in the intact file.
    intact = image_files.decode_tensor(_jpeg(1)).numpy()
    assert np.array_equal(recovered[:16], intact[:16])
    assert not np.array_equal(recovered[-16:], intact[-16:])
    check = image_files.check_image_file(cut)
    assert not check.ok and str(cut) in check.problem
    with pytest.raises(ValueError, match="img2.jpg"):
        image_files.read_rgb(cut)


def test_voc_reader_skips_or_fails_naming_the_file(tmp_path):
    root = _write_voc(tmp_path / "voc")
    with pytest.raises(voc.VocError, match=r"img2\.jpg"):
        voc.read_voc_split(root, "train", CLASSES)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = voc.read_voc_split(root, "train", CLASSES, on_error="skip")
    assert [r.image_id for r in records] == ["img0", "img1", "img3"]
    assert len(records.skipped) == 1 and "img2.jpg" in records.skipped[0]
    assert records.recovered == [str(root / "JPEGImages" / "img1.jpg")]
    messages = [str(w.message) for w in caught if issubclass(w.category, voc.VocWarning)]
    assert any("img2.jpg" in m for m in messages) and any("img1.jpg" in m for m in messages)
    report = records[:2].report()  # slicing keeps the account
    assert report["skipped_images"] == 1 and report["recovered_images"] == 1


class _BoxDetector:
    """Detects the annotated box of every image as a cat, score 0.9."""

    class_names = CLASSES

    def detect(self, images):
        box = np.array([[20, 30, 70, 100]], np.float32)
        out = []
        for image in images:
            assert image.shape == (H, W, 3)
            mask = np.zeros((12, 16, 5, 2), np.float32)
            norm = box / np.array([H, W, H, W], np.float32)
            dets = Detections(H, W, norm, [0], [CLASSES[0]], np.array([0.9], np.float32))
            out.append(DetectionResult(dets, dets, mask, 1))
        return out


def test_evaluation_skips_the_broken_file_and_reports_it(tmp_path, capsys):
    root = _write_voc(tmp_path / "voc", split="test")
    args = ["--model", "m", "--data", str(root), "--out", str(tmp_path / "eval"), "--quiet"]
    assert eval_cli.main(args, detector_loader=lambda p: _BoxDetector()) == 2
    assert "img2.jpg" in capsys.readouterr().err
    code = eval_cli.main(args + ["--on-error", "skip"], detector_loader=lambda p: _BoxDetector())
    assert code == 0
    assert "img2.jpg" in capsys.readouterr().err
    table = json.loads((tmp_path / "eval" / "table.json").read_text())
    assert table["skipped_images"] == 1
    assert {r["method"]: r["num_images"] for r in table["rows"]}["DetectorNet"] == 3
    summary = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert summary["data"]["skipped_images"] == 1 and "img2.jpg" in summary["data"]["skipped"][0]
    assert summary["data"]["recovered"] == [str(root / "JPEGImages" / "img1.jpg")]
    assert "1 unreadable image(s) skipped." in (tmp_path / "eval" / "table.md").read_text()


def test_training_runs_on_the_dataset_and_counts_the_skipped_file(tmp_path):
    from dnet_tf.config import DetectorConfig, ModelConfig, TrainConfig
    from dnet_tf.training.sources import PipelineSource
    from dnet_tf.training.train import train

    root = _write_voc(tmp_path / "voc")
    cfg = DetectorConfig(
        model=ModelConfig(num_classes=2, input_size=32, mask_size=4, width=0.25, dropout=0.0),
        train=TrainConfig(batch_size=4, classifier_steps=2, localizer_steps=2),
    )
    with pytest.raises(voc.VocError, match=r"img2\.jpg"):
        train(tmp_path / "fail", PipelineSource(str(root), CLASSES), cfg, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", voc.VocWarning)
        summary = train(
            tmp_path / "run",
            PipelineSource(str(root), CLASSES, on_error="skip"),
            cfg,
            progress=False,
            eval_crops=0,
        )
    assert summary["steps"] == {"classifier": 2, "localizer": 2}
    split = summary["train_split"]
    assert split["skipped_images"] == 1 and "img2.jpg" in split["skipped"][0]
    assert split["recovered_images"] == 1
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["train_split"]["skipped_images"] == 1

"""Offline detection on Apache Beam's DirectRunner over real files: each image's detections equal
the SavedModel's called directly, bad images go to the dead-letter output (counted) instead of
failing the job, and TF OD API TFRecords in and out round-trip."""

import json
import pathlib

import numpy as np
import pytest

beam = pytest.importorskip("apache_beam")  # the optional 'beam' extra

import tensorflow as tf  # noqa: E402
from fakes import coloured_object_image  # noqa: E402
from PIL import Image  # noqa: E402

from dnet_tf.batch.__main__ import run  # noqa: E402
from dnet_tf.batch.pipeline import DETECTION_KEYS  # noqa: E402
from dnet_tf.core.detections import Detections  # noqa: E402
from dnet_tf.data.tfrecord import KEYS, write_tfrecords  # noqa: E402
from dnet_tf.data.voc import VocRecord  # noqa: E402

BOXES = {
    "a": (240, 320, [50, 60, 170, 220]),
    "b": (200, 260, [20, 30, 150, 200]),
    "c": (180, 180, [40, 40, 140, 120]),
}


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    for name, (h, w, box) in BOXES.items():
        Image.fromarray(coloured_object_image(h, w, [box])).save(d / f"{name}.jpg", quality=95)
    good = (d / "a.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(good[: len(good) // 3])  # header fine, scan data cut
    (d / "notes.jpg").write_bytes(b"not an image at all")
    (d / "huge.jpg").write_bytes(good + bytes(300_000))  # over --max_image_bytes: never read
    return d


@pytest.fixture(scope="module")
def direct(fake_export, image_dir):
    """What the SavedModel answers for each good file alone, as Detections dicts by path."""
    _, path = fake_export
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    want = {}
    for name in BOXES:
        p = image_dir / f"{name}.jpg"
        out = {k: v.numpy() for k, v in fn(images=tf.constant([p.read_bytes()])).items()}
        h, w = Image.open(p).size[::-1]
        (res,) = Detections.batch_from_outputs(out, [(h, w)], [str(p)], "dnet", int(path.name))
        want[str(p)] = res.to_dict()
    return want


def _lines(pattern_dir, prefix):
    return [
        json.loads(ln)
        for f in sorted(pattern_dir.glob(prefix + "*.jsonl"))
        for ln in f.read_text().splitlines()
        if ln
    ]


def _assert_same(got, want):
    assert got.keys() == want.keys()
    for src, w in want.items():
        g = got[src]
        assert (g["height"], g["width"], g["model_name"], g["model_version"]) == (
            w["height"],
            w["width"],
            w["model_name"],
            w["model_version"],
        )
        assert len(g["detections"]) == len(w["detections"]) >= 1, src
        for gd, wd in zip(g["detections"], w["detections"]):
            assert (gd["class_id"], gd["class_name"]) == (wd["class_id"], wd["class_name"])
            np.testing.assert_allclose(gd["score"], wd["score"], atol=1e-5)
            np.testing.assert_allclose(gd["image_yxyx"], wd["image_yxyx"], atol=1e-3)


def test_glob_pipeline_matches_saved_model_and_dead_letters_bad_images(
    fake_export, image_dir, direct, tmp_path
):
    _, model = fake_export
    counters = run(
        [
            f"--model={model.parent}",
            f"--input_glob={image_dir}/*.jpg",
            f"--output={tmp_path}/",
            "--batch_size=4",
            "--direct_running_mode=in_memory",
            "--write_tfrecord",
            "--max_image_bytes=200000",
        ]
    )
    want = direct
    got = {r["source"]: r for r in _lines(tmp_path, "detections")}
    _assert_same(got, want)
    # the drawn object is what the top detection found (pixels)
    top = got[str(image_dir / "a.jpg")]["detections"][0]
    np.testing.assert_allclose(top["image_yxyx"], BOXES["a"][2], atol=16)

    dead = {pathlib.Path(r["source"]).name: r for r in _lines(tmp_path, "dead_letter")}
    assert dead.keys() == {"truncated.jpg", "notes.jpg", "huge.jpg"}
    assert dead["huge.jpg"]["stage"] == "read" and "> limit 200000" in dead["huge.jpg"]["error"]
    assert (
        dead["notes.jpg"]["stage"] == "probe"
        and "not a readable image" in dead["notes.jpg"]["error"]
    )
    assert dead["truncated.jpg"]["stage"] == "model"  # Pillow reads its header; the graph refuses
    assert counters["images_read"] == 5 and counters["images_detected"] == 3
    assert counters["images_dead_letter"] == 3
    assert counters["detections"] == sum(len(w["detections"]) for w in want.values())

    # TF OD API detection keys, same boxes (normalized) as the JSON lines
    (rec_file,) = tmp_path.glob("detections*.tfrecord")
    examples = [
        tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(rec_file))
    ]
    by_source = {
        e.features.feature[KEYS["source_id"]].bytes_list.value[0].decode(): e for e in examples
    }
    assert by_source.keys() == want.keys()
    for src, ex in by_source.items():
        f = ex.features.feature
        dets = want[src]["detections"]
        for i, k in enumerate(("ymin", "xmin", "ymax", "xmax")):
            np.testing.assert_allclose(
                f[DETECTION_KEYS[k]].float_list.value, [d["norm_yxyx"][i] for d in dets], atol=1e-6
            )
        assert list(f[DETECTION_KEYS["label"]].int64_list.value) == [
            d["class_id"] + 1 for d in dets
        ]
        assert f[KEYS["height"]].int64_list.value[0] == want[src]["height"]


def test_tfrecord_input_pipeline(fake_export, image_dir, direct, tmp_path):
    _, model = fake_export
    records = []
    for name, (h, w, box) in BOXES.items():
        records.append(
            VocRecord(
                name,
                str(image_dir / f"{name}.jpg"),
                f"{name}.xml",
                h,
                w,
                np.array([box], np.float32),
                ["cat"],
                np.array([0]),
                np.array([False]),
                np.array([False]),
            )
        )
    write_tfrecords(records, ["cat", "dog"], str(tmp_path / "in" / "val-*.tfrecord"), 2, False)
    with tf.io.TFRecordWriter(str(tmp_path / "in" / "val-bad.tfrecord")) as w:
        w.write(b"\x08\x96\x01 not an Example")
    counters = run(
        [
            f"--model={model}",
            f"--input_tfrecord={tmp_path}/in/val-*.tfrecord",
            f"--output={tmp_path}/out/",
            "--direct_running_mode=in_memory",
        ]
    )
    # sources are the Examples' image/filename
    want = {pathlib.Path(k).name: dict(v, source=pathlib.Path(k).name) for k, v in direct.items()}
    got = {r["source"]: r for r in _lines(tmp_path / "out", "detections")}
    _assert_same(got, want)
    (dead,) = _lines(tmp_path / "out", "dead_letter")
    assert dead["stage"] == "read" and "not a tf.train.Example" in dead["error"]
    assert counters["images_detected"] == 3 and counters["images_dead_letter"] == 1


def test_model_path_resolves_to_newest_version(tmp_path):
    from dnet_tf.batch.pipeline import resolve_model_path

    for v in ("1", "3", "10", "tmp"):
        (tmp_path / "dnet" / v).mkdir(parents=True)
        (tmp_path / "dnet" / v / "saved_model.pb").write_bytes(b"")
    (tmp_path / "dnet" / "20").mkdir()  # no saved_model.pb: not a version
    assert resolve_model_path(str(tmp_path / "dnet")) == f"{tmp_path}/dnet/10"
    assert resolve_model_path(f"{tmp_path}/dnet/3/") == f"{tmp_path}/dnet/3"
    with pytest.raises(FileNotFoundError, match="no saved_model.pb, nor integer version"):
        resolve_model_path(str(tmp_path))

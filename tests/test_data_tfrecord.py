"""TFRecords in the Object Detection API format: round trips, foreign label maps, sharding."""

import pathlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from dnet_tf.data import synthetic, tfrecord, voc
from dnet_tf.data.cli import run as cli_run

CLASSES = sorted(synthetic.SYNTHETIC_CLASSES)


@pytest.fixture(scope="module")
def small_voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    cfg = synthetic.SyntheticConfig(seed=2, num_train=7, num_val=0, num_test=0)
    synthetic.write_synthetic_voc(root, cfg, workers=1, progress=False)
    return root


def _read_all(pattern, class_names):
    return list(tfrecord.read_tfrecords(pattern, class_names).as_numpy_iterator())


def _check_round_trip(records, parsed, class_names):
    by_id = {p["source_id"].decode(): p for p in parsed}
    assert sorted(by_id) == sorted(r.image_id for r in records)
    for r in records:
        p = by_id[r.image_id]
        scale = np.array([r.height, r.width, r.height, r.width], np.float64)
        np.testing.assert_allclose(
            p["boxes_norm_yxyx"] * scale, r.boxes_image_yxyx, atol=1e-6 * max(scale)
        )
        np.testing.assert_allclose(p["boxes_norm_yxyx"], r.boxes_image_yxyx / scale, atol=1e-6)
        np.testing.assert_array_equal(p["class_ids"], [class_names.index(n) for n in r.class_names])
        assert [t.decode() for t in p["class_text"]] == r.class_names
        np.testing.assert_array_equal(p["difficult"], r.difficult)
        np.testing.assert_array_equal(p["truncated"], r.truncated)
        assert (p["height"], p["width"]) == (r.height, r.width)
        assert p["encoded"] == pathlib.Path(r.image_path).read_bytes()
        assert p["filename"].decode() == pathlib.Path(r.image_path).name


def test_round_trip_sharded_preserves_every_box(small_voc, tmp_path):
    records = voc.read_voc_split(small_voc, "train", CLASSES)
    paths = tfrecord.write_tfrecords(
        records, CLASSES, str(tmp_path / "train-*.tfrecord"), num_shards=3, progress=False
    )
    assert [pathlib.Path(p).name for p in paths] == [
        f"train-{i:05d}-of-00003.tfrecord" for i in range(3)
    ]
    # Record i goes to shard i mod 3: 7 records -> 3, 2, 2.
    sizes = [sum(1 for _ in tf.data.TFRecordDataset(p)) for p in paths]
    assert sizes == [3, 2, 2]
    _check_round_trip(records, _read_all(str(tmp_path / "train-*.tfrecord"), CLASSES), CLASSES)


def test_round_trip_raccoon(raccoon_dir, tmp_path):
    records = voc.read_voc_split(raccoon_dir, "test", ["raccoon"])
    tfrecord.write_tfrecords(
        records, ["raccoon"], str(tmp_path / "r-*.tfrecord"), 2, progress=False
    )
    _check_round_trip(records, _read_all(str(tmp_path / "r-*"), ["raccoon"]), ["raccoon"])


def _foreign_example(texts, labels, boxes_norm, h=20, w=30, with_flags=False):
    """An Example as another tool would write it: its own label map, optional keys absent."""
    buf = tf.io.encode_jpeg(tf.zeros([h, w, 3], tf.uint8)).numpy()
    b = np.asarray(boxes_norm, np.float32).reshape(-1, 4)
    f = {
        "image/encoded": tfrecord._bytes([buf]),
        "image/format": tfrecord._bytes([b"jpeg"]),
        "image/height": tfrecord._ints([h]),
        "image/width": tfrecord._ints([w]),
        "image/object/bbox/ymin": tfrecord._floats(b[:, 0]),
        "image/object/bbox/xmin": tfrecord._floats(b[:, 1]),
        "image/object/bbox/ymax": tfrecord._floats(b[:, 2]),
        "image/object/bbox/xmax": tfrecord._floats(b[:, 3]),
        "image/object/class/text": tfrecord._bytes([t.encode() for t in texts]),
        "image/object/class/label": tfrecord._ints(labels),
    }
    if with_flags:
        f["image/object/difficult"] = tfrecord._ints([1] * len(b))
    return tf.train.Example(features=tf.train.Features(feature=f)).SerializeToString()


def test_foreign_label_map_is_read_by_class_text(tmp_path):
    # The other tool numbered dog=1, cat=2; our list is [cat, dog]: text decides, not label.
    path = str(tmp_path / "foreign.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        w.write(_foreign_example(["dog", "cat"], [1, 2], [[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1]]))
    (ex,) = _read_all(path, ["cat", "dog"])
    np.testing.assert_array_equal(ex["class_ids"], [1, 0])
    np.testing.assert_allclose(ex["boxes_norm_yxyx"], [[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1]])
    np.testing.assert_array_equal(ex["difficult"], [False, False])  # key absent -> not difficult


def test_labels_used_when_class_text_is_absent(tmp_path):
    path = str(tmp_path / "labels_only.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        w.write(_foreign_example([], [2, 1], [[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1]], with_flags=True))
    (ex,) = _read_all(path, ["cat", "dog"])
    np.testing.assert_array_equal(ex["class_ids"], [1, 0])
    np.testing.assert_array_equal(ex["difficult"], [True, True])


def test_unknown_class_text_fails_the_read(tmp_path):
    path = str(tmp_path / "unknown.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        w.write(_foreign_example(["horse"], [1], [[0.1, 0.2, 0.5, 0.6]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="class not in the class list"):
        _read_all(path, ["cat", "dog"])


def test_shard_paths_and_missing_files():
    assert tfrecord.shard_paths("a/x-*.rec", 2) == [
        "a/x-00000-of-00002.rec",
        "a/x-00001-of-00002.rec",
    ]
    assert tfrecord.shard_paths("x.rec", 1) == ["x.rec"]
    assert tfrecord.shard_paths("x.rec", 2) == ["x.rec-00000-of-00002", "x.rec-00001-of-00002"]
    with pytest.raises(FileNotFoundError, match="no TFRecord files match"):
        tfrecord.tfrecord_files("/nonexistent/*.tfrecord")


def test_cli_to_tfrecord_and_greyscale_png(tmp_path, small_voc):
    # A greyscale PNG image converts and decodes to 3 equal channels through the pipeline decoder.
    from dnet_tf.data.pipeline import _decode

    out = tmp_path / "cli-*.tfrecord"
    rc = cli_run(
        [
            "to-tfrecord",
            "--voc",
            str(small_voc),
            "--split",
            "train",
            "--out",
            str(out),
            "--shards",
            "2",
            "--quiet",
        ]
    )
    assert rc == 0
    parsed = _read_all(str(out), CLASSES)
    assert len(parsed) == 7
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    png = tmp_path / "g.png"
    Image.fromarray(grey, "L").save(png)
    decoded = _decode(tf.io.read_file(str(png))).numpy()
    np.testing.assert_array_equal(decoded, np.repeat(grey[..., None], 3, axis=2))


def test_cli_class_list_defaults(tmp_path, small_voc):
    # Synthetic names are not VOC's: 'auto' takes the data's sorted names (labels 1..6).
    out = tmp_path / "auto.tfrecord"
    assert (
        cli_run(
            [
                "to-tfrecord",
                "--voc",
                str(small_voc),
                "--split",
                "train",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    labels = {int(v) for ex in _read_all(str(out), CLASSES) for v in ex["class_ids"]}
    assert labels <= set(range(len(CLASSES)))
    # A VOC-named subset keeps VOC's 20-class numbering: 'dog' is label 12 of VOC_CLASSES.
    from dnet_tf.constants import VOC_CLASSES

    root = tmp_path / "vocsub"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    Image.new("RGB", (20, 10)).save(root / "JPEGImages" / "a.jpg")
    (root / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>20</width><height>10</height></size>"
        "<object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox>"
        "</object></annotation>"
    )
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\n")
    out = tmp_path / "voc.tfrecord"
    assert (
        cli_run(
            ["to-tfrecord", "--voc", str(root), "--split", "train", "--out", str(out), "--quiet"]
        )
        == 0
    )
    ex = next(iter(tf.data.TFRecordDataset(str(out))))
    parsed = tf.train.Example.FromString(ex.numpy())
    assert list(parsed.features.feature["image/object/class/label"].int64_list.value) == [
        VOC_CLASSES.index("dog") + 1
    ]

"""The embedded synthetic dataset: deterministic bytes, and its stated properties measured."""

import filecmp
import pathlib

import numpy as np
import pytest
from PIL import Image

from dnet_tf.data import synthetic, voc
from dnet_tf.data.cli import run as cli_run


def _small_cfg(seed=0, n_train=6, n_val=2, n_test=2):
    return synthetic.SyntheticConfig(seed=seed, num_train=n_train, num_val=n_val, num_test=n_test)


def _all_files(root):
    return sorted(p.relative_to(root) for p in pathlib.Path(root).rglob("*") if p.is_file())


def test_same_seed_same_bytes_any_worker_count(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    synthetic.write_synthetic_voc(a, _small_cfg(), workers=1, progress=False)
    synthetic.write_synthetic_voc(b, _small_cfg(), workers=2, progress=False)
    files = _all_files(a)
    assert files == _all_files(b)
    assert len([f for f in files if f.suffix == ".jpg"]) == 10
    match, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == []


def test_different_seed_different_images(tmp_path):
    synthetic.write_synthetic_voc(
        tmp_path / "a", _small_cfg(seed=0, n_train=2, n_val=0, n_test=0), 1, False
    )
    synthetic.write_synthetic_voc(
        tmp_path / "b", _small_cfg(seed=1, n_train=2, n_val=0, n_test=0), 1, False
    )
    one = (tmp_path / "a" / "JPEGImages" / "train_00000.jpg").read_bytes()
    two = (tmp_path / "b" / "JPEGImages" / "train_00000.jpg").read_bytes()
    assert one != two


def test_cli_writes_splits(tmp_path):
    out = tmp_path / "syn"
    rc = cli_run(
        [
            "make-synthetic",
            "--out",
            str(out),
            "--seed",
            "3",
            "--num-train",
            "3",
            "--num-val",
            "1",
            "--num-test",
            "2",
            "--workers",
            "1",
            "--quiet",
        ]
    )
    assert rc == 0
    assert voc.read_split_ids(out, "train") == ["train_00000", "train_00001", "train_00002"]
    assert voc.read_split_ids(out, "val") == ["val_00000"]
    assert voc.read_split_ids(out, "test") == ["test_00000", "test_00001"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """150 images drawn in memory (the properties are per image, independent of the split)."""
    cfg = synthetic.SyntheticConfig()
    out = []
    for i in range(150):
        rgb, objects = synthetic.generate_image(synthetic.image_rng(0, "train", i), cfg)
        out.append((rgb, objects))
    return out


def _touch_or_overlap(a, b):
    # Boxes share at least an edge: the intervals meet on both axes.
    return max(a[0], b[0]) <= min(a[2], b[2]) and max(a[1], b[1]) <= min(a[3], b[3])


def test_stated_properties(generated):
    counts = [len(objs) for _, objs in generated]
    assert min(counts) == 0 and max(counts) == 6
    assert all(0 <= c <= 6 for c in counts)

    names = {o.class_name for _, objs in generated for o in objs}
    assert names == set(synthetic.SYNTHETIC_CLASSES) and len(names) >= 6

    grouped = 0
    for _, objs in generated:
        if any(
            a.class_name == b.class_name and _touch_or_overlap(a.box_image_yxyx, b.box_image_yxyx)
            for i, a in enumerate(objs)
            for b in objs[i + 1 :]
        ):
            grouped += 1
    assert grouped / len(generated) >= 0.20, grouped

    fractions = []
    for rgb, objs in generated:
        h, w = rgb.shape[:2]
        for o in objs:
            y0, x0, y1, x1 = o.box_image_yxyx
            assert 0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w
            fractions.append(max((y1 - y0) / h, (x1 - x0) / w))
    fractions = np.array(fractions)
    assert fractions.min() <= 0.07, fractions.min()
    assert fractions.max() >= 0.8, fractions.max()
    assert 0.05 <= np.mean(fractions < 0.1) <= 0.3  # a minority of small objects

    heights = np.array([rgb.shape[0] for rgb, _ in generated])
    widths = np.array([rgb.shape[1] for rgb, _ in generated])
    assert (
        heights.min() >= 200
        and widths.min() >= 200
        and heights.max() <= 500
        and widths.max() <= 500
    )
    assert np.any(heights > widths * 1.2) and np.any(
        widths > heights * 1.2
    )  # portrait and landscape

    truncated = [o.truncated for _, objs in generated for o in objs]
    assert 0.05 <= np.mean(truncated) <= 0.6
    visible = np.array([o.visible_fraction for _, objs in generated for o in objs])
    assert visible.min() >= 0.5 - 1e-9
    assert np.mean(visible < 0.95) >= 0.1  # partial occlusion / truncation is common


def test_classes_have_distinct_colours(generated):
    # The central pixel of crate/star/blob/snake boxes lies on the object; their hue ranges must
    # not overlap between classes (colour alone separates them, as does shape).
    hues = {}
    for rgb, objs in generated:
        for o in objs:
            if o.class_name not in ("crate", "star", "blob", "snake") or o.visible_fraction < 0.999:
                continue
            y0, x0, y1, x1 = o.box_image_yxyx
            # The median over the central third is robust to grid lines, spots and bands.
            patch = rgb[
                y0 + (y1 - y0) // 3 : y1 - (y1 - y0) // 3, x0 + (x1 - x0) // 3 : x1 - (x1 - x0) // 3
            ]
            hsv = np.asarray(Image.fromarray(patch).convert("HSV"), np.float64).reshape(-1, 3)
            hsv = hsv[hsv[:, 1] > 0.3 * 255]  # coloured pixels only
            if len(hsv) >= 5:
                hues.setdefault(o.class_name, []).append(np.median(hsv[:, 0]) * 360.0 / 255.0)
    ranges = {k: (np.percentile(v, 5), np.percentile(v, 95)) for k, v in hues.items()}
    assert set(ranges) == {"crate", "star", "blob", "snake"}
    order = sorted(ranges.items(), key=lambda kv: kv[1][0])
    for (_, (_, hi_a)), (_, (lo_b, _)) in zip(order, order[1:]):
        assert hi_a < lo_b, ranges


def test_written_annotations_read_back_exactly(tmp_path):
    cfg = _small_cfg(seed=5, n_train=4, n_val=0, n_test=0)
    synthetic.write_synthetic_voc(tmp_path, cfg, workers=1, progress=False)
    records = voc.read_voc_split(tmp_path, "train", list(synthetic.SYNTHETIC_CLASSES))
    assert len(records) == 4
    for i, rec in enumerate(records):
        _, objs = synthetic.generate_image(synthetic.image_rng(5, "train", i), cfg)
        np.testing.assert_array_equal(
            rec.boxes_image_yxyx,
            np.array([o.box_image_yxyx for o in objs], np.float32).reshape(-1, 4),
        )
        assert rec.class_names == [o.class_name for o in objs]
        assert list(rec.truncated) == [o.truncated for o in objs]
        with Image.open(rec.image_path) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (rec.width, rec.height)

"""The held-out validation split: disjoint, complete, seeded, readable as VOC, and refusing to
overwrite or to take every image."""

import json

import numpy as np
import pytest
from PIL import Image

from dnet_tf.data import cli, voc
from dnet_tf.data.holdout import hold_out


def _make_voc(root, train, test):
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    for image_id in train + test:
        (root / "Annotations" / f"{image_id}.xml").write_text(
            "<annotation><size><width>20</width><height>10</height><depth>3</depth></size>"
            "<object><name>cat</name><difficult>0</difficult><bndbox><xmin>2</xmin><ymin>1</ymin>"
            "<xmax>12</xmax><ymax>8</ymax></bndbox></object></annotation>"
        )
        Image.new("RGB", (20, 10), (1, 2, 3)).save(root / "JPEGImages" / f"{image_id}.jpg")
    (root / "ImageSets/Main/train.txt").write_text("".join(f"{i}\n" for i in train))
    (root / "ImageSets/Main/test.txt").write_text("".join(f"{i}\n" for i in test))


@pytest.fixture
def source(tmp_path):
    train = [f"tr{i:02d}" for i in range(10)]
    test = ["te0", "te1"]
    _make_voc(tmp_path / "src", train, test)
    return tmp_path / "src", train, test


def test_held_out_split_is_a_seeded_disjoint_part_of_train(source, tmp_path):
    src, train, test = source
    m = hold_out(src, tmp_path / "a", count=3, seed=7)
    new_train = voc.read_split_ids(tmp_path / "a", "train")
    val = voc.read_split_ids(tmp_path / "a", "val")
    assert len(val) == 3 and len(new_train) == 7
    assert not set(val) & set(new_train)
    assert sorted(val + new_train) == sorted(train)
    # Both keep the source's order; the test split is untouched.
    assert val == [i for i in train if i in val]
    assert voc.read_split_ids(tmp_path / "a", "test") == test
    # The draw is NumPy's seeded permutation (independent of this code's loop).
    expected = sorted(np.random.default_rng(7).permutation(10)[:3].tolist())
    assert val == [train[i] for i in expected]
    assert m["held_out"] == val and m["images"] == {"test": 2, "train": 7, "val": 3}
    assert json.loads((tmp_path / "a" / "holdout.json").read_text()) == m
    # Same seed, same split; the records read through the symlinked files.
    hold_out(src, tmp_path / "b", count=3, seed=7)
    assert voc.read_split_ids(tmp_path / "b", "val") == val
    records = voc.read_voc_split(tmp_path / "a", "val", ["cat"])
    assert [r.image_id for r in records] == val
    assert records[0].num_objects == 1
    # The source has no val split written into it.
    assert voc.available_splits(src) == ["test", "train"]


def test_hold_out_refuses_existing_output_bad_count_and_existing_split(source, tmp_path):
    src, _, _ = source
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists"):
        hold_out(src, tmp_path / "taken", count=2)
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    for bad in (0, 10):
        with pytest.raises(ValueError, match=r"count must be in \[1, 9\].*got " + str(bad)):
            hold_out(src, tmp_path / f"c{bad}", count=bad)
        assert not (tmp_path / f"c{bad}").exists()
    with pytest.raises(ValueError, match="split 'test' exists"):
        hold_out(src, tmp_path / "d", count=2, name="test")
    # Nothing half-written is left beside the outputs.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "taken"]


def test_hold_out_command_prints_the_splits_and_reports_errors(source, tmp_path, capsys):
    src, _, _ = source
    assert (
        cli.run(["hold-out", "--voc", str(src), "--out", str(tmp_path / "o"), "--count", "4"]) == 0
    )
    assert "'val': 4" in capsys.readouterr().out
    rc = cli.run(["hold-out", "--voc", str(src), "--out", str(tmp_path / "o"), "--count", "4"])
    assert rc == 2 and "already exists" in capsys.readouterr().err

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


def test_folds_hold_out_every_training_image_exactly_once(source, tmp_path):
    # 10 training images, 3 folds: np.array_split of the seeded permutation gives parts of 4, 3
    # and 3. Each fold's directory holds out one part; together they cover the training split
    # once, and no fold's val meets its own train. Fold 0 is the first 4 of the same permutation,
    # i.e. what --count 4 holds out with the same seed.
    src, train, test = source
    perm = np.random.default_rng(5).permutation(10).tolist()
    want = [perm[:4], perm[4:7], perm[7:]]
    vals = []
    for k in range(3):
        m = hold_out(src, tmp_path / f"f{k}", seed=5, folds=3, fold=k)
        val = voc.read_split_ids(tmp_path / f"f{k}", "val")
        new_train = voc.read_split_ids(tmp_path / f"f{k}", "train")
        assert val == [train[i] for i in sorted(want[k])]
        assert not set(val) & set(new_train) and sorted(val + new_train) == sorted(train)
        assert voc.read_split_ids(tmp_path / f"f{k}", "test") == test
        assert (m["folds"], m["fold"], m["count"]) == (3, k, len(want[k]))
        vals.append(val)
    assert sorted(sum(vals, [])) == sorted(train)
    assert hold_out(src, tmp_path / "c4", count=4, seed=5)["held_out"] == vals[0]
    assert hold_out(src, tmp_path / "c3", count=3, seed=5)["folds"] is None


def test_folds_refuse_bad_arguments_naming_them(source, tmp_path, capsys):
    src, _, _ = source
    cases = [
        ({"folds": 3}, "folds and fold go together"),
        ({"fold": 0}, "folds and fold go together"),
        ({"folds": 3, "fold": 0, "count": 2}, r"count \(2\) or folds \(3\), not both"),
        ({"folds": 1, "fold": 0}, r"folds must be in \[2, 10\].*got 1"),
        ({"folds": 11, "fold": 0}, r"folds must be in \[2, 10\].*got 11"),
        ({"folds": 3, "fold": 3}, r"fold must be in \[0, 2\] for 3 folds; got 3"),
    ]
    for i, (kwargs, message) in enumerate(cases):
        with pytest.raises(ValueError, match=message):
            hold_out(src, tmp_path / f"bad{i}", **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    out = str(tmp_path / "cv")
    assert (
        cli.run(["hold-out", "--voc", str(src), "--out", out, "--folds", "3", "--fold", "2"]) == 0
    )
    assert "fold 2 of 3" in capsys.readouterr().out
    rc = cli.run(["hold-out", "--voc", str(src), "--out", out + "x", "--fold", "1"])
    assert rc == 2 and "folds and fold go together" in capsys.readouterr().err

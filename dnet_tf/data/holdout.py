"""A validation split held out of a VOC dataset's training split, as a VOC directory of its own.

Choices are made on validation splits, never on a test split; a dataset shipped with only
train/test (the raccoon photographs, many public sets) needs one made from its training images.
``hold_out`` writes a new VOC root whose ``JPEGImages/`` and ``Annotations/`` are symlinks to the
source's (nothing copied, the source untouched) and whose ``ImageSets/Main/`` has the training
split minus ``count`` images drawn by a seeded permutation, those images as the new split, and
every other split of the source as it was. The same (source, count, seed) gives the same split on
any machine; ``holdout.json`` beside it records them and the held-out ids.

Cross-validation: with ``folds`` = K the same seeded permutation is cut into K parts whose sizes
differ by at most one, and fold k (0-based) is held out. The K directories of one seed hold out
every training image exactly once, so K trainings validate on all of them (the small validation
split of a photo set decides only large differences); ``evaluation.ablation`` pools their
evaluations (``label=DIR1+DIR2+...``).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile

import numpy as np

from dnet_tf.data.voc import available_splits, read_split_ids

MANIFEST = "holdout.json"


def _permuted(ids, seed: int) -> np.ndarray:
    """Positions 0 .. len(ids) - 1 in NumPy's PCG64 permutation under ``seed``."""
    return np.random.default_rng(seed).permutation(len(ids))


def _in_order(ids, positions) -> list:
    return [ids[i] for i in sorted(np.asarray(positions).tolist())]


def held_out_ids(ids, count: int, seed: int) -> list:
    """The ``count`` ids of ``ids`` drawn by NumPy's PCG64 permutation under ``seed``, in their
    order in ``ids``."""
    return _in_order(ids, _permuted(ids, seed)[:count])


def fold_ids(ids, folds: int, fold: int, seed: int) -> list:
    """Fold ``fold`` of ``folds`` of ``ids``: the same permutation cut into ``folds`` parts
    (``np.array_split``: the first len(ids) % folds parts one longer), in their order in ``ids``.
    Fold 0 is ``held_out_ids(ids, len(fold 0), seed)``."""
    return _in_order(ids, np.array_split(_permuted(ids, seed), folds)[fold])


def hold_out(
    voc_root,
    out_dir,
    count=None,
    seed: int = 0,
    source_split: str = "train",
    name: str = "val",
    folds=None,
    fold=None,
) -> dict:
    """Writes ``out_dir``: the VOC dataset ``voc_root`` with ``count`` images of ``source_split``
    moved to a new split ``name``.

    Args:
      voc_root: a VOC directory (``JPEGImages/``, ``Annotations/``, ``ImageSets/Main/``).
      out_dir: the new VOC root; must not exist (nothing already there is overwritten). Written
        under a temporary name beside it and renamed at the end, so it is whole or absent.
      count: images held out, in [1, n - 1] for n images in ``source_split``; None with folds.
      seed: the permutation's seed.
      folds, fold: hold out fold ``fold`` (in [0, folds)) of ``folds`` (in [2, n]) instead of
        ``count`` images; both or neither.
      source_split: the split the images are taken from.
      name: the new split; must not be a split of ``voc_root`` already.
    Returns:
      the manifest written to ``out_dir/holdout.json``: source, source_split, name, seed, count,
      folds and fold (None without), the images of each split, the held-out ids.
    Raises:
      ValueError: naming the argument or file at fault.
    """
    src = pathlib.Path(voc_root).resolve()
    out = pathlib.Path(out_dir)
    for sub in ("JPEGImages", "Annotations"):
        if not (src / sub).is_dir():
            raise ValueError(f"{src}: no {sub}/ directory; not a VOC dataset")
    if out.exists():
        raise ValueError(f"{out}: already exists; choose a new --out")
    splits = available_splits(src)
    if name in splits:
        raise ValueError(f"split {name!r} exists in {src} already (splits: {splits}); --name")
    ids = read_split_ids(src, source_split)
    if len(set(ids)) != len(ids):
        raise ValueError(f"{src}: split {source_split!r} lists an image id more than once")
    if (folds is None) != (fold is None):
        raise ValueError(f"folds and fold go together; got folds={folds}, fold={fold}")
    if folds is not None:
        if count is not None:
            raise ValueError(f"count ({count}) or folds ({folds}), not both")
        if not 2 <= folds <= len(ids):
            raise ValueError(
                f"folds must be in [2, {len(ids)}] for the {len(ids)} images of split "
                f"{source_split!r}; got {folds}"
            )
        if not 0 <= fold < folds:
            raise ValueError(f"fold must be in [0, {folds - 1}] for {folds} folds; got {fold}")
        held = fold_ids(ids, folds, fold, seed)
        count = len(held)
    elif count is None or not 1 <= count <= len(ids) - 1:
        raise ValueError(
            f"count must be in [1, {len(ids) - 1}] for the {len(ids)} images of split "
            f"{source_split!r}; got {count}"
        )
    else:
        held = held_out_ids(ids, count, seed)
    held_set = set(held)
    lists = {s: read_split_ids(src, s) for s in splits if s != source_split}
    lists[source_split] = [i for i in ids if i not in held_set]
    lists[name] = held

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for sub in ("JPEGImages", "Annotations"):
            os.symlink(src / sub, tmp / sub, target_is_directory=True)
        main = tmp / "ImageSets" / "Main"
        main.mkdir(parents=True)
        for split, split_ids in lists.items():
            (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in split_ids))
        manifest = {
            "source": str(src),
            "source_split": source_split,
            "name": name,
            "seed": int(seed),
            "count": int(count),
            "folds": None if folds is None else int(folds),
            "fold": None if fold is None else int(fold),
            "images": {s: len(v) for s, v in sorted(lists.items())},
            "held_out": held,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest

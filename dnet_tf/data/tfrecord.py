"""TFRecord files with the TF Object Detection API's tf.train.Example keys.

A dataset prepared for that API (e.g. by its create_pascal_tf_record.py) is read here unchanged,
and the files written here are read there. Keys:

    image/encoded             bytes, the original file bytes (JPEG/PNG), never re-encoded
    image/format              bytes, b"jpeg" | b"png" | ...
    image/height, image/width int64, px
    image/filename            bytes
    image/source_id           bytes (the VOC image id)
    image/object/bbox/xmin, xmax, ymin, ymax
                              float lists, normalized to [0, 1] by the image width / height
    image/object/class/text   bytes list, class names
    image/object/class/label  int64 list, 1-based ids into the class list
    image/object/difficult    int64 list, 0/1
    image/object/truncated    int64 list, 0/1

Normalized boxes here are the continuous image_yxyx divided by the image size, so a box covering
pixel columns 0..W-1 is xmin = 0, xmax = 1. (The Object Detection API's VOC converter divides the
1-based VOC numbers directly, i.e. its xmin is one pixel right of ours; at VOC image sizes that is
<= 0.5% of the side, and its files are read here as they are.)

On reading, a box's class comes from ``class/text`` looked up in the given class list (robust to
a different label map order); only when a file has no class text is ``class/label - 1`` used. A
name not in the class list fails the read with the file name in the message.
"""

from __future__ import annotations

import glob as globlib
import os
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow as tf

from dnet_tf.data.voc import VocRecord

KEYS = {
    "encoded": "image/encoded",
    "format": "image/format",
    "height": "image/height",
    "width": "image/width",
    "filename": "image/filename",
    "source_id": "image/source_id",
    "xmin": "image/object/bbox/xmin",
    "xmax": "image/object/bbox/xmax",
    "ymin": "image/object/bbox/ymin",
    "ymax": "image/object/bbox/ymax",
    "text": "image/object/class/text",
    "label": "image/object/class/label",
    "difficult": "image/object/difficult",
    "truncated": "image/object/truncated",
}

_FORMATS = {".jpg": b"jpeg", ".jpeg": b"jpeg", ".png": b"png", ".bmp": b"bmp", ".gif": b"gif"}


def _bytes(values: Iterable[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _floats(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def _ints(values) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def record_to_example(
    record: VocRecord, class_names: Sequence[str], image_bytes: bytes | None = None
) -> tf.train.Example:
    """One VOC record -> tf.train.Example with the Object Detection API's keys.

    Args:
      record: a VocRecord (boxes in continuous image_yxyx).
      class_names: the class list; labels are 1-based indices into it.
      image_bytes: the encoded image; default: the file at record.image_path.
    Raises:
      ValueError naming the image when an object's class is not in class_names.
    """
    if image_bytes is None:
        image_bytes = pathlib.Path(record.image_path).read_bytes()
    index = {n: i for i, n in enumerate(class_names)}
    missing = [n for n in record.class_names if n not in index]
    if missing:
        raise ValueError(
            f"{record.annotation_path}: classes {sorted(set(missing))} not in the class list"
        )
    h, w = float(record.height), float(record.width)
    b = np.asarray(record.boxes_image_yxyx, np.float64).reshape(-1, 4)
    fmt = _FORMATS.get(os.path.splitext(record.image_path)[1].lower(), b"jpeg")
    feature = {
        KEYS["encoded"]: _bytes([image_bytes]),
        KEYS["format"]: _bytes([fmt]),
        KEYS["height"]: _ints([record.height]),
        KEYS["width"]: _ints([record.width]),
        KEYS["filename"]: _bytes([os.path.basename(record.image_path).encode()]),
        KEYS["source_id"]: _bytes([record.image_id.encode()]),
        KEYS["ymin"]: _floats(b[:, 0] / h),
        KEYS["xmin"]: _floats(b[:, 1] / w),
        KEYS["ymax"]: _floats(b[:, 2] / h),
        KEYS["xmax"]: _floats(b[:, 3] / w),
        KEYS["text"]: _bytes(n.encode() for n in record.class_names),
        KEYS["label"]: _ints(index[n] + 1 for n in record.class_names),
        KEYS["difficult"]: _ints(record.difficult.astype(int)),
        KEYS["truncated"]: _ints(record.truncated.astype(int)),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def shard_paths(output_pattern: str, num_shards: int) -> list:
    """File names of the shards: '*' in the pattern becomes '00000-of-00004' etc.

    A pattern without '*' names the single file when num_shards == 1, else gets
    '-00000-of-0000N' appended.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    tags = [f"{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]
    if "*" in output_pattern:
        return [output_pattern.replace("*", t, 1) for t in tags]
    if num_shards == 1:
        return [output_pattern]
    return [f"{output_pattern}-{t}" for t in tags]


def write_tfrecords(
    records: Sequence[VocRecord],
    class_names: Sequence[str],
    output_pattern: str,
    num_shards: int = 1,
    progress: bool = True,
) -> list:
    """Writes records as sharded TFRecord files (record i goes to shard i mod num_shards).

    Args:
      records: VocRecords, e.g. from voc.read_voc_split.
      class_names: the class list (labels are 1-based into it).
      output_pattern: e.g. 'out/train-*.tfrecord'; see shard_paths.
      num_shards: >= 1.
      progress: show a tqdm bar.
    Returns:
      the list of paths written.
    """
    from tqdm import tqdm

    paths = shard_paths(output_pattern, num_shards)
    for p in paths:
        pathlib.Path(p).parent.mkdir(parents=True, exist_ok=True)
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    try:
        for i, rec in enumerate(tqdm(records, disable=not progress, desc="tfrecord", unit="img")):
            writers[i % num_shards].write(record_to_example(rec, class_names).SerializeToString())
    finally:
        for wr in writers:
            wr.close()
    return paths


def tfrecord_files(pattern: str) -> list:
    """Sorted files matching a glob (or a comma-separated list of globs); error when none match."""
    files = sorted(
        {f for p in pattern.split(",") for f in globlib.glob(os.path.expanduser(p.strip()))}
    )
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {pattern!r}")
    return files


def is_tfrecord_source(source: str) -> bool:
    """True when ``source`` looks like a TFRecord glob/file rather than a VOC directory."""
    return not os.path.isdir(source)


_FEATURES = {
    KEYS["encoded"]: tf.io.FixedLenFeature([], tf.string),
    KEYS["format"]: tf.io.FixedLenFeature([], tf.string, default_value="jpeg"),
    KEYS["height"]: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    KEYS["width"]: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    KEYS["filename"]: tf.io.FixedLenFeature([], tf.string, default_value=""),
    KEYS["source_id"]: tf.io.FixedLenFeature([], tf.string, default_value=""),
    KEYS["xmin"]: tf.io.VarLenFeature(tf.float32),
    KEYS["xmax"]: tf.io.VarLenFeature(tf.float32),
    KEYS["ymin"]: tf.io.VarLenFeature(tf.float32),
    KEYS["ymax"]: tf.io.VarLenFeature(tf.float32),
    KEYS["text"]: tf.io.VarLenFeature(tf.string),
    KEYS["label"]: tf.io.VarLenFeature(tf.int64),
    KEYS["difficult"]: tf.io.VarLenFeature(tf.int64),
    KEYS["truncated"]: tf.io.VarLenFeature(tf.int64),
}


def class_table(class_names: Sequence[str]) -> tf.lookup.StaticHashTable:
    """name -> 0-based id, -1 for an unknown name."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(class_names), tf.string), tf.range(len(class_names), dtype=tf.int32)
        ),
        default_value=-1,
    )


def parse_example(serialized: tf.Tensor, table: tf.lookup.StaticHashTable | None) -> dict:
    """Parses one serialized Example (graph-safe).

    Args:
      serialized: tf.string scalar.
      table: from class_table(class_names); None leaves class_ids at label - 1.
    Returns:
      dict: encoded tf.string, height/width int32 (0 when absent), filename, source_id tf.string,
      boxes_norm_yxyx float32 [N, 4] (normalized image frame), class_ids int32 [N] (0-based),
      class_text tf.string [N], difficult/truncated bool [N] (False when absent).
    """
    f = tf.io.parse_single_example(serialized, _FEATURES)
    dense = {
        k: tf.sparse.to_dense(f[KEYS[k]])
        for k in ("xmin", "xmax", "ymin", "ymax", "text", "label", "difficult", "truncated")
    }
    boxes = tf.stack([dense["ymin"], dense["xmin"], dense["ymax"], dense["xmax"]], axis=-1)
    n = tf.shape(boxes)[0]
    labels = tf.cast(dense["label"], tf.int32) - 1
    text = dense["text"]
    if table is not None:
        from_text = table.lookup(text)
        ids = tf.cond(tf.size(text) > 0, lambda: from_text, lambda: labels)
        check = tf.debugging.Assert(
            tf.reduce_all(ids >= 0),
            [
                "TFRecord example with a class not in the class list: file",
                f[KEYS["filename"]],
                "source_id",
                f[KEYS["source_id"]],
                "classes",
                text,
                "labels",
                dense["label"],
            ],
        )
        with tf.control_dependencies([check]):
            ids = tf.identity(ids)
    else:
        ids = labels
    ids = tf.ensure_shape(tf.reshape(ids, [n]), [None])

    def flag(v):
        return tf.cond(tf.size(v) == n, lambda: v > 0, lambda: tf.zeros([n], tf.bool))

    return {
        "encoded": f[KEYS["encoded"]],
        "format": f[KEYS["format"]],
        "height": tf.cast(f[KEYS["height"]], tf.int32),
        "width": tf.cast(f[KEYS["width"]], tf.int32),
        "filename": f[KEYS["filename"]],
        "source_id": f[KEYS["source_id"]],
        "boxes_norm_yxyx": tf.ensure_shape(boxes, [None, 4]),
        "class_ids": ids,
        "class_text": text,
        "difficult": flag(dense["difficult"]),
        "truncated": flag(dense["truncated"]),
    }


def read_tfrecords(
    pattern: str,
    class_names: Sequence[str] | None,
    shuffle_files: bool = False,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Streams parsed examples (not decoded) from files matching a glob.

    Args:
      pattern: glob, e.g. 'data/train-*.tfrecord'.
      class_names: the class list for class/text lookup; None: ids from class/label - 1.
      shuffle_files: shuffle the file order (seeded) and interleave reads across files.
      seed: for the file shuffle.
    Returns:
      tf.data.Dataset of parse_example dicts.
    """
    files = tfrecord_files(pattern)
    table = class_table(class_names) if class_names is not None else None
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_files and len(files) > 1:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        ds = ds.interleave(
            tf.data.TFRecordDataset,
            cycle_length=min(4, len(files)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    else:
        ds = tf.data.TFRecordDataset(ds)
    return ds.map(
        lambda s: parse_example(s, table), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )


def tfrecord_class_names(pattern: str) -> list:
    """Sorted set of class/text names found in the files (reads annotations only)."""
    names = set()
    for ex in read_tfrecords(pattern, None):
        names.update(t.decode() for t in ex["class_text"].numpy())
    return sorted(names)

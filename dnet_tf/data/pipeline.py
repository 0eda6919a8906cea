"""tf.data input pipelines for the two networks (paper §6), graph-only.

    localizer_dataset(source, split, class_names, cfg, batch_size, seed)
        -> (images float32 [B, S, S, 3] in 0..255, masks float32 [B, d, d, 5, C])
    classifier_dataset(source, split, class_names, cfg, batch_size, seed)
        -> (images float32 [B, S, S, 3] in 0..255, labels int32 [B] in [0, C], 0 = background)

``source`` is a VOC root directory (Annotations/, JPEGImages/, ImageSets/Main/<split>.txt) or a
TFRecord glob in the Object Detection API's format (``split`` is then unused: the glob picks the
files). Both datasets are infinite, shuffled, batched (static batch size) and prefetched.

Flow per image: decode (greyscale and palette images become RGB) -> draw K crops at once
(``sampler``) -> crop and resize each to S x S -> targets (Eq. (1) masks of the boxes in each
crop's frame, or labels) -> random horizontal flip -> drop crops whose rejection sampling failed
-> shuffle crops across images -> batch. Drawing several crops per decoded image amortises the
JPEG decode, the costliest step per byte.

Determinism: every random draw is stateless, seeded by (seed, position of the image in the
shuffled, repeated stream), shuffles are seeded and maps keep order, so the same seed gives the
same batches.

Difficult objects are kept as boxes: they are objects, and labelling their pixels background
would teach the localizer wrong masks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from dnet_tf.config import DetectorConfig
from dnet_tf.core import policy
from dnet_tf.data import image_files, tfrecord, voc
from dnet_tf.data import sampler as sampler_ops
from dnet_tf.ops.mask_targets import mask_targets_batch
from dnet_tf.ops.xp import TENSORFLOW


@dataclasses.dataclass
class PipelineConfig:
    """Input-pipeline knobs that are not the paper's (the paper's are in SamplerConfig)."""

    samples_per_image: int = 8  # crops drawn per decoded image; >= 1
    sample_shuffle_buffer: int = 256  # crops mixed across images before batching; >= 1
    image_shuffle_buffer: int = (
        2048  # images shuffled per epoch (VOC: all of them, up to this); >= 1
    )
    on_error: str = "fail"  # VOC reader policy for a bad file: "fail" or "skip" (warns)
    deterministic: bool = True  # keep map order (same batches for the same seed)

    def validate(self) -> PipelineConfig:
        for name in ("samples_per_image", "sample_shuffle_buffer", "image_shuffle_buffer"):
            if getattr(self, name) < 1:
                raise ValueError(f"pipeline config field '{name}': must be >= 1")
        if self.on_error not in voc.ON_ERROR_CHOICES:
            raise ValueError(
                f"pipeline config field 'on_error': must be one of {voc.ON_ERROR_CHOICES}"
            )
        return self


def load_class_names(source: str, split: str) -> list:
    """The sorted set of object class names in a source (VOC directory split or TFRecord glob)."""
    if voc.is_voc_dir(source):
        return voc.read_class_names(source, split)
    return tfrecord.tfrecord_class_names(source)


def discover_class_names(source: str, split: str = "train") -> list:
    """The class list when none is given: sorted names in the split (alias of load_class_names)."""
    return load_class_names(source, split)


def has_split(source: str, split: str) -> bool:
    """Whether ``source`` has the split: ImageSets/Main/<split>.txt for a VOC directory.

    A TFRecord glob is one split (the files it matches); it answers True only for "train", so
    that a held-out evaluation is never silently run on the training files.
    """
    if voc.is_voc_dir(source):
        return split in voc.available_splits(source)
    return split == "train"


def read_annotations(
    source: str, split: str, class_names: Sequence[str] | None, on_error: str = "fail"
) -> list:
    """Annotations only (no image decode) as NumPy, for statistics.

    Returns:
      list of dicts: height, width (px), boxes_image_yxyx float32 [N, 4], class_ids int32 [N].
    """
    out = []
    if voc.is_voc_dir(source):
        for r in voc.read_voc_split(source, split, class_names, on_error=on_error):
            out.append(
                {
                    "height": r.height,
                    "width": r.width,
                    "boxes_image_yxyx": r.boxes_image_yxyx,
                    "class_ids": r.class_ids,
                }
            )
        return out
    for ex in tfrecord.read_tfrecords(source, class_names):
        h, w = int(ex["height"]), int(ex["width"])
        if h <= 0 or w <= 0:
            img = tf.io.decode_image(ex["encoded"], channels=3, expand_animations=False)
            h, w = int(img.shape[0]), int(img.shape[1])
        scale = np.array([h, w, h, w], np.float32)
        out.append(
            {
                "height": h,
                "width": w,
                "boxes_image_yxyx": ex["boxes_norm_yxyx"].numpy() * scale,
                "class_ids": ex["class_ids"].numpy(),
            }
        )
    return out


def _decode(encoded: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP -> uint8 [H, W, 3] (greyscale and palette images become RGB;
    truncated JPEGs as TF recovers them, see image_files)."""
    return image_files.decode_tensor(encoded)


def _voc_images(source, split, class_names, seed, pcfg: PipelineConfig) -> tuple:
    """(repeated shuffled dataset of (path, first box, end box, [H, W]), its decode function).

    The boxes of all images sit in one constant; each element carries its slice bounds."""
    records = voc.read_voc_split(source, split, class_names, on_error=pcfg.on_error)
    if not records:
        raise ValueError(f"{source}: split {split!r} has no usable images")
    counts = np.array([r.num_objects for r in records], np.int64)
    ends = np.cumsum(counts)
    starts = ends - counts
    all_boxes = tf.constant(
        np.concatenate([r.boxes_image_yxyx for r in records] + [np.zeros((0, 4), np.float32)])
    )
    all_ids = tf.constant(
        np.concatenate([r.class_ids for r in records] + [np.zeros((0,), np.int32)])
    )
    paths = [r.image_path for r in records]
    sizes = np.array([[r.height, r.width] for r in records], np.int32)
    ds = tf.data.Dataset.from_tensor_slices((paths, starts, ends, sizes))
    ds = ds.shuffle(
        min(len(records), pcfg.image_shuffle_buffer), seed=seed, reshuffle_each_iteration=True
    )

    @tf.autograph.experimental.do_not_convert
    def load(path, start, end, size):
        image = _decode(tf.io.read_file(path))
        check = tf.debugging.assert_equal(
            tf.shape(image)[:2], size, message="decoded image size differs from its annotation"
        )
        with tf.control_dependencies([check]):
            image = tf.identity(image)
        return {
            "image": image,
            "boxes_image_yxyx": all_boxes[start:end],
            "class_ids": all_ids[start:end],
        }

    return ds.repeat(), load


def _tfrecord_images(source, class_names, seed, pcfg: PipelineConfig) -> tuple:
    """(repeated shuffled dataset of parsed examples, its decode function)."""
    ds = tfrecord.read_tfrecords(source, class_names, shuffle_files=True, seed=seed)
    ds = ds.shuffle(pcfg.image_shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    @tf.autograph.experimental.do_not_convert
    def load(ex):
        image = _decode(ex["encoded"])
        hw = tf.shape(image)[:2]
        declared = tf.stack([ex["height"], ex["width"]])
        check = tf.debugging.Assert(
            tf.reduce_all((declared <= 0) | tf.equal(declared, hw)),
            [
                "TFRecord image/height, image/width differ from the decoded image: file",
                ex["filename"],
                "declared",
                declared,
                "decoded",
                hw,
            ],
        )
        with tf.control_dependencies([check]):
            image = tf.identity(image)
        scale = tf.cast(tf.concat([hw, hw], 0), tf.float32)
        return {
            "image": image,
            "boxes_image_yxyx": ex["boxes_norm_yxyx"] * scale,
            "class_ids": ex["class_ids"],
        }

    return ds.repeat(), load


def decoded_images(
    source: str,
    split: str,
    class_names: Sequence[str],
    seed: int,
    pipeline_cfg: PipelineConfig | None = None,
) -> tf.data.Dataset:
    """Infinite shuffled stream of (counter, example) with example = dict(image uint8 [H, W, 3],
    boxes_image_yxyx float32 [N, 4] continuous image frame, class_ids int32 [N]).

    counter (int64) is the example's position in the stream, used to seed its random draws.
    """
    pcfg = (pipeline_cfg or PipelineConfig()).validate()
    if voc.is_voc_dir(source):
        ds, load = _voc_images(source, split, class_names, seed, pcfg)
        ds = ds.enumerate().map(
            lambda i, e: (i, load(*e)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=pcfg.deterministic,
        )
    else:
        ds, load = _tfrecord_images(source, class_names, seed, pcfg)
        ds = ds.enumerate().map(
            lambda i, e: (i, load(e)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=pcfg.deterministic,
        )
    return ds


def _flip_draw(seed, k):
    return (
        tf.random.stateless_uniform([k], tf.random.experimental.stateless_fold_in(seed, 7919)) < 0.5
    )


def localizer_samples(
    example: dict, cfg: DetectorConfig, num_samples: int, seed, hflip: bool | None = None
) -> dict:
    """K localizer training samples of one decoded image (graph-only).

    Args:
      example: dict(image uint8 [H, W, 3], boxes_image_yxyx float32 [N, 4], class_ids int32 [N]).
      cfg: DetectorConfig (model.input_size, model.mask_size, model.num_classes, sampler).
      num_samples: K.
      seed: int64 [2] stateless seed.
      hflip: mirror a random half of the crops; default cfg.sampler.hflip.
    Returns:
      dict: image float32 [K, S, S, 3] in 0..255, masks float32 [K, d, d, 5, C],
      crops_image_yxyx float32 [K, 4], flipped bool [K], is_positive bool [K], valid bool [K].
    """
    s_cfg, m_cfg = cfg.sampler, cfg.model
    seed = tf.cast(seed, tf.int64)
    image = example["image"]
    boxes = example["boxes_image_yxyx"]
    s = sampler_ops.sample_localizer_crops(tf.shape(image)[:2], boxes, num_samples, s_cfg, seed)
    crops = s["crops_image_yxyx"]
    pixels = sampler_ops.crop_and_resize(image, crops, m_cfg.input_size)
    masks = mask_targets_batch(
        sampler_ops.boxes_in_crops(boxes, crops),
        example["class_ids"],
        m_cfg.num_classes,
        m_cfg.mask_size,
        halves_of_original=s_cfg.mask_halves == "original",
    )
    flip = _flip_draw(seed, num_samples) & (s_cfg.hflip if hflip is None else hflip)
    pixels = tf.where(flip[:, None, None, None], tf.reverse(pixels, axis=[2]), pixels)
    masks = tf.where(flip[:, None, None, None, None], sampler_ops.hflip_masks(masks), masks)
    pixels = sampler_ops.photometric_jitter(pixels, s_cfg.photometric, seed)
    return {
        "image": pixels,
        "masks": masks,
        "crops_image_yxyx": crops,
        "flipped": flip,
        "is_positive": s["is_positive"],
        "valid": s["valid"],
    }


def classifier_samples(
    example: dict,
    cfg: DetectorConfig,
    num_samples: int,
    seed,
    hflip: bool | None = None,
    view: str = "box",
) -> dict:
    """K classifier training samples of one decoded image (graph-only).

    Args:
      view: one of core.policy.CLASSIFIER_VIEWS: the pixels are the labelled box ("box") or
        its refinement crop ("refinement"); the label is the box's either way.
    Returns:
      dict: image float32 [K, S, S, 3] in 0..255, labels int32 [K] in [0, C] (0 = background),
      crops_image_yxyx float32 [K, 4] (the labelled boxes), pixels_image_yxyx float32 [K, 4]
      (the regions the pixels show), best_iou float32 [K], flipped bool [K], valid bool [K].
    Raises:
      ValueError: an unknown view.
    """
    if view not in policy.CLASSIFIER_VIEWS:
        raise ValueError(
            f"classifier crop view must be one of {policy.CLASSIFIER_VIEWS}, got {view!r}"
        )
    s_cfg = cfg.sampler
    seed = tf.cast(seed, tf.int64)
    image = example["image"]
    s = sampler_ops.sample_classifier_crops(
        tf.shape(image)[:2],
        example["boxes_image_yxyx"],
        example["class_ids"],
        num_samples,
        s_cfg,
        seed,
    )
    region = s["crops_image_yxyx"]
    if view == "refinement":
        hw = tf.cast(tf.shape(image)[:2], tf.float32)
        inf = cfg.inference
        region = policy.refinement_crop(
            region, hw[0], hw[1], inf.refine_enlarge, inf.refine_crop, TENSORFLOW
        )
    pixels = sampler_ops.crop_and_resize(image, region, cfg.model.input_size)
    flip = _flip_draw(seed, num_samples) & (s_cfg.hflip if hflip is None else hflip)
    pixels = tf.where(flip[:, None, None, None], tf.reverse(pixels, axis=[2]), pixels)
    pixels = sampler_ops.photometric_jitter(pixels, s_cfg.photometric, seed)
    return {
        "image": pixels,
        "labels": s["labels"],
        "crops_image_yxyx": s["crops_image_yxyx"],
        "pixels_image_yxyx": region,
        "best_iou": s["best_iou"],
        "flipped": flip,
        "valid": s["valid"],
    }


def _samples_dataset(
    source, split, class_names, cfg: DetectorConfig, batch_size, seed, pipeline_cfg, make, keys
) -> tf.data.Dataset:
    cfg.validate()
    if len(class_names) != cfg.model.num_classes:
        raise ValueError(
            f"{len(class_names)} class names given but model.num_classes = {cfg.model.num_classes}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pcfg = (pipeline_cfg or PipelineConfig()).validate()
    k = pcfg.samples_per_image
    ds = decoded_images(source, split, class_names, seed, pcfg)

    # Straight-line TF code: skip autograph's tracing cost.
    @tf.autograph.experimental.do_not_convert
    def per_image(counter, example):
        return make(example, cfg, k, tf.stack([tf.constant(seed, tf.int64), counter]))

    ds = ds.map(per_image, num_parallel_calls=tf.data.AUTOTUNE, deterministic=pcfg.deterministic)
    ds = ds.map(lambda s: {key: s[key] for key in keys + ("valid",)})
    ds = ds.unbatch().filter(lambda s: s["valid"])
    ds = ds.map(lambda s: tuple(s[key] for key in keys))
    ds = ds.shuffle(pcfg.sample_shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = pcfg.deterministic
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def localizer_dataset(
    source: str,
    split: str,
    class_names: Sequence[str],
    cfg: DetectorConfig,
    batch_size: int,
    seed: int,
    pipeline_cfg: PipelineConfig | None = None,
) -> tf.data.Dataset:
    """Infinite batches of localizer training samples (§6).

    Args:
      source: VOC root directory or TFRecord glob.
      split: VOC split name (ImageSets/Main/<split>.txt); unused for TFRecords.
      class_names: the class list, len == cfg.model.num_classes (see load_class_names).
      cfg: DetectorConfig: model sizes and the SamplerConfig.
      batch_size: B.
      seed: int >= 0; the same seed gives the same batches.
      pipeline_cfg: PipelineConfig knobs (crops per image, buffers, bad-file policy).
    Returns:
      tf.data.Dataset of (images float32 [B, S, S, 3] RGB 0..255, masks float32 [B, d, d, 5, C]).
    """
    return _samples_dataset(
        source,
        split,
        class_names,
        cfg,
        batch_size,
        seed,
        pipeline_cfg,
        localizer_samples,
        ("image", "masks"),
    )


def classifier_dataset(
    source: str,
    split: str,
    class_names: Sequence[str],
    cfg: DetectorConfig,
    batch_size: int,
    seed: int,
    pipeline_cfg: PipelineConfig | None = None,
    view: str = "box",
) -> tf.data.Dataset:
    """Infinite batches of classifier training samples (§6).

    Args: as localizer_dataset; view: as classifier_samples (checked when the
      dataset is built).
    Returns:
      tf.data.Dataset of (images float32 [B, S, S, 3] RGB 0..255, labels int32 [B] in [0, C];
      0 = background, k = class k - 1 of class_names).
    """

    def make(example, cfg_, k, seed_):
        return classifier_samples(example, cfg_, k, seed_, view=view)

    return _samples_dataset(
        source,
        split,
        class_names,
        cfg,
        batch_size,
        seed,
        pipeline_cfg,
        make,
        ("image", "labels"),
    )

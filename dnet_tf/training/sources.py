"""Where training samples come from: the data pipeline over a dataset, or in-memory toy crops.

``train`` reads its samples through the small ``DataSource`` interface, so the same loop runs on
a Pascal VOC folder / TFRecords (``PipelineSource``, the default) and on ``ToySource``, crops drawn
from random rectangles with pure TF ops (for tests and throughput benchmarks, where reading and
decoding JPEGs would dominate or add files).
"""

from __future__ import annotations

import abc
import functools
import pathlib

import numpy as np
import tensorflow as tf

from dnet_tf.config import DetectorConfig
from dnet_tf.ops.mask_targets import mask_targets


class DataSource(abc.ABC):
    """Training and held-out samples for one dataset.

    Attributes:
      class_names: tuple of str, class id k (0-based) = class_names[k].
    """

    class_names: tuple

    @abc.abstractmethod
    def classifier_dataset(
        self, split: str, cfg: DetectorConfig, batch_size: int, seed: int, view: str = "box"
    ) -> tf.data.Dataset:
        """Infinite (images [B, S, S, 3] float32 0..255, labels int32 [B] in [0, C], 0 = bg).

        ``view`` (dnet_tf.core.policy.CLASSIFIER_VIEWS): what the pixels show of each labelled
        box, the box itself or its refinement crop (the shared class head's training samples).
        """

    @abc.abstractmethod
    def localizer_dataset(
        self, split: str, cfg: DetectorConfig, batch_size: int, seed: int
    ) -> tf.data.Dataset:
        """Infinite (images [B, S, S, 3] float32 0..255, masks [B, d, d, 5, C] float32)."""

    @abc.abstractmethod
    def has_split(self, split: str) -> bool:
        """Whether the split exists (e.g. "val" for the held-out evaluation)."""

    @abc.abstractmethod
    def dataset_stats(self, cfg: DetectorConfig) -> dict:
        """JSON-able statistics of the training split; "aspect_ratios": ascending w / h floats."""

    def describe(self) -> str:
        return type(self).__name__

    def data_report(self) -> dict:
        """JSON-able account of the files left out or repaired while reading (for the summary)."""
        return {}


class PipelineSource(DataSource):
    """The team's data pipeline (dnet_tf.data) over a VOC root folder or a TFRecord glob.

    Args:
      source: VOC root (Annotations/, JPEGImages/, ImageSets/Main/<split>.txt) or a TFRecord
        glob, as accepted by dnet_tf.data.pipeline.
      class_names: class list; None reads it from the dataset (dnet_tf.data.voc.read_class_names).
      on_error: a bad annotation or image file: "fail" stops naming the file, "skip" drops that
        image with a warning (counted in ``data_report``).
    """

    def __init__(self, source: str, class_names=None, on_error: str = "fail"):
        from dnet_tf.data import pipeline, stats  # the data package is optional for toy runs

        self._pipeline = pipeline
        self._stats = stats
        self._pipeline_cfg = pipeline.PipelineConfig(on_error=on_error).validate()
        self.source = str(source)
        if class_names is None:
            class_names = pipeline.discover_class_names(self.source)
        self.class_names = tuple(class_names)

    def _dataset(self, make, split, cfg, batch_size, seed):
        return make(
            self.source,
            split,
            self.class_names,
            cfg,
            batch_size=batch_size,
            seed=seed,
            pipeline_cfg=self._pipeline_cfg,
        )

    def classifier_dataset(self, split, cfg, batch_size, seed, view="box"):
        make = functools.partial(self._pipeline.classifier_dataset, view=view)
        return self._dataset(make, split, cfg, batch_size, seed)

    def localizer_dataset(self, split, cfg, batch_size, seed):
        return self._dataset(self._pipeline.localizer_dataset, split, cfg, batch_size, seed)

    def has_split(self, split):
        return self._pipeline.has_split(self.source, split)

    def dataset_stats(self, cfg):
        return self._stats.compute_dataset_stats(
            self.source,
            "train",
            self.class_names,
            num_aspect_ratios=cfg.sampler.num_aspect_ratios,
            on_error=self._pipeline_cfg.on_error,
        )

    def describe(self):
        return f"dataset {self.source}"

    def data_report(self):
        from dnet_tf.data import voc

        if not voc.is_voc_dir(self.source):
            return {}
        import warnings

        with warnings.catch_warnings():  # warned once already, when the datasets were built
            warnings.simplefilter("ignore", voc.VocWarning)
            split = voc.read_voc_split(
                self.source, "train", self.class_names, on_error=self._pipeline_cfg.on_error
            )
        return {"train_split": split.report()}


class ToySource(DataSource):
    """Crops of one axis-aligned rectangle (or none) on a noisy background, made in-graph.

    Each class has its own colour; a crop holds an object with probability ``positive_fraction``,
    its box side uniform in [0.2, 0.8] of the crop. Masks are the exact Eq. (1) targets
    (dnet_tf.ops.mask_targets). Sample k of split s under seed z is a pure function of (z, s, k).

    Args:
      class_names: names of the C classes (at most 8 colours are distinct).
      positive_fraction: share of crops with an object; [0, 1].
    """

    _COLOURS = np.array(
        [
            [230, 40, 40],
            [40, 200, 60],
            [50, 80, 230],
            [230, 220, 40],
            [200, 60, 220],
            [40, 210, 210],
            [250, 140, 30],
            [240, 240, 240],
        ],
        dtype=np.float32,
    )
    _SPLITS = {"train": 0, "val": 1, "test": 2}

    def __init__(self, class_names=("a", "b"), positive_fraction: float = 0.5):
        self.class_names = tuple(class_names)
        if not self.class_names:
            raise ValueError("ToySource: class_names is empty")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(
                f"ToySource: positive_fraction must be in [0, 1], got {positive_fraction}"
            )
        self.positive_fraction = float(positive_fraction)

    def _samples(self, split: str, cfg: DetectorConfig, seed: int) -> tf.data.Dataset:
        if split not in self._SPLITS:
            raise ValueError(f"ToySource: unknown split {split!r}; known: {sorted(self._SPLITS)}")
        s, d, c = cfg.model.input_size, cfg.model.mask_size, len(self.class_names)
        colours = tf.constant(self._COLOURS[np.arange(c) % len(self._COLOURS)])
        split_id, pos = self._SPLITS[split], self.positive_fraction

        def make(k):
            key = tf.stack([tf.constant(seed * 4 + split_id, tf.int64), k])
            shape_key, noise_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
            u = tf.random.stateless_uniform([6], seed=shape_key)
            has_obj = tf.cast(u[0] < pos, tf.float32)
            cls = tf.minimum(tf.cast(u[1] * c, tf.int32), c - 1)
            h, w = 0.2 + 0.6 * u[2], 0.2 + 0.6 * u[3]
            y0, x0 = u[4] * (1.0 - h), u[5] * (1.0 - w)
            box_norm_yxyx = tf.stack([y0, x0, y0 + h, x0 + w])
            noise = tf.random.stateless_uniform([s, s, 3], seed=noise_key, maxval=60.0)
            centres = (tf.range(s, dtype=tf.float32) + 0.5) / s
            inside_y = tf.cast(
                (centres >= box_norm_yxyx[0]) & (centres < box_norm_yxyx[2]), tf.float32
            )
            inside_x = tf.cast(
                (centres >= box_norm_yxyx[1]) & (centres < box_norm_yxyx[3]), tf.float32
            )
            inside = (inside_y[:, None] * inside_x[None, :] * has_obj)[..., None]  # [S, S, 1]
            image = noise * (1.0 - inside) + colours[cls] * inside
            masks = mask_targets(box_norm_yxyx[None], cls[None], c, d) * has_obj
            label = (cls + 1) * tf.cast(has_obj, tf.int32)
            return image, masks, label

        return tf.data.Dataset.range(2**62).map(
            make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )

    def classifier_dataset(self, split, cfg, batch_size, seed, view="box"):
        # A toy sample is its own crop with the object inside: both views show the same pixels.
        ds = self._samples(split, cfg, seed).map(lambda im, m, lab: (im, lab))
        return ds.batch(batch_size, drop_remainder=True).prefetch(2)

    def localizer_dataset(self, split, cfg, batch_size, seed):
        ds = self._samples(split, cfg, seed).map(lambda im, m, lab: (im, m))
        return ds.batch(batch_size, drop_remainder=True).prefetch(2)

    def has_split(self, split):
        return split in self._SPLITS

    def dataset_stats(self, cfg):
        # Boxes have w, h independently uniform in [0.2, 0.8]: ratios spread around 1.
        ratios = np.geomspace(0.4, 2.5, cfg.sampler.num_aspect_ratios)
        return {"aspect_ratios": [round(float(r), 4) for r in ratios], "source": "toy"}

    def describe(self):
        return f"toy crops ({len(self.class_names)} classes)"


def open_source(data, class_names=None) -> DataSource:
    """A DataSource from a DataSource (returned as is) or a path / TFRecord glob string."""
    if isinstance(data, DataSource):
        return data
    if isinstance(data, (str, pathlib.Path)):
        return PipelineSource(str(data), class_names=class_names)
    raise TypeError(
        f"data must be a path, a TFRecord glob or a DataSource, got {type(data).__name__}"
    )

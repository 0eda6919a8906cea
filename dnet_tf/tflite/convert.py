"""Conversion of the localizer and the classifier to TFLite, and a runner over the LiteRT
interpreter.

Variants (``VARIANTS``):
  float32       no optimisation; the reference for the others.
  float16       weights stored as float16 (half the size), computed in float32 on CPUs; GPUs
                delegates may compute in float16.
  dynamic_int8  dynamic-range quantization: weights int8, activations quantized on the fly per
                batch by the kernels that support it (Conv2D, FullyConnected), float elsewhere.
  int8          full-integer quantization: every op int8 (TFLITE_BUILTINS_INT8 only), activation
                ranges calibrated on a representative set of training crops. Integer interface:
                input uint8 pixels, output int8 (masks, probabilities); ``TFLiteNetwork`` quantizes
                and dequantizes with the tensors' scale and zero point, so callers see float32.

How a Keras 3 model is converted: written as a SavedModel with ``keras.export.ExportArchive``
(the path ``model.export(format="litert")`` takes in Keras 3), then
``tf.lite.TFLiteConverter.from_saved_model``. Two other routes were tried in TF 2.21 / Keras 3.15
and rejected: ``from_concrete_functions([fn], trackable_obj=model)`` writes a SavedModel of the
Keras model without its variables and the converted model outputs NaN everywhere (silently);
``from_concrete_functions([fn])`` without the object works but is the converter's deprecated path.
Only TFLite builtin ops are allowed (no TF Select ops): the networks are convolutions, dense
layers, pooling, resizing and activations, all builtins, and an edge runtime without the Flex
delegate must run them.

Inputs and outputs of every converted network (signature "serving_default"):
  images  [N, S, S, 3] RGB pixel values 0..255 (float32, or uint8 for ``int8``); N is dynamic
          (shape_signature -1), resized by ``TFLiteNetwork``.
  output  localizer [N, d, d, 5, C] sigmoid masks; classifier [N, C + 1] softmax (0 = background).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import tempfile
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

VARIANTS = ("float32", "float16", "dynamic_int8", "int8")
NETWORKS = ("localizer", "classifier")
INPUT_NAME = "images"
SIGNATURE = "serving_default"


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown TFLite variant {variant!r}; known: {list(VARIANTS)}")
    return variant


def tflite_filename(network: str, variant: str) -> str:
    """File name of a converted network, e.g. ``localizer_int8.tflite``."""
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; known: {list(NETWORKS)}")
    return f"{network}_{check_variant(variant)}.tflite"


def _write_saved_model(model, directory: str) -> None:
    """The Keras model's inference call (training=False) as a SavedModel with one signature."""
    import keras

    size = model.input_shape[1:]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SIGNATURE,
        functools.partial(model.__call__, training=False),
        input_signature=[tf.TensorSpec((None,) + tuple(size), tf.float32, name=INPUT_NAME)],
    )
    archive.write_out(directory, verbose=False)


def _check_representative(model, representative_images):
    if representative_images is None or len(representative_images) == 0:
        raise ValueError("variant 'int8' needs representative_images (calibration crops)")
    images = np.asarray(representative_images, np.float32)
    want = tuple(model.input_shape[1:])
    if images.shape[1:] != want:
        raise ValueError(
            f"representative_images have shape {images.shape}, "
            f"expected [M, {', '.join(map(str, want))}]"
        )
    return images


def _convert_saved_model(
    saved_model_dir: str, variant: str, representative_images: np.ndarray | None
) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model_dir, signature_keys=[SIGNATURE]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if variant == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        images = representative_images

        def calibration():
            for i in range(len(images)):
                yield [images[i : i + 1]]

        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.int8
    return converter.convert()


def convert_variants(
    model, variants: Sequence[str] = VARIANTS, representative_images: np.ndarray | None = None
) -> dict:
    """Converts one network to several TFLite variants (the SavedModel is written once).

    Args:
      model: keras.Model [N, S, S, 3] float32 0..255 -> one float32 output (localizer or
        classifier).
      variants: names from VARIANTS.
      representative_images: float32 [M, S, S, 3] pixel values 0..255, the calibration set of
        ``int8`` (M >= 1; a few hundred crops is plenty); unused by the other variants.
    Returns:
      {variant: the .tflite file's bytes}.
    Raises:
      ValueError: unknown variant, or ``int8`` without representative images (or of the wrong
        shape).
    """
    variants = [check_variant(v) for v in variants]
    if "int8" in variants:
        representative_images = _check_representative(model, representative_images)
    with tempfile.TemporaryDirectory(prefix="dnet_tflite_") as tmp:
        _write_saved_model(model, tmp)
        return {v: _convert_saved_model(tmp, v, representative_images) for v in variants}


def convert_model(model, variant: str, representative_images: np.ndarray | None = None) -> bytes:
    """One network, one variant: see ``convert_variants``. Returns the .tflite file's bytes."""
    return convert_variants(model, [variant], representative_images)[variant]


def sample_crops(
    source: str,
    split: str,
    class_names: Sequence[str],
    cfg,
    network: str,
    count: int,
    seed: int,
    batch_size: int = 32,
) -> np.ndarray:
    """Training-style crops of a dataset split, as the networks see them in training (§6).

    Args:
      source: VOC root directory or TFRecord glob (see ``dnet_tf.data.pipeline``).
      split: e.g. "train" (calibration) or "val" (held-out error measurement).
      class_names: the run's class list; cfg: its DetectorConfig.
      network: "localizer" (localizer_dataset crops: 40% covering an object) or "classifier"
        (classifier_dataset crops: 40% positives at Jaccard >= 0.6).
      count: crops wanted (>= 1); seed: the pipeline seed (same seed, same crops).
    Returns:
      float32 [count, S, S, 3] RGB pixel values 0..255.
    """
    from dnet_tf.data import pipeline

    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; known: {list(NETWORKS)}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    make = pipeline.localizer_dataset if network == "localizer" else pipeline.classifier_dataset
    batch = min(batch_size, count)
    ds = make(source, split, list(class_names), cfg, batch, seed)
    out = []
    for images, _ in ds.take(-(-count // batch)):
        out.append(images.numpy())
    return np.concatenate(out)[:count].astype(np.float32)


@dataclasses.dataclass(frozen=True)
class TensorQuantization:
    """Affine quantization of an interpreter tensor: real = scale * (q - zero_point);
    scale 0 = float."""

    dtype: type
    scale: float
    zero_point: int

    @classmethod
    def of(cls, detail: dict) -> TensorQuantization:
        scale, zero_point = detail["quantization"]
        return cls(np.dtype(detail["dtype"]).type, float(scale), int(zero_point))

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)

    def quantize(self, real: np.ndarray) -> np.ndarray:
        """float -> the tensor's dtype: round(real / scale) + zero_point, saturated to the dtype."""
        if not self.quantized:
            return np.asarray(real, self.dtype)
        info = np.iinfo(self.dtype)
        q = np.round(np.asarray(real, np.float32) / self.scale) + self.zero_point
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return np.asarray(q, np.float32)
        return (self.scale * (np.asarray(q, np.float32) - self.zero_point)).astype(np.float32)


class TFLiteNetwork:
    """One converted network on the LiteRT interpreter, called like the Keras model.

    ``net(images)``: float32 [N, S, S, 3] pixel values 0..255 -> float32 output (masks
    [N, d, d, 5, C] or probabilities [N, C + 1]); integer interfaces are (de)quantized here. The
    interpreter is resized to N on demand (kept while N stays the same).

    Args:
      model: path of a .tflite file, or its bytes.
      num_threads: interpreter threads (None: the interpreter's default).
      max_batch: inputs larger than this run in chunks of at most max_batch (None: one call).
    """

    def __init__(
        self,
        model: str | os.PathLike | bytes,
        num_threads: int | None = None,
        max_batch: int | None = None,
    ):
        from ai_edge_litert.interpreter import Interpreter

        if isinstance(model, (bytes, bytearray)):
            self.path = None
            self._interpreter = Interpreter(model_content=bytes(model), num_threads=num_threads)
        else:
            self.path = pathlib.Path(model)
            if not self.path.is_file():
                raise FileNotFoundError(f"TFLite model not found: {self.path}")
            self._interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"{self.path or 'model'}: expected one input and one output, got "
                f"{len(inputs)} and {len(outputs)}"
            )
        self._input, self._output = inputs[0], outputs[0]
        self.input_quantization = TensorQuantization.of(self._input)
        self.output_quantization = TensorQuantization.of(self._output)
        self.input_shape = tuple(int(v) for v in self._input["shape_signature"][1:])
        self.max_batch = max_batch
        self._batch = None

    def _resize(self, n: int) -> None:
        if self._batch != n:
            self._interpreter.resize_tensor_input(self._input["index"], [n, *self.input_shape])
            self._interpreter.allocate_tensors()
            self._batch = n

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise ValueError(
                f"TFLite network expects images [N, {', '.join(map(str, self.input_shape))}], "
                f"got shape {images.shape}"
            )
        step = self.max_batch or max(len(images), 1)
        parts = [self._run(images[i : i + step]) for i in range(0, len(images), step)]
        if not parts:
            self._resize(1)
            shape = self._interpreter.get_tensor(self._output["index"]).shape[1:]
            return np.zeros((0,) + tuple(shape), np.float32)
        return np.concatenate(parts)

    def _run(self, images: np.ndarray) -> np.ndarray:
        self._resize(len(images))
        self._interpreter.set_tensor(self._input["index"], self.input_quantization.quantize(images))
        self._interpreter.invoke()
        return self.output_quantization.dequantize(
            self._interpreter.get_tensor(self._output["index"])
        )


def keras_network(model) -> Callable[[np.ndarray], np.ndarray]:
    """A Keras model as a network function: float32 [N, S, S, 3] -> float32 NumPy output."""

    # One trace for every batch size: the windows, the candidates and the held-out crops differ.
    @tf.function(
        input_signature=[tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32)]
    )
    def call(x):
        return model(x, training=False)

    def run(images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.float32)
        if len(images) == 0:
            out_shape = tuple(model.output_shape[1:])
            return np.zeros((0,) + out_shape, np.float32)
        return call(tf.constant(images)).numpy()

    return run

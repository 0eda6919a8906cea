"""A tiny SavedModel that honours the detector's serving contract, for tests, load runs and trying
the serving stack without a trained detector.

Contract (design.md, "The SavedModel contract"): ``serving_default`` takes ``images`` tf.string
[None] of encoded JPEG/PNG/GIF/BMP (decoded as the detector decodes them, dnet_tf.inference.decode,
within the default InferenceConfig's request budget, so bad bytes and over-budget requests raise
InvalidArgumentError) and returns, padded to
``max_detections`` K:
  num_detections [B] float32, detection_boxes [B, K, 4] float32 norm_yxyx,
  detection_scores [B, K] float32, detection_classes [B, K] float32 (1-based),
  detection_class_names [B, K] string;
``image_tensor`` takes ``images`` uint8 [None, None, None, 3] and returns the same.

Its "detections", derived from each decoded H x W image so that every value can be worked by hand:
  0: class 1, score = mean pixel value / 255, image_yxyx = [H/4, W/4, 3H/4, 3W/4]
  1: class 2 (or 1 with one class), score = marker / 100, image_yxyx = [0, 0, H/2, W/2]
The rest are zero padding (class 0, name ""). ``marker`` tells versions apart in tests.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from collections.abc import Sequence

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from dnet_tf.config import InferenceConfig
from dnet_tf.inference.budget import (
    RequestBudget,
    check_image_count,
    fit_images,
    uint8_batch_within,
)
from dnet_tf.inference.decode import decode_rgb
from dnet_tf.serving.servable import WARMUP_FILE

DEFAULT_CLASS_NAMES = ("raccoon", "dog")


class ToyDetector(tf.Module):
    """Contract-conforming stand-in for the exported detector (see module docstring)."""

    def __init__(
        self,
        class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
        max_detections: int = 5,
        marker: float = 1.0,
    ):
        super().__init__(name="toy_detector")
        if max_detections < 2:
            raise ValueError(f"max_detections must be >= 2, got {max_detections}")
        self.max_detections = int(max_detections)
        self.num_classes = len(class_names)
        self.marker = float(marker)
        self.budget = RequestBudget.from_config(InferenceConfig())
        # index 0 is the padding entry, so detection_classes index it directly
        self._names = tf.constant([""] + [str(n) for n in class_names])

    def _detect(self, image: tf.Tensor):
        """[H, W, 3] uint8 or float32 0..255 -> (num [], boxes [K, 4], scores [K], classes [K],
        names [K])."""
        shape = tf.shape(image)
        h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
        k = self.max_detections
        box0 = tf.stack([h / 4, w / 4, 3 * h / 4, 3 * w / 4]) / tf.stack([h, w, h, w])
        box1 = tf.constant([0.0, 0.0, 0.5, 0.5])
        boxes = tf.concat([tf.stack([box0, box1]), tf.zeros([k - 2, 4])], axis=0)
        mean = tf.reduce_mean(tf.cast(image, tf.float32)) / 255.0
        scores = tf.concat(
            [tf.stack([mean, tf.constant(self.marker / 100.0)]), tf.zeros([k - 2])], axis=0
        )
        second = 2.0 if self.num_classes >= 2 else 1.0
        classes = tf.concat([tf.constant([1.0, second]), tf.zeros([k - 2])], axis=0)
        names = tf.gather(self._names, tf.cast(classes, tf.int32))
        return tf.constant(2.0), boxes, scores, classes, names

    def _batch(self, fn, elems):
        k = self.max_detections
        num, boxes, scores, classes, names = tf.map_fn(
            fn,
            elems,
            fn_output_signature=(
                tf.TensorSpec([], tf.float32),
                tf.TensorSpec([k, 4], tf.float32),
                tf.TensorSpec([k], tf.float32),
                tf.TensorSpec([k], tf.float32),
                tf.TensorSpec([k], tf.string),
            ),
        )
        return {
            "num_detections": num,
            "detection_boxes": boxes,
            "detection_scores": scores,
            "detection_classes": classes,
            "detection_class_names": names,
        }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")])
    def serve_encoded(self, images):
        # The detector's decoding and request budget (header checks, image count, image side),
        # so that the serving stack meets the same refusals as with a real export.
        with tf.control_dependencies(check_image_count(tf.size(images), self.budget)):
            images = tf.identity(images)

        def one(data):
            image = decode_rgb(data, self.budget.max_image_pixels)
            return self._detect(fit_images(image, self.budget.max_image_side))

        return self._batch(one, images)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    def serve_pixels(self, images):
        fitted, _ = uint8_batch_within(images, self.budget)
        return self._batch(self._detect, fitted)


def write_warmup_file(
    export_dir: str | os.PathLike, images: Sequence[bytes], model_name: str = "dnet"
) -> None:
    """Writes ``assets.extra/tf_serving_warmup_requests``: one serving_default PredictionLog."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = "serving_default"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string))
    entry = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    path = pathlib.Path(export_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(entry.SerializeToString())


def export_toy_model(
    base_path: str | os.PathLike,
    model_name: str = "dnet",
    version: int = 1,
    *,
    class_names: Sequence[str] = DEFAULT_CLASS_NAMES,
    max_detections: int = 5,
    marker: float | None = None,
    warmup_images: Sequence[bytes] = (),
) -> pathlib.Path:
    """Exports a ToyDetector to ``<base_path>/<model_name>/<version>/``, atomically.

    The SavedModel is written to a staging directory beside the target (a non-numeric name, which
    version scanners ignore) and renamed into place, so a polling server never sees half a model.

    Args:
      marker: score of detection 1 is marker / 100; defaults to the version number.
      warmup_images: encoded images for an assets.extra warmup request (none when empty).
    Returns:
      the version directory.
    Raises:
      FileExistsError: when the version directory already exists.
    """
    model_dir = pathlib.Path(base_path) / model_name
    final = model_dir / str(int(version))
    if final.exists():
        raise FileExistsError(f"{final} already exists")
    model_dir.mkdir(parents=True, exist_ok=True)
    module = ToyDetector(class_names, max_detections, float(version if marker is None else marker))
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir))
    try:
        signatures = {
            "serving_default": module.serve_encoded.get_concrete_function(),
            "image_tensor": module.serve_pixels.get_concrete_function(),
        }
        tf.saved_model.save(module, str(staging), signatures=signatures)
        if warmup_images:
            write_warmup_file(staging, warmup_images, model_name)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final

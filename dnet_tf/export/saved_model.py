"""Exports a trained run as one SavedModel that TF Serving runs unchanged.

Layout: ``<base>/<name>/<version>/`` with ``saved_model.pb``, ``variables/``, ``assets/``
(class_names.txt, detector_config.json, dataset_stats.json: the knobs the graph was built with) and
``assets.extra/tf_serving_warmup_requests``. The version is written into a hidden temporary
directory beside it and renamed into place, so a server watching the base path never sees half a
model (TF Serving only loads directories whose names are integers).

Signatures:
  serving_default    images tf.string [None] (JPEG/PNG/GIF/BMP bytes) -> the five contract outputs
  image_tensor       images uint8 [None, None, None, 3] -> the same outputs
  detect_with_masks  images tf.string [None] -> the above, first_stage_*, network_evaluations and
                     merged_masks [B, P, P, 5, C] (for evaluation and pictures)

All three apply the request budget of InferenceConfig (dnet_tf.inference.budget): images brought
to max_image_side before batching, at most max_images_per_request images and max_request_pixels
padded pixels, InvalidArgument past them.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import tempfile
import weakref

import keras
import numpy as np
import tensorflow as tf

from dnet_tf.core import contracts
from dnet_tf.inference.budget import RequestBudget, uint8_batch_within
from dnet_tf.inference.decode import decode_batch
from dnet_tf.inference.loading import module_from_run
from dnet_tf.inference.module import DetectorModule

SERVING_OUTPUTS = contracts.DETECTION_OUTPUTS
INPUT_NAME = contracts.INPUT_IMAGES


_SIGNATURES: weakref.WeakKeyDictionary[DetectorModule, dict] = weakref.WeakKeyDictionary()


def build_signatures(module: DetectorModule) -> dict:
    """The three signature functions of the SavedModel, as tf.functions with input signatures.

    Cached per module: tracing the box search costs seconds, so the export and any in-memory
    comparison with it share the same traced graphs.
    """
    if module in _SIGNATURES:
        return _SIGNATURES[module]
    budget = RequestBudget.from_config(module.config.inference)

    def contract(outputs):
        return {k: outputs[k] for k in SERVING_OUTPUTS}

    # The graph proper, traced once for both serving signatures (and once more with the masks).
    decoded_spec = [
        tf.TensorSpec([None, None, None, 3], tf.float32),
        tf.TensorSpec([None, 2], tf.int32),
    ]
    detect = tf.function(
        lambda images, sizes: module.detect(images, sizes), input_signature=decoded_spec
    )
    detect_masks = tf.function(
        lambda images, sizes: module.detect(images, sizes, with_masks=True),
        input_signature=decoded_spec,
    )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
    def serving_default(images):
        return contract(detect(*decode_batch(images, budget)))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT_NAME)])
    def image_tensor(images):
        return contract(detect(*uint8_batch_within(images, budget)))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
    def detect_with_masks(images):
        return detect_masks(*decode_batch(images, budget))

    _SIGNATURES[module] = {
        contracts.SERVING_DEFAULT: serving_default,
        contracts.IMAGE_TENSOR: image_tensor,
        contracts.DETECT_WITH_MASKS: detect_with_masks,
    }
    return _SIGNATURES[module]


def warmup_image_bytes(size=(240, 320)) -> bytes:
    """A small deterministic JPEG for warm-up requests (a gradient, no data needed)."""
    from PIL import Image

    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (h + w)], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_warmup_requests(path: str | os.PathLike, model_name: str, num_requests: int = 2) -> None:
    """Writes ``tf_serving_warmup_requests``: PredictionLog records TF Serving replays at load."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    image = warmup_image_bytes()
    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(num_requests):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(
                    name=model_name, signature_name=contracts.SERVING_DEFAULT
                )
            )
            request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto([image], dtype=tf.string))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())


def next_version(model_dir: pathlib.Path) -> int:
    """1 + the largest integer version directory under model_dir (1 when there is none)."""
    versions = [contracts.parse_version(p.name) for p in model_dir.glob("*") if p.is_dir()]
    versions = [v for v in versions if v is not None]
    return max(versions, default=0) + 1


def export_module(
    module: DetectorModule,
    base_path: str | os.PathLike,
    name: str = "dnet",
    version: int | None = None,
    dataset_stats: dict | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Writes the module as ``<base_path>/<name>/<version>/`` atomically.

    Args:
      module: the detector to export.
      base_path: the model base path (TF Serving's --model_base_path is <base_path>/<name>).
      name: model name (TF Serving's --model_name).
      version: integer version; default 1 + the newest existing one.
      dataset_stats: written to assets/dataset_stats.json when given.
      overwrite: replace an existing version directory (otherwise it is an error).
    Returns:
      the version directory.
    Raises:
      FileExistsError if the version exists and overwrite is False.
    """
    model_dir = pathlib.Path(base_path) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    if version is None:
        version = next_version(model_dir)
    if int(version) < 0:
        raise ValueError(f"version must be a non-negative integer, got {version}")
    final = model_dir / str(int(version))
    if final.exists() and not overwrite:
        raise FileExistsError(
            f"model version already exists: {final} (pass overwrite=True to replace it)"
        )

    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir))
    try:
        archive = keras.export.ExportArchive()
        # The networks the graph runs (their inference copies, DetectorModule): the localizer,
        # and the separate classifier or the head on the localizer's trunk.
        archive.track(module.served_localizer)
        archive.track(module.class_head if module.shared else module.served_classifier)
        for sig_name, fn in build_signatures(module).items():
            archive.add_endpoint(sig_name, fn)
        archive.write_out(str(tmp / "saved"), verbose=False)
        saved = tmp / "saved"
        assets = saved / contracts.ASSETS
        assets.mkdir(exist_ok=True)
        (assets / contracts.ASSET_CLASS_NAMES).write_text("\n".join(module.class_names) + "\n")
        (assets / contracts.ASSET_DETECTOR_CONFIG).write_text(module.config.to_json())
        stats = dict(dataset_stats or {})
        stats.setdefault("aspect_ratios", module.aspect_ratios)
        stats_text = json.dumps(stats, indent=2, sort_keys=True)
        (assets / contracts.ASSET_DATASET_STATS).write_text(stats_text)
        extra = saved / contracts.ASSETS_EXTRA
        extra.mkdir(exist_ok=True)
        write_warmup_requests(extra / contracts.WARMUP_REQUESTS, name)
        if final.exists():
            # Move the old version aside first so the swap is a rename, then delete it.
            old = pathlib.Path(tempfile.mkdtemp(prefix=f".old-{version}-", dir=model_dir))
            os.replace(final, old / "v")
            os.replace(saved, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(saved, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def export_run(
    run_dir: str | os.PathLike,
    base_path: str | os.PathLike,
    name: str = "dnet",
    version: int | None = None,
    overwrite: bool = False,
    inference_overrides: dict | None = None,
):
    """Exports a training run directory (see dnet_tf.training.run_dir) as a SavedModel version."""
    module, stats = module_from_run(run_dir, inference_overrides)
    return export_module(module, base_path, name, version, dataset_stats=stats, overwrite=overwrite)

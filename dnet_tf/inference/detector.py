"""A local Python API over an exported SavedModel or a training run directory.

    det = load_detector("models/dnet/1")          # or a run directory, or models/dnet (newest)
    results = det.detect([image_uint8, ...])      # list of DetectionResult, one per image
    results[0].detections.boxes_image_yxyx        # Detections: pixel and normalized boxes, ...
    det.detect_files(["a.jpg"], out_dir="out")    # JSON + PNG with boxes drawn

Both backends run the same graph: the SavedModel's ``detect_with_masks`` signature, or the
DetectorModule built from the run directory's networks.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from dnet_tf.core import contracts
from dnet_tf.core.detections import Detections
from dnet_tf.inference.budget import RequestBudget
from dnet_tf.inference.decode import decode_batch
from dnet_tf.inference.loading import is_run_dir, module_from_run, resolve_saved_model_dir


@dataclasses.dataclass(frozen=True)
class DetectionResult:
    """What the detector says about one image.

    Attributes:
      detections: the refined detections (the SavedModel's serving outputs).
      first_stage: the detections before refinement (same boxes ranked by the first-stage
        score), to measure what refinement gains (the paper's Figure 4).
      full_masks: float32 [P, P, 5, C], the finest scale's merged masks over the whole image.
      network_evaluations: network calls made for the image.
    """

    detections: Detections
    first_stage: Detections
    full_masks: np.ndarray
    network_evaluations: int


def _encode_png(image_uint8: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image_uint8, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _image_size(encoded: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(encoded)) as im:
        return im.height, im.width


class Detector:
    """Runs the detector on images in memory or on files; see ``load_detector``."""

    def __init__(self, run_encoded, class_names: Sequence[str], source: str):
        self._run_encoded = run_encoded  # tf.string [B] -> dict of output tensors
        self.class_names = list(class_names)
        self.source = source

    def detect_encoded(
        self, encoded: Sequence[bytes], sources: Sequence[str] | None = None
    ) -> list[DetectionResult]:
        """Detections for encoded images (JPEG/PNG/GIF/BMP bytes), one result per image."""
        results = []
        for i, data in enumerate(encoded):  # one at a time: sizes differ, memory stays flat
            out = {k: v.numpy() for k, v in self._run_encoded(tf.constant([data])).items()}
            h, w = _image_size(data)
            evaluations = int(out[contracts.NETWORK_EVALUATIONS][0])
            source = "" if sources is None else str(sources[i])

            def of(prefix, out=out, h=h, w=w, evaluations=evaluations, source=source):
                return Detections.from_outputs(
                    out,
                    h,
                    w,
                    self.class_names,
                    index=0,
                    prefix=prefix,
                    source=source,
                    model_name=self.source,
                    network_evaluations=evaluations,
                )

            results.append(
                DetectionResult(
                    detections=of("detection_"),
                    first_stage=of(contracts.FIRST_STAGE_PREFIX),
                    full_masks=out[contracts.MERGED_MASKS][0],
                    network_evaluations=evaluations,
                )
            )
        return results

    def detect(self, images_uint8: Sequence[np.ndarray]) -> list[DetectionResult]:
        """Detections for RGB uint8 [H, W, 3] arrays (encoded losslessly as PNG for the graph)."""
        return self.detect_encoded([_encode_png(im) for im in images_uint8])

    def detect_files(
        self,
        paths: Sequence[str | os.PathLike],
        out_dir: str | os.PathLike | None = None,
        draw: bool = True,
    ) -> list[DetectionResult]:
        """Detects on image files; with ``out_dir`` writes <stem>.json and <stem>.png per image."""
        results = []
        for p in paths:
            p = pathlib.Path(p)
            try:
                data = p.read_bytes()
            except OSError as e:
                raise FileNotFoundError(f"cannot read image file {p}: {e}") from e
            try:
                res = self.detect_encoded([data], [str(p)])[0]
            except tf.errors.InvalidArgumentError as e:
                raise ValueError(f"{p}: not a decodable image ({e.message.splitlines()[0]})") from e
            results.append(res)
            if out_dir is not None:
                out = pathlib.Path(out_dir)
                out.mkdir(parents=True, exist_ok=True)
                (out / f"{p.stem}.json").write_text(res.detections.to_json())
                if draw:
                    (out / f"{p.stem}.png").write_bytes(res.detections.draw(data))
        return results


def load_detector(path: str | os.PathLike, inference_overrides: dict | None = None) -> Detector:
    """Loads an exported SavedModel (version dir or model dir: newest version) or a run
    directory."""
    path = pathlib.Path(path)
    saved = resolve_saved_model_dir(path)
    if saved is not None:
        if inference_overrides:
            raise ValueError(
                "inference_overrides apply to run directories; an export fixes its knobs"
            )
        loaded = tf.saved_model.load(str(saved))
        names_file = saved / contracts.ASSETS / contracts.ASSET_CLASS_NAMES
        names = names_file.read_text().split("\n")
        fn = loaded.signatures[contracts.DETECT_WITH_MASKS]
        return Detector(lambda s: fn(images=s), [n for n in names if n], str(saved))
    if is_run_dir(path):
        module, _ = module_from_run(path, inference_overrides)
        budget = RequestBudget.from_config(module.config.inference)
        run = tf.function(
            lambda s: module.detect(*decode_batch(s, budget), with_masks=True),
            input_signature=[tf.TensorSpec([None], tf.string)],
        )
        return Detector(run, module.class_names, str(path))
    raise FileNotFoundError(
        f"{path}: neither a SavedModel (saved_model.pb, or integer version dirs) "
        f"nor a run directory (config.json)"
    )

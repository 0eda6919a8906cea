"""A local Python API over an exported SavedModel or a training run directory.

    det = load_detector("models/dnet/1")          # or a run directory, or models/dnet (newest)
    results = det.detect([image_uint8, ...])      # list of dicts, boxes in image pixels
    det.detect_files(["a.jpg"], out_dir="out")    # JSON + PNG with boxes drawn

Both backends run the same graph: the SavedModel's ``detect_with_masks`` signature, or the
DetectorModule built from the run directory's networks.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from dnet_tf.inference.budget import RequestBudget
from dnet_tf.inference.decode import decode_batch
from dnet_tf.serving.versions import parse_version


def resolve_saved_model_dir(path: str | os.PathLike) -> pathlib.Path | None:
    """A SavedModel directory for ``path``: itself, or its newest integer version subdirectory."""
    path = pathlib.Path(path)
    if (path / "saved_model.pb").exists():
        return path
    versions = sorted(
        (parse_version(p.name), p)
        for p in path.glob("*")
        if parse_version(p.name) is not None and (p / "saved_model.pb").exists()
    )
    return versions[-1][1] if versions else None


def _encode_png(image_uint8: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image_uint8, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class Detector:
    """Runs the detector on images in memory or on files; see ``load_detector``."""

    def __init__(self, run_encoded, class_names: Sequence[str], source: str):
        self._run_encoded = run_encoded  # tf.string [B] -> dict of output tensors
        self.class_names = list(class_names)
        self.source = source

    def detect_encoded(self, encoded: Sequence[bytes]) -> list[dict]:
        """Detections for encoded images (JPEG/PNG/GIF/BMP bytes), one dict per image.

        Each dict holds numpy arrays, boxes in image pixels (continuous yxyx):
          boxes_yxyx [K, 4], scores [K], classes [K] int32 0-based, class_names list[str];
          first_stage_boxes_yxyx, first_stage_scores, first_stage_classes (same layout);
          full_masks float32 [P, P, 5, C] (finest scale, over the whole image);
          network_evaluations int; height, width.
        """
        results = []
        for data in encoded:  # one at a time: images differ in size, and memory stays flat
            out = {k: v.numpy() for k, v in self._run_encoded(tf.constant([data])).items()}
            h, w = _image_size(data)
            scale = np.array([h, w, h, w], np.float32)
            res = {
                "height": h,
                "width": w,
                "network_evaluations": int(out["network_evaluations"][0]),
                "full_masks": out["merged_masks"][0],
            }
            for prefix, key, num in (
                ("", "detection_", "num_detections"),
                ("first_stage_", "first_stage_", "first_stage_num_detections"),
            ):
                n = int(out[num][0])
                res[prefix + "boxes_yxyx"] = out[key + "boxes"][0, :n] * scale
                res[prefix + "scores"] = out[key + "scores"][0, :n]
                res[prefix + "classes"] = out[key + "classes"][0, :n].astype(np.int32) - 1
            res["class_names"] = [self.class_names[c] for c in res["classes"]]
            results.append(res)
        return results

    def detect(self, images_uint8: Sequence[np.ndarray]) -> list[dict]:
        """Detections for RGB uint8 [H, W, 3] arrays (encoded losslessly as PNG for the graph)."""
        return self.detect_encoded([_encode_png(im) for im in images_uint8])

    def detect_files(
        self,
        paths: Sequence[str | os.PathLike],
        out_dir: str | os.PathLike | None = None,
        draw: bool = True,
    ) -> list[dict]:
        """Detects on image files; with ``out_dir`` writes <stem>.json and <stem>.png per image."""
        results = []
        for p in paths:
            p = pathlib.Path(p)
            try:
                data = p.read_bytes()
            except OSError as e:
                raise FileNotFoundError(f"cannot read image file {p}: {e}") from e
            try:
                res = self.detect_encoded([data])[0]
            except tf.errors.InvalidArgumentError as e:
                raise ValueError(f"{p}: not a decodable image ({e.message.splitlines()[0]})") from e
            res["image"] = str(p)
            results.append(res)
            if out_dir is not None:
                out = pathlib.Path(out_dir)
                out.mkdir(parents=True, exist_ok=True)
                (out / f"{p.stem}.json").write_text(json.dumps(to_json(res), indent=2))
                if draw:
                    draw_detections(data, res).save(out / f"{p.stem}.png")
        return results


def to_json(res: dict) -> dict:
    """JSON-ready detections of one image: pixel and normalized boxes, names, 1-based ids, scores."""
    h, w = res["height"], res["width"]
    dets = []
    for box, score, cls, name in zip(
        res["boxes_yxyx"], res["scores"], res["classes"], res["class_names"]
    ):
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        dets.append(
            {
                "class_name": name,
                "class_id": int(cls) + 1,
                "score": round(float(score), 5),
                "box_yxyx_pixels": [round(v, 2) for v in (ymin, xmin, ymax, xmax)],
                "box_yxyx_normalized": [
                    round(v, 5) for v in (ymin / h, xmin / w, ymax / h, xmax / w)
                ],
            }
        )
    return {
        "image": res.get("image"),
        "height": h,
        "width": w,
        "network_evaluations": res["network_evaluations"],
        "detections": dets,
    }


def draw_detections(encoded: bytes, res: dict):
    """A PIL image with each detection's box, class name and score drawn."""
    from PIL import Image, ImageDraw

    image = Image.open(io.BytesIO(encoded)).convert("RGB")
    draw = ImageDraw.Draw(image)
    palette = [
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
    ]
    for box, score, cls, name in zip(
        res["boxes_yxyx"], res["scores"], res["classes"], res["class_names"]
    ):
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        colour = palette[int(cls) % len(palette)]
        draw.rectangle([xmin, ymin, xmax - 1, ymax - 1], outline=colour, width=2)
        draw.text((xmin + 3, ymin + 2), f"{name} {score:.2f}", fill=colour)
    return image


def _image_size(encoded: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(encoded)) as im:
        return im.height, im.width


def load_detector(path: str | os.PathLike, inference_overrides: dict | None = None) -> Detector:
    """Loads an exported SavedModel (version dir or model dir: newest version) or a run directory."""
    path = pathlib.Path(path)
    saved = resolve_saved_model_dir(path)
    if saved is not None:
        if inference_overrides:
            raise ValueError(
                "inference_overrides apply to run directories; an export fixes its knobs"
            )
        loaded = tf.saved_model.load(str(saved))
        names = (saved / "assets" / "class_names.txt").read_text().split("\n")
        fn = loaded.signatures["detect_with_masks"]
        return Detector(lambda s: fn(images=s), [n for n in names if n], str(saved))
    if (path / "config.json").exists():
        from dnet_tf.export.saved_model import module_from_run

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

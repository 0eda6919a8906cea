"""Detections as Python objects: the SavedModel's normalized outputs turned into pixel boxes of
each image, with class names, plus JSON and a PNG with the boxes drawn.

Frames: ``norm_yxyx`` is [ymin, xmin, ymax, xmax] in [0, 1] of the decoded image (what the
SavedModel returns); ``image_yxyx`` is the same box in continuous absolute pixels, i.e.
norm_yxyx * [H, W, H, W] (pixel (r, c) covers [r, r+1) x [c, c+1), as ``dnet_tf.ops.boxes``).
The client learns H and W from the encoded bytes with Pillow, which reads the header only and,
like tf.io.decode_image, ignores EXIF orientation — both see the same stored pixel grid.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

OUTPUT_KEYS = (
    "num_detections",
    "detection_boxes",
    "detection_scores",
    "detection_classes",
    "detection_class_names",
)


@dataclasses.dataclass(frozen=True)
class Detection:
    """One detected object.

    Attributes:
      class_id: 0-based index into the model's class list (exported detection_classes - 1).
      class_name: the class's name.
      score: confidence in [0, 1].
      norm_yxyx: (ymin, xmin, ymax, xmax) normalized to the image.
      image_yxyx: (ymin, xmin, ymax, xmax) in continuous pixels of the image.
    """

    class_id: int
    class_name: str
    score: float
    norm_yxyx: tuple[float, float, float, float]
    image_yxyx: tuple[float, float, float, float]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {
            "norm_yxyx": list(self.norm_yxyx),
            "image_yxyx": list(self.image_yxyx),
        }


@dataclasses.dataclass(frozen=True)
class ImageDetections:
    """The detections of one image and where they came from.

    Attributes:
      source: the image's path or a caller-given name.
      height, width: decoded image size in pixels.
      model_name, model_version: the servable that answered (version None when the transport
        does not say, as REST).
      detections: best first, as the model returned them.
    """

    source: str
    height: int
    width: int
    model_name: str
    model_version: int | None
    detections: tuple[Detection, ...]

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "height": self.height,
            "width": self.width,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "detections": [d.to_dict() for d in self.detections],
        }


def to_json(results: Sequence[ImageDetections], indent: int | None = 2) -> str:
    """JSON text of a list of ImageDetections (a list of their ``to_dict``)."""
    return json.dumps([r.to_dict() for r in results], indent=indent)


def image_size(data: bytes) -> tuple[int, int]:
    """(height, width) of encoded image bytes, read from the header by Pillow.

    Raises:
      ValueError: when Pillow cannot identify the bytes as an image.
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
    except Exception as e:  # noqa: BLE001 - Pillow raises several types for unreadable data
        raise ValueError(f"not a readable image ({len(data)} bytes): {e}") from e
    return int(height), int(width)


def _as_str(v) -> str:
    return v.decode("utf-8", errors="replace") if isinstance(v, (bytes, bytearray)) else str(v)


def detections_from_outputs(
    outputs: Mapping[str, np.ndarray],
    sizes: Sequence[tuple[int, int]],
    sources: Sequence[str],
    model_name: str,
    model_version: int | None,
    min_score: float = 0.0,
) -> list[ImageDetections]:
    """Decodes the contract's output arrays into ImageDetections.

    Args:
      outputs: the signature's outputs (num_detections [B], detection_boxes [B, K, 4] norm_yxyx,
        detection_scores [B, K], detection_classes [B, K] 1-based, detection_class_names [B, K]).
      sizes: (height, width) of each of the B images.
      sources: a name for each image.
      min_score: detections below this score are left out.
    Raises:
      ValueError: when an output is missing or the batch sizes disagree.
    """
    missing = [k for k in OUTPUT_KEYS if k not in outputs]
    if missing:
        raise ValueError(
            f"model outputs lack {missing}; got {sorted(outputs)} (not a detector signature?)"
        )
    num = np.asarray(outputs["num_detections"]).reshape(-1)
    boxes = np.asarray(outputs["detection_boxes"], dtype=np.float64)
    scores = np.asarray(outputs["detection_scores"], dtype=np.float64)
    classes = np.asarray(outputs["detection_classes"])
    names = np.asarray(outputs["detection_class_names"], dtype=object)
    b = len(sizes)
    if not (
        len(num)
        == boxes.shape[0]
        == scores.shape[0]
        == classes.shape[0]
        == names.shape[0]
        == b
        == len(sources)
    ):
        raise ValueError(
            f"batch sizes disagree: {b} images, outputs {[np.shape(outputs[k]) for k in OUTPUT_KEYS]}"
        )
    results = []
    for i, (h, w) in enumerate(sizes):
        scale = np.array([h, w, h, w], dtype=np.float64)
        n = int(min(round(float(num[i])), boxes.shape[1]))
        dets = []
        for j in range(n):
            score = float(scores[i, j])
            if score < min_score:
                continue
            norm = tuple(float(v) for v in boxes[i, j])
            pixels = tuple(float(v) for v in boxes[i, j] * scale)
            dets.append(
                Detection(
                    int(round(float(classes[i, j]))) - 1, _as_str(names[i, j]), score, norm, pixels
                )
            )
        results.append(
            ImageDetections(str(sources[i]), int(h), int(w), model_name, model_version, tuple(dets))
        )
    return results


_PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
)


def draw_detections(image_bytes: bytes, result: ImageDetections, line_width: int = 2) -> bytes:
    """PNG bytes of the image with each detection's box and "name score" label drawn.

    The rectangle's outer edges follow image_yxyx: continuous [x0, x1) maps to Pillow's inclusive
    pixel columns x0 .. x1 - 1.
    """
    with Image.open(io.BytesIO(image_bytes)) as im:
        canvas = im.convert("RGB")
    if canvas.size != (result.width, result.height):
        raise ValueError(
            f"image is {canvas.size[0]}x{canvas.size[1]} but the detections are for "
            f"{result.width}x{result.height}"
        )
    draw = ImageDraw.Draw(canvas)
    for det in result.detections:
        color = _PALETTE[det.class_id % len(_PALETTE)]
        y0, x0, y1, x1 = det.image_yxyx
        box = [round(x0), round(y0), max(round(x1) - 1, round(x0)), max(round(y1) - 1, round(y0))]
        draw.rectangle(box, outline=color, width=line_width)
        label = f"{det.class_name} {det.score:.2f}"
        tx, ty = box[0] + line_width, box[1] + line_width
        left, top, right, bottom = draw.textbbox((tx, ty), label)
        draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=color)
        draw.text((tx, ty), label, fill=(0, 0, 0))
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()

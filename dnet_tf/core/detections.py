"""``Detections``: the one representation of one image's detections, wherever they come from.

The SavedModel (``serving_default``, ``image_tensor``, ``detect_with_masks``), the edge pipeline
and a TF Serving answer all return the contract's padded arrays; ``Detections.from_outputs``
turns one image's slice of them into this type, which the local detector API, the gRPC/REST
client, the evaluation and the TFLite report use alike, with ``to_json`` and ``draw``.

Frames: ``boxes_norm_yxyx`` is [ymin, xmin, ymax, xmax] in [0, 1] of the decoded image (what the
SavedModel returns); ``boxes_image_yxyx`` is the same box in continuous absolute pixels,
norm_yxyx * [H, W, H, W] (pixel (r, c) covers [r, r+1) x [c, c+1)), computed in the dtype of the
normalized boxes. Class ids are 0-based (exported detection_classes - CLASS_ID_OFFSET).
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Mapping, Sequence

import numpy as np

from dnet_tf.constants import CLASS_ID_OFFSET
from dnet_tf.core import contracts


@dataclasses.dataclass(frozen=True)
class Detection:
    """One detected object (a row of ``Detections``; boxes as Python floats, float64 pixels).

    Attributes:
      class_id: 0-based index into the model's class list.
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


def _as_str(v) -> str:
    return v.decode("utf-8", errors="replace") if isinstance(v, (bytes, bytearray)) else str(v)


@dataclasses.dataclass(frozen=True, eq=False)
class Detections:
    """The detections of one image, best first, and where they came from.

    Attributes:
      height, width: decoded image size in pixels.
      boxes_norm_yxyx: float [n, 4] normalized yxyx.
      classes: int64 [n], 0-based class ids.
      class_names: n names.
      scores: float [n], confidence in [0, 1].
      source: the image's path or a caller-given name ("" when unknown).
      model_name, model_version: the servable that answered (None when unknown; REST does not
        say the version).
      network_evaluations: network calls the detector made for the image, when it says.
    """

    height: int
    width: int
    boxes_norm_yxyx: np.ndarray
    classes: np.ndarray
    class_names: tuple[str, ...]
    scores: np.ndarray
    source: str = ""
    model_name: str | None = None
    model_version: int | None = None
    network_evaluations: int | None = None

    def __post_init__(self):
        n = len(self.scores)
        boxes = np.asarray(self.boxes_norm_yxyx).reshape(-1, 4)
        if not len(boxes) == len(self.classes) == len(self.class_names) == n:
            raise ValueError(
                f"Detections: {len(boxes)} boxes, {len(self.classes)} classes, "
                f"{len(self.class_names)} names and {n} scores"
            )
        object.__setattr__(self, "boxes_norm_yxyx", boxes)
        object.__setattr__(self, "classes", np.asarray(self.classes, np.int64).reshape(-1))
        object.__setattr__(self, "scores", np.asarray(self.scores).reshape(-1))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))

    # ------------------------------------------------------------------------------------------

    @classmethod
    def from_outputs(
        cls,
        outputs: Mapping[str, np.ndarray],
        height: int,
        width: int,
        class_names: Sequence[str] | None = None,
        *,
        index: int | None = None,
        prefix: str = "detection_",
        min_score: float = 0.0,
        **provenance,
    ) -> Detections:
        """One image's detections from the contract's output arrays.

        Args:
          outputs: the signature's outputs, batched ([B, K, ...], pick one with ``index``) or
            one image's ([K, ...], ``index`` None): num_detections, detection_boxes (normalized
            yxyx), detection_scores, detection_classes (1-based) and, when ``class_names`` is
            None, detection_class_names.
          height, width: the decoded image's size.
          class_names: the model's class list (names are looked up by class id), or None to
            read detection_class_names.
          prefix: "detection_", or "first_stage_" for the first-stage detections.
          min_score: detections below this score are left out.
          provenance: source, model_name, model_version, network_evaluations.
        Raises:
          ValueError: a missing output, or a class id outside the class list.
        """
        num_key = "num_detections" if prefix == "detection_" else prefix + "num_detections"
        keys = [num_key] + [prefix + k for k in ("boxes", "scores", "classes")]
        if class_names is None:
            keys.append(prefix + "class_names")
        missing = [k for k in keys if k not in outputs]
        if missing:
            raise ValueError(
                f"model outputs lack {missing}; got {sorted(outputs)} (not a detector signature?)"
            )

        def pick(key):
            value = np.asarray(outputs[key], dtype=object if key.endswith("names") else None)
            return value if index is None else value[index]

        boxes = pick(prefix + "boxes").reshape(-1, 4)
        n = int(min(round(float(np.asarray(pick(num_key)).reshape(-1)[0])), len(boxes)))
        scores = pick(prefix + "scores").reshape(-1)[:n]
        classes = np.rint(pick(prefix + "classes").reshape(-1)[:n]).astype(np.int64)
        classes -= CLASS_ID_OFFSET
        if class_names is None:
            names = [_as_str(v) for v in pick(prefix + "class_names").reshape(-1)[:n]]
        else:
            if len(classes) and (classes.min() < 0 or classes.max() >= len(class_names)):
                raise ValueError(
                    f"class ids {sorted(set(classes.tolist()))} outside the "
                    f"{len(class_names)} classes"
                )
            names = [class_names[c] for c in classes]
        keep = np.flatnonzero(scores >= min_score)
        return cls(
            int(height),
            int(width),
            boxes[:n][keep],
            classes[keep],
            tuple(names[i] for i in keep),
            scores[keep],
            **provenance,
        )

    @classmethod
    def batch_from_outputs(
        cls,
        outputs: Mapping[str, np.ndarray],
        sizes: Sequence[tuple[int, int]],
        sources: Sequence[str],
        model_name: str | None = None,
        model_version: int | None = None,
        min_score: float = 0.0,
    ) -> list[Detections]:
        """``from_outputs`` for each of B images (sizes [(h, w)] and sources of length B).

        Raises:
          ValueError: a missing output or batch sizes that disagree.
        """
        missing = [k for k in contracts.DETECTION_OUTPUTS if k not in outputs]
        if missing:
            raise ValueError(
                f"model outputs lack {missing}; got {sorted(outputs)} (not a detector signature?)"
            )
        lengths = [
            len(
                np.asarray(outputs[k]).reshape(-1)
                if k == "num_detections"
                else np.asarray(outputs[k])
            )
            for k in contracts.DETECTION_OUTPUTS
        ]
        if any(n != len(sizes) for n in lengths) or len(sources) != len(sizes):
            raise ValueError(
                f"batch sizes disagree: {len(sizes)} images, outputs "
                f"{[np.shape(outputs[k]) for k in contracts.DETECTION_OUTPUTS]}"
            )
        return [
            cls.from_outputs(
                outputs,
                h,
                w,
                index=i,
                min_score=min_score,
                source=str(sources[i]),
                model_name=model_name,
                model_version=model_version,
            )
            for i, (h, w) in enumerate(sizes)
        ]

    # ------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def boxes_image_yxyx(self) -> np.ndarray:
        """[n, 4] continuous pixels, in the normalized boxes' dtype."""
        norm = self.boxes_norm_yxyx
        dtype = norm.dtype if np.issubdtype(norm.dtype, np.floating) else np.float64
        return norm.astype(dtype) * np.array(
            [self.height, self.width, self.height, self.width], dtype
        )

    @property
    def detections(self) -> tuple[Detection, ...]:
        """The rows as ``Detection`` records (pixel boxes in float64)."""
        scale = np.array([self.height, self.width, self.height, self.width], np.float64)
        return tuple(
            Detection(
                int(c),
                name,
                float(s),
                tuple(float(v) for v in box),
                tuple(float(v) for v in np.asarray(box, np.float64) * scale),
            )
            for box, c, name, s in zip(
                self.boxes_norm_yxyx, self.classes, self.class_names, self.scores
            )
        )

    def __iter__(self):
        return iter(self.detections)

    def select(self, index) -> Detections:
        """The detections at ``index`` (an int array or a boolean mask), same provenance."""
        index = np.arange(len(self))[index]
        return dataclasses.replace(
            self,
            boxes_norm_yxyx=self.boxes_norm_yxyx[index],
            classes=self.classes[index],
            class_names=tuple(self.class_names[i] for i in index),
            scores=self.scores[index],
        )

    def arrays(self) -> dict:
        """The evaluation's detection mapping: boxes_yxyx [n, 4] pixels, scores [n], classes [n]."""
        return {"boxes_yxyx": self.boxes_image_yxyx, "scores": self.scores, "classes": self.classes}

    def to_dict(self) -> dict:
        out = {
            "source": self.source,
            "height": self.height,
            "width": self.width,
            "model_name": self.model_name,
            "model_version": self.model_version,
        }
        if self.network_evaluations is not None:
            out["network_evaluations"] = int(self.network_evaluations)
        out["detections"] = [d.to_dict() for d in self.detections]
        return out

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def draw(self, image, line_width: int = 2) -> bytes:
        """PNG bytes of the image with each detection's box and "name score" label drawn.

        Args:
          image: encoded image bytes, or uint8 [H, W, 3] RGB pixels, of this image's size.
        The rectangle's outer edges follow image_yxyx: continuous [x0, x1) maps to Pillow's
        inclusive pixel columns x0 .. x1 - 1.
        Raises:
          ValueError: the image's size is not the detections'.
        """
        from PIL import Image, ImageDraw

        if isinstance(image, (bytes, bytearray)):
            with Image.open(io.BytesIO(image)) as im:
                canvas = im.convert("RGB")
        else:
            canvas = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
        if canvas.size != (self.width, self.height):
            raise ValueError(
                f"image is {canvas.size[0]}x{canvas.size[1]} but the detections are for "
                f"{self.width}x{self.height}"
            )
        draw = ImageDraw.Draw(canvas)
        for det in self.detections:
            color = PALETTE[det.class_id % len(PALETTE)]
            y0, x0, y1, x1 = det.image_yxyx
            box = [
                round(x0),
                round(y0),
                max(round(x1) - 1, round(x0)),
                max(round(y1) - 1, round(y0)),
            ]
            draw.rectangle(box, outline=color, width=line_width)
            label = f"{det.class_name} {det.score:.2f}"
            tx, ty = box[0] + line_width, box[1] + line_width
            left, top, right, bottom = draw.textbbox((tx, ty), label)
            draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=color)
            draw.text((tx, ty), label, fill=(0, 0, 0))
        out = io.BytesIO()
        canvas.save(out, format="PNG")
        return out.getvalue()


def to_json(results: Sequence[Detections], indent: int | None = 2) -> str:
    """JSON text of a list of Detections (a list of their ``to_dict``)."""
    return json.dumps([r.to_dict() for r in results], indent=indent)


# Box colours by class id (cycled): RGB of a ten-colour palette of distinct hues.
PALETTE = tuple(
    tuple(int(h[i : i + 2], 16) for i in (0, 2, 4))
    for h in "e6194b 3cb44b ffe119 0082c8 f58230 911eb4 46f0f0 f032e6 d2f53c fabed4".split()
)

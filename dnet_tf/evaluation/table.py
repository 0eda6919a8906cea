"""The paper's Table 1 layout: rows = methods, columns = classes (+ mAP), as markdown and JSON.

Besides per-class AP each row carries what the paper argues with in §7: the number of images,
seconds per image and network evaluations per image (the paper: ~120 crops per class for
DetectorNet against ~150,000 boxes per image for sliding windows).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence

import numpy as np

from dnet_tf.constants import VOC_CLASSES
from dnet_tf.evaluation.voc_ap import VocResult

# Column titles the paper uses for the VOC class names that it abbreviates.
PAPER_ABBREVIATIONS = {
    "aeroplane": "aero",
    "diningtable": "table",
    "motorbike": "m-bike",
    "pottedplant": "plant",
    "tvmonitor": "tv",
}

# Table 1 of the paper (VOC2007 test, 11-point AP, trained on VOC2012 trainval), in VOC_CLASSES
# order.
PAPER_TABLE1 = {
    "DetectorNet (paper)": (
        0.292,
        0.352,
        0.194,
        0.167,
        0.037,
        0.532,
        0.502,
        0.272,
        0.102,
        0.348,
        0.302,
        0.282,
        0.466,
        0.417,
        0.262,
        0.103,
        0.328,
        0.268,
        0.398,
        0.470,
    ),
    "Sliding windows (paper)": (
        0.213,
        0.190,
        0.068,
        0.120,
        0.058,
        0.294,
        0.237,
        0.101,
        0.059,
        0.131,
        0.110,
        0.134,
        0.220,
        0.243,
        0.173,
        0.070,
        0.118,
        0.166,
        0.240,
        0.119,
    ),
}


@dataclasses.dataclass
class TableRow:
    """One method's row.

    Attributes:
      method: row title, e.g. "DetectorNet", "DetectorNet (first stage)", "Sliding windows".
      aps: per-class AP in the table's class order; NaN where undefined.
      mean_ap: mean of the defined APs (NaN when none).
      num_images: images evaluated (None for reference rows copied from the paper).
      seconds_per_image: mean wall-clock seconds per image (None when not measured).
      network_evaluations_per_image: mean network evaluations (crops through a network) per image.
    """

    method: str
    aps: Sequence[float]
    mean_ap: float
    num_images: int | None = None
    seconds_per_image: float | None = None
    network_evaluations_per_image: float | None = None

    @classmethod
    def from_result(
        cls,
        method: str,
        result: VocResult,
        seconds_per_image: float | None = None,
        network_evaluations_per_image: float | None = None,
    ) -> TableRow:
        return cls(
            method=method,
            aps=[float(a) for a in result.aps],
            mean_ap=float(result.mean_ap),
            num_images=result.num_images,
            seconds_per_image=seconds_per_image,
            network_evaluations_per_image=network_evaluations_per_image,
        )

    @classmethod
    def from_paper(cls, method: str) -> TableRow:
        """A reference row of the paper's Table 1 (VOC_CLASSES order)."""
        aps = [float(a) for a in PAPER_TABLE1[method]]
        return cls(method=method, aps=aps, mean_ap=float(np.mean(aps)))


def _fmt(x, digits: int = 3, spec: str = "f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}{spec}}"


def _json_num(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclasses.dataclass
class Table:
    """Per-class AP table.

    Attributes:
      class_names: C names, in class-id order.
      rows: TableRow list, each with C APs.
      metric: e.g. "VOC2007 11-point".
      iou_threshold: matching threshold of the evaluation.
      skipped_images: image files of the split left out because they could not be read (listed in
        evaluation.json); None when not known.
    """

    class_names: Sequence[str]
    rows: list
    metric: str = "VOC2007 11-point"
    iou_threshold: float = 0.5
    skipped_images: int | None = None

    def __post_init__(self):
        for row in self.rows:
            if len(row.aps) != len(self.class_names):
                raise ValueError(
                    f"table row '{row.method}' has {len(row.aps)} APs for "
                    f"{len(self.class_names)} classes"
                )

    def to_markdown(self, max_class_columns: int = 10) -> str:
        """Markdown text. More than ``max_class_columns`` classes are split into blocks as in the
        paper (which prints 10 classes per block); mAP and the cost columns end the last block."""
        names = [PAPER_ABBREVIATIONS.get(n, n) for n in self.class_names]
        blocks = [
            list(range(i, min(i + max_class_columns, len(names))))
            for i in range(0, max(len(names), 1), max_class_columns)
        ] or [[]]
        lines = [f"Average precision ({self.metric}, IoU >= {self.iou_threshold:g}).", ""]
        if self.skipped_images:
            lines[-1:] = [f"{self.skipped_images} unreadable image(s) skipped.", ""]
        for b, cols in enumerate(blocks):
            last = b == len(blocks) - 1
            header = ["method"] + [names[c] for c in cols]
            if last:
                header += ["mAP", "images", "s / image", "network evals / image"]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
            for row in self.rows:
                cells = [row.method] + [_fmt(row.aps[c]) for c in cols]
                if last:
                    cells += [
                        _fmt(row.mean_ap),
                        "—" if row.num_images is None else str(row.num_images),
                        _fmt(row.seconds_per_image, 3, "g"),  # 3 significant digits: 1.23, 0.0456
                        _fmt(row.network_evaluations_per_image, 1),
                    ]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "iou_threshold": self.iou_threshold,
            "skipped_images": self.skipped_images,
            "classes": list(self.class_names),
            "rows": [
                {
                    "method": r.method,
                    "ap": {n: _json_num(a) for n, a in zip(self.class_names, r.aps)},
                    "mAP": _json_num(r.mean_ap),
                    "num_images": r.num_images,
                    "seconds_per_image": _json_num(r.seconds_per_image),
                    "network_evaluations_per_image": _json_num(r.network_evaluations_per_image),
                }
                for r in self.rows
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> Table:
        names = list(d["classes"])
        nan = float("nan")
        rows = [
            TableRow(
                method=r["method"],
                aps=[nan if r["ap"][n] is None else r["ap"][n] for n in names],
                mean_ap=nan if r["mAP"] is None else r["mAP"],
                num_images=r["num_images"],
                seconds_per_image=r["seconds_per_image"],
                network_evaluations_per_image=r["network_evaluations_per_image"],
            )
            for r in d["rows"]
        ]
        return cls(
            class_names=names,
            rows=rows,
            metric=d["metric"],
            iou_threshold=d["iou_threshold"],
            skipped_images=d.get("skipped_images"),
        )

    def write(self, out_dir: str, stem: str = "table") -> tuple:
        """Writes ``<out_dir>/<stem>.md`` and ``<out_dir>/<stem>.json``; returns both paths."""
        os.makedirs(out_dir, exist_ok=True)
        md_path = os.path.join(out_dir, f"{stem}.md")
        json_path = os.path.join(out_dir, f"{stem}.json")
        with open(md_path, "w", encoding="utf-8") as f:
            f.write(self.to_markdown())
        with open(json_path, "w", encoding="utf-8") as f:
            f.write(self.to_json() + "\n")
        return md_path, json_path


def is_voc_class_list(class_names: Sequence[str]) -> bool:
    """True when the classes are Pascal VOC's 20, in VOC order (the paper's rows then apply)."""
    return tuple(class_names) == VOC_CLASSES

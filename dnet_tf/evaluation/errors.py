"""Error analysis of a detector on a split: what each false positive is, and what is missed.

In the spirit of the standard detection error analyses (Hoiem, Chodpathumwan and Dai, "Diagnosing
Error in Object Detectors", ECCV 2012): for each class, the detections are taken best first, up
to N = the class's number of (non-difficult) ground-truth objects over the split — the operating
point where a perfect detector has found everything and made no error, and one that does not
depend on how a method scales its confidences. Each of those detections is matched as in VOC
(``voc_ap``: the ground-truth box of its class with the highest IoU; difficult ones are ignored).
A false positive is, in this order of precedence:

  duplicate     IoU >= iou_threshold with a box of its class already taken by a better detection
  part          not a duplicate, and >= part_fraction (0.7) of its area inside a box of its class
                (a head for the whole animal, the interior of an object)
  localization  IoU in [0.1, iou_threshold) with a box of its class (a box that is off)
  other class   IoU >= 0.1 with a box of another class
  background    everything else

and a "missed" object is a non-difficult ground-truth box not taken by any of those detections.
Boxes: continuous image_yxyx pixels (``voc_ap`` frame).

Beside the table, recall at IoU iou_threshold over *all* detections (any score) is split into
objects that touch or overlap another object of their class (boxes one pixel apart count as
touching) and isolated ones: merging neighbours into one box, or losing the weaker of two, shows
as a gap between the two.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence

import numpy as np

from dnet_tf.core import boxes as core_boxes
from dnet_tf.evaluation.voc_ap import iou_matrix

ERROR_TYPES = ("duplicate", "part", "localization", "other_class", "background")
LOCALIZATION_MIN_IOU = 0.1  # below this a box of the right class is too far off to be "near" it
TOUCH_GAP_PX = 1.0  # boxes whose gap is at most this many pixels touch


@dataclasses.dataclass
class ErrorReport:
    """Counts of one method. per_class[c] maps "true_positive", each ERROR_TYPES name, "missed",
    "num_positives", "recall_touching" / "recall_isolated" (None when there are none) and
    "num_touching" / "num_isolated" to numbers; totals the same over all classes."""

    class_names: list
    num_images: int
    per_class: list
    totals: dict

    def to_dict(self) -> dict:
        return {
            "num_images": self.num_images,
            "per_class": {n: c for n, c in zip(self.class_names, self.per_class)},
            "totals": self.totals,
            "part_false_positives_per_image": self.totals["part"] / max(self.num_images, 1),
        }


def containment(a_yxyx: np.ndarray, b_yxyx: np.ndarray) -> np.ndarray:
    """Fraction of each box of a inside each box of b: area(a & b) / area(a), float64 [N, M]
    (0 for an empty a)."""
    a = np.asarray(a_yxyx, np.float64).reshape(-1, 4)
    b = np.asarray(b_yxyx, np.float64).reshape(-1, 4)
    inter = core_boxes.intersection(a, b)  # [N, M]
    area_a = core_boxes.area(a)[:, None]
    return np.where(area_a > 0, inter / np.where(area_a > 0, area_a, 1.0), 0.0)


def touching(boxes_yxyx: np.ndarray, gap_px: float = TOUCH_GAP_PX) -> np.ndarray:
    """bool [N]: box i touches or overlaps another box of the list (gap <= gap_px on both axes)."""
    b = np.asarray(boxes_yxyx, np.float64).reshape(-1, 4)
    gap_y = np.maximum(b[:, None, 0], b[None, :, 0]) - np.minimum(b[:, None, 2], b[None, :, 2])
    gap_x = np.maximum(b[:, None, 1], b[None, :, 1]) - np.minimum(b[:, None, 3], b[None, :, 3])
    near = (gap_y <= gap_px) & (gap_x <= gap_px)
    np.fill_diagonal(near, False)
    return near.any(axis=1)


def _recall(found: np.ndarray, where: np.ndarray):
    n = int(where.sum())
    return (float(found[where].sum()) / n if n else None), n


def analyse_errors(
    ground_truth: Sequence[Mapping],
    detections: Sequence[Mapping],
    class_names: Sequence[str],
    iou_threshold: float = 0.5,
    part_fraction: float = 0.7,
) -> ErrorReport:
    """The error table of one method over a split (module docstring).

    Args:
      ground_truth: per image {"boxes_yxyx" [G, 4], "classes" [G] 0-based, "difficult" [G] bool}
        (``runner.ground_truth_of``).
      detections: per image {"boxes_yxyx" [K, 4], "scores" [K], "classes" [K] 0-based}.
      class_names: C names.
      iou_threshold: matching Jaccard, (0, 1]; part_fraction: (0, 1].
    Returns:
      ErrorReport.
    Raises:
      ValueError: the two lists differ in length, or a threshold is out of range.
    """
    if len(ground_truth) != len(detections):
        raise ValueError(
            f"{len(ground_truth)} ground-truth images but {len(detections)} detection lists"
        )
    if not 0.0 < iou_threshold <= 1.0 or not 0.0 < part_fraction <= 1.0:
        raise ValueError(
            f"iou_threshold and part_fraction must be in (0, 1], got {iou_threshold}, "
            f"{part_fraction}"
        )
    num_classes = len(class_names)
    gts = [
        {
            "boxes": np.asarray(g["boxes_yxyx"], np.float64).reshape(-1, 4),
            "classes": np.asarray(g["classes"], np.int64).reshape(-1),
            "difficult": np.asarray(g.get("difficult", []), bool).reshape(-1),
        }
        for g in ground_truth
    ]
    for g in gts:
        if len(g["difficult"]) != len(g["classes"]):
            g["difficult"] = np.zeros(len(g["classes"]), bool)
    dets = [
        (
            np.asarray(d["boxes_yxyx"], np.float64).reshape(-1, 4),
            np.asarray(d["scores"], np.float64).reshape(-1),
            np.asarray(d["classes"], np.int64).reshape(-1),
        )
        for d in detections
    ]
    per_class = []
    for c in range(num_classes):
        counts = {k: 0 for k in ("true_positive", *ERROR_TYPES)}
        own = [(g["classes"] == c) for g in gts]
        num_pos = int(sum((m & ~g["difficult"]).sum() for m, g in zip(own, gts)))
        # This class's detections over the split, best first (stable: image order on ties).
        ranked = [
            (score, i, j)
            for i, (_, scores, classes) in enumerate(dets)
            for j in np.flatnonzero(classes == c)
            for score in [scores[j]]
        ]
        order = np.argsort([-r[0] for r in ranked], kind="stable")
        taken = [np.zeros(int(m.sum()), bool) for m in own]  # at the top-N operating point
        found_any = [np.zeros(int(m.sum()), bool) for m in own]  # by any detection
        considered = 0
        for rank in order:
            _, i, j = ranked[rank]
            box = dets[i][0][j][None]
            boxes_c = gts[i]["boxes"][own[i]]
            difficult_c = gts[i]["difficult"][own[i]]
            ious = iou_matrix(box, boxes_c)[0] if len(boxes_c) else np.zeros(0)
            best = int(np.argmax(ious)) if len(ious) else -1
            hit = best >= 0 and ious[best] >= iou_threshold
            in_top_n = considered < num_pos
            if hit and not difficult_c[best]:
                found_any[i][best] = True
            if not in_top_n:
                continue
            if hit and difficult_c[best]:
                continue  # ignored, as in VOC: neither right nor wrong
            considered += 1
            if hit and not taken[i][best]:
                taken[i][best] = True
                counts["true_positive"] += 1
            elif hit:
                counts["duplicate"] += 1
            elif len(boxes_c) and containment(box, boxes_c).max() >= part_fraction:
                counts["part"] += 1
            elif len(ious) and ious.max() >= LOCALIZATION_MIN_IOU:
                counts["localization"] += 1
            else:
                others = gts[i]["boxes"][~own[i]]
                near_other = len(others) and iou_matrix(box, others).max() >= LOCALIZATION_MIN_IOU
                counts["other_class" if near_other else "background"] += 1
        counts["missed"] = int(
            sum((~t & ~g["difficult"][m]).sum() for t, m, g in zip(taken, own, gts))
        )
        counts["num_positives"] = num_pos
        near = [touching(g["boxes"][m]) & ~g["difficult"][m] for m, g in zip(own, gts)]
        lone = [~t & ~g["difficult"][m] for t, m, g in zip(near, own, gts)]
        found = np.concatenate(found_any) if found_any else np.zeros(0, bool)
        counts["recall_touching"], counts["num_touching"] = _recall(found, np.concatenate(near))
        counts["recall_isolated"], counts["num_isolated"] = _recall(found, np.concatenate(lone))
        counts["_found_touching"] = int(found[np.concatenate(near)].sum())
        counts["_found_isolated"] = int(found[np.concatenate(lone)].sum())
        per_class.append(counts)

    totals = {
        k: int(sum(c[k] for c in per_class))
        for k in ("true_positive", *ERROR_TYPES, "missed", "num_positives")
    }
    for kind in ("touching", "isolated"):
        n = sum(c[f"num_{kind}"] for c in per_class)
        hits = sum(c.pop(f"_found_{kind}") for c in per_class)
        totals[f"num_{kind}"] = n
        totals[f"recall_{kind}"] = hits / n if n else None
    return ErrorReport(list(class_names), len(gts), per_class, totals)


def _fmt_recall(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def markdown_table(reports: Mapping[str, ErrorReport]) -> str:
    """One markdown table per method: rows = classes and all, columns = counts (module doc)."""
    lines = []
    columns = ("true_positive", *ERROR_TYPES, "missed")
    for name, rep in reports.items():
        lines += [
            f"**{name}** ({rep.num_images} images; the best N detections of each class, N = its "
            f"objects; part false positives per image: "
            f"{rep.totals['part'] / max(rep.num_images, 1):.3f})",
            "",
            "| class | objects | "
            + " | ".join(columns)
            + " | recall touching (n) | recall isolated (n) |",
            "|---" * (len(columns) + 4) + "|",
        ]
        for cname, row in [*zip(rep.class_names, rep.per_class), ("all", rep.totals)]:
            lines.append(
                f"| {cname} | {row['num_positives']} | "
                + " | ".join(str(row[k]) for k in columns)
                + f" | {_fmt_recall(row['recall_touching'])} ({row['num_touching']})"
                + f" | {_fmt_recall(row['recall_isolated'])} ({row['num_isolated']}) |"
            )
        lines.append("")
    return "\n".join(lines)


def plot_errors(reports: Mapping[str, ErrorReport], path: str) -> str:
    """Stacked bars per class and method: true positives, each false-positive type, missed, as
    fractions of the class's objects. Writes a PNG; returns path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    kinds = ("true_positive", *ERROR_TYPES, "missed")
    colours = ("#3a923a", "#e377c2", "#d62728", "#ff7f0e", "#9467bd", "#7f7f7f", "#1f77b4")
    names = list(reports)
    class_names = reports[names[0]].class_names if names else []
    fig = Figure(figsize=(max(6.0, 1.3 * (len(class_names) + 1) * len(names)), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(len(names), 1)
    labels = [*class_names, "all"]
    for m, name in enumerate(names):
        rep = reports[name]
        rows = [*rep.per_class, rep.totals]
        bottom = np.zeros(len(rows))
        for kind, colour in zip(kinds, colours):
            values = np.array([r[kind] / max(r["num_positives"], 1) for r in rows], np.float64)
            x = np.arange(len(rows)) + (m - (len(names) - 1) / 2) * width
            ax.bar(
                x, values, width * 0.95, bottom=bottom, color=colour, label=kind if m == 0 else None
            )
            bottom += values
    ax.set_xticks(np.arange(len(labels)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("per object of the class", fontsize=8)
    ax.set_title(" | ".join(f"bar {i + 1}: {n}" for i, n in enumerate(names)), fontsize=8)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png")
    return path


def write_error_analysis(reports: Mapping[str, ErrorReport], out_dir: str) -> list:
    """errors.md, errors.json and pictures/errors.png in out_dir; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    md = os.path.join(out_dir, "errors.md")
    with open(md, "w", encoding="utf-8") as f:
        f.write(markdown_table(reports))
    js = os.path.join(out_dir, "errors.json")
    with open(js, "w", encoding="utf-8") as f:
        json.dump({n: r.to_dict() for n, r in reports.items()}, f, indent=2)
    return [md, js, plot_errors(reports, os.path.join(out_dir, "pictures", "errors.png"))]

"""An ablation table from several evaluation directories (``dnet_tf.evaluation.cli`` outputs).

    python -m dnet_tf.evaluation.ablation --out ablation "paper Eq. (3)=eval/a" "local max=eval/b"

Each argument is LABEL=DIR, DIR holding the evaluation.json of one variant evaluated on the same
split. Writes ablation.md and ablation.json into --out: per variant the refined and first-stage
mAP (the evaluation's table metric), AP per class (refined), part false positives per image and
recall of touching / isolated objects (``errors``), seconds per image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

REFINED = "DetectorNet"
FIRST_STAGE = "DetectorNet (first stage)"


def _fmt(x, digits=3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def summarize(eval_dir: str) -> dict:
    """The ablation row of one evaluation directory.

    Raises:
      FileNotFoundError / ValueError: no evaluation.json, or one without both DetectorNet rows.
    """
    path = os.path.join(eval_dir, "evaluation.json")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    key = "voc07" if data.get("table_metric", "").startswith("VOC2007") else "voc10"
    methods = data.get("methods", {})
    if REFINED not in methods or FIRST_STAGE not in methods:
        raise ValueError(f"{path}: needs the methods {REFINED!r} and {FIRST_STAGE!r}")
    refined, first = methods[REFINED], methods[FIRST_STAGE]
    row = {
        "num_images": data["num_images"],
        "metric": data.get("table_metric"),
        "mAP": refined[key]["mAP"],
        "first_stage_mAP": first[key]["mAP"],
        "ap": {c: v["ap"] for c, v in refined[key]["per_class"].items()},
        "first_stage_ap": {c: v["ap"] for c, v in first[key]["per_class"].items()},
        "seconds_per_image": refined.get("seconds_per_image"),
        # objects below runner.SMALL_OBJECT_SIDE of the image's side (absent in older files)
        "small_mAP": refined.get("voc07_small", {}).get("mAP"),
        "first_stage_small_mAP": first.get("voc07_small", {}).get("mAP"),
    }
    for prefix, method in (("", refined), ("first_stage_", first)):
        errors = method.get("errors")
        if errors:
            row[prefix + "part_fp_per_image"] = errors["part_false_positives_per_image"]
            row[prefix + "recall_touching"] = errors["totals"]["recall_touching"]
            row[prefix + "recall_isolated"] = errors["totals"]["recall_isolated"]
    return row


def markdown(rows: dict) -> str:
    """The table: one line per variant, in the order given."""
    if not rows:
        return ""
    classes = list(next(iter(rows.values()))["ap"])
    head = ["variant", "mAP", "first stage mAP", *classes] + [
        "small mAP",
        "part FP / image",
        "recall touching",
        "recall isolated",
        "s / image",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for label, r in rows.items():
        cells = [label, _fmt(r["mAP"]), _fmt(r["first_stage_mAP"])]
        cells += [_fmt(r["ap"].get(c)) for c in classes]
        cells += [
            _fmt(r.get("small_mAP")),
            _fmt(r.get("part_fp_per_image"), 2),
            _fmt(r.get("recall_touching")),
            _fmt(r.get("recall_isolated")),
            _fmt(r.get("seconds_per_image"), 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    first = next(iter(rows.values()))
    lines.append("")
    lines.append(
        f"{first['metric']}, {first['num_images']} images; AP per class: refined; small mAP: "
        "objects with a box side below 0.15 of the image's (COCO's rule for a size range)."
    )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dnet-ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("variants", nargs="+", metavar="LABEL=DIR")
    p.add_argument("--out", required=True, help="directory for ablation.md and ablation.json")
    args = p.parse_args(argv)
    rows = {}
    for item in args.variants:
        label, sep, directory = item.rpartition("=")
        if not sep or not label:
            print(f"error: {item!r}: expected LABEL=DIR", file=sys.stderr)
            return 2
        try:
            rows[label] = summarize(directory)
        except (OSError, ValueError, KeyError) as e:
            print(f"error: {directory}: {e}", file=sys.stderr)
            return 2
    os.makedirs(args.out, exist_ok=True)
    text = markdown(rows)
    with open(os.path.join(args.out, "ablation.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(args.out, "ablation.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=2)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

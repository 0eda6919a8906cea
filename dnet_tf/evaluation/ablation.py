"""An ablation table from several evaluation directories (``dnet_tf.evaluation.cli`` outputs).

    python -m dnet_tf.evaluation.ablation --out ablation "paper Eq. (3)=eval/a" "local max=eval/b"

Each argument is LABEL=DIR, DIR holding the evaluation.json of one variant evaluated on the same
split. Writes ablation.md and ablation.json into --out: per variant the refined and first-stage
mAP (the evaluation's table metric), AP per class (refined), part false positives per image and
recall of touching / isolated objects (``errors``), seconds and network evaluations per image,
and, where the directories hold ``detections.json`` of the same images, the paired bootstrap of
each variant's mAP difference to the first variant (``bootstrap``; ``--bootstrap 0`` leaves it
out): whether a difference is larger than the split's noise.

DIR may also be DIR1+DIR2+... : evaluations of disjoint images pooled into one split (the folds
of a cross-validation, ``dnet_tf.data.holdout``), the APs, errors and bootstrap computed on all
their images from their ``detections.json``; seconds and evaluations per image are the
image-weighted means of their ``evaluation.json``. Pooled variants are compared on the same
images in the same order (list the folds alike).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from dnet_tf.evaluation.bootstrap import DEFAULT_INTERVAL, DEFAULT_SAMPLES, paired_bootstrap
from dnet_tf.evaluation.errors import analyse_errors
from dnet_tf.evaluation.runner import FIRST_STAGE, REFINED, read_detections
from dnet_tf.evaluation.voc_ap import evaluate_detections

POOL_SEPARATOR = "+"


def _fmt(x, digits=3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _read_evaluation(eval_dir: str) -> tuple:
    path = os.path.join(eval_dir, "evaluation.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f), path


def pooled_detections(directories: Sequence[str]) -> dict:
    """``read_detections`` of several evaluation directories, their images concatenated.

    Raises:
      ValueError: the class names differ, or an image id appears in two of them (naming both).
    """
    parts = [read_detections(d) for d in directories]
    first = parts[0]
    seen = {}
    for directory, part in zip(directories, parts):
        if part["class_names"] != first["class_names"]:
            raise ValueError(
                f"{directory} and {directories[0]}: different class names, cannot be pooled"
            )
        if set(part["methods"]) != set(first["methods"]):
            raise ValueError(f"{directory} and {directories[0]}: different methods")
        for image_id in part["image_ids"]:
            if image_id in seen:
                raise ValueError(
                    f"image {image_id!r} is in both {seen[image_id]} and {directory}: pooled "
                    "evaluations must hold disjoint images"
                )
            seen[image_id] = directory
    return {
        "image_ids": [i for p in parts for i in p["image_ids"]],
        "class_names": first["class_names"],
        "ground_truth": [g for p in parts for g in p["ground_truth"]],
        "methods": {m: [d for p in parts for d in p["methods"][m]] for m in first["methods"]},
    }


def load_detections(directory: str, cache: dict | None = None) -> dict:
    """``read_detections`` of DIR, or ``pooled_detections`` of DIR1+DIR2+...; kept in ``cache``
    (directory -> data) when given, so the table and the bootstrap read each file once."""
    if cache is not None and directory in cache:
        return cache[directory]
    data = pooled_detections(directory.split(POOL_SEPARATOR))
    if cache is not None:
        cache[directory] = data
    return data


def _pooled_evaluation(directories: Sequence[str], pooled: dict) -> tuple:
    """An evaluation.json-like dict of pooled directories, its table metric recomputed from
    their pooled detections (``pooled_detections``)."""
    evaluations = [_read_evaluation(d)[0] for d in directories]
    names = pooled["class_names"]
    counts = [e["num_images"] for e in evaluations]
    table_metric = evaluations[0].get("table_metric", "")
    use_07 = table_metric.startswith("VOC2007")
    methods = {}
    for name in (REFINED, FIRST_STAGE):
        if name not in pooled["methods"]:
            continue
        dets = pooled["methods"][name]
        entry = {
            "voc07" if use_07 else "voc10": evaluate_detections(
                pooled["ground_truth"], dets, len(names), use_07_metric=use_07
            ).to_dict(names),
            "errors": analyse_errors(pooled["ground_truth"], dets, names).to_dict(),
        }
        for field in ("seconds_per_image", "network_evaluations_per_image"):
            values = [e.get("methods", {}).get(name, {}).get(field) for e in evaluations]
            if all(v is not None for v in values):
                entry[field] = sum(v * n for v, n in zip(values, counts)) / sum(counts)
        methods[name] = entry
    data = {
        "num_images": len(pooled["image_ids"]),
        "table_metric": table_metric,
        "methods": methods,
    }
    return data, POOL_SEPARATOR.join(os.path.join(d, "evaluation.json") for d in directories)


def summarize(eval_dir: str, cache: dict | None = None) -> dict:
    """The ablation row of one evaluation directory, or of DIR1+DIR2+... pooled.

    Raises:
      FileNotFoundError / ValueError: no evaluation.json, or one without both DetectorNet rows;
        pooled directories that are not disjoint or differ in their classes.
    """
    parts = eval_dir.split(POOL_SEPARATOR)
    if len(parts) > 1:
        data, path = _pooled_evaluation(parts, load_detections(eval_dir, cache))
    else:
        data, path = _read_evaluation(eval_dir)
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
        "network_evaluations_per_image": refined.get("network_evaluations_per_image"),
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


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def bootstrap_against_first(
    directories: dict,
    samples: int,
    seed: int = 0,
    interval: float = DEFAULT_INTERVAL,
    cache: dict | None = None,
) -> dict:
    """label -> ``PairedDifference.to_dict()`` of the refined mAP against the first label's,
    or None where a directory has no detections.json.

    Raises:
      ValueError: two directories evaluated different images (naming both), or a bad file.
    """
    loaded = {}
    for label, directory in directories.items():
        try:
            loaded[label] = load_detections(directory, cache)
        except FileNotFoundError:
            loaded[label] = None
    labels = list(directories)
    base = loaded[labels[0]]
    out = {labels[0]: None}
    for label in labels[1:]:
        other = loaded[label]
        if base is None or other is None:
            out[label] = None
            continue
        if other["image_ids"] != base["image_ids"]:
            raise ValueError(
                f"{directories[label]} and {directories[labels[0]]} evaluated different images: "
                "a paired bootstrap needs the same split"
            )
        out[label] = paired_bootstrap(
            base["ground_truth"],
            base["methods"][REFINED],
            other["methods"][REFINED],
            len(base["class_names"]),
            samples=samples,
            interval=interval,
            seed=seed,
        ).to_dict()
    return out


def markdown(rows: dict) -> str:
    """The table: one line per variant, in the order given."""
    if not rows:
        return ""
    classes = list(next(iter(rows.values()))["ap"])
    with_bootstrap = any(r.get("bootstrap") for r in rows.values())
    head = ["variant", "mAP", "first stage mAP", *classes] + [
        "small mAP",
        "part FP / image",
        "recall touching",
        "recall isolated",
        "s / image",
        "network evals / image",
    ]
    if with_bootstrap:
        interval = next(r["bootstrap"] for r in rows.values() if r.get("bootstrap"))["interval"]
        head += [f"mAP vs the first ({interval:.0%} interval)", "P(above the first)"]
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
            _fmt(r.get("network_evaluations_per_image"), 1),
        ]
        if with_bootstrap:
            b = r.get("bootstrap")
            cells += (
                [f"{_signed(b['delta'])} [{_signed(b['low'])}, {_signed(b['high'])}]"]
                + [f"{b['p_better']:.2f}"]
                if b
                else ["—", "—"]
            )
        lines.append("| " + " | ".join(cells) + " |")
    first = next(iter(rows.values()))
    lines.append("")
    lines.append(
        f"{first['metric']}, {first['num_images']} images; AP per class: refined; small mAP: "
        "objects with a box side below 0.15 of the image's (COCO's rule for a size range)."
    )
    if with_bootstrap:
        b = next(r["bootstrap"] for r in rows.values() if r.get("bootstrap"))
        lines[-1] += (
            f" Against the first row: the paired bootstrap over the images ({b['samples']} "
            f"draws, seed {b['seed']}): the difference on the split with its "
            f"{b['interval']:.0%} normal interval (the draws' standard error), and the share "
            "of draws where the variant is above."
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dnet-ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("variants", nargs="+", metavar="LABEL=DIR")
    p.add_argument("--out", required=True, help="directory for ablation.md and ablation.json")
    p.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_SAMPLES,
        help="paired bootstrap draws of each variant's mAP against the first (0: none)",
    )
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    args = p.parse_args(argv)
    if args.bootstrap < 0 or args.seed < 0:
        print("error: --bootstrap and --seed must be >= 0", file=sys.stderr)
        return 2
    rows, directories, cache = {}, {}, {}  # cache: each detections.json read once
    for item in args.variants:
        label, sep, directory = item.rpartition("=")
        if not sep or not label:
            print(f"error: {item!r}: expected LABEL=DIR", file=sys.stderr)
            return 2
        try:
            rows[label] = summarize(directory, cache)
        except (OSError, ValueError, KeyError) as e:
            print(f"error: {directory}: {e}", file=sys.stderr)
            return 2
        directories[label] = directory
    if args.bootstrap and len(rows) > 1:
        try:
            differences = bootstrap_against_first(
                directories, args.bootstrap, args.seed, cache=cache
            )
        except (OSError, ValueError, KeyError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for label, difference in differences.items():
            rows[label]["bootstrap"] = difference
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

"""Data commands (thin over the library functions).

python -m dnet_tf.data.cli make-synthetic --out data/synthetic [--seed 0] [--num-train 600 ...]
python -m dnet_tf.data.cli to-tfrecord --voc DIR --split train --out 'x-*.tfrecord' --shards N
python -m dnet_tf.data.cli stats --source DIR_OR_GLOB --split train [--out stats.json]
python -m dnet_tf.data.cli preview --voc DIR --split train --out docs/images/synthetic_samples.png
python -m dnet_tf.data.cli hold-out --voc DIR --count 32 --out DIR_WITH_VAL [--seed 0]
python -m dnet_tf.data.cli hold-out --voc DIR --folds 5 --fold 0 --out DIR_FOLD0 [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _make_synthetic(args) -> int:
    from dnet_tf.config import from_flags
    from dnet_tf.data.synthetic import SyntheticConfig, write_synthetic_voc

    cfg = from_flags(SyntheticConfig, args)
    t0 = time.perf_counter()
    summary = write_synthetic_voc(args.out, cfg, workers=args.workers, progress=not args.quiet)
    dt = time.perf_counter() - t0
    print(
        f"wrote {sum(summary['images'].values())} images ({summary['images']}), "
        f"{sum(summary['objects'].values())} objects, classes {summary['classes']} to {args.out} "
        f"in {dt:.1f} s"
    )
    return 0


def _to_tfrecord(args) -> int:
    from dnet_tf.constants import VOC_CLASSES
    from dnet_tf.data import tfrecord, voc

    if args.classes in ("auto", "data"):
        in_data = voc.read_class_names(args.voc, args.split)
        # auto: a Pascal VOC dataset keeps VOC's 20 ids even when a split lacks some classes.
        voc_like = args.classes == "auto" and in_data and set(in_data) <= set(VOC_CLASSES)
        class_names = list(VOC_CLASSES) if voc_like else in_data
    elif args.classes == "voc":
        class_names = list(VOC_CLASSES)
    else:
        class_names = [c.strip() for c in args.classes.split(",") if c.strip()]
    records = voc.read_voc_split(args.voc, args.split, class_names, on_error=args.on_error)
    paths = tfrecord.write_tfrecords(
        records, class_names, args.out, args.shards, progress=not args.quiet
    )
    print(
        f"wrote {len(records)} examples of {len(class_names)} classes to {len(paths)} file(s): "
        f"{paths[0]} ..."
    )
    return 0


def _stats(args) -> int:
    from dnet_tf.data.stats import compute_dataset_stats, write_stats

    class_names = [c.strip() for c in args.classes.split(",")] if args.classes else None
    stats = compute_dataset_stats(args.source, args.split, class_names)
    if args.out:
        write_stats(stats, args.out)
    print(json.dumps(stats, indent=2, sort_keys=True))
    return 0


def _preview(args) -> int:
    from dnet_tf.data.synthetic import draw_preview
    from dnet_tf.data.voc import read_split_ids

    ids = read_split_ids(args.voc, args.split)[: args.count]
    draw_preview(args.voc, ids, args.out, columns=args.columns, tile=args.tile)
    print(f"wrote {args.out}")
    return 0


def _hold_out(args) -> int:
    from dnet_tf.data.holdout import hold_out

    m = hold_out(
        args.voc,
        args.out,
        args.count,
        args.seed,
        args.source_split,
        args.name,
        folds=args.folds,
        fold=args.fold,
    )
    which = "" if m["folds"] is None else f", fold {m['fold']} of {m['folds']}"
    print(f"wrote {args.out}: splits {m['images']} (seed {m['seed']}{which}, from {m['source']})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dnet-data", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "make-synthetic", help="write the embedded default dataset as a VOC directory"
    )
    s.add_argument("--out", required=True, help="output directory (VOC layout)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--num-train", type=int, default=600)
    s.add_argument("--num-val", type=int, default=100)
    s.add_argument("--num-test", type=int, default=100)
    s.add_argument("--min-side", type=int, default=200, help="shortest image side, px")
    s.add_argument("--max-side", type=int, default=500, help="longest image side, px")
    s.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes (default: min(2, cpus)); output is the same",
    )
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=_make_synthetic)

    t = sub.add_parser(
        "to-tfrecord", help="convert a VOC split to sharded TFRecords (Object Detection API keys)"
    )
    t.add_argument("--voc", required=True, help="VOC root directory")
    t.add_argument("--split", required=True)
    t.add_argument("--out", required=True, help="output pattern; '*' becomes 00000-of-0000N")
    t.add_argument("--shards", type=int, default=1)
    t.add_argument(
        "--classes",
        default="auto",
        help="'auto' (default: VOC's 20 classes when every name in the split is one of them, else "
        "'data'), 'data' (the sorted names in the split), 'voc' (the 20 VOC classes) or a,b,c",
    )
    t.add_argument(
        "--on-error",
        choices=("fail", "skip"),
        default="fail",
        help="bad annotation or image: stop, or skip the image with a warning",
    )
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(fn=_to_tfrecord)

    st = sub.add_parser(
        "stats", help="dataset statistics (k-means aspect ratios, class counts, box sizes)"
    )
    st.add_argument("--source", required=True, help="VOC root directory or TFRecord glob")
    st.add_argument("--split", default="train")
    st.add_argument("--classes", default=None, help="a,b,c (default: the sorted names in the data)")
    st.add_argument("--out", default=None, help="write the JSON here too")
    st.set_defaults(fn=_stats)

    pv = sub.add_parser("preview", help="draw a grid of images with their boxes (PNG)")
    pv.add_argument("--voc", required=True)
    pv.add_argument("--split", default="train")
    pv.add_argument("--out", required=True)
    pv.add_argument("--count", type=int, default=6)
    pv.add_argument("--columns", type=int, default=3)
    pv.add_argument("--tile", type=int, default=300)
    pv.set_defaults(fn=_preview)

    h = sub.add_parser(
        "hold-out",
        help="a VOC directory with images of the training split held out as a validation split "
        "(symlinks to the source's images and annotations; seeded)",
    )
    h.add_argument("--voc", required=True, help="source VOC root (not modified)")
    h.add_argument("--out", required=True, help="new VOC root; must not exist")
    h.add_argument("--count", type=int, help="images held out (or --folds and --fold)")
    h.add_argument(
        "--folds", type=int, help="cross-validation: cut the seeded permutation into this many"
    )
    h.add_argument("--fold", type=int, help="the fold held out, 0-based (with --folds)")
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--source-split", default="train")
    h.add_argument("--name", default="val", help="the held-out split's name")
    h.set_defaults(fn=_hold_out)
    return p


def run(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run())

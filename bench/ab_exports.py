"""Two exports of the detector against each other: the same outputs? how much faster?

    python -m bench.ab_exports models/dnet/1 /tmp/candidate/1
    python -m bench.ab_exports A B --compare 40 --timed 10 --passes 7

Both SavedModels are loaded in one process. Their ``serving_default`` outputs are compared on
the first --compare test JPEGs of the embedded dataset (the largest absolute difference of every
output, and on how many images the boxes differ by more than 1e-3 of the image), then both are
timed on the first --timed JPEGs, taking turns image by image, the order of the pair swapped
every pass, so that load and cache effects fall on both alike. Reported: each export's median,
and the ratio B / A of the medians (the figure to quote: absolute times on a shared 2-core
machine move by 15% from one run to the next, the ratio of a run does not). Writes
bench/results/ab_exports.json.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import format_table, write_json  # noqa: E402


def test_jpegs(data: pathlib.Path, count: int) -> list[bytes]:
    ids = (data / "ImageSets" / "Main" / "test.txt").read_text().split()[:count]
    return [(data / "JPEGImages" / f"{i}.jpg").read_bytes() for i in ids]


def compare(fa, fb, jpegs, tf) -> dict:
    """Largest |A - B| per output over the images, and the images whose boxes differ."""
    largest, boxes_differ = {}, 0
    for jpeg in jpegs:
        oa, ob = fa(images=tf.constant([jpeg])), fb(images=tf.constant([jpeg]))
        for key in oa:
            a, b = oa[key].numpy(), ob[key].numpy()
            if a.dtype.kind in "fiu":
                d = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0))
            else:
                d = float(np.any(a != b))
            largest[key] = max(largest.get(key, 0.0), d)
        boxes_differ += any(
            not np.allclose(oa[k].numpy(), ob[k].numpy(), atol=1e-3) for k in oa if "boxes" in k
        )
    return {"largest_abs_difference": largest, "images_whose_boxes_differ": boxes_differ}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("a", help="SavedModel directory of export A (the reference)")
    p.add_argument("b", help="SavedModel directory of export B")
    p.add_argument("--data", default=str(REPO / "data" / "synthetic"))
    p.add_argument("--compare", type=int, default=40, help="test images whose outputs are compared")
    p.add_argument("--timed", type=int, default=10, help="test images timed")
    p.add_argument("--passes", type=int, default=7)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # noqa: PLC0415

    jpegs = test_jpegs(pathlib.Path(args.data), max(args.compare, args.timed))
    if not jpegs:
        raise SystemExit(f"no test images under {args.data}")
    fa = tf.saved_model.load(args.a).signatures["serving_default"]
    fb = tf.saved_model.load(args.b).signatures["serving_default"]
    outputs = compare(fa, fb, jpegs[: args.compare], tf)
    times = {"A": [], "B": []}
    for k in range(args.passes):
        for jpeg in jpegs[: args.timed]:
            x = tf.constant([jpeg])
            for name, fn in (("A", fa), ("B", fb)) if k % 2 == 0 else (("B", fb), ("A", fa)):
                t0 = time.perf_counter()
                fn(images=x)
                times[name].append(time.perf_counter() - t0)
    p50 = {name: statistics.median(t) for name, t in times.items()}
    ratio = p50["B"] / p50["A"]
    print(
        f"outputs on {len(jpegs[: args.compare])} test images: boxes differ on "
        f"{outputs['images_whose_boxes_differ']}; largest |A - B| per output:"
    )
    for key, d in sorted(outputs["largest_abs_difference"].items()):
        print(f"  {key}: {d:.3g}")
    print(
        format_table(
            ["export", "path", "p50 ms"],
            [["A", args.a, f"{p50['A'] * 1e3:.1f}"], ["B", args.b, f"{p50['B'] * 1e3:.1f}"]],
        )
    )
    print(f"B / A = x{ratio:.3f} ({args.timed} images x {args.passes} passes, taking turns)")
    path = write_json(
        "ab_exports",
        {
            "a": args.a,
            "b": args.b,
            "outputs": outputs,
            "p50_s": p50,
            "b_over_a": ratio,
            "times_s": times,
        },
    )
    print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

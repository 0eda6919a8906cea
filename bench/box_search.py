"""Cost of the exhaustive Eq. (3) box search (paper §5.2) for one image.

    python -m bench.box_search                      # C = 1, 5, 20; random and sparse masks
    python -m bench.box_search --classes 20 --repeats 20 --profile

The setting is the paper's for a 500 x 375 image: canvases of 5 px cells (100 x 75 cells) at each
of the 3 scales, 90 shapes (mean side 0.1 ... 0.9 of the image's, 10 aspect ratios from 0.5 to 2),
stride one cell (5 px), ring margin 0.2, coverage threshold 0.5, the best 100 boxes per class.

Masks:
  random  uniform in [0, 1]: every class has candidates almost everywhere (coverage ~ 0.5), the
          worst case and what an untrained network produces.
  sparse  two objects of two classes planted per scale (Eq. (1) masks) on a low noise floor
          (<= 0.3): what a trained network looks like; classes whose mask never exceeds the
          threshold are skipped by the search.
Modes:
  per-scale  one search_boxes call per scale canvas [H, W, 5, C] (3 calls per image).
  batched    one call on the 3 canvases stacked [3, H, W, 5, C] (the scales fold into the class
             axis: one pass over the shapes instead of three).

Reported per image: median wall and CPU time (CPU of all threads: on a shared machine the wall
time includes waiting for a core), and boxes scored per second (positions x classes x scales /
wall). Also timed, for the per-image budget: the crops of the 35 windows, their masks pasted onto
the 3 canvases, and the per-scale NMS. Writes bench/results/box_search.json. With --profile, the
time per TensorFlow op type of one configuration, to show where it goes.
"""

from __future__ import annotations

import argparse
import collections
import glob
import math
import sys
import tempfile

import numpy as np

from bench.common import format_table, machine, time_call, write_json

IMAGE_HW = (375, 500)
CELL_PX = 5.0
SCALES = 3
FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
RATIOS = tuple(float(a) for a in np.geomspace(0.5, 2.0, 10))
RING_MARGIN = 0.2
THRESHOLD = 0.5
MAX_CANDIDATES = 100


def canvas_hw():
    return int(round(IMAGE_HW[0] / CELL_PX)), int(round(IMAGE_HW[1] / CELL_PX))


def positions_per_scale(shapes_hw: np.ndarray, h: int, w: int) -> int:
    """Boxes the search scores per class on one canvas (shapes rounded and clipped as it does)."""
    total = 0
    for sh, sw in shapes_hw:
        bh = min(max(math.floor(sh + 0.5), 1), h)
        bw = min(max(math.floor(sw + 0.5), 1), w)
        total += (h - bh + 1) * (w - bw + 1)
    return total


def make_masks(kind: str, classes: int, rng: np.random.Generator) -> np.ndarray:
    """[3, H, W, 5, C] float32 canvases of one image."""
    h, w = canvas_hw()
    if kind == "random":
        return rng.uniform(0, 1, size=(SCALES, h, w, 5, classes)).astype(np.float32)
    masks = rng.uniform(0, 0.3, size=(SCALES, h, w, 5, classes)).astype(np.float32)
    for s in range(SCALES):
        for c in rng.choice(classes, size=min(2, classes), replace=False):
            y0, x0 = rng.uniform(0, h * 0.5), rng.uniform(0, w * 0.5)
            box = (y0, x0, y0 + rng.uniform(10, h * 0.5), x0 + rng.uniform(10, w * 0.5))
            masks[s, ..., c] = np.maximum(masks[s, ..., c], _eq1(h, w, box))
    return masks


def _eq1(h, w, box):
    y0, x0, y1, x1 = box
    ym, xm = (y0 + y1) / 2, (x0 + x1) / 2

    def cover(b):
        oy = np.clip(
            np.minimum(np.arange(1, h + 1), b[2]) - np.maximum(np.arange(h), b[0]), 0, None
        )
        ox = np.clip(
            np.minimum(np.arange(1, w + 1), b[3]) - np.maximum(np.arange(w), b[1]), 0, None
        )
        return np.outer(oy, ox)

    parts = [
        (y0, x0, y1, x1),
        (y0, x0, ym, x1),
        (ym, x0, y1, x1),
        (y0, x0, y1, xm),
        (y0, xm, y1, x1),
    ]
    return np.stack([cover(p) for p in parts], axis=-1)


def build_search(mode: str, classes: int):
    import tensorflow as tf  # noqa: PLC0415

    from dnet_tf.ops import box_search  # noqa: PLC0415

    h, w = canvas_hw()
    shapes = box_search.box_shapes((h + w) / 2.0, FRACTIONS, RATIOS)

    def search(canvas):
        return box_search.search_boxes(canvas, shapes, 1.0, RING_MARGIN, THRESHOLD, MAX_CANDIDATES)

    if mode == "batched":
        fn = tf.function(
            search, input_signature=[tf.TensorSpec([SCALES, None, None, 5, classes], tf.float32)]
        )
        return lambda masks: fn(masks)
    fn = tf.function(search, input_signature=[tf.TensorSpec([None, None, 5, classes], tf.float32)])
    return lambda masks: [fn(masks[s]) for s in range(SCALES)]


def other_ops(classes: int, repeats: int) -> list:
    """The rest of the non-network first stage for one image: window crops, paste-back, NMS.

    Returns rows (name, timing dict).
    """
    import tensorflow as tf  # noqa: PLC0415

    from dnet_tf.config import InferenceConfig  # noqa: PLC0415
    from dnet_tf.ops import crops, nms, windows  # noqa: PLC0415

    rng = np.random.default_rng(1)
    h, w = canvas_hw()
    d, size = 24, 225
    image = tf.constant(rng.uniform(0, 255, size=(1, *IMAGE_HW, 3)).astype(np.float32))
    boxes_image, _ = windows.scale_windows(float(IMAGE_HW[0]), float(IMAGE_HW[1]), SCALES, 0.2)
    n = int(boxes_image.shape[0])
    crop = tf.function(lambda img, b: crops.crop_and_resize(img, b, tf.zeros([n], tf.int32), size))
    masks = tf.constant(rng.uniform(0, 1, size=(n, d, d, 5 * classes)).astype(np.float32))
    cells = boxes_image * tf.constant([h / IMAGE_HW[0], w / IMAGE_HW[1]] * 2, tf.float32)
    per_scale = InferenceConfig().windows_per_scale

    @tf.function
    def paste(m, c):
        out, start = [], 0
        for count in per_scale:
            out.append(crops.paste_max(m[start : start + count], c[start : start + count], h, w))
            start += count
        return out

    cand = tf.constant(
        rng.uniform(0, 60, size=(SCALES * classes, MAX_CANDIDATES, 2)).astype(np.float32)
    )
    cand_boxes = tf.concat([cand, cand + 15.0], axis=-1)
    cand_scores = tf.constant(
        rng.uniform(-5, 5, size=(SCALES * classes, MAX_CANDIDATES)).astype(np.float32)
    )
    suppress = tf.function(lambda b, sc: nms.non_max_suppression(b, sc, 5, 0.5))
    return [
        (
            f"crop_and_resize: {n} windows to {size}x{size}",
            time_call(lambda: crop(image, boxes_image), repeats),
        ),
        (
            f"paste_max: {n} windows of {d}x{d}x{5 * classes} onto {SCALES} canvases",
            time_call(lambda: paste(masks, cells), repeats),
        ),
        (
            f"non_max_suppression: top 5 of {MAX_CANDIDATES}, {SCALES} scales x {classes} classes",
            time_call(lambda: suppress(cand_boxes, cand_scores), repeats),
        ),
    ]


def profile_ops(call, repeats: int = 3) -> list:
    """[(op type, ms per call)] from a TensorFlow profiler trace, largest first."""
    import tensorflow as tf  # noqa: PLC0415
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: PLC0415

    call()
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(repeats):
            call()
        tf.profiler.experimental.stop()
        files = glob.glob(f"{logdir}/plugins/profile/*/*.xplane.pb")
        space = xplane_pb2.XSpace()
        with open(files[0], "rb") as f:
            space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "?")
                op = name.split(":")[-1] if ":" in name else name
                if op in ("Process", "ParallelFor", "ExecutorDoneCallback"):
                    continue
                totals[op] += event.duration_ps / 1e9 / repeats
    return totals.most_common()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--classes", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument(
        "--masks", nargs="+", default=["random", "sparse"], choices=["random", "sparse"]
    )
    parser.add_argument(
        "--modes", nargs="+", default=["per-scale", "batched"], choices=["per-scale", "batched"]
    )
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--profile", action="store_true", help="op-type breakdown of the largest configuration"
    )
    parser.add_argument("--out", default=None, help="results directory (default bench/results)")
    args = parser.parse_args(argv)

    import tensorflow as tf  # noqa: PLC0415

    from dnet_tf.ops import box_search  # noqa: PLC0415

    h, w = canvas_hw()
    shapes = box_search.box_shapes((h + w) / 2.0, FRACTIONS, RATIOS).numpy()
    per_scale = positions_per_scale(shapes, h, w)
    rng = np.random.default_rng(0)
    rows, results = [], []
    for mode in args.modes:
        for classes in args.classes:
            call = build_search(mode, classes)
            for kind in args.masks:
                masks = tf.constant(make_masks(kind, classes, rng))
                timing = time_call(lambda call=call, masks=masks: call(masks), args.repeats)
                scored = per_scale * classes * SCALES
                result = {
                    "mode": mode,
                    "classes": classes,
                    "masks": kind,
                    **timing,
                    "boxes_scored": scored,
                    "boxes_per_s": scored / timing["wall_median_s"],
                }
                results.append(result)
                rows.append(
                    [
                        mode,
                        classes,
                        kind,
                        1e3 * timing["wall_median_s"],
                        1e3 * timing["wall_min_s"],
                        1e3 * timing["cpu_median_s"],
                        1e3 * timing["wall_median_s"] / classes,
                        f"{result['boxes_per_s'] / 1e6:.1f}M",
                    ]
                )
                print(
                    format_table(
                        ["mode", "C", "masks", "ms/img", "min", "cpu ms", "ms/class", "boxes/s"],
                        rows[-1:],
                    ).splitlines()[-1],
                    file=sys.stderr,
                    flush=True,
                )  # progress
    others = []
    for classes in args.classes:
        for name, timing in other_ops(classes, args.repeats):
            others.append({"op": name, "classes": classes, **timing})
    profile = None
    if args.profile:
        classes = max(args.classes)
        call = build_search(args.modes[0], classes)
        masks = tf.constant(make_masks(args.masks[0], classes, rng))
        profile = {
            "mode": args.modes[0],
            "classes": classes,
            "masks": args.masks[0],
            "ms_per_image_by_op": [
                (op, round(ms, 3)) for op, ms in profile_ops(lambda: call(masks))
            ],
        }

    payload = {
        "setting": {
            "image_hw": IMAGE_HW,
            "cell_px": CELL_PX,
            "canvas_hw": canvas_hw(),
            "scales": SCALES,
            "shapes": len(shapes),
            "fractions": FRACTIONS,
            "aspect_ratios": RATIOS,
            "stride_cells": 1,
            "ring_margin": RING_MARGIN,
            "coverage_threshold": THRESHOLD,
            "max_candidates": MAX_CANDIDATES,
            "positions_per_scale_per_class": per_scale,
        },
        "results": results,
        "other_ops": others,
        "profile": profile,
    }
    path = write_json("box_search", payload, args.out)
    print()
    print(
        f"box search, {IMAGE_HW[1]}x{IMAGE_HW[0]} image, {SCALES} scales of {w}x{h} cells, "
        f"{len(shapes)} shapes, {per_scale} positions per scale and class; "
        f"machine: {machine()['cpus']} CPUs, "
        f"load {payload_load(payload)}"
    )
    print(
        format_table(["mode", "C", "masks", "ms/img", "min", "cpu ms", "ms/class", "boxes/s"], rows)
    )
    print("\nthe other non-network ops of the first stage, per image:")
    print(
        format_table(
            ["op", "C", "ms", "cpu ms"],
            [
                [o["op"], o["classes"], 1e3 * o["wall_median_s"], 1e3 * o["cpu_median_s"]]
                for o in others
            ],
        )
    )
    if profile:
        print(
            f"\nwhere the time goes ({profile['mode']}, C={profile['classes']}, "
            f"{profile['masks']} masks), ms per image by op type:"
        )
        print(format_table(["op", "ms"], profile["ms_per_image_by_op"][:15]))
    print(f"\nwrote {path}")
    return 0


def payload_load(payload) -> str:
    load = machine()["load_average"]
    return "n/a" if load is None else ", ".join(f"{v:.2f}" for v in load)


if __name__ == "__main__":
    sys.exit(main())

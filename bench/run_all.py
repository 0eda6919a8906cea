"""Runs every benchmark and gathers their tables into BENCHMARKS.md (and their JSON in
bench/results/).

    python -m bench.run_all            # about 20 minutes on an idle 2-core CPU
    python -m bench.run_all --quick    # fewer repeats, shorter load runs
    python -m bench.run_all --only bench.peers   # rerun one; its section is replaced in place

Each benchmark is its own script (``python -m bench.<name> --help``); this only runs them with the
settings below, one after another (never in parallel: they would measure each other), and copies
what each printed under a heading, with the machine and the time it ran. The numbers are medians
on whatever machine runs this; BENCHMARKS.md says which. Measurements that need a setup of their
own (a GPU, the `beam` extra, other TensorFlow releases) are kept in bench/own_setup.md, which is
appended as it is (OWN_SETUP).
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import machine  # noqa: E402

OWN_SETUP = REPO / "bench" / "own_setup.md"
OWN_SETUP_TITLE = "Measurements with their own setup"  # its "# " title, one level down

# (module, title, what it answers, arguments, quick arguments)
BENCHMARKS = (
    (
        "bench.inference_latency",
        "Inference latency and throughput per backbone",
        "SavedModel p50/p95 on one 500x375 JPEG with a 20-class detector, network vs the rest, "
        "network evaluations per image (the paper: ~120 per class, i.e. ~2,400 for 20 classes), "
        "images/s at batch sizes 1/4/16. Random weights give masks near 0.5 everywhere, so every "
        "(scale, class) canvas is searched: the worst case of the box search (a trained detector "
        "skips "
        'the canvases no mask reaches). "rest" = everything but the two networks.',
        [],
        ["--repeats", "5", "--batch_sizes", "1,4"],
    ),
    (
        "bench.peers",
        "Against peers: KerasHub RetinaNet, and the trained export",
        "Bytes in, detections out, batch 1, on the same JPEGs in the same process, the models "
        "taking turns image by image: the main job's export (trained, default configuration), "
        "the main job's run exported with the compact configuration's knobs "
        "(paper_stride10_bfloat16_candidates25: the first stage every 10 px, bfloat16 trunks, the "
        "best 25 boxes per canvas to the candidate NMS), "
        "the default configuration with random weights (20 classes), and KerasHub RetinaNet at "
        "two sizes (random initialisation, decoding + resize + network + box decoding + NMS in "
        "one tf.function; the `bench` extra). Ratios against RetinaNet-ResNet18 @384 of the same "
        "run; network evaluations per image from the detect_with_masks signature.",
        [],
        ["--images", "3", "--repeats", "2"],
    ),
    (
        "bench.profile_graph",
        "Where one image's time goes",
        "A TF profiler trace of serving_default on one test image (the main job's export when it "
        "exists): op time summed per op type and per stage.",
        [],
        ["--runs", "2"],
    ),
    (
        "bench.inference_sweep",
        "Inference knobs of the trained run (validation split)",
        "mAP, time and network evaluations per image when inference-time knobs of the main job's "
        "run change (no retraining), on the validation split: the measurement behind the named "
        "inference settings in dnet_tf.config.",
        [
            "--settings",
            "default;candidate NMS off;candidate NMS 0.3;2 scales;window overlap 0;"
            "stride 10 px;refine canvas 32, refine stride 2",
        ],
        ["--max_images", "10", "--settings", "default;2 scales"],
    ),
    (
        "bench.detector_vs_baseline",
        "DetectorNet against the sliding-window baseline",
        "Both through the same evaluation on the first 5 test images of the main job's run "
        "(runs/default): mAP, seconds and network evaluations per image, counted; the baseline's "
        "count "
        "at the paper's 5 px stride and the paper's ~120 evaluations per class for comparison.",
        [],
        ["--images", "2"],
    ),
    (
        "bench.box_search",
        "Box search throughput",
        "The exhaustive Eq. (3) search alone: 3 scales of 100x75 cells, 90 shapes, 1/5/20 classes.",
        [],
        ["--repeats", "3", "--classes", "1", "20"],
    ),
    (
        "bench.data_pipeline",
        "Training-sample pipeline",
        "Samples/s produced by the §6 tf.data pipeline (it must out-run the training step).",
        [],
        ["--batches", "8"],
    ),
    (
        "bench.train_throughput",
        "Training throughput",
        "Samples/s of the compiled train step per backbone and head.",
        [],
        ["--steps", "3"],
    ),
    (
        "bench.tflite_latency",
        "TFLite per-window latency",
        "Per-window latency of each TFLite variant with the LiteRT interpreter.",
        [],
        ["--repeats", "5"],
    ),
    (
        "bench.request_budget",
        "Request budget: hostile requests and memory",
        "Peak resident memory, status and time of the local server for small requests that ask "
        "for large allocations (a 3000x3000 JPEG with 1x1 PNGs, declared-huge tensors, a GIF "
        "frame bomb), the main job's run exported without and with the request budget; and the "
        "mAP of both on synthetic images of 1,400-2,000 px.",
        [],
        ["--accuracy_images", "2"],
    ),
    (
        "bench.serving_load",
        "Serving load",
        "Requests/s, p50/p99 latency and errors of the local server, 8 concurrent gRPC clients, "
        "with and without server-side batching, beside the same SavedModel called directly from "
        "8 threads in the same rounds (models/dnet when exported, else a stand-in model).",
        [],
        ["--rounds", "2", "--duration", "5"],
    ),
)


def demoted_headings(markdown: str) -> list[str]:
    """The lines of ``markdown`` with every heading one level down (``#`` -> ``##``), lines in
    fenced code blocks left alone: a file's title becomes a section of the report."""
    out, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        out.append("#" + line if line.startswith("#") and not fenced else line)
    return out


def replace_sections(report: str, sections: dict) -> str:
    """``report`` (a BENCHMARKS.md) with each "## <title>" section in ``sections`` (title ->
    its lines, heading included) put in place of the section of that title (up to the next
    "## " heading outside a code block); titles the report lacks go before the hand-kept
    measurements at its end, or last."""
    blocks, fenced = [[]], False
    for line in report.rstrip("\n").split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        if line.startswith("## ") and not fenced:
            blocks.append([])
        blocks[-1].append(line)
    titles = [block[0][3:] if block and block[0].startswith("## ") else None for block in blocks]
    missing = [title for title in sections if title not in titles]
    own = titles.index(OWN_SETUP_TITLE) if OWN_SETUP_TITLE in titles else len(blocks)
    out = []
    for i, (title, block) in enumerate(zip(titles, blocks)):
        if i == own:
            for new in missing:
                out += sections[new]
        out += sections.get(title, block)
    if own == len(blocks):
        for new in missing:
            out += sections[new]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--only", default=None, help="comma-separated module names, e.g. bench.box_search"
    )
    p.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    args = p.parse_args(argv)
    info = machine()
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `python -m bench.run_all{' --quick' if args.quick else ''}` on "
        f"{datetime.date.today().isoformat()}; JSON in `bench/results/`.",
        "",
        f"Machine: {info.get('cpu_model')}, {info['cpus']} CPUs, {info['platform']}, "
        f"TensorFlow {info.get('tensorflow')}; load average (1, 5, 15 min) at start "
        f"{', '.join(f'{x:.2f}' for x in info.get('load_average') or [])}.",
        "Timings are medians; no GPU.",
        "",
    ]
    only = set(args.only.split(",")) if args.only else None
    sections = {}
    for module, title, what, full_args, quick_args in BENCHMARKS:
        if only and module not in only:
            continue
        cmd = [sys.executable, "-m", module] + (quick_args if args.quick else full_args)
        print("running:", " ".join(cmd[1:]), flush=True)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        took = time.perf_counter() - start
        # Paths relative to the repository: the report is read on other machines.
        out = "\n".join(
            line for line in proc.stdout.replace(f"{REPO}/", "").splitlines() if line.strip()
        )
        section = [
            f"## {title}",
            "",
            what,
            "",
            f"`python -m {' '.join(cmd[2:])}` (took {took:.0f} s; "
            f"1-minute load average {load:.1f} when it started, {datetime.date.today()})",
            "",
            "```",
            out.strip(),
            "```",
            "",
        ]
        if proc.returncode != 0:
            section += [
                f"(exit code {proc.returncode}; last error lines:)",
                "```",
                "\n".join(proc.stderr.strip().splitlines()[-5:]),
                "```",
                "",
            ]
        sections[title] = section
        print(out)
    target = pathlib.Path(args.out)
    if only and target.exists() and target.read_text().startswith("# Benchmarks"):
        # Rerun benchmarks replace their own sections; the rest of the report stays.
        text = replace_sections(target.read_text(), sections)
    else:
        lines = lines + [line for section in sections.values() for line in section]
        if OWN_SETUP.exists():
            lines += demoted_headings(OWN_SETUP.read_text())
        text = "\n".join(lines) + "\n"
    target.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

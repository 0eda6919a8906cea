"""The main job on the embedded default dataset, end to end:

  1. generate the synthetic VOC dataset      -> data/synthetic/
  2. train (classifier, then localizer)       -> runs/default/
  3. evaluate: Table 1 and Figures 3-4        -> runs/default/eval/
  4. export a versioned SavedModel            -> models/dnet/<version>/
  5. start the local TF Serving-API server on it
  6. query it over gRPC with test images      -> runs/default/queries/
  7. stop the server

Each stage reuses what a previous run left (a complete dataset, a complete training run, an
evaluation of the same model, an export newer than the run), so a second run is quick.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import subprocess
import sys
import time

from dnet_tf.core import contracts


def stage(n: int, total: int, text: str) -> None:
    print(f"\n[{n}/{total}] {text}", flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dnet-main", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data", default="data/synthetic", help="VOC dataset directory (generated when absent)"
    )
    p.add_argument("--run_dir", default="runs/default", help="training run directory")
    p.add_argument("--model_base_path", default="models/dnet", help="<base>/<version>/ SavedModels")
    p.add_argument("--config", default="paper", help="named config (dnet_tf.config.NAMED_CONFIGS)")
    p.add_argument(
        "--time_budget_s",
        type=float,
        default=7200.0,
        help="training wall-time cap, seconds; the config's step counts decide the run, the cap "
        "only guards against a stuck machine and is reported when it cuts",
    )
    p.add_argument("--queries", type=int, default=4, help="test images sent to the server")
    p.add_argument(
        "--eval_images", type=int, default=None, help="evaluate on the first N test images only"
    )
    p.add_argument(
        "--baseline_images",
        type=int,
        default=5,
        help="test images for the sliding-window baseline comparison (0 skips it)",
    )
    p.add_argument(
        "--baseline_stride_multiplier",
        type=float,
        default=16.0,
        help="baseline stride = 5 px x this (1 = the paper's full grid, ~165k windows per image)",
    )
    p.add_argument("--seed", type=int, default=0)
    return p


def make_data(data: pathlib.Path, seed: int) -> None:
    from dnet_tf.data.synthetic import SyntheticConfig, write_synthetic_voc

    if (data / "ImageSets" / "Main" / "test.txt").exists():
        print(f"dataset present at {data}; reusing it")
        return
    summary = write_synthetic_voc(data, SyntheticConfig(seed=seed))
    print(f"wrote {summary['images']} images to {data}")


def train(
    run_dir: pathlib.Path, data: pathlib.Path, config_name: str, budget: float, seed: int
) -> dict:
    import dataclasses

    from dnet_tf.config import named_config
    from dnet_tf.training.train import train as train_run

    cfg = None
    if not (run_dir / contracts.CONFIG).exists():
        cfg = named_config(config_name)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed))
    return train_run(run_dir, str(data), cfg, time_budget_s=budget)  # prints its own summary


def evaluate(
    run_dir: pathlib.Path,
    data: pathlib.Path,
    max_images: int | None,
    baseline_images: int,
    baseline_stride_multiplier: float,
) -> pathlib.Path:
    """Table 1 rows 1 (DetectorNet, first stage and refined) on the test split, and rows 1-2
    (DetectorNet against sliding windows) on its first ``baseline_images`` images: the baseline
    evaluates thousands of windows per image, too slow for the whole split on a laptop CPU."""
    from dnet_tf.evaluation.runner import EvalOptions, evaluate_voc
    from dnet_tf.evaluation.sliding_window import SlidingWindowConfig, SlidingWindowDetector
    from dnet_tf.inference.detector import load_detector
    from dnet_tf.training.run_dir import load_run

    out = run_dir / contracts.EVAL_DIR
    model_file = run_dir / contracts.LOCALIZER
    jobs = [(out, max_images, EvalOptions(pictures=6), False)]
    if baseline_images > 0:
        jobs.append((out / "baseline", baseline_images, EvalOptions(), True))
    detector = None
    for target, images, options, with_baseline in jobs:
        stamp = target / contracts.TABLE_MD
        if stamp.exists() and stamp.stat().st_mtime > model_file.stat().st_mtime:
            print(f"evaluation of this run present at {target}; reusing it")
            continue
        detector = detector or load_detector(run_dir)  # one traced graph for both jobs
        baseline = None
        if with_baseline:
            sw_cfg = SlidingWindowConfig(stride_multiplier=baseline_stride_multiplier).validate()
            baseline = SlidingWindowDetector(load_run(run_dir).classifier, sw_cfg)
        summary = evaluate_voc(
            detector,
            data,
            "test",
            str(target),
            baseline=baseline,
            options=options,
            max_images=images,
        )
        for name, m in summary["methods"].items():
            mean_ap = m["voc07"]["mAP"]
            shown = "n/a" if mean_ap is None else f"{mean_ap:.3f}"
            print(f"{name}: mAP {shown} ({summary['table_metric']})")
        print(stamp.read_text())
    return out


def export(run_dir: pathlib.Path, base: pathlib.Path) -> pathlib.Path:
    from dnet_tf.export.saved_model import export_run
    from dnet_tf.inference.loading import resolve_saved_model_dir

    newest = resolve_saved_model_dir(base) if base.exists() else None
    model_file = run_dir / "localizer.keras"
    if (
        newest is not None
        and (newest / "saved_model.pb").stat().st_mtime > model_file.stat().st_mtime
    ):
        print(f"export newer than the run present at {newest}; reusing it")
        return newest
    path = export_run(run_dir, base.parent, base.name)
    print(f"exported {path}")
    return path


def serve_and_query(base: pathlib.Path, run_dir: pathlib.Path, data: pathlib.Path, n: int) -> None:
    from dnet_tf.core.detections import to_json
    from dnet_tf.serving.client import DetectorClient
    from dnet_tf.serving.server_cli import free_port, server_command

    port, rest = free_port(), free_port()
    cmd = server_command(base, base.name, port, rest)
    print("starting:", " ".join(cmd[1:]))
    server = subprocess.Popen(cmd, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    try:
        ids = (data / "ImageSets" / "Main" / "test.txt").read_text().split()[:n]
        paths = [data / "JPEGImages" / f"{i}.jpg" for i in ids]
        with DetectorClient(f"127.0.0.1:{port}", base.name, timeout_s=120.0) as client:
            _wait_until_ready(client, server)
            status = client.get_model_status()
            print(f"server up on gRPC :{port}, REST :{rest}; model status: {status}")
            stage(6, 7, f"querying {len(paths)} test images over gRPC")
            out_dir = run_dir / contracts.QUERIES_DIR
            out_dir.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            results = client.detect([str(p) for p in paths])
            print(f"one Predict call for {len(paths)} images: {time.perf_counter() - t0:.2f} s")
            for p, res in zip(paths, results):
                png = out_dir / f"{p.stem}.png"
                png.write_bytes(res.draw(p.read_bytes()))
                print(f"{p.name}: {len(res)} detections -> {png}")
                for det in res.detections[:8]:
                    box = ", ".join(f"{v:.0f}" for v in det.image_yxyx)
                    print(f"    {det.class_name:<8} {det.score:.3f}  yxyx px [{box}]")
            (out_dir / "detections.json").write_text(to_json(results))
    finally:
        stage(7, 7, "stopping the server (SIGTERM)")
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        print(f"server exited with code {server.returncode}")


def _wait_until_ready(client, server, timeout_s: float = 300.0) -> None:
    from dnet_tf.serving.client import ServingCallError

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited early with code {server.returncode}")
        try:
            for status in client.get_model_status():
                if status.get("state") == "AVAILABLE":
                    return
        except ServingCallError:
            pass
        time.sleep(1.0)
    raise SystemExit(f"the server did not report the model AVAILABLE within {timeout_s:.0f} s")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    data, run_dir, base = (
        pathlib.Path(args.data),
        pathlib.Path(args.run_dir),
        pathlib.Path(args.model_base_path),
    )
    t0 = time.perf_counter()
    stage(1, 7, f"dataset -> {data}")
    make_data(data, args.seed)
    stage(2, 7, f"training -> {run_dir} (budget {args.time_budget_s:.0f} s)")
    summary = train(run_dir, data, args.config, args.time_budget_s, args.seed)
    if isinstance(summary, dict) and summary.get("stopped_by_time_budget"):
        print(
            f"warning: the time budget ({args.time_budget_s:.0f} s) cut training at "
            f"{summary.get('steps')} of {summary.get('target_steps')} steps: the results are not "
            "those of the config's fixed schedule",
            flush=True,
        )
    stage(3, 7, f"evaluating on the test split -> {run_dir / 'eval'}")
    out = evaluate(
        run_dir, data, args.eval_images, args.baseline_images, args.baseline_stride_multiplier
    )
    stage(4, 7, f"exporting -> {base}/<version>")
    export(run_dir, base)
    stage(5, 7, "starting the local TF Serving-API server")
    serve_and_query(base, run_dir, data, args.queries)
    print(
        f"\ndone in {time.perf_counter() - t0:.0f} s. Pictures: {out}/ (Figures 3-4), "
        f"{run_dir / 'queries'}/ (served detections)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

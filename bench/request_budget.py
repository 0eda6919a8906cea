"""What small hostile requests cost the server, without and with the graph's request budget, and
what the budget's resize costs in accuracy.

    python -m bench.request_budget                          # runs/default
    python -m bench.request_budget --run_dir ../baseline/runs/default --accuracy_images 8

A trained run is exported twice: "unbounded" (the budget switched off: no resize, no image count
or padded-pixel limit, as the graph was before) and "budget" (the default InferenceConfig:
max_image_side 1024, 16 images, 8 x 1024^2 padded pixels). Each export is served by the local
server in its own process; every request below runs after the server's peak resident memory
(VmHWM) is reset, and the table gives its status, wall seconds, the server's peak RSS and the
growth over the resident size before it. A watchdog kills a server past --rss_cap_gb (the
machine is shared), which the table reports as such.

Accuracy: --accuracy_images synthetic test-like images generated at 1,400-2,000 px (objects drawn
at that resolution, not upsampled) through both exports in this process; VOC2007 mAP against the
generated boxes.

Writes bench/results/request_budget.json.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import adversarial_inputs as adv  # noqa: E402
from bench.common import format_table, write_json  # noqa: E402
from dnet_tf.serving.server_cli import free_port, server_command  # noqa: E402

UNBOUNDED = {
    "max_image_side": 100_000,
    "max_images_per_request": 1_000_000,
    "max_request_pixels": 10**10,
}


class Server:
    """server_cli in a subprocess, with a watchdog on its resident memory."""

    def __init__(self, base_path: pathlib.Path, name: str, rss_cap_kib: int):
        self.port = free_port()
        cmd = server_command(
            base_path / name,
            name,
            self.port,
            None,
            "--file_system_poll_wait_seconds=0",
            "--enable_model_warmup=false",
        )
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.name = name
        self.killed_at_kib = None
        ready = threading.Event()

        def pump():
            for line in self.proc.stdout:
                if line.startswith("dnet-serve ready"):
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(300):
            self.proc.kill()
            raise RuntimeError("server did not start")
        self._cap = rss_cap_kib
        threading.Thread(target=self._watch, daemon=True).start()
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{self.port}", options=[("grpc.max_send_message_length", -1)]
        )
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def _watch(self):
        while self.proc.poll() is None:
            try:
                rss = adv.vm_kib(self.proc.pid)["VmRSS"]
            except (OSError, KeyError):
                return
            if rss > self._cap:
                self.killed_at_kib = rss
                self.proc.kill()
                return
            time.sleep(0.02)

    def call(self, request, timeout: float = 600.0) -> dict:
        import grpc

        pid = self.proc.pid
        adv.reset_peak(pid)
        before = adv.vm_kib(pid)["VmRSS"]
        t0 = time.perf_counter()
        try:
            self.stub.Predict(request, timeout=timeout)
            status = "OK"
        except grpc.RpcError as e:
            status = e.code().name
        seconds = time.perf_counter() - t0
        time.sleep(0.1)  # the watchdog polls every 20 ms
        try:
            peak = None if self.proc.poll() is not None else adv.vm_kib(pid)["VmHWM"]
        except (OSError, KeyError):  # exited between the two reads
            peak = None
        if peak is None:
            killed = self.killed_at_kib or 0
            return {
                "status": f"killed past {killed / 2**20:.1f} GB" if killed else "exited",
                "seconds": seconds,
                "rss_before_mb": before / 1024,
                "peak_mb": killed / 1024,
                "growth_mb": (killed - before) / 1024,
            }
        return {
            "status": status,
            "seconds": seconds,
            "rss_before_mb": before / 1024,
            "peak_mb": peak / 1024,
            "growth_mb": (peak - before) / 1024,
        }

    def stop(self):
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _requests(name: str, big_side: int) -> dict:
    """The requests of the table: name -> (PredictRequest, wire bytes)."""
    big = adv.noise_jpeg(big_side, big_side, seed=1, quality=40, cell=1000)
    tiny = [adv.tiny_png(i) for i in range(30)]
    photo = adv.noise_jpeg(375, 500, seed=2, quality=90, cell=25)
    one_k = [adv.noise_jpeg(768, 1024, seed=10 + i, quality=85, cell=40) for i in range(8)]
    half_k = [adv.noise_jpeg(512, 1024, seed=20 + i, quality=85, cell=40) for i in range(16)]
    huge = adv.noise_jpeg(6000, 6000, seed=3, quality=30, cell=2000)
    out = {
        "one 500x375 JPEG": adv.predict_request(
            name, "serving_default", adv.string_tensor([photo])
        ),
        f"one {big_side}x{big_side} JPEG": adv.predict_request(
            name, "serving_default", adv.string_tensor([big])
        ),
        f"{big_side}^2 JPEG + 3 1x1 PNGs": adv.predict_request(
            name, "serving_default", adv.string_tensor([big] + tiny[:3])
        ),
        f"{big_side}^2 JPEG + 30 1x1 PNGs": adv.predict_request(
            name, "serving_default", adv.string_tensor([big] + tiny)
        ),
        "8 JPEGs of 1024x768": adv.predict_request(
            name, "serving_default", adv.string_tensor(one_k)
        ),
        # the budget's worst case: 16 images (the most) filling 8 x 1024^2 padded pixels
        "16 JPEGs of 1024x512": adv.predict_request(
            name, "serving_default", adv.string_tensor(half_k)
        ),
        "6000^2 JPEG + 100 1x1 PNGs": adv.predict_request(
            name, "serving_default", adv.string_tensor([huge] + tiny * 3 + tiny[:10])
        ),
        "uint8 [1,12000,12000,3], one int_val": adv.predict_request(
            name, "image_tensor", adv.declared_uint8_tensor()
        ),
        "string [2e8], one string_val": adv.predict_request(
            name, "serving_default", adv.declared_string_tensor()
        ),
        "GIF frame 60000x60000": adv.predict_request(
            name, "serving_default", adv.string_tensor([adv.gif_frame_bomb()])
        ),
    }
    return {k: (v, v.ByteSize()) for k, v in out.items()}


def _accuracy(exports: dict, count: int, seed: int) -> dict:
    """VOC07 mAP of each export on ``count`` large synthetic images."""
    import io

    import numpy as np
    from PIL import Image

    from dnet_tf.data.synthetic import SyntheticConfig, generate_image
    from dnet_tf.evaluation.voc_ap import evaluate_detections
    from dnet_tf.inference.detector import load_detector

    cfg = SyntheticConfig(min_side=1400, max_side=2000).validate()
    images, gts = [], []
    detectors = {k: load_detector(v) for k, v in exports.items()}
    names = detectors["budget"].class_names
    for i in range(count):
        rgb, objects = generate_image(np.random.default_rng([7, seed, i]), cfg)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
        images.append(buf.getvalue())
        gts.append(
            {
                "boxes_yxyx": np.array([o.box_image_yxyx for o in objects], np.float32).reshape(
                    -1, 4
                ),
                "classes": np.array([names.index(o.class_name) for o in objects], np.int32),
            }
        )
    out = {}
    for key, det in detectors.items():
        t0 = time.perf_counter()
        dets = [det.detect_encoded([data])[0].detections.arrays() for data in images]
        seconds = (time.perf_counter() - t0) / max(count, 1)
        result = evaluate_detections(gts, dets, len(names), 0.5, use_07_metric=True)
        out[key] = {
            "mAP_voc07": float(result.mean_ap),
            "seconds_per_image": seconds,
            "detections_per_image": float(np.mean([len(d["scores"]) for d in dets])),
            "top_scores": [float(d["scores"][0]) if len(d["scores"]) else 0.0 for d in dets],
        }
    sizes = [Image.open(io.BytesIO(b)).size for b in images]
    out["image_sizes_wh"] = sizes
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run_dir", default=str(REPO / "runs" / "default"))
    p.add_argument("--big_side", type=int, default=3000, help="side of the large JPEG, px")
    p.add_argument("--accuracy_images", type=int, default=8)
    p.add_argument("--rss_cap_gb", type=float, default=6.0, help="watchdog: kill a server past it")
    p.add_argument("--json", default=None, help="output path (default bench/results/...)")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_dir = pathlib.Path(args.run_dir)
    if not (run_dir / "config.json").is_file():
        print(f"no trained run at {run_dir}: skipped (train one with bash scripts/main.sh)")
        write_json("request_budget", {"skipped": f"no run at {run_dir}"})
        return 0
    from dnet_tf.config import DetectorConfig
    from dnet_tf.export.saved_model import export_run
    from dnet_tf.inference.budget import resolution_side

    cfg = DetectorConfig.from_json((run_dir / "config.json").read_text())
    side = resolution_side(cfg.model.input_size, cfg.inference.num_scales)
    results: dict = {
        "run_dir": str(run_dir),
        "resolution_side_px": side,
        "budget": {
            k: getattr(DetectorConfig().inference, k)
            for k in ("max_image_side", "max_images_per_request", "max_request_pixels")
        },
        "requests": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        base = pathlib.Path(tmp)
        exports = {}
        for key, overrides in (("unbounded", UNBOUNDED), ("budget", None)):
            t0 = time.perf_counter()
            exports[key] = export_run(run_dir, base, key, 1, inference_overrides=overrides)
            print(f"exported {key} in {time.perf_counter() - t0:.0f} s", flush=True)
        if args.accuracy_images:
            results["accuracy"] = _accuracy(exports, args.accuracy_images, seed=0)
        cap = int(args.rss_cap_gb * 2**20)
        for key in ("unbounded", "budget"):
            requests = _requests(key, args.big_side)
            server = Server(base, key, cap)
            try:
                server.call(requests["one 500x375 JPEG"][0])  # warm the graph
                for label, (request, size) in requests.items():
                    if server.proc.poll() is not None:  # killed: a fresh one for the rest
                        server.stop()
                        server = Server(base, key, cap)
                        server.call(requests["one 500x375 JPEG"][0])
                    row = server.call(request)
                    row["request_bytes"] = size
                    results["requests"].setdefault(label, {})[key] = row
                    print(f"{key:9s} {label}: {row}", flush=True)
            finally:
                server.stop()
    headers = ["request", "bytes", "graph", "status", "s", "RSS before MB", "peak MB", "growth MB"]
    rows = []
    for label, by_key in results["requests"].items():
        for key, r in by_key.items():
            rows.append(
                [
                    label,
                    r["request_bytes"],
                    key,
                    r["status"],
                    round(r["seconds"], 3),
                    round(r["rss_before_mb"]),
                    round(r["peak_mb"]),
                    round(r["growth_mb"]),
                ]
            )
    print(
        f"Window geometry: finest windows stop gaining resolution past {side} px "
        f"(input_size x 2^(num_scales - 1)); budget {results['budget']}"
    )
    print(format_table(headers, rows))
    if "accuracy" in results:
        acc = results["accuracy"]
        print(
            f"\nAccuracy on {args.accuracy_images} synthetic images of "
            f"{min(min(s) for s in acc['image_sizes_wh'])}-"
            f"{max(max(s) for s in acc['image_sizes_wh'])} px:"
        )
        print(
            format_table(
                ["graph", "mAP VOC07", "s/image", "detections/image"],
                [
                    [
                        k,
                        round(acc[k]["mAP_voc07"], 4),
                        round(acc[k]["seconds_per_image"], 2),
                        acc[k]["detections_per_image"],
                    ]
                    for k in ("unbounded", "budget")
                ],
            )
        )
    path = pathlib.Path(args.json) if args.json else None
    written = write_json("request_budget", results, path.parent if path else None)
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

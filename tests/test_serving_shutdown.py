"""SIGTERM to a real server process while requests are in flight: every accepted request gets its
answer, the process exits 0, and later requests are refused (UNAVAILABLE / connection refused)."""

import io
import os
import pathlib
import re
import signal
import subprocess
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from PIL import Image

from dnet_tf.serving.client import DetectorClient, RestDetectorClient, RetryPolicy, ServingCallError
from dnet_tf.serving.server_cli import free_port, server_command
from dnet_tf.serving.toy_model import export_toy_model

REPO = pathlib.Path(__file__).resolve().parents[1]


def _inflight(rest_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        m[0]: int(m[1])
        for m in re.findall(r'dnet_serving_inflight_requests\{entrypoint="(\w+)"\} (\d+)', text)
    }


def test_sigterm_finishes_requests_in_flight(tmp_path):
    export_toy_model(tmp_path / "models", "dnet", 1)
    # A 60 s batch timeout holds the requests in the batch queue, so they are surely in flight when
    # the signal arrives; shutdown must run them at once rather than drop them or wait it out.
    (tmp_path / "batching.txt").write_text(
        "max_batch_size { value: 16 } batch_timeout_micros { value: 60000000 } "
        "num_batch_threads { value: 1 }"
    )
    (tmp_path / "monitoring.config").write_text(
        'prometheus_config { enable: true path: "/metrics" }'
    )
    grpc_port, rest_port = free_port(), free_port()
    cmd = server_command(
        tmp_path / "models" / "dnet",
        "dnet",
        grpc_port,
        rest_port,
        "--file_system_poll_wait_seconds=0",
        "--enable_batching",
        f"--batching_parameters_file={tmp_path / 'batching.txt'}",
        f"--monitoring_config_file={tmp_path / 'monitoring.config'}",
        "--shutdown_grace_seconds=20",
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    log_lines = []
    try:
        ready = threading.Event()

        def pump():
            for line in proc.stdout:
                log_lines.append(line)
                if line.startswith("dnet-serve ready"):
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        assert ready.wait(90), "server did not start:\n" + "".join(log_lines)

        buf = io.BytesIO()
        pixels = np.random.RandomState(3).randint(0, 256, (40, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buf, format="PNG")
        png = buf.getvalue()
        results, errors = [], []
        no_retry = RetryPolicy(max_attempts=1)

        def grpc_call():
            try:
                with DetectorClient(
                    f"127.0.0.1:{grpc_port}", "dnet", timeout_s=30, retry=no_retry
                ) as c:
                    results.append(c.detect([png])[0])
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        def rest_call():
            try:
                results.append(
                    RestDetectorClient(
                        f"http://127.0.0.1:{rest_port}", "dnet", timeout_s=30, retry=no_retry
                    ).detect([png])[0]
                )
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=grpc_call) for _ in range(6)] + [
            threading.Thread(target=rest_call) for _ in range(2)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while _inflight(rest_port) != {"GRPC": 6, "REST": 2}:
            assert time.monotonic() < deadline, _inflight(rest_port)
            time.sleep(0.05)
        t_signal = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert proc.wait(30) == 0, "".join(log_lines)
        elapsed = time.monotonic() - t_signal
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert errors == [] and len(results) == 8
    # 40 x 64 image: toy detection 0 is [H/4, W/4, 3H/4, 3W/4] = [10, 16, 30, 48]
    assert all(r.detections[0].image_yxyx == (10.0, 16.0, 30.0, 48.0) for r in results)
    assert all(
        r.detections[0].score == pytest.approx(pixels.mean() / 255, abs=1e-6) for r in results
    )
    assert elapsed < 15.0  # the queued batch ran at shutdown, not after its 60 s timeout
    assert any("shutting down" in line for line in log_lines)
    with DetectorClient(
        f"127.0.0.1:{grpc_port}", "dnet", timeout_s=5, retry=RetryPolicy(max_attempts=1)
    ) as c:
        with pytest.raises(ServingCallError) as e:
            c.detect([png])
    assert e.value.code == grpc.StatusCode.UNAVAILABLE

"""Hostile inputs against a real server process over gRPC and HTTP on localhost.

One server subprocess (the toy SavedModel, which decodes within the detector's request budget)
takes small requests that ask for large allocations, header bombs, malformed protos, slow and
idle clients and a flood of unknown model names. Each case asserts the status code, a bound on
the time it took and on the server's peak resident memory (VmHWM from /proc, reset before each
case), and that a good request is answered afterwards. A second process checks that SIGTERM with
idle and half-sent REST connections exits 0 within the grace period plus one second, the
requests in flight answered.
"""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from bench import adversarial_inputs as adv
from dnet_tf.serving.client import DetectorClient, RestDetectorClient, RetryPolicy
from dnet_tf.serving.server_cli import free_port, server_command
from dnet_tf.serving.toy_model import export_toy_model

REPO = pathlib.Path(__file__).resolve().parents[1]
READ_TIMEOUT_MS = 1500
MAX_CONNECTIONS = 8
# Peak resident growth allowed for one hostile request: far below what any of them declares
# (432 MB for the uint8 tensor, 6.4 GB for the string tensor, 10-17 GB for the image headers).
MEMORY_BOUND_KIB = 80 * 1024
TIME_BOUND_S = 2.0  # generous: each is refused in milliseconds on an idle machine


def _start(tmp_path, extra=()):
    export_toy_model(tmp_path / "models", "dnet", 1)
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
        f"--monitoring_config_file={tmp_path / 'monitoring.config'}",
        f"--rest_api_timeout_in_ms={READ_TIMEOUT_MS}",
        f"--rest_api_max_connections={MAX_CONNECTIONS}",
        *extra,
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines, ready = [], threading.Event()

    def pump():
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("dnet-serve ready"):
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(90):
        proc.kill()
        pytest.fail("server did not start:\n" + "".join(lines))
    return proc, grpc_port, rest_port, lines


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, grpc_port, rest_port, lines = _start(tmp_path_factory.mktemp("adversarial"))
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    srv = {
        "proc": proc,
        "grpc": grpc_port,
        "rest": rest_port,
        "stub": prediction_service_pb2_grpc.PredictionServiceStub(channel),
        "channel": channel,
        "lines": lines,
    }
    try:
        _good(srv)  # warm both signatures before memory is measured
        yield srv
    finally:
        channel.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


GOOD_PIXELS = np.full((24, 32, 3), 51, np.uint8)  # mean 51: toy detection 0 scores 51 / 255 = 0.2


def _good(srv):
    """A good request over each transport and signature is answered, worked by hand."""
    png = adv.encode(GOOD_PIXELS, "PNG")
    once = RetryPolicy(max_attempts=1)
    with DetectorClient(f"127.0.0.1:{srv['grpc']}", "dnet", timeout_s=10, retry=once) as c:
        det = c.detect([png])[0].detections[0]
    assert det.image_yxyx == (6.0, 8.0, 18.0, 24.0) and det.score == pytest.approx(0.2)
    rest = RestDetectorClient(f"http://127.0.0.1:{srv['rest']}", "dnet", timeout_s=10, retry=once)
    assert rest.detect([png])[0].detections[0].score == pytest.approx(0.2)
    request = adv.predict_request("dnet", "image_tensor", tf.make_tensor_proto(GOOD_PIXELS[None]))
    out = srv["stub"].Predict(request, timeout=10)
    assert tf.make_ndarray(out.outputs["detection_scores"])[0, 0] == pytest.approx(0.2)


def _measured(srv, fn):
    """(result of fn, seconds, peak resident growth KiB) with the server's VmHWM reset first."""
    pid = srv["proc"].pid
    if not adv.reset_peak(pid):
        pytest.skip("cannot reset the server's peak RSS (/proc/<pid>/clear_refs)")
    before = adv.vm_kib(pid)["VmRSS"]
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    time.sleep(0.05)  # let the server finish whatever it does after answering
    return result, seconds, adv.vm_kib(pid)["VmHWM"] - before


def _grpc_code(srv, request):
    try:
        srv["stub"].Predict(request, timeout=30)
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


HOSTILE_GRPC = {
    # 59 bytes declaring a 432 MB uint8 image
    "declared uint8 [1, 12000, 12000, 3]": (
        lambda: adv.predict_request("dnet", "image_tensor", adv.declared_uint8_tensor()),
        "432000000 bytes once built",
    ),
    # a few dozen bytes declaring 2e8 strings
    "declared 2e8 strings": (
        lambda: adv.predict_request("dnet", "serving_default", adv.declared_string_tensor()),
        "more than the server's limit",
    ),
    "PNG header 100000 x 100000": (
        lambda: adv.predict_request(
            "dnet", "serving_default", adv.string_tensor([adv.png_header_bomb()])
        ),
        "image declares more than",
    ),
    "JPEG header 65000 x 65000": (
        lambda: adv.predict_request(
            "dnet", "serving_default", adv.string_tensor([adv.jpeg_header_bomb()])
        ),
        "image declares more than",
    ),
    "GIF second frame 60000 x 60000 on a 4 x 4 screen": (
        lambda: adv.predict_request(
            "dnet", "serving_default", adv.string_tensor([adv.gif_frame_bomb()])
        ),
        "GIF frame declares more than",
    ),
    "17 images, one more than max_images_per_request": (
        lambda: adv.predict_request(
            "dnet", "serving_default", adv.string_tensor([adv.tiny_png(i) for i in range(17)])
        ),
        "max_images_per_request",
    ),
    "uint8 image of 6000 x 7000 (42 Mpx) sent in full": (
        lambda: adv.predict_request(
            "dnet",
            "image_tensor",
            adv.declared_uint8_tensor((1, 6000, 7000, 3)),
        ),
        "bytes once built",  # 126 MB > the 64 MB request limit
    ),
    "negative dimension": (
        lambda: adv.predict_request(
            "dnet", "image_tensor", adv.declared_uint8_tensor((1, -5, 4, 3))
        ),
        "negative dimension",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_GRPC))
def test_hostile_grpc_request_is_refused_cheaply(server, case):
    build, wording = HOSTILE_GRPC[case]
    request = build()
    assert request.ByteSize() < 1024 or case.startswith("17 images")
    (code, details), seconds, grew_kib = _measured(server, lambda: _grpc_code(server, request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert wording in details
    assert seconds < TIME_BOUND_S
    assert grew_kib < MEMORY_BOUND_KIB, f"peak RSS grew by {grew_kib} KiB"
    _good(server)


def test_malformed_proto_bytes_get_an_error_and_the_server_lives(server):
    raw = server["channel"].unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=lambda b: b,
        response_deserializer=predict_pb2.PredictResponse.FromString,
    )
    for junk in (b"\xff" * 64, b"\x0a\x05\x0a\x03", b"\x12\xff\xff\xff\xff\x0f"):
        with pytest.raises(grpc.RpcError) as e:
            raw(junk, timeout=10)
        # grpcio answers a request it cannot parse before any handler runs
        assert e.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    request = adv.predict_request("dnet", "image_tensor", adv.declared_uint8_tensor((1, 2, 2, 3)))
    request.inputs["images"].tensor_content = b"\x01\x02\x03"  # 3 bytes for 12 elements
    code, _ = _grpc_code(server, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    _good(server)


def _rest(port, path, body: bytes | None = None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_bad_rest_paths_answer_400(server):
    for path in (
        "/v1/models/dnet/versions/12345678901234567890",  # past int64
        "/v1/models/dnet/versions/%C2%B2",  # a superscript two
        "/v1/models/dnet/versions/-1",
    ):
        status, body = _rest(server["rest"], path)
        assert status in (400, 404), (path, status)
        assert "error" in json.loads(body)
    status, _ = _rest(
        server["rest"], "/v1/models/dnet/versions/99999999999999999999:predict", b"{}"
    )
    assert status == 400
    _good(server)


def test_rest_json_of_declared_huge_strings_is_refused(server):
    body = json.dumps({"instances": [{"b64": "eA=="}] * 17}).encode()
    status, answer = _rest(server["rest"], "/v1/models/dnet:predict", body)
    assert status == 400 and b"max_images_per_request" in answer
    _good(server)


def _open(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def test_slow_and_idle_rest_clients_are_cut_off_at_the_read_deadline(server):
    port = server["rest"]
    idle = _open(port)  # sends nothing
    slow = _open(port)  # headers, then a body that never completes
    slow.sendall(
        b"POST /v1/models/dnet:predict HTTP/1.0\r\nContent-Length: 1000\r\n\r\n" + b'{"inst'
    )
    _good(server)  # served while they hang
    t0 = time.monotonic()
    for s in (idle, slow):
        s.settimeout(READ_TIMEOUT_MS / 1000 + 3)
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
        s.close()
    elapsed = time.monotonic() - t0
    assert elapsed < READ_TIMEOUT_MS / 1000 + 1.5, elapsed  # closed at the deadline, not never
    _good(server)


def test_connections_past_the_cap_get_503_and_then_service_resumes(server):
    port = server["rest"]
    held = [_open(port) for _ in range(MAX_CONNECTIONS)]
    # The server accepts the held connections on its own thread: on a loaded machine that can
    # take a moment, so probe until they all count (the cap must hold within 10 s).
    deadline = time.monotonic() + 10.0
    while True:
        status, body = _rest(port, "/v1/models/dnet")
        if status == 503 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 503 and b"too many" in body
    for s in held:
        s.close()
    time.sleep(0.3)
    _good(server)


def test_flood_of_unknown_model_names_adds_no_metric_series(server):
    port = server["rest"]
    names = [f"model-{i}-{os.urandom(4).hex()}" for i in range(150)]
    t0 = time.perf_counter()
    for name in names[:100]:
        code, _ = _grpc_code(
            server, adv.predict_request(name, "serving_default", adv.string_tensor([b"x"]))
        )
        assert code == grpc.StatusCode.NOT_FOUND
    for name in names[100:]:
        status, _ = _rest(port, f"/v1/models/{name}:predict", b'{"instances": []}')
        assert status == 404
    assert time.perf_counter() - t0 < 30
    status, text = _rest(port, "/metrics")
    labels = set(re.findall(rb'model_name="([^"]*)"', text))
    assert labels <= {b"dnet", b"__unknown__"} and b"__unknown__" in labels
    _good(server)


def test_sigterm_with_idle_and_half_sent_rest_connections_exits_within_grace(tmp_path):
    grace = 3.0
    (tmp_path / "batching.txt").write_text(
        "max_batch_size { value: 8 } batch_timeout_micros { value: 60000000 } "
        "num_batch_threads { value: 1 }"
    )
    proc, grpc_port, rest_port, lines = _start(
        tmp_path,
        (
            "--enable_batching",
            f"--batching_parameters_file={tmp_path / 'batching.txt'}",
            f"--shutdown_grace_seconds={grace}",
            "--rest_api_timeout_in_ms=60000",  # the connections below must outlive the grace
        ),
    )
    try:
        png = adv.encode(GOOD_PIXELS, "PNG")
        results, errors = [], []

        def call():
            try:
                with DetectorClient(
                    f"127.0.0.1:{grpc_port}", "dnet", timeout_s=30, retry=RetryPolicy(1)
                ) as c:
                    results.append(c.detect([png])[0].detections[0].score)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        # Two requests wait in the batch queue (60 s timeout): in flight when the signal comes.
        callers = [threading.Thread(target=call) for _ in range(2)]
        for t in callers:
            t.start()
        idle = [_open(rest_port) for _ in range(3)]
        half = _open(rest_port)
        half.sendall(b"POST /v1/models/dnet:predict HTTP/1.0\r\nContent-Length: 500\r\n\r\n{")
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(grace + 10)
        elapsed = time.monotonic() - t0
        for t in callers:
            t.join(10)
        for s in idle + [half]:
            s.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, "".join(lines)
    assert elapsed < grace + 1.0, elapsed
    assert errors == [] and results == [pytest.approx(0.2)] * 2

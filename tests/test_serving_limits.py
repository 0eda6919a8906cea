"""Unit tests of the server's limits that need no server process: strict version names, the
declared size of a TensorProto, metric labels of unknown models, load retries on a clock, and
the clients' retry rule (with a real socket that resets the connection mid-answer)."""

import os
import socket
import threading

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import get_model_status_pb2

from bench import adversarial_inputs as adv
from dnet_tf.serving.client import RestDetectorClient, RetryPolicy, ServingCallError, is_retryable
from dnet_tf.serving.config_files import ModelSource
from dnet_tf.serving.errors import ServingError
from dnet_tf.serving.manager import ModelManager
from dnet_tf.serving.metrics import UNKNOWN_MODEL_LABEL, Metrics
from dnet_tf.serving.servable import declared_tensor_bytes, tensor_proto_to_array
from dnet_tf.serving.versions import MAX_VERSION, parse_version, scan_versions

State = get_model_status_pb2.ModelVersionStatus.State


def test_version_names_are_ascii_digits_fitting_int64(tmp_path):
    assert parse_version("007") == 7 and parse_version(str(MAX_VERSION)) == MAX_VERSION
    for bad in ("²", "٣", "３", "", "1.0", "-1", str(MAX_VERSION + 1), "12345678901234567890"):
        assert parse_version(bad) is None, bad
    for name in ("2", "²", "٣", "99999999999999999999"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "saved_model.pb").write_bytes(b"")
    assert sorted(scan_versions(tmp_path)) == [2]  # the others ignored, no crash


def test_declared_tensor_size_is_checked_before_building():
    huge = adv.declared_uint8_tensor()  # [1, 12000, 12000, 3] uint8
    assert declared_tensor_bytes("images", huge) == 12000 * 12000 * 3
    strings = adv.declared_string_tensor(200_000_000)
    assert declared_tensor_bytes("images", strings) == 200_000_000 * 32 + 1
    with pytest.raises(ServingError, match="432000000 bytes once built") as e:
        tensor_proto_to_array("images", huge, max_bytes=64 << 20)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ServingError, match="limit of 1000 bytes"):
        tensor_proto_to_array("images", strings, max_bytes=1000)
    # within the limit, a short value list fills the declared shape, as TensorFlow does
    small = tensor_proto_to_array("images", adv.declared_uint8_tensor((1, 2, 2, 3)), 1000)
    assert small.shape == (1, 2, 2, 3) and (small == 7).all()
    with pytest.raises(ServingError, match="negative dimension"):
        tensor_proto_to_array("images", adv.declared_uint8_tensor((1, -1, 2, 3)), 1000)


def test_metrics_label_only_served_models():
    m = Metrics()
    m.set_served_models(["dnet"])
    for name in ["dnet", "x1", "x2", "dnet"] + [f"n{i}" for i in range(50)]:
        m.request_started("GRPC")
        m.request_finished("GRPC", name, "predict", "NOT_FOUND", 0.001)
    text = m.render()
    assert 'model_name="dnet",status="NOT_FOUND"} 2' in text
    assert f'model_name="{UNKNOWN_MODEL_LABEL}",status="NOT_FOUND"}} 52' in text
    assert "x1" not in text and "n49" not in text


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_failed_load_retried_at_the_interval_then_on_change(tmp_path):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "saved_model.pb").write_bytes(b"")
    attempts = []
    outcome = {"fail": True}

    def loader(name, version, path, warmup):
        attempts.append(version)
        if outcome["fail"]:
            raise ValueError("broken")
        return object()

    clock = _Clock()
    manager = ModelManager(
        [ModelSource("m", str(tmp_path))],
        poll_seconds=0,
        loader=loader,
        max_load_retries=2,
        load_retry_interval_seconds=60,
        clock=clock,
    )
    manager.poll_once()  # first try
    clock.now = 30
    manager.poll_once()  # too early: no retry
    assert len(attempts) == 1
    assert manager.status("m")[0].state == State.END and "broken" in manager.status("m")[0].error
    clock.now = 61
    manager.poll_once()  # retry 1
    clock.now = 122
    manager.poll_once()  # retry 2
    clock.now = 1000
    manager.poll_once()  # retries spent: waits for the directory to change
    assert len(attempts) == 3
    outcome["fail"] = False
    st = os.stat(tmp_path / "1")
    os.utime(tmp_path / "1", (st.st_atime, st.st_mtime + 5))
    manager.poll_once()  # changed: a fresh round, which succeeds
    assert len(attempts) == 4 and manager.loaded_versions("m") == [1]
    assert manager.status("m")[0].state == State.AVAILABLE


def _serve_once(handler):
    """A one-connection TCP server on localhost running ``handler(conn)``; returns the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    counter = {"connections": 0}

    def run():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            counter["connections"] += 1
            handler(conn)

    threading.Thread(target=run, daemon=True).start()
    return sock, counter


def _reset(conn):
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()  # linger 0: RST


def test_rest_client_does_not_retry_a_reset_after_the_request_was_sent():
    def answer_then_reset(conn):
        conn.recv(65536)  # the whole request
        conn.sendall(b'HTTP/1.0 200 OK\r\nContent-Length: 1000\r\n\r\n{"predictions": [')
        _reset(conn)

    sock, counter = _serve_once(answer_then_reset)
    client = RestDetectorClient(
        f"http://127.0.0.1:{sock.getsockname()[1]}",
        "dnet",
        timeout_s=5,
        retry=RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.02),
    )
    with pytest.raises(ServingCallError) as e:
        client.get_model_status()
    sock.close()
    assert counter["connections"] == 1 and e.value.attempts == 1
    assert e.value.code == grpc.StatusCode.UNAVAILABLE and not is_retryable(e.value)


def test_rest_client_retries_a_refused_connection_and_a_503():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)
    client = RestDetectorClient(f"http://127.0.0.1:{port}", "dnet", timeout_s=5, retry=policy)
    with pytest.raises(ServingCallError) as e:
        client.get_model_status()
    assert e.value.attempts == 3 and e.value.code == grpc.StatusCode.UNAVAILABLE

    def unavailable(conn):
        conn.recv(65536)
        conn.sendall(b'HTTP/1.0 503 Service Unavailable\r\nContent-Length: 13\r\n\r\n{"error":"x"}')
        conn.close()

    sock, counter = _serve_once(unavailable)
    client = RestDetectorClient(
        f"http://127.0.0.1:{sock.getsockname()[1]}", "dnet", timeout_s=5, retry=policy
    )
    with pytest.raises(ServingCallError) as e:
        client.get_model_status()
    sock.close()
    assert counter["connections"] == 3 and e.value.attempts == 3


def test_grpc_calls_past_the_cap_get_resource_exhausted_at_once(tmp_path):
    from dnet_tf.serving.batching import BatchingOptions
    from dnet_tf.serving.client import DetectorClient
    from dnet_tf.serving.server import LocalModelServer, ServerOptions
    from dnet_tf.serving.toy_model import export_toy_model

    export_toy_model(tmp_path, "dnet", 1)
    opts = ServerOptions(
        host="127.0.0.1",
        port=0,
        rest_api_port=None,
        model_name="dnet",
        model_base_path=str(tmp_path / "dnet"),
        file_system_poll_wait_seconds=0,
        enable_batching=True,  # a 60 s batch timeout holds the first call in flight
        batching=BatchingOptions(max_batch_size=8, batch_timeout_micros=60_000_000),
        grpc_max_concurrent_rpcs=1,
    )
    png = adv.encode(np.full((8, 8, 3), 51, np.uint8), "PNG")
    results = []
    with LocalModelServer(opts) as srv:
        target = f"127.0.0.1:{srv.grpc_port}"

        def held():
            with DetectorClient(target, "dnet", timeout_s=30, retry=RetryPolicy(1)) as c:
                results.append(c.detect([png])[0].detections[0].score)

        first = threading.Thread(target=held)
        first.start()
        while srv.metrics.inflight("GRPC") < 1:
            threading.Event().wait(0.02)
        with DetectorClient(target, "dnet", timeout_s=30, retry=RetryPolicy(1)) as c:
            with pytest.raises(ServingCallError) as e:
                c.detect([png])
        assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        srv.stop(5)  # runs the queued batch at once
        first.join(10)
    assert results == [pytest.approx(0.2)]

"""The local server over real gRPC and HTTP on localhost, with the clients and CLIs.

One server per module (``server`` fixture: a models.config with version labels, monitoring on,
a 2 MB request limit) serves a small contract-conforming SavedModel (dnet_tf.serving.toy_model);
results are compared with the same SavedModel run directly. Tests that change the model
directory or need a server that is down start their own.
"""

import base64
import io
import json
import pathlib
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from dnet_tf.serving import client_cli, server_cli
from dnet_tf.serving.batching import BatchingOptions
from dnet_tf.serving.client import DetectorClient, RestDetectorClient, RetryPolicy, ServingCallError
from dnet_tf.serving.servable import read_signature_defs
from dnet_tf.serving.server import LocalModelServer, ServerOptions
from dnet_tf.serving.server_cli import free_port
from dnet_tf.serving.toy_model import export_toy_model

REPO = pathlib.Path(__file__).resolve().parents[1]

MAX_REQUEST_BYTES = 2 * 1024 * 1024
H1, W1 = 60, 80  # the PNG
H2, W2 = 45, 30  # the JPEG


def _encode(array, fmt):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def images():
    rng = np.random.RandomState(0)
    png_pixels = rng.randint(0, 256, (H1, W1, 3), dtype=np.uint8)
    jpg_pixels = rng.randint(0, 256, (H2, W2, 3), dtype=np.uint8)
    return {
        "png": _encode(png_pixels, "PNG"),
        "jpg": _encode(jpg_pixels, "JPEG"),
        "png_pixels": png_pixels,
        "png2": _encode(rng.randint(0, 256, (H1, W1, 3), dtype=np.uint8), "PNG"),
    }


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, images):
    base = tmp_path_factory.mktemp("models")
    version_dir = export_toy_model(base, "dnet", 1, warmup_images=[images["png"]])
    return version_dir


@pytest.fixture(scope="module")
def direct(model_dir):
    """The SavedModel run directly, without any server."""
    loaded = tf.saved_model.load(str(model_dir))

    def run(images, signature="serving_default"):
        value = (
            tf.constant(images) if signature == "serving_default" else tf.constant(images, tf.uint8)
        )
        return {k: v.numpy() for k, v in loaded.signatures[signature](images=value).items()}

    return run


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    cfg_dir = tmp_path_factory.mktemp("cfg")
    (cfg_dir / "models.config").write_text(f"""
        model_config_list {{ config {{
          name: "dnet" base_path: "{model_dir.parent}" model_platform: "tensorflow"
          version_labels {{ key: "stable" value: 1 }}
          version_labels {{ key: "canary" value: 2 }}
        }} }}""")
    (cfg_dir / "monitoring.config").write_text(
        'prometheus_config { enable: true path: "/metrics" }'
    )
    srv = LocalModelServer(
        ServerOptions(
            host="127.0.0.1",
            port=0,
            rest_api_port=0,
            model_config_file=str(cfg_dir / "models.config"),
            monitoring_config_file=str(cfg_dir / "monitoring.config"),
            file_system_poll_wait_seconds=0,
            max_request_bytes=MAX_REQUEST_BYTES,
        )
    ).start()
    yield srv
    srv.stop(5)


def _stub(port):
    channel = grpc.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", -1)]
    )
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _predict_request(
    images, name="dnet", signature="serving_default", dtype=tf.string, alias="images"
):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    request.inputs[alias].CopyFrom(tf.make_tensor_proto(images, dtype=dtype))
    return request


def _outputs(response):
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def _assert_same(got, want):
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype or want[k].dtype == object, k
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def _rest(port, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _b64(data):
    return {"b64": base64.b64encode(data).decode()}


# ----------------------------------------------------------------------------- round trips


def test_grpc_round_trip_equals_saved_model(server, images, direct):
    stub = _stub(server.grpc_port)
    batch = [images["png"], images["jpg"]]
    response = stub.Predict(_predict_request(batch), timeout=30)
    _assert_same(_outputs(response), direct(batch))
    assert (response.model_spec.name, response.model_spec.version.value) == ("dnet", 1)
    assert response.model_spec.signature_name == "serving_default"

    pixels = np.stack([images["png_pixels"], images["png_pixels"][::-1]])
    response = stub.Predict(
        _predict_request(pixels, signature="image_tensor", dtype=tf.uint8), timeout=30
    )
    _assert_same(_outputs(response), direct(pixels, "image_tensor"))

    filtered = _predict_request(batch)
    filtered.output_filter.append("detection_scores")
    assert list(stub.Predict(filtered, timeout=30).outputs) == ["detection_scores"]


def test_rest_round_trip_equals_saved_model(server, images, direct):
    want = direct([images["png"], images["jpg"]])
    status, reply = _rest(
        server.rest_port,
        "/v1/models/dnet:predict",
        {"instances": [_b64(images["png"]), _b64(images["jpg"])]},
    )
    assert status == 200 and len(reply["predictions"]) == 2
    for i, row in enumerate(reply["predictions"]):
        for k, v in want.items():
            if v.dtype == object:
                assert row[k] == [s.decode() for s in v[i]]
            else:  # float32 values survive JSON exactly
                np.testing.assert_array_equal(np.asarray(row[k], v.dtype), v[i], err_msg=k)
    status, reply = _rest(
        server.rest_port,
        "/v1/models/dnet/versions/1:predict",
        {"signature_name": "serving_default", "inputs": {"images": [_b64(images["png"])]}},
    )
    assert status == 200
    np.testing.assert_array_equal(
        np.asarray(reply["outputs"]["detection_boxes"], np.float32), want["detection_boxes"][:1]
    )


def test_clients_give_pixel_boxes_worked_by_hand(server, images, tmp_path):
    png_path = tmp_path / "street.png"
    png_path.write_bytes(images["png"])
    with DetectorClient(
        f"127.0.0.1:{server.grpc_port}", "dnet", version_label="stable", timeout_s=30
    ) as c:
        grpc_results = c.detect([png_path, images["jpg"]])
    rest_results = RestDetectorClient(
        f"http://127.0.0.1:{server.rest_port}", "dnet", timeout_s=30
    ).detect([png_path, images["jpg"]])
    a, b = grpc_results
    assert (a.source, a.height, a.width, a.model_version) == (str(png_path), H1, W1, 1)
    # toy detection 0 is [H/4, W/4, 3H/4, 3W/4] with score mean/255; detection 1 is [0, 0, H/2, W/2]
    assert [d.image_yxyx for d in a.detections] == [
        (15.0, 20.0, 45.0, 60.0),
        (0.0, 0.0, 30.0, 40.0),
    ]
    assert [(d.class_id, d.class_name) for d in a.detections] == [(0, "raccoon"), (1, "dog")]
    assert a.detections[0].score == pytest.approx(images["png_pixels"].mean() / 255.0, abs=1e-6)
    assert a.detections[1].score == pytest.approx(0.01)  # marker 1 (= version 1) / 100
    assert b.detections[0].image_yxyx == pytest.approx((11.25, 7.5, 33.75, 22.5))  # H=45, W=30
    # REST reports no version; otherwise the same objects
    for g, r in zip(grpc_results, rest_results):
        assert r.model_version is None and r.detections == g.detections


# ----------------------------------------------------------------------------- metadata and status


def test_metadata_and_status(server, model_dir):
    want = read_signature_defs(model_dir)
    stub = _stub(server.grpc_port)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "dnet"
    response = stub.GetModelMetadata(request, timeout=30)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(sig_map)
    assert dict(sig_map.signature_def) == want and set(want) == {"serving_default", "image_tensor"}
    with DetectorClient(f"127.0.0.1:{server.grpc_port}", "dnet") as client:
        client.check_signature()
        assert client.get_model_status() == [
            {"version": 1, "state": "AVAILABLE", "error_code": "OK", "error_message": ""}
        ]
    rest = RestDetectorClient(f"http://127.0.0.1:{server.rest_port}", "dnet", version=1)
    assert rest.get_model_metadata() == want
    rest.check_signature()
    with pytest.raises(ValueError, match="input 'images' is uint8"):
        DetectorClient(
            f"127.0.0.1:{server.grpc_port}", "dnet", signature_name="image_tensor"
        ).check_signature()

    models = model_service_pb2_grpc.ModelServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    )
    status = models.GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "dnet"}), timeout=30
    )
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    ]
    for path in ("/v1/models/dnet", "/v1/models/dnet/versions/1", "/v1/models/dnet/labels/stable"):
        code, reply = _rest(server.rest_port, path)
        assert code == 200 and reply == {
            "model_version_status": [
                {
                    "version": "1",
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                }
            ]
        }
    code, reply = _rest(server.rest_port, "/v1/models/dnet/labels/stable/metadata")
    assert code == 200 and reply["model_spec"]["version"] == "1"
    assert (
        reply["metadata"]["signature_def"]["@type"]
        == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    )
    assert _rest(server.rest_port, "/v1/models/nope")[0] == 404
    assert _rest(server.rest_port, "/v1/models/dnet/versions/9")[0] == 404


def test_health_and_prometheus_metrics(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "tensorflow.serving.PredictionService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    before = server.metrics.render()
    _rest(server.rest_port, "/v1/models/dnet")
    with urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert resp.headers["Content-Type"].startswith("text/plain")

    def count(t):
        line = [
            ln
            for ln in t.splitlines()
            if ln.startswith(':tensorflow:serving:request_count{model_name="dnet",status="OK"}')
        ]
        return int(line[0].split()[-1]) if line else 0

    assert count(text) == count(before) + 1


# ----------------------------------------------------------------------------- bad input


def _bad_grpc_cases(images):
    return [
        (
            "wrong input name",
            _predict_request([images["png"]], alias="image"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "wrong dtype",
            _predict_request([1.0, 2.0], dtype=tf.float32),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        ("wrong rank", _predict_request([[images["png"]]]), grpc.StatusCode.INVALID_ARGUMENT),
        ("bad image bytes", _predict_request([b"not an image"]), grpc.StatusCode.INVALID_ARGUMENT),
        ("truncated png", _predict_request([images["png"][:40]]), grpc.StatusCode.INVALID_ARGUMENT),
        (
            "unknown signature",
            _predict_request([images["png"]], signature="nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "unknown model",
            _predict_request([images["png"]], name="nope"),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            "too large",
            _predict_request([b"x" * (MAX_REQUEST_BYTES + 1)]),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
    ]


def test_bad_grpc_requests_get_tf_serving_codes_and_server_keeps_serving(server, images, direct):
    stub = _stub(server.grpc_port)
    want = direct([images["png"]])
    cases = _bad_grpc_cases(images)
    for version, label, code in (
        (7, None, grpc.StatusCode.NOT_FOUND),
        (None, "nope", grpc.StatusCode.INVALID_ARGUMENT),
        (None, "canary", grpc.StatusCode.NOT_FOUND),
    ):  # canary -> version 2, not loaded
        request = _predict_request([images["png"]])
        if version:
            request.model_spec.version.value = version
        else:
            request.model_spec.version_label = label
        cases.append((f"version {version} label {label}", request, code))
    for name, request, code in cases:
        with pytest.raises(grpc.RpcError) as e:
            stub.Predict(request, timeout=30)
        assert e.value.code() == code, (name, e.value.details())
        _assert_same(_outputs(stub.Predict(_predict_request([images["png"]]), timeout=30)), want)
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(_predict_request([b"not an image"]), timeout=30)
    # the graph's own message (the decoder's size check), without eager-mode boilerplate
    assert "image bytes too short to be a JPEG, PNG, GIF or BMP" in e.value.details()


def test_bad_rest_requests_get_tf_serving_codes_and_server_keeps_serving(server, images):
    good = {"instances": [_b64(images["png"])]}
    cases = [
        (
            "/v1/models/dnet:predict",
            {"instances": [{"image": _b64(images["png"])}]},
            400,
            "alias not found",
        ),
        (
            "/v1/models/dnet:predict",
            {"instances": [_b64(b"not an image")]},
            400,
            "image bytes too short to be a JPEG, PNG, GIF or BMP",
        ),
        ("/v1/models/dnet:predict", {"instances": [[1.5]]}, 400, ""),
        (
            "/v1/models/dnet:predict",
            {"signature_name": "nope", **good},
            400,
            "not found in signature def",
        ),
        ("/v1/models/dnet:predict", {"images": []}, 400, "Missing 'inputs' or 'instances'"),
        ("/v1/models/nope:predict", good, 404, "Servable not found"),
        ("/v1/models/dnet/versions/7:predict", good, 404, "Specific(dnet, 7)"),
        ("/v1/models/dnet/labels/nope:predict", good, 400, "Unrecognized servable version label"),
        ("/v1/models/dnet:classify", good, 400, "Malformed request"),
        # 8x the limit: more than the socket buffers hold, so the 413 only reaches a client whose
        # body the server has read (answering mid-upload gives the client a broken pipe instead).
        (
            "/v1/models/dnet:predict",
            {"instances": [_b64(b"x" * (8 * MAX_REQUEST_BYTES))]},
            413,
            "exceeds the limit",
        ),
    ]
    for path, body, code, message in cases:
        status, reply = _rest(server.rest_port, path, body)
        assert status == code and message in reply["error"], (path, status, reply)
        status, reply = _rest(server.rest_port, "/v1/models/dnet:predict", good)
        assert status == 200 and reply["predictions"][0]["num_detections"] == 2.0
    req = urllib.request.Request(
        f"http://127.0.0.1:{server.rest_port}/v1/models/dnet:predict", data=b"{not json"
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400 and "JSON Parse error" in json.loads(e.value.read())["error"]


# ----------------------------------------------------------------------------- batching


def test_server_side_batching_groups_concurrent_requests(model_dir, images, direct):
    opts = ServerOptions(
        host="127.0.0.1",
        port=0,
        rest_api_port=0,
        model_name="dnet",
        model_base_path=str(model_dir.parent),
        file_system_poll_wait_seconds=0,
        enable_batching=True,
        batching=BatchingOptions(
            max_batch_size=8, batch_timeout_micros=2_000_000, num_batch_threads=1
        ),
    )
    inputs = [images["png"], images["jpg"], images["png2"]] * 2 + [b"garbage"]
    results = [None] * len(inputs)
    with LocalModelServer(opts) as srv:
        stub = _stub(srv.grpc_port)

        def send(i):
            try:
                results[i] = _outputs(stub.Predict(_predict_request([inputs[i]]), timeout=30))
            except grpc.RpcError as e:
                results[i] = e.code()

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(inputs))]
        for t in threads:
            t.start()
        rest_status, rest_reply = _rest(
            srv.rest_port,
            "/v1/models/dnet:predict",
            {"instances": [_b64(images["jpg"]), _b64(images["png"])]},
        )
        for t in threads:
            t.join()
        sizes = list(srv.batcher.batch_sizes)
    # 7 gRPC requests of 1 image + 1 REST request of 2 images: 9 rows, met in batches of <= 8
    assert sum(sizes) == 9 and len(sizes) < 8 and max(sizes) <= 8
    assert results[-1] == grpc.StatusCode.INVALID_ARGUMENT  # the bad request fails alone
    for data, got in zip(inputs[:-1], results[:-1]):
        _assert_same(got, direct([data]))
    assert rest_status == 200
    want = direct([images["jpg"], images["png"]])
    np.testing.assert_array_equal(
        np.asarray([r["detection_scores"] for r in rest_reply["predictions"]], np.float32),
        want["detection_scores"],
    )


# ----------------------------------------------------------------------------- versions


def test_new_version_is_picked_up_under_load_without_failures(tmp_path, images):
    export_toy_model(tmp_path, "dnet", 1)
    opts = ServerOptions(
        host="127.0.0.1",
        port=0,
        rest_api_port=None,
        model_name="dnet",
        model_base_path=str(tmp_path / "dnet"),
        file_system_poll_wait_seconds=0.1,
    )
    stop = threading.Event()
    seen = [[] for _ in range(4)]  # per client: (version, score of detection 1), in call order
    failures = []
    with LocalModelServer(opts) as srv:

        def client_loop(mine):
            with DetectorClient(
                f"127.0.0.1:{srv.grpc_port}",
                "dnet",
                timeout_s=30,
                retry=RetryPolicy(max_attempts=1),
            ) as client:
                while not stop.is_set():
                    try:
                        outputs, version = client.predict_encoded([images["png"]])
                        mine.append((version, float(outputs["detection_scores"][0, 1])))
                    except Exception as e:  # noqa: BLE001 - every failure counts
                        failures.append(e)

        threads = [threading.Thread(target=client_loop, args=(mine,)) for mine in seen]
        for t in threads:
            t.start()
        time.sleep(0.3)
        export_toy_model(tmp_path, "dnet", 2)  # atomic: staged, then renamed into place
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(m and m[-1][0] == 2 for m in seen):
            time.sleep(0.05)
        time.sleep(0.3)  # keep the load on after the swap
        stop.set()
        for t in threads:
            t.join()
        status = {s.version: s.state for s in srv.manager.status("dnet")}
    assert failures == []
    for mine in seen:
        versions = [v for v, _ in mine]
        assert versions[0] == 1 and versions[-1] == 2
        # one switch per client: once version 2 answered it, version 1 never did again
        assert versions == sorted(versions)
        # every answer's content matches the version it names (detection 1 scores version / 100)
        assert all(abs(score - v / 100) < 1e-6 for v, score in mine)
    State = get_model_status_pb2.ModelVersionStatus
    assert status == {1: State.END, 2: State.AVAILABLE}  # latest 1: version 1 unloaded


def test_versions_and_labels_on_request(tmp_path, images):
    for version in (1, 2, 3):
        export_toy_model(tmp_path, "dnet", version)
    (tmp_path / "models.config").write_text(f"""
        model_config_list {{ config {{
          name: "dnet" base_path: "{tmp_path / "dnet"}"
          model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
          version_labels {{ key: "stable" value: 1 }} }} }}""")
    opts = ServerOptions(
        host="127.0.0.1",
        port=0,
        rest_api_port=0,
        model_config_file=str(tmp_path / "models.config"),
        file_system_poll_wait_seconds=0,
    )
    with LocalModelServer(opts) as srv:
        target = f"127.0.0.1:{srv.grpc_port}"
        answers = {}
        for key, kwargs in (
            ("default", {}),
            ("v1", {"version": 1}),
            ("v2", {"version": 2}),
            ("stable", {"version_label": "stable"}),
        ):
            with DetectorClient(target, "dnet", **kwargs) as client:
                outputs, version = client.predict_encoded([images["png"]])
                answers[key] = (version, round(float(outputs["detection_scores"][0, 1]) * 100, 4))
        with DetectorClient(target, "dnet", version=3) as client:  # on disk, but not in the policy
            with pytest.raises(ServingCallError) as e:
                client.predict_encoded([images["png"]])
        status, reply = _rest(
            srv.rest_port,
            "/v1/models/dnet/labels/stable:predict",
            {"instances": [_b64(images["png"])]},
        )
    # the newest served version answers by default; each version's content (score = version / 100)
    assert answers == {"default": (2, 2.0), "v1": (1, 1.0), "v2": (2, 2.0), "stable": (1, 1.0)}
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    assert status == 200 and reply["predictions"][0]["detection_scores"][1] == pytest.approx(0.01)


# ----------------------------------------------------------------------------- retries


def test_client_retries_unavailable_until_the_server_is_up(model_dir, images, direct):
    grpc_port, rest_port = free_port(), free_port()
    opts = ServerOptions(
        host="127.0.0.1",
        port=grpc_port,
        rest_api_port=rest_port,
        model_name="dnet",
        model_base_path=str(model_dir.parent),
        file_system_poll_wait_seconds=0,
    )
    retry = RetryPolicy(max_attempts=40, initial_backoff_s=0.05, max_backoff_s=0.4)
    started = {}

    def start_later():
        time.sleep(1.0)
        started["server"] = LocalModelServer(opts).start()

    starter = threading.Thread(target=start_later)
    starter.start()
    try:
        with DetectorClient(f"127.0.0.1:{grpc_port}", "dnet", timeout_s=10, retry=retry) as client:
            outputs, version = client.predict_encoded([images["png"]])
            grpc_attempts = client.last_attempts
            # a request above gRPC's 4 MiB default passes: the client and server limits are raised
            noise = np.random.RandomState(5).randint(0, 256, (1100, 1400, 3), dtype=np.uint8)
            big = _encode(noise, "PNG")
            assert len(big) > 4 * 1024 * 1024
            (result,) = client.detect([big])
            assert result.detections[0].image_yxyx == (
                275.0,
                350.0,
                825.0,
                1050.0,
            )  # H/4, W/4, 3H/4, 3W/4
            # INVALID_ARGUMENT is the caller's error: raised at once, never retried
            with pytest.raises(ServingCallError) as e:
                client.predict_encoded([b"not an image"])
            assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and client.last_attempts == 1
        starter.join()
        rest = RestDetectorClient(
            f"http://127.0.0.1:{rest_port}", "dnet", timeout_s=10, retry=retry
        )
        with pytest.raises(ServingCallError) as e:
            rest.predict_encoded([b"not an image"])
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and rest.last_attempts == 1
    finally:
        starter.join()
        if "server" in started:
            started["server"].stop(2)
    assert grpc_attempts > 1 and version == 1
    _assert_same(outputs, direct([images["png"]]))
    # with no server at all, the attempts run out and UNAVAILABLE is raised
    with DetectorClient(
        f"127.0.0.1:{free_port()}",
        "dnet",
        timeout_s=5,
        retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02),
    ) as client:
        with pytest.raises(ServingCallError) as e:
            client.predict_encoded([images["png"]])
    assert e.value.code == grpc.StatusCode.UNAVAILABLE and e.value.attempts == 3


# ----------------------------------------------------------------------------- command lines


def test_client_cli_predict_metadata_status(server, images, tmp_path, capsys):
    png_path = tmp_path / "street.png"
    png_path.write_bytes(images["png"])
    common = [
        "--server",
        f"127.0.0.1:{server.grpc_port}",
        "--model_name",
        "dnet",
        "--timeout",
        "30",
    ]
    assert (
        client_cli.run(
            [
                "predict",
                str(png_path),
                *common,
                "--min_score",
                "0.1",
                "--json",
                str(tmp_path / "out.json"),
                "--draw_dir",
                str(tmp_path / "drawn"),
            ]
        )
        == 0
    )
    (result,) = json.loads((tmp_path / "out.json").read_text())
    # detection 1 (score 0.01) is below --min_score 0.1
    assert [d["image_yxyx"] for d in result["detections"]] == [[15.0, 20.0, 45.0, 60.0]]
    drawn = np.asarray(Image.open(tmp_path / "drawn" / "street.detections.png"))
    assert drawn.shape == (H1, W1, 3)
    # box [15, 20, 45, 60) -> bottom edge on row 44, columns 20..59; row 45 is the original image
    assert (drawn[44, 25:55] != images["png_pixels"][44, 25:55]).any(axis=-1).all()
    np.testing.assert_array_equal(drawn[46:], images["png_pixels"][46:])
    capsys.readouterr()
    assert client_cli.run(["status", *common]) == 0
    assert json.loads(capsys.readouterr().out)[0]["state"] == "AVAILABLE"
    assert client_cli.run(["metadata", "--rest_url", f"http://127.0.0.1:{server.rest_port}"]) == 0
    sigs = json.loads(capsys.readouterr().out)
    assert sigs["serving_default"]["inputs"]["images"]["dtype"] == "DT_STRING"
    assert client_cli.run(["status", *common[:2], "--model_name", "nope"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_server_cli_flags_mirror_tensorflow_model_server():
    args = server_cli.build_parser().parse_args(
        [
            "--model_base_path=models/dnet",
            "--model_name=dnet",
            "--port=9000",
            "--rest_api_port=0",
            "--enable_batching=false",
            "--file_system_poll_wait_seconds",
            "2",
        ]
    )
    opts = server_cli.options_from_args(args)
    assert (opts.port, opts.rest_api_port, opts.enable_batching, opts.model_name) == (
        9000,
        None,
        False,
        "dnet",
    )
    args = server_cli.build_parser().parse_args(
        [
            "--model_base_path",
            "m",
            "--rest_api_port",
            "8501",
            "--enable_batching",
            "--batching_parameters_file",
            "b.txt",
        ]
    )
    opts = server_cli.options_from_args(args)
    assert (opts.rest_api_port, opts.enable_batching, opts.batching_parameters_file) == (
        8501,
        True,
        "b.txt",
    )
    assert server_cli.run(["--model_base_path", "/nonexistent/dnet", "--port", "0"]) == 2


def test_server_cli_sizes_tensorflow_thread_pools_before_loading():
    args = server_cli.build_parser().parse_args(
        ["--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism", "3"]
    )
    assert (args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism) == (1, 3)
    with pytest.raises(
        ValueError, match=r"--tensorflow_inter_op_parallelism must be in \[0, 1024\]"
    ):
        server_cli.set_tensorflow_threads(0, -1)
    # a declared-huge pool is refused before TensorFlow creates a thread
    with pytest.raises(ValueError, match=r"--tensorflow_intra_op_parallelism .* got 1000000"):
        server_cli.set_tensorflow_threads(10**6, 0)
    server_cli.set_tensorflow_threads(0, 0)  # TensorFlow's choice: nothing to set, no error
    tf.constant(1.0) + 1.0  # once an op has run, the pools are fixed, and the error says so
    with pytest.raises(ValueError, match="thread pools"):
        server_cli.set_tensorflow_threads(2, 0)
    # a fresh process, as the server command line is: the pools take the sizes given
    code = (
        "import tensorflow as tf; from dnet_tf.serving import server_cli; "
        "server_cli.set_tensorflow_threads(1, 3); tf.constant(1.0) + 1.0; "
        "t = tf.config.threading; "
        "print(t.get_intra_op_parallelism_threads(), t.get_inter_op_parallelism_threads())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "3"]


def test_start_fails_cleanly_on_a_busy_port(model_dir, server):
    opts = ServerOptions(
        host="127.0.0.1",
        port=0,
        rest_api_port=server.rest_port,
        model_name="dnet",
        model_base_path=str(model_dir.parent),
        file_system_poll_wait_seconds=0,
    )
    with pytest.raises(RuntimeError, match=f"cannot bind REST port {server.rest_port}"):
        LocalModelServer(opts).start()
    with pytest.raises(RuntimeError, match="no loadable version"):
        LocalModelServer(
            ServerOptions(
                host="127.0.0.1",
                port=0,
                rest_api_port=None,
                model_name="dnet",
                model_base_path=str(model_dir.parent / "missing"),
            )
        ).start()
    # the module's server is unaffected
    assert _rest(server.rest_port, "/v1/models/dnet")[0] == 200

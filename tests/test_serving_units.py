"""Unit tests of the serving pieces that need no server: version policy and scanning, retry
backoff, the batch scheduler (with a NumPy stand-in for the model), the REST JSON codec, and the
client's conversion of model outputs into pixel boxes."""

import io
import pathlib
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from dnet_tf.serving import config_files
from dnet_tf.serving.batching import BatchingOptions, BatchScheduler
from dnet_tf.serving.client import RetryPolicy, ServingCallError, call_with_retry
from dnet_tf.serving.detections import Detections, image_size, to_json
from dnet_tf.serving.errors import ServingError, grpc_code_from_value, http_status
from dnet_tf.serving.rest import encode_predict_outputs, parse_predict_body
from dnet_tf.serving.versions import VersionPolicy, scan_versions

REPO = pathlib.Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- versions


def _make_version(base: pathlib.Path, name: str, with_model: bool = True) -> None:
    d = base / name
    d.mkdir(parents=True)
    if with_model:
        (d / "saved_model.pb").write_bytes(b"")


def test_scan_versions_keeps_numeric_dirs_with_a_saved_model(tmp_path):
    for name in ("1", "7", "10"):
        _make_version(tmp_path, name)
    _make_version(tmp_path, ".tmp-11-abc")  # staging directory of an atomic export
    _make_version(tmp_path, "12", with_model=False)  # still being written without staging
    _make_version(tmp_path, "v3")
    (tmp_path / "5").write_text("a file, not a directory")
    assert sorted(scan_versions(tmp_path)) == [1, 7, 10]
    assert scan_versions(tmp_path / "missing") == {}


def test_version_policy_select():
    found = [1, 7, 10, 3]
    assert VersionPolicy().select(found) == {10}
    assert VersionPolicy("latest", num_versions=2).select(found) == {7, 10}
    assert VersionPolicy("latest", num_versions=9).select(found) == {1, 3, 7, 10}
    assert VersionPolicy("all").select(found) == {1, 3, 7, 10}
    assert VersionPolicy("specific", versions=(3, 4)).select(found) == {3}
    with pytest.raises(ValueError, match="num_versions"):
        VersionPolicy("latest", num_versions=0)


def test_version_policy_from_model_config():
    text = """model_config_list { config { name: "a" base_path: "/m/a"
                model_version_policy { specific { versions: 2 versions: 5 } }
                version_labels { key: "stable" value: 2 } }
              config { name: "b" base_path: "rel/b" } }"""
    from google.protobuf import text_format

    cfg = text_format.Parse(text, config_files.ModelServerConfig())
    a, b = config_files.model_sources_from_config(cfg, config_dir="/etc/cfg")
    assert a.policy == VersionPolicy("specific", versions=(2, 5)) and a.label_map == {"stable": 2}
    assert b.policy == VersionPolicy("latest", num_versions=1) and b.base_path == "/etc/cfg/rel/b"


# ----------------------------------------------------------------------------- errors


def test_status_code_tables():
    assert (
        grpc_code_from_value(tf.errors.InvalidArgumentError(None, None, "x").error_code)
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert grpc_code_from_value(5) == grpc.StatusCode.NOT_FOUND
    assert grpc_code_from_value(999) == grpc.StatusCode.UNKNOWN
    assert [
        http_status(c)
        for c in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.OK,
        )
    ] == [400, 404, 503, 200]


# ----------------------------------------------------------------------------- retry


def test_backoff_is_exponential_and_capped():
    policy = RetryPolicy(
        max_attempts=6, initial_backoff_s=0.1, max_backoff_s=0.5, multiplier=2.0, jitter=0.0
    )
    # 0.1 * 2^(k-1) capped at 0.5: 0.1, 0.2, 0.4, 0.5, 0.5
    assert [round(policy.backoff(k), 9) for k in range(1, 6)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    jittered = RetryPolicy(initial_backoff_s=1.0, max_backoff_s=1.0, jitter=0.2)
    assert all(0.8 <= jittered.backoff(1) <= 1.0 for _ in range(50))


def _failing(codes):
    calls = []

    def fn():
        calls.append(1)
        code = codes[len(calls) - 1]
        if code is None:
            return "ok"
        raise ServingCallError(code, "boom")

    return fn, calls


def _retryable(e):
    return isinstance(e, ServingCallError) and e.code == grpc.StatusCode.UNAVAILABLE


def test_retry_only_unavailable_and_bounded():
    policy = RetryPolicy(max_attempts=4, initial_backoff_s=0.1, max_backoff_s=1.0, jitter=0.0)
    sleeps = []
    fn, calls = _failing([grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE, None])
    assert call_with_retry(fn, policy, _retryable, sleep=sleeps.append) == ("ok", 3)
    assert sleeps == [0.1, 0.2]

    sleeps.clear()
    fn, calls = _failing([grpc.StatusCode.INVALID_ARGUMENT, None])
    with pytest.raises(ServingCallError) as e:
        call_with_retry(fn, policy, _retryable, sleep=sleeps.append)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and len(calls) == 1 and sleeps == []

    fn, calls = _failing([grpc.StatusCode.UNAVAILABLE] * 10)
    with pytest.raises(ServingCallError) as e:
        call_with_retry(fn, policy, _retryable, sleep=sleeps.append)
    assert len(calls) == 4 and e.value.attempts == 4 and sleeps == [0.1, 0.2, 0.4]


# ----------------------------------------------------------------------------- batching


def test_batching_options_from_the_repository_file():
    params = config_files.read_batching_parameters(REPO / "serving" / "batching_parameters.txt")
    opts = BatchingOptions.from_proto(params)
    assert (
        opts.max_batch_size,
        opts.batch_timeout_micros,
        opts.max_enqueued_batches,
        opts.num_batch_threads,
    ) == (
        params.max_batch_size.value,
        params.batch_timeout_micros.value,
        params.max_enqueued_batches.value,
        params.num_batch_threads.value,
    )
    assert opts.pad_variable_length_inputs is False
    empty = BatchingOptions.from_proto(config_files.BatchingParameters())
    assert empty == BatchingOptions()  # unset wrapper fields fall back to TF Serving's defaults
    with pytest.raises(ValueError, match="allowed_batch_sizes"):
        BatchingOptions(max_batch_size=8, allowed_batch_sizes=(2, 4)).validate()


class _FakeModel:
    """outputs y = 10 * x + row index inside the batch; records every batch it runs."""

    def __init__(self, delay=0.0):
        self.batches = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, servable, signature, arrays):
        x = arrays["x"]
        with self.lock:
            self.batches.append(x.copy())
        if (x < 0).any():
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "negative input")
        time.sleep(self.delay)
        return {"y": 10 * x, "row": np.arange(x.shape[0])}


def _submit_all(scheduler, requests):
    results = [None] * len(requests)

    def go(i):
        try:
            results[i] = scheduler.submit("servable", "sig", {"x": requests[i]})
        except ServingError as e:
            results[i] = e

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_batch_scheduler_concatenates_and_splits():
    model = _FakeModel()
    scheduler = BatchScheduler(
        BatchingOptions(max_batch_size=8, batch_timeout_micros=10_000_000, num_batch_threads=1),
        model,
    )
    try:
        requests = [
            np.array([i, i + 100]) for i in range(4)
        ]  # 4 requests x 2 rows = one batch of 8
        results = _submit_all(scheduler, requests)
    finally:
        scheduler.close()
    assert len(model.batches) == 1 and model.batches[0].shape == (8,)
    for req, res in zip(requests, results):
        np.testing.assert_array_equal(res["y"], 10 * req)  # each request gets its own rows back
    # the "row" output tells where each request sat in the batch: disjoint pairs covering 0..7
    assert sorted(int(r) for res in results for r in res["row"]) == list(range(8))


def test_batch_scheduler_pads_to_allowed_size_and_rejects_oversize():
    model = _FakeModel()
    scheduler = BatchScheduler(
        BatchingOptions(
            max_batch_size=4,
            batch_timeout_micros=0,
            num_batch_threads=1,
            allowed_batch_sizes=(2, 4),
        ),
        model,
    )
    try:
        out = scheduler.submit("s", "sig", {"x": np.array([5, 6, 7])})
        with pytest.raises(ServingError) as e:
            scheduler.submit("s", "sig", {"x": np.arange(5)})
    finally:
        scheduler.close()
    # 3 rows padded to 4 with a copy of the first row; the padding's output is dropped
    np.testing.assert_array_equal(model.batches[0], [5, 6, 7, 5])
    np.testing.assert_array_equal(out["y"], [50, 60, 70])
    assert (
        e.value.code == grpc.StatusCode.INVALID_ARGUMENT
        and "larger than maximum input batch size 4" in e.value.message
    )


def test_batch_scheduler_isolates_a_bad_request():
    model = _FakeModel()
    scheduler = BatchScheduler(
        BatchingOptions(max_batch_size=6, batch_timeout_micros=10_000_000, num_batch_threads=1),
        model,
    )
    try:
        results = _submit_all(scheduler, [np.array([1, 2]), np.array([-1, 3]), np.array([4, 5])])
    finally:
        scheduler.close()
    assert (
        isinstance(results[1], ServingError) and results[1].code == grpc.StatusCode.INVALID_ARGUMENT
    )
    np.testing.assert_array_equal(results[0]["y"], [10, 20])
    np.testing.assert_array_equal(results[2]["y"], [40, 50])


def test_batch_scheduler_refuses_when_queue_full():
    release, running = threading.Event(), threading.Event()

    def blocking_model(servable, signature, arrays):
        running.set()
        release.wait(10)
        return {"y": 10 * arrays["x"]}

    scheduler = BatchScheduler(
        BatchingOptions(
            max_batch_size=1, batch_timeout_micros=0, num_batch_threads=1, max_enqueued_batches=1
        ),
        blocking_model,
    )
    results = {}

    def submit(key, value):
        results[key] = scheduler.submit("s", "sig", {"x": np.array([value])})

    try:
        a = threading.Thread(target=submit, args=("a", 1))
        a.start()
        assert running.wait(10)  # A runs on the only thread
        b = threading.Thread(target=submit, args=("b", 2))
        b.start()
        deadline = time.monotonic() + 10
        while scheduler.pending_batches() < 1:  # B waits: the queue (1 batch) is full
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(ServingError) as e:
            scheduler.submit("s", "sig", {"x": np.array([3])})
        release.set()
        a.join()
        b.join()
    finally:
        release.set()
        scheduler.close()
    assert e.value.code == grpc.StatusCode.UNAVAILABLE and "queue" in e.value.message
    assert results["a"]["y"].tolist() == [10] and results["b"]["y"].tolist() == [20]


# ----------------------------------------------------------------------------- REST JSON


def test_rest_json_codec_row_and_columnar():
    dtypes = {"images": tf.string}
    arrays, fmt = parse_predict_body({"instances": [{"b64": "aGk="}, {"b64": "eW8="}]}, dtypes)
    assert fmt == "row" and arrays["images"].tolist() == [b"hi", b"yo"]
    arrays, fmt = parse_predict_body({"inputs": {"images": [{"b64": "aGk="}]}}, dtypes)
    assert fmt == "columnar" and arrays["images"].tolist() == [b"hi"]
    pix, _ = parse_predict_body({"instances": [[[[1, 2, 3]]]]}, {"images": tf.uint8})
    assert pix["images"].dtype == np.uint8 and pix["images"].shape == (1, 1, 1, 3)
    for bad, match in (
        ({"instances": [{"image": {"b64": "aGk="}}]}, "alias not found"),
        ({}, "Missing 'inputs' or 'instances'"),
        ({"instances": [{"b64": "***"}]}, "base64"),
        ({"instances": [[[[300, 0, 0]]]]}, "uint8"),
    ):
        with pytest.raises(ServingError, match=match) as e:
            parse_predict_body(bad, dtypes if "300" not in str(bad) else {"images": tf.uint8})
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT

    outputs = {
        "scores": np.array([[0.5, 0.25], [1.0, 0.0]], np.float32),
        "names": np.array([[b"a", b""], [b"b", b""]], dtype=object),
        "raw_bytes": np.array([b"\x00\xff", b"x"], dtype=object),
    }
    row = encode_predict_outputs(outputs, "row")
    assert row["predictions"][0] == {
        "scores": [0.5, 0.25],
        "names": ["a", ""],
        "raw_bytes": {"b64": "AP8="},
    }
    col = encode_predict_outputs({"scores": outputs["scores"]}, "columnar")
    assert col == {"outputs": [[0.5, 0.25], [1.0, 0.0]]}


# ----------------------------------------------------------------------------- detections


def _png(h, w, value=0):
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_detections_become_pixel_boxes():
    outputs = {
        "num_detections": np.array([2.0, 1.0], np.float32),
        "detection_boxes": np.array(
            [
                [[0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.1, 0.1], [0, 0, 0, 0]],
                [[0.5, 0.5, 1.0, 1.0], [0.2, 0.2, 0.3, 0.3], [0, 0, 0, 0]],
            ],
            np.float32,
        ),
        "detection_scores": np.array([[0.9, 0.2, 0.0], [0.6, 0.7, 0.0]], np.float32),
        "detection_classes": np.array([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0]], np.float32),
        "detection_class_names": np.array(
            [[b"dog", b"raccoon", b""], [b"raccoon", b"raccoon", b""]], dtype=object
        ),
    }
    a, b = Detections.batch_from_outputs(
        outputs, [(40, 100), (10, 20)], ["a.png", "b.png"], "dnet", 3, min_score=0.5
    )
    # image a is H=40, W=100: [0.25, 0.5, 0.75, 1.0] * [40, 100, 40, 100] = [10, 50, 30, 100]
    assert [d.image_yxyx for d in a.detections] == [(10.0, 50.0, 30.0, 100.0)]  # 0.2 < min_score
    assert a.detections[0].class_id == 1 and a.detections[0].class_name == "dog"
    # image b keeps only num_detections = 1 entries: the 0.7 one is past it and is padding
    assert [d.image_yxyx for d in b.detections] == [(5.0, 10.0, 10.0, 20.0)]
    assert '"model_version": 3' in to_json([a, b])
    with pytest.raises(ValueError, match="lack"):
        Detections.batch_from_outputs(
            {"num_detections": outputs["num_detections"]}, [(1, 1)], ["x"], "m", 1
        )


def test_image_size_and_drawing():
    data = _png(30, 50)
    assert image_size(data) == (30, 50)
    with pytest.raises(ValueError, match="not a readable image"):
        image_size(b"not an image")
    outputs = {
        "num_detections": np.array([1.0]),
        "detection_boxes": np.array([[[0.2, 0.2, 0.8, 0.6]]]),
        "detection_scores": np.array([[0.9]]),
        "detection_classes": np.array([[1.0]]),
        "detection_class_names": np.array([[b"raccoon"]], dtype=object),
    }
    (result,) = Detections.batch_from_outputs(outputs, [(30, 50)], ["x"], "dnet", 1)
    assert result.detections[0].image_yxyx == pytest.approx((6.0, 10.0, 24.0, 30.0))
    drawn = np.asarray(Image.open(io.BytesIO(result.draw(data))))
    # box [6, 10, 24, 30) drawn as the pixel rectangle x 10..29, y 6..23. Row 21 lies below the
    # label: the box's right edge (x 29) is colored, x 30 just outside and the interior stay black
    assert drawn[21, 29].any() and not drawn[21, 30].any() and not drawn[21, 20].any()
    assert drawn[23, 15].any() and not drawn[24, 15].any()  # bottom edge y 23, y 24 outside

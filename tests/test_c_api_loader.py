"""The export in TF Serving's own loader: TensorFlow's C API (the C++ LoadSavedModel), driven by
ctypes in a process that never imports TensorFlow's Python layer, replays the warm-up records,
answers a batch of real JPEG files exactly as tf.saved_model.load does, and answers
INVALID_ARGUMENT to undecodable bytes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from fakes import coloured_object_image
from PIL import Image

from dnet_tf.export import c_api_loader
from dnet_tf.export.saved_model import SERVING_OUTPUTS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def jpeg_files(tmp_path_factory, raccoon_dir_or_none):
    out = tmp_path_factory.mktemp("jpegs")
    paths = []
    for i, (h, w, box) in enumerate(
        [(240, 320, [50, 60, 170, 220]), (200, 260, [20, 30, 150, 200])]
    ):
        p = out / f"coloured{i}.jpg"
        Image.fromarray(coloured_object_image(h, w, [box])).save(p, quality=95)
        paths.append(p)
    if raccoon_dir_or_none is not None:  # one photograph, when the real set is here
        paths.append(sorted((raccoon_dir_or_none / "JPEGImages").glob("*.jpg"))[0])
    return paths


@pytest.fixture(scope="module")
def raccoon_dir_or_none():
    from conftest import RACCOON

    return RACCOON if (RACCOON / "JPEGImages").is_dir() else None


@pytest.fixture(scope="module")
def c_api_run(fake_export, jpeg_files, tmp_path_factory):
    _, path = fake_export
    npz = tmp_path_factory.mktemp("c_api") / "out.npz"
    cmd = [sys.executable, "-m", "dnet_tf.export.c_api_loader", "--model", str(path)]
    cmd += ["--check_bad_bytes", "--save_outputs", str(npz)] + [str(p) for p in jpeg_files]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), np.load(npz, allow_pickle=True)


def test_c_api_loads_replays_warmup_and_matches_saved_model_load(
    fake_export, jpeg_files, c_api_run
):
    report, got = c_api_run
    _, path = fake_export
    assert report["tf_version"] == tf.__version__  # the same library as this process's
    assert report["tensorflow_python_imported"] is False
    warmup = path / "assets.extra" / "tf_serving_warmup_requests"
    assert report["warmup_records"] == sum(1 for _ in tf.data.TFRecordDataset(str(warmup))) == 2

    blobs = [p.read_bytes() for p in jpeg_files]
    want = tf.saved_model.load(str(path)).signatures["serving_default"](images=tf.constant(blobs))
    assert sorted(got.files) == sorted(SERVING_OUTPUTS)
    for k in SERVING_OUTPUTS:
        if k == "detection_class_names":
            assert (got[k] == want[k].numpy()).all()
        else:
            assert got[k].dtype == want[k].dtype.as_numpy_dtype, k
            np.testing.assert_allclose(got[k], want[k].numpy(), atol=1e-5, err_msg=k)
    # the coloured objects are found where they were drawn (pixels of a 240x320 image)
    first = report["results"][0]["detections"][0]
    assert first["class_name"] == "cat" and first["score"] > 0.5
    np.testing.assert_allclose(first["image_yxyx"], [50, 60, 170, 220], atol=16)


def test_c_api_bad_bytes_give_invalid_argument(c_api_run):
    report, _ = c_api_run
    assert report["bad_bytes_code"] == c_api_loader.INVALID_ARGUMENT == 3


def test_tfrecord_reader_matches_tf_data_and_rejects_corruption(tmp_path):
    path = tmp_path / "r.tfrecord"
    payloads = [b"", b"x", bytes(range(256)) * 40]
    with tf.io.TFRecordWriter(str(path)) as w:
        for p in payloads:
            w.write(p)
    assert list(c_api_loader.read_tfrecords(path)) == payloads
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == payloads
    data = bytearray(path.read_bytes())
    data[33 + 12 + 5] ^= 1  # a bit of the third record's data (records 0, 1 take 16 + 17 bytes)
    bad = tmp_path / "bad.tfrecord"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"record 2 at byte 33: data checksum mismatch"):
        list(c_api_loader.read_tfrecords(bad))
    bad.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="record 2 .* truncated data"):
        list(c_api_loader.read_tfrecords(bad))


def test_masked_crc32c_known_values():
    # CRC-32C check value of "123456789" is 0xE3069283 (RFC 3720 / iSCSI); masked by hand.
    crc = 0xE3069283
    assert (
        c_api_loader.masked_crc32c(b"123456789")
        == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    )


@pytest.mark.parametrize(
    "value",
    [
        np.array([b"ab", b"", b"\x00\xff"], dtype=object),
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([[1, -2]], np.int64),
        np.array([7], np.uint8),
        np.full((2, 2), 3, np.int32),
    ],
)
def test_tensor_proto_to_numpy_matches_make_ndarray(value):
    for proto in (tf.make_tensor_proto(value), tf.make_tensor_proto(value, shape=value.shape)):
        got = c_api_loader.tensor_proto_to_numpy(proto)
        want = tf.make_ndarray(proto)
        assert got.shape == want.shape and (got == want).all()
    if value.dtype != object:
        small = tf.make_tensor_proto(value.ravel()[0], dtype=tf.as_dtype(value.dtype), shape=[2, 2])
        np.testing.assert_array_equal(
            c_api_loader.tensor_proto_to_numpy(small), tf.make_ndarray(small)
        )


def test_warmup_failures_fail_the_load_as_in_tf_serving(fake_export, tmp_path):
    """In this process (the library is the one TensorFlow already loaded): a warm-up request
    that does not fit the signature, and a corrupt record, fail the replay with their cause."""
    import shutil

    from tensorflow_serving.apis import prediction_log_pb2

    _, path = fake_export
    copy = tmp_path / "1"
    shutil.copytree(path, copy)
    warmup = copy / "assets.extra" / "tf_serving_warmup_requests"
    good = warmup.read_bytes()
    logs = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(str(warmup))
    ]
    for log in logs:  # the input under another name than the signature's
        req = log.predict_log.request
        req.inputs["image"].CopyFrom(req.inputs["images"])
        del req.inputs["images"]
    with c_api_loader.CApiSession(copy) as sess:  # the replay reads the file when called
        with tf.io.TFRecordWriter(str(warmup)) as w:
            for log in logs:
                w.write(log.SerializeToString())
        with pytest.raises(ValueError, match=r"takes inputs \['images'\], request has \['image'\]"):
            sess.replay_warmup()
        corrupt = bytearray(good)
        corrupt[-10] ^= 0x40  # inside the last record's data
        warmup.write_bytes(bytes(corrupt))
        with pytest.raises(
            ValueError, match=r"requests: record 1 at byte \d+: data checksum mismatch"
        ):
            sess.replay_warmup()
        warmup.write_bytes(good)
        assert sess.replay_warmup() == 2

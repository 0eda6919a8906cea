"""The exported SavedModel: layout, warm-up file, TF1 session loader parity, bad inputs."""

import dataclasses
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from fakes import coloured_object_image, fake_classifier, fake_localizer
from PIL import Image

from dnet_tf.config import DetectorConfig, InferenceConfig, ModelConfig
from dnet_tf.export.saved_model import SERVING_OUTPUTS, build_signatures, export_module
from dnet_tf.inference.module import DetectorModule


def encode(image, fmt="JPEG"):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.fixture(scope="module")
def module():
    cfg = DetectorConfig(
        model=ModelConfig(num_classes=2),
        inference=dataclasses.replace(InferenceConfig(), max_refine=4, max_detections=10),
    )
    return DetectorModule(
        fake_localizer(num_classes=2),
        fake_classifier(num_classes=2),
        ["cat", "dog"],
        [0.5, 1.0, 2.0],
        cfg,
    )


@pytest.fixture(scope="module")
def exported(module, tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    path = export_module(module, base, "dnet", dataset_stats={"note": "test"})
    return base, path


@pytest.fixture(scope="module")
def sample_jpeg():
    return encode(coloured_object_image(240, 320, [[50, 60, 170, 220]]))


def test_layout_version_assets_and_no_temp_dirs(exported):
    base, path = exported
    assert path == base / "dnet" / "1"
    assert (path / "saved_model.pb").exists() and (path / "variables").is_dir()
    assert (path / "assets" / "class_names.txt").read_text().split() == ["cat", "dog"]
    cfg = DetectorConfig.from_json((path / "assets" / "detector_config.json").read_text())
    assert cfg.inference.max_detections == 10
    # the request budget the graph was built with is recorded beside it
    assert (cfg.inference.max_image_side, cfg.inference.max_images_per_request) == (1024, 16)
    assert sorted(os.listdir(base / "dnet")) == ["1"]  # the temporary directory is gone


def test_warmup_requests_are_prediction_logs(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    _, path = exported
    records = list(
        tf.data.TFRecordDataset(str(path / "assets.extra" / "tf_serving_warmup_requests"))
    )
    assert len(records) >= 1
    log = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
    req = log.predict_log.request
    assert req.model_spec.name == "dnet" and req.model_spec.signature_name == "serving_default"
    image = tf.make_ndarray(req.inputs["images"])[0]
    assert Image.open(io.BytesIO(image)).format == "JPEG"


def test_next_version_and_refusal_to_overwrite(module, exported):
    base, _ = exported
    with pytest.raises(FileExistsError, match="already exists"):
        export_module(module, base, "dnet", version=1)


def test_graph_has_no_python_ops(exported):
    from tensorflow.core.protobuf import saved_model_pb2

    _, path = exported
    sm = saved_model_pb2.SavedModel.FromString((path / "saved_model.pb").read_bytes())
    ops = set()
    for mg in sm.meta_graphs:
        ops.update(n.op for n in mg.graph_def.node)
        for f in mg.graph_def.library.function:
            ops.update(n.op for n in f.node_def)
    assert not ops & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}
    assert "StatefulPartitionedCall" in ops  # the signatures are real graph functions


def test_tf1_session_loader_in_fresh_process_matches_in_memory(
    module, exported, sample_jpeg, tmp_path
):
    _, path = exported
    (tmp_path / "img.jpg").write_bytes(sample_jpeg)
    script = textwrap.dedent(f"""
        import sys
        sys.modules["dnet_tf"] = None  # the model must not need this package
        import numpy as np, tensorflow as tf
        tf.compat.v1.disable_eager_execution()
        data = open({str(tmp_path / "img.jpg")!r}, "rb").read()
        with tf.compat.v1.Session(graph=tf.Graph()) as sess:
            mg = tf.compat.v1.saved_model.loader.load(sess, ["serve"], {str(path)!r})
            sig = mg.signature_def["serving_default"]
            names = sorted(sig.outputs)
            feed = {{sig.inputs["images"].name: [data]}}
            vals = sess.run([sig.outputs[k].name for k in names], feed)
            np.savez({str(tmp_path / "out.npz")!r}, **dict(zip(names, vals)))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "out.npz", allow_pickle=True)  # class names are an object array
    assert sorted(got.files) == sorted(SERVING_OUTPUTS)
    want = build_signatures(module)["serving_default"](tf.constant([sample_jpeg]))
    assert int(got["num_detections"][0]) >= 1
    for k in SERVING_OUTPUTS:
        if k == "detection_class_names":
            assert (got[k] == want[k].numpy()).all()
        else:
            np.testing.assert_allclose(got[k], want[k].numpy(), atol=1e-5, err_msg=k)


@pytest.fixture(scope="module")
def loaded(exported):
    _, path = exported
    return tf.saved_model.load(str(path))


def _bad_inputs(sample_jpeg):
    png = bytearray(encode(np.zeros((8, 8, 3), np.uint8), "PNG"))
    png[16:20] = (60000).to_bytes(4, "big")  # IHDR width
    png[20:24] = (60000).to_bytes(4, "big")  # IHDR height: 3.6 gigapixels declared
    return {
        "empty": b"",
        "random": bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8)),
        "truncated_jpeg": sample_jpeg[: len(sample_jpeg) // 3],
        "huge_declared_png": bytes(png),
    }


@pytest.mark.parametrize("case", ["empty", "random", "truncated_jpeg", "huge_declared_png"])
def test_bad_inputs_raise_invalid_argument(loaded, sample_jpeg, case):
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures["serving_default"](images=tf.constant([_bad_inputs(sample_jpeg)[case]]))
    # and the model still answers afterwards
    out = loaded.signatures["serving_default"](images=tf.constant([sample_jpeg]))
    assert int(out["num_detections"][0]) >= 1


def test_outputs_bounded_for_tiny_and_odd_images(loaded):
    fn = loaded.signatures["serving_default"]
    imgs = [
        encode(np.full((1, 1, 3), 255, np.uint8), "PNG"),
        encode(coloured_object_image(40, 900, [[5, 100, 35, 400]]), "PNG"),
        encode(np.full((30, 30), 128, np.uint8), "BMP"),
    ]
    for data in imgs:
        out = fn(images=tf.constant([data]))
        boxes = out["detection_boxes"].numpy()
        assert np.isfinite(boxes).all() and boxes.min() >= 0 and boxes.max() <= 1
        assert int(out["num_detections"][0]) <= boxes.shape[1] == 10
        assert np.isfinite(out["detection_scores"].numpy()).all()


def test_image_tensor_signature_matches_string_signature(loaded):
    img = coloured_object_image(200, 260, [[30, 40, 150, 200]])
    a = loaded.signatures["image_tensor"](images=tf.constant(img[None]))
    b = loaded.signatures["serving_default"](images=tf.constant([encode(img, "PNG")]))
    for k in ("num_detections", "detection_boxes", "detection_scores", "detection_classes"):
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=1e-5, err_msg=k)


def test_request_budget_in_both_signatures(loaded):
    tiny = encode(np.full((1, 1, 3), 9, np.uint8), "PNG")
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_images_per_request = 16"):
        loaded.signatures["serving_default"](images=tf.constant([tiny] * 17))
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_images_per_request = 16"):
        loaded.signatures["image_tensor"](images=tf.zeros([17, 2, 2, 3], tf.uint8))
    # A 1300 x 1600 image is brought to 832 x 1024 in both signatures alike; boxes stay normalized
    # to the image as sent.
    img = coloured_object_image(1300, 1600, [[300, 400, 900, 1200]])
    a = loaded.signatures["image_tensor"](images=tf.constant(img[None]))
    b = loaded.signatures["serving_default"](images=tf.constant([encode(img, "PNG")]))
    for k in ("num_detections", "detection_boxes", "detection_scores", "detection_classes"):
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=1e-5, err_msg=k)
    assert int(a["num_detections"][0]) >= 1
    best = a["detection_boxes"][0, 0].numpy() * [1300, 1600, 1300, 1600]
    np.testing.assert_allclose(best, [300, 400, 900, 1200], atol=80)

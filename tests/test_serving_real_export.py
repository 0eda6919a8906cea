"""The local server and the clients on the real exported detector graph (dnet_tf.export), with the
stand-in networks of tests/fakes.py. Slow: exporting and running Algorithm 1 takes a while."""

import dataclasses
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

pytestmark = pytest.mark.slow


def test_real_export_served_equals_saved_model(tmp_path):
    saved_model = pytest.importorskip("dnet_tf.export.saved_model", exc_type=ImportError)
    module_lib = pytest.importorskip("dnet_tf.inference.module", exc_type=ImportError)
    fakes = pytest.importorskip("fakes", exc_type=ImportError)
    from dnet_tf.config import DetectorConfig, InferenceConfig, ModelConfig
    from dnet_tf.serving.client import DetectorClient, RestDetectorClient
    from dnet_tf.serving.server import LocalModelServer, ServerOptions

    cfg = DetectorConfig(
        model=ModelConfig(num_classes=2),
        inference=dataclasses.replace(InferenceConfig(), max_refine=4, max_detections=10),
    )
    module = module_lib.DetectorModule(
        fakes.fake_localizer(num_classes=2),
        fakes.fake_classifier(num_classes=2),
        ["cat", "dog"],
        [0.5, 1.0, 2.0],
        cfg,
    )
    version_dir = saved_model.export_module(module, tmp_path, "dnet")
    buf = io.BytesIO()
    Image.fromarray(fakes.coloured_object_image(240, 320, [[50, 60, 170, 220]])).save(
        buf, format="PNG"
    )
    png = buf.getvalue()
    direct = tf.saved_model.load(str(version_dir)).signatures["serving_default"](
        images=tf.constant([png])
    )
    direct = {k: v.numpy() for k, v in direct.items()}

    opts = ServerOptions(
        host="127.0.0.1",
        port=0,
        rest_api_port=0,
        model_name="dnet",
        model_base_path=str(tmp_path / "dnet"),
        file_system_poll_wait_seconds=0,
    )
    with LocalModelServer(opts) as server:  # also replays the export's warmup requests
        with DetectorClient(f"127.0.0.1:{server.grpc_port}", "dnet", timeout_s=300) as client:
            client.check_signature()
            outputs, version = client.predict_encoded([png])
            (result,) = client.detect([png])
        rest = RestDetectorClient(f"http://127.0.0.1:{server.rest_port}", "dnet", timeout_s=300)
        rest.check_signature()
        (rest_result,) = rest.detect([png])
    assert version == 1
    for k, v in direct.items():
        np.testing.assert_array_equal(outputs[k], v, err_msg=k)
    n = int(direct["num_detections"][0])
    assert len(result.detections) == n and rest_result.detections == result.detections
    for det, box in zip(result.detections, direct["detection_boxes"][0]):
        np.testing.assert_allclose(det.image_yxyx, box * [240, 320, 240, 320], rtol=1e-6)

"""Every op of the exported detector has a GPU kernel, except the decoding and string ops.

Read from the kernel registry of the installed TensorFlow (it lists GPU kernels without a GPU):
TF Serving's GPU image then runs the detector on the GPU and only decodes on the CPU.
"""

import dataclasses

import pytest
import tensorflow as tf

from dnet_tf.config import NAMED_CONFIGS, DetectorConfig, InferenceConfig, ModelConfig
from dnet_tf.export import device_kernels
from dnet_tf.export.saved_model import export_module
from dnet_tf.inference.module import DetectorModule
from dnet_tf.models.classifier import build_classifier
from dnet_tf.models.folding import for_inference
from dnet_tf.models.localizer import build_localizer


def test_registry_lookup_on_known_ops():
    assert {"CPU", "GPU"} <= device_kernels.kernel_devices("Conv2D")
    assert device_kernels.kernel_devices("DecodeImage") == {"CPU"}
    # Functional control flow has a DEFAULT kernel: it runs wherever its inputs are.
    assert "DEFAULT" in device_kernels.kernel_devices("StatelessIf")
    assert device_kernels.ops_without_kernel(["Conv2D", "StatelessIf", "DecodeImage"]) == [
        "DecodeImage"
    ]
    assert device_kernels.ops_without_kernel(["DecodeImage"], device="CPU") == []


def test_allowlist_holds_only_ops_that_have_no_gpu_kernel():
    for op in device_kernels.CPU_ONLY_OPS:
        assert device_kernels.ops_without_kernel([op]) == [op], op


@pytest.fixture(scope="module")
def exported_ops(tmp_path_factory):
    # The real networks (random weights) at a small size and one scale: the op types of the
    # graph do not depend on the sizes or the number of scales, the export time does.
    cfg = DetectorConfig(
        model=ModelConfig(num_classes=2, input_size=64, mask_size=8),
        inference=dataclasses.replace(InferenceConfig(), num_scales=1, max_refine=3),
    ).validate()
    module = DetectorModule(
        build_localizer(cfg.model), build_classifier(cfg.model), ["a", "b"], [0.5, 1.0], cfg
    )
    path = export_module(module, tmp_path_factory.mktemp("models"), "dnet")
    return device_kernels.saved_model_op_types(path)


def test_exported_graph_runs_on_the_gpu_but_for_decoding_and_strings(exported_ops):
    # The walk reaches the networks, the search and the NMS inside the function library.
    assert {"Conv2D", "CropAndResize", "TopKV2", "NonMaxSuppressionV4", "MatMul"} <= exported_ops
    # Exactly the allowlisted ops lack a GPU kernel: a new CPU-only op fails here, and so does
    # an allowlist entry the graph no longer needs.
    assert device_kernels.ops_without_kernel(exported_ops) == sorted(device_kernels.CPU_ONLY_OPS)


@pytest.mark.parametrize("name", sorted(NAMED_CONFIGS))
def test_every_named_configs_networks_have_gpu_kernels(name):
    model = dataclasses.replace(NAMED_CONFIGS[name]().model, num_classes=2, input_size=64)
    model = dataclasses.replace(model, mask_size=8).validate()
    # The networks as trained and as the graph runs them (models.folding, the config's
    # network_precision: bfloat16 convolutions, casts).
    precision = NAMED_CONFIGS[name]().inference.network_precision
    ops, nets = set(), []
    for net in (build_localizer(model), build_classifier(model)):
        nets += [net, for_inference(net, precision)]
    for net in nets:
        fn = tf.function(lambda x, net=net: net(x, training=False))
        graph = fn.get_concrete_function(tf.TensorSpec([None, 64, 64, 3], tf.float32)).graph
        ops.update(n.op for n in graph.as_graph_def().node)
        ops.update(n.op for f in graph.as_graph_def().library.function for n in f.node_def)
    assert "Conv2D" in ops or "DepthwiseConv2dNative" in ops
    assert device_kernels.ops_without_kernel(ops) == []

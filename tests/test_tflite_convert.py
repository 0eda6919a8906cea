"""TFLite conversion of the two networks: each variant against the Keras model on fixed crops.

Tiny networks with random weights (ModelConfig(input_size=64, mask_size=8, width=0.25,
num_classes=2)). Random initialisation leaves every output near its bias (masks ~0.12, class
probabilities ~1/3, spread ~0.01), where any error looks small; the last layer's kernel is
multiplied by 40 so outputs span most of [0, 1] (logits of a few units) and the tolerances
below are tested where they matter.
"""

import numpy as np
import pytest
from fakes import coloured_object_image

from dnet_tf.config import ModelConfig
from dnet_tf.models.classifier import build_classifier
from dnet_tf.models.localizer import build_localizer
from dnet_tf.tflite.convert import (
    VARIANTS,
    TensorQuantization,
    TFLiteNetwork,
    convert_model,
    convert_variants,
    keras_network,
    tflite_filename,
)

CFG = ModelConfig(input_size=64, mask_size=8, width=0.25, num_classes=2)

# Max and mean absolute error against Keras, outputs in [0, 1]:
TOLERANCES = {
    # Same float32 arithmetic; only the summation order of the kernels differs (a few ulps over
    # dot products of ~10^3 terms). Measured ~1.5e-6.
    "float32": (1e-5, 1e-6),
    # Weights rounded to 11 significant bits (relative error <= 2^-12 = 2.4e-4 each), computed in
    # float32; a logit of a few units moves by ~1e-3 at most, a sigmoid/softmax output by a
    # quarter of that. Measured <= 7e-4 max, 8e-5 mean.
    "float16": (5e-3, 5e-4),
    # Weights int8 per output channel (step max|w| / 127, ~0.4% of the largest weight) and
    # activations quantized to int8 per batch row on the fly: ~1% relative error per layer over
    # 7 layers, a few percent of a logit. Measured <= 1.8e-2 max, 3.3e-3 mean.
    "dynamic_int8": (0.05, 0.01),
    # Every activation int8 with calibrated ranges, plus the output grid of 1/256 (+-0.002 alone).
    # Measured <= 2.2e-2 max, 3.9e-3 mean.
    "int8": (0.06, 0.01),
}


def crops(seed, n):
    """float32 [n, 64, 64, 3]: a coloured object (0/255 channels) blended with uniform noise."""
    rs = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        y0, x0 = rs.randint(0, 30, 2)
        y1, x1 = y0 + rs.randint(10, 34), x0 + rs.randint(10, 34)
        image = coloured_object_image(64, 64, [[y0, x0, y1, x1]]).astype(np.float32)
        out.append(0.7 * image + 0.3 * rs.uniform(0, 255, image.shape))
    out = np.stack(out).astype(np.float32)
    out[0, 0, 0], out[0, 0, 1] = 0.0, 255.0  # the full pixel range, for the int8 input calibration
    return out


def spread_model(build, last_layer, seed):
    import keras

    keras.utils.set_random_seed(seed)
    model = build(CFG)
    layer = model.get_layer(last_layer)
    weights = layer.get_weights()
    weights[0] = weights[0] * 40.0
    layer.set_weights(weights)
    return model


# The localizer in every variant; the classifier (the same conversion code, a softmax output) in
# the two extremes, to keep the conversions within the test budget.
CONVERTED = {"localizer": VARIANTS, "classifier": ("float32", "int8")}


@pytest.fixture(scope="module")
def converted():
    """{network: (keras model, {variant: bytes})}, int8 calibrated on 16 crops."""
    calibration = crops(1, 16)
    out = {}
    for name, build, last in (
        ("localizer", build_localizer, "masks"),
        ("classifier", build_classifier, "class_probs"),
    ):
        model = spread_model(build, last, seed=1)
        out[name] = (model, convert_variants(model, CONVERTED[name], calibration))
    return out


@pytest.fixture(scope="module")
def held_out():
    return crops(2, 12)


@pytest.mark.parametrize("network,variant", [(n, v) for n, vs in CONVERTED.items() for v in vs])
def test_variant_matches_keras_within_its_tolerance(converted, held_out, network, variant):
    model, files = converted[network]
    want = keras_network(model)(held_out)
    assert want.std() > 0.1  # outputs spread over [0, 1], not stuck at the bias
    got = TFLiteNetwork(files[variant])(held_out)
    assert got.shape == want.shape and got.dtype == np.float32
    err = np.abs(got - want)
    max_tol, mean_tol = TOLERANCES[variant]
    assert err.max() <= max_tol, (network, variant, err.max())
    assert err.mean() <= mean_tol, (network, variant, err.mean())
    if network == "classifier":  # still probabilities
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=0.02 if "int8" in variant else 1e-3)


def test_quantized_variants_are_not_float32_in_disguise(converted, held_out):
    # The float32 file reproduces Keras to 1e-5; a "quantized" file doing the same would mean the
    # optimisation silently did nothing.
    model, files = converted["localizer"]
    want = keras_network(model)(held_out)
    for variant in ("float16", "dynamic_int8", "int8"):
        assert np.abs(TFLiteNetwork(files[variant])(held_out) - want).max() > 1e-5, variant


def test_file_sizes_follow_the_weight_precision(converted):
    # ~2.2 M weights dominate the files: float16 halves them, int8 quarters them.
    files = converted["localizer"][1]
    f32 = len(files["float32"])
    assert 0.45 <= len(files["float16"]) / f32 <= 0.55
    assert 0.22 <= len(files["dynamic_int8"]) / f32 <= 0.30
    assert 0.22 <= len(files["int8"]) / f32 <= 0.30
    assert (
        0.22
        <= len(converted["classifier"][1]["int8"]) / len(converted["classifier"][1]["float32"])
        <= 0.30
    )


def test_full_integer_interface_uint8_pixels_in_int8_out(converted):
    for network in ("localizer", "classifier"):
        net = TFLiteNetwork(converted[network][1]["int8"])
        q_in, q_out = net.input_quantization, net.output_quantization
        # Calibration crops span 0..255, so one uint8 step is one pixel level and 0 is 0.
        assert q_in.dtype is np.uint8 and q_in.zero_point == 0 and abs(q_in.scale - 1.0) < 1e-3
        # Sigmoid and softmax outputs have TFLite's fixed int8 grid: [0, 1) in steps of 1/256.
        assert q_out.dtype is np.int8 and q_out.scale == 1.0 / 256 and q_out.zero_point == -128
    for variant in ("float32", "float16", "dynamic_int8"):
        net = TFLiteNetwork(converted["localizer"][1][variant])
        assert not net.input_quantization.quantized and not net.output_quantization.quantized


def test_batches_of_any_size_and_chunks_give_the_same_outputs(converted, held_out):
    files = converted["localizer"][1]
    net = TFLiteNetwork(files["float32"])
    whole = net(held_out)
    one_by_one = np.concatenate([net(held_out[i : i + 1]) for i in range(len(held_out))])
    np.testing.assert_allclose(whole, one_by_one, atol=1e-6)
    chunked = TFLiteNetwork(files["float32"], max_batch=5)(held_out)  # 5 + 5 + 2
    np.testing.assert_allclose(chunked, whole, atol=1e-6)
    assert net(held_out[:0]).shape == (0, 8, 8, 5, 2)


def test_tensor_quantization_worked_by_hand():
    q = TensorQuantization(np.uint8, 0.5, 10)
    # round(3.2 / 0.5) + 10 = round(6.4) + 10 = 16; 1000 saturates at 255; -100 at 0.
    np.testing.assert_array_equal(q.quantize(np.array([3.2, 1000.0, -100.0])), [16, 255, 0])
    # 0.5 * (16 - 10) = 3.0
    np.testing.assert_array_equal(q.dequantize(np.array([16], np.uint8)), [3.0])
    s8 = TensorQuantization(np.int8, 1.0 / 256, -128)
    # A sigmoid output of 0.5 sits at step 128 above -128, i.e. 0.
    np.testing.assert_array_equal(s8.quantize(np.array([0.5, 0.0, 1.0])), [0, -128, 127])
    assert TensorQuantization(np.float32, 0.0, 0).quantize(np.array([1.25]))[0] == np.float32(1.25)


def test_bad_requests_fail_clearly(converted, tmp_path):
    model = converted["classifier"][0]
    with pytest.raises(ValueError, match="unknown TFLite variant"):
        convert_model(model, "int4")
    with pytest.raises(ValueError, match="needs representative_images"):
        convert_model(model, "int8")
    with pytest.raises(ValueError, match="representative_images have shape"):
        convert_model(model, "int8", np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="TFLite model not found"):
        TFLiteNetwork(tmp_path / "missing.tflite")
    net = TFLiteNetwork(converted["classifier"][1]["float32"])
    with pytest.raises(ValueError, match=r"expects images \[N, 64, 64, 3\]"):
        net(np.zeros((1, 32, 32, 3), np.float32))
    assert tflite_filename("localizer", "int8") == "localizer_int8.tflite"
    with pytest.raises(ValueError, match="unknown network"):
        tflite_filename("detector", "int8")


def test_float32_tflite_networks_give_the_keras_detections_through_the_edge_pipeline(converted):
    import dataclasses

    from dnet_tf.config import DetectorConfig, InferenceConfig
    from dnet_tf.tflite.edge_pipeline import EdgePipeline

    # The spread random networks give masks with structure (random blobs of coverage > 0.5)
    # that the search turns into detections; the classifier threshold is off so that they stay.
    cfg = DetectorConfig(
        model=CFG,
        inference=dataclasses.replace(InferenceConfig(), max_refine=8, classifier_threshold=0.0),
    )
    names, aspects = ["cat", "dog"], [0.5, 1.0, 2.0]
    (loc, loc_files), (cls, cls_files) = converted["localizer"], converted["classifier"]
    reference = EdgePipeline(keras_network(loc), keras_network(cls), names, aspects, cfg)
    lite = EdgePipeline(
        TFLiteNetwork(loc_files["float32"]),
        TFLiteNetwork(cls_files["float32"]),
        names,
        aspects,
        cfg,
    )
    rng = np.random.default_rng(0)
    image = np.clip(
        coloured_object_image(240, 320, [[40, 60, 180, 220]]) * 0.8
        + rng.uniform(0, 50, (240, 320, 3)),
        0,
        255,
    ).astype(np.uint8)
    want, got = reference.detect(image), lite.detect(image)
    n = int(want["num_detections"])
    assert n >= 2  # not vacuous
    # float32 TFLite differs from Keras by ~1e-6 per output: the same boxes, scores to 1e-4.
    assert got["num_detections"] == n
    scale = np.array([240, 320, 240, 320])
    np.testing.assert_allclose(
        got["detection_boxes"][:n] * scale, want["detection_boxes"][:n] * scale, atol=0.01
    )
    np.testing.assert_allclose(got["detection_scores"], want["detection_scores"], atol=1e-4)
    np.testing.assert_array_equal(got["detection_classes"], want["detection_classes"])

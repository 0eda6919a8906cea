"""Localizer, classifier, backbones and heads: layouts, config round-trips, .keras save/load."""

import dataclasses

import keras
import numpy as np
import pytest

from dnet_tf.config import ModelConfig
from dnet_tf.constants import FULL, LEFT, NUM_MASK_TYPES
from dnet_tf.models import (
    ConvMaskHead,
    DenseMaskHead,
    build_classifier,
    build_embedding,
    build_localizer,
    build_trunk,
)
from dnet_tf.models.backbones import PaperWidths
from dnet_tf.training.recipe import init_localizer_from_classifier

TINY = ModelConfig(num_classes=2, input_size=64, mask_size=8, width=0.25)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _images(n=2, size=64, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def test_paper_widths_scale_alexnet_channels():
    # [14]: 96, 256, 384, 384, 256 channels and 4096 FC units at width 1.
    full = PaperWidths.at(1.0)
    assert full.conv == (96, 256, 384, 384, 256) and full.fc == 4096
    # width 0.25: 96/4 = 24, 256/4 = 64, 384/4 = 96, 4096/4 = 1024 (all multiples of 8).
    quarter = PaperWidths.at(0.25)
    assert quarter.conv == (24, 64, 96, 96, 64) and quarter.fc == 1024


def test_paper_backbone_grid_at_the_papers_225_input():
    cfg = ModelConfig(input_size=225, width=0.25)
    trunk = build_trunk(cfg)
    # conv1 11x11 stride 4, valid: floor((225 - 11) / 4) + 1 = 54; pool1 (same, stride 2): 27;
    # conv2 keeps 27; pool2: ceil(27 / 2) = 14; conv3-5 keep 14 -> 14 x 14 x 64 features.
    assert trunk.output_shape == (None, 14, 14, 64)
    embedding = build_embedding(cfg, trunk.output_shape[1:])
    # pool5: ceil(14 / 2) = 7 -> flatten 7 * 7 * 64 = 3136 inputs to fc6 of 1024 units.
    assert embedding.get_layer("fc6").kernel.shape == (3136, 1024)
    assert embedding.get_layer("fc7").kernel.shape == (1024, 1024)
    assert trunk.get_layer("conv1").kernel.shape == (11, 11, 3, 24)


def test_unknown_backbone_is_named_in_the_error():
    with pytest.raises(ValueError, match="backbone.*resnet"):
        build_localizer(dataclasses.replace(TINY, backbone="resnet"))


def test_dense_head_output_layout():
    # Zero kernel, bias b_k = k / 100: output [i, j, t, c] must be sigmoid(b_k) with
    # k = ((i * d + j) * 5 + t) * C + c, i.e. row-major over (i, j, mask type, class).
    d, c = 3, 2
    head = DenseMaskHead(d, c)
    head.build((None, 4))
    n_out = d * d * NUM_MASK_TYPES * c
    head.regression.set_weights(
        [np.zeros((4, n_out), np.float32), (np.arange(n_out) / 100.0).astype(np.float32)]
    )
    out = np.asarray(head(np.ones((1, 4), np.float32)))
    assert out.shape == (1, d, d, NUM_MASK_TYPES, c)
    i, j, t, k = 2, 1, LEFT, 1
    index = ((i * d + j) * NUM_MASK_TYPES + t) * c + k  # ((2 * 3 + 1) * 5 + 3) * 2 + 1 = 77
    assert index == 77
    assert out[0, i, j, t, k] == pytest.approx(_sigmoid(0.77), abs=1e-6)
    np.testing.assert_allclose(out.reshape(-1), _sigmoid(np.arange(n_out) / 100.0), atol=1e-6)


def test_conv_head_channel_layout_and_orientation():
    # Features already d x d, so the resize is the identity. Reduction and context convolutions:
    # 1 channel passing the (positive) input through (weight 1, at the 3 x 3 kernel's centre).
    # Logits: channel t * C + k gets weight w_tk and bias b_tk. Then
    # out[i, j, t, k] = sigmoid(w_tk * f[i, j] + b_tk).
    d, c = 4, 2
    head = ConvMaskHead(d, c, hidden=1)
    head.build((None, d, d, 1))
    head.reduce.set_weights([np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32)])
    ctx_kernel = np.zeros((3, 3, 1, 1), np.float32)
    ctx_kernel[1, 1, 0, 0] = 1.0
    head.context.set_weights([ctx_kernel, np.zeros(1, np.float32)])
    w = np.zeros((1, 1, 1, NUM_MASK_TYPES * c), np.float32)
    b = np.zeros(NUM_MASK_TYPES * c, np.float32)
    w[0, 0, 0, FULL * c + 1] = 1.0  # full mask of class 1 follows the feature
    b[LEFT * c + 0] = 3.0  # left mask of class 0 is a constant sigmoid(3)
    head.logits.set_weights([w, b])
    f = np.arange(d * d, dtype=np.float32).reshape(1, d, d, 1) / 10.0  # f[i, j] = (4 i + j) / 10
    out = np.asarray(head(f))
    np.testing.assert_allclose(out[0, :, :, FULL, 1], _sigmoid(f[0, :, :, 0]), atol=1e-6)
    assert out[0, 2, 3, FULL, 1] == pytest.approx(_sigmoid(1.1), abs=1e-6)  # (4 * 2 + 3) / 10
    np.testing.assert_allclose(out[0, :, :, LEFT, 0], _sigmoid(3.0), atol=1e-6)
    np.testing.assert_allclose(out[0, :, :, FULL, 0], 0.5, atol=1e-6)


def test_conv_head_resizes_features_onto_the_mask_grid():
    # A 2 x 2 feature map onto a 4 x 4 mask: with half-pixel centres, mask cell centres
    # (i + 0.5) / 4 map to feature coordinates (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25,
    # clamped to [0, 1]: rows 0, 0.25, 0.75, 1. A feature map that is 0 in row 0 and 1 in row 1
    # therefore gives mask rows 0, 0.25, 0.75, 1 (pre-sigmoid, the identity path above).
    d, c = 4, 1
    head = ConvMaskHead(d, c, hidden=1)
    head.build((None, 2, 2, 1))
    head.reduce.set_weights([np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32)])
    ctx_kernel = np.zeros((3, 3, 1, 1), np.float32)
    ctx_kernel[1, 1, 0, 0] = 1.0
    head.context.set_weights([ctx_kernel, np.zeros(1, np.float32)])
    w = np.zeros((1, 1, 1, NUM_MASK_TYPES * c), np.float32)
    w[0, 0, 0, FULL] = 1.0
    head.logits.set_weights([w, np.zeros(NUM_MASK_TYPES * c, np.float32)])
    f = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32).reshape(1, 2, 2, 1)
    out = np.asarray(head(f))[0, :, :, FULL, 0]
    expected_rows = _sigmoid(np.array([0.0, 0.25, 0.75, 1.0]))
    np.testing.assert_allclose(out, np.repeat(expected_rows[:, None], 4, axis=1), atol=1e-6)


@pytest.mark.parametrize(
    "head_cls,kwargs,feature_shape",
    [
        (DenseMaskHead, dict(mask_size=5, num_classes=3, bias_init=-1.5), (2, 7)),
        (ConvMaskHead, dict(mask_size=6, num_classes=2, hidden=16, bias_init=-2.0), (2, 3, 3, 8)),
    ],
)
def test_head_config_round_trip(head_cls, kwargs, feature_shape):
    head = head_cls(name="masks", **kwargs)
    x = np.random.default_rng(1).normal(size=feature_shape).astype(np.float32)
    y = np.asarray(head(x))
    config = head.get_config()
    for key, value in kwargs.items():
        assert config[key] == value
    clone = head_cls.from_config(config)
    assert clone.get_config() == config
    clone(x)
    clone.set_weights(head.get_weights())
    np.testing.assert_array_equal(np.asarray(clone(x)), y)
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert type(revived) is head_cls and revived.get_config() == config


def test_head_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mask_size"):
        DenseMaskHead(0, 2)
    with pytest.raises(ValueError, match="num_classes"):
        ConvMaskHead(4, 1.5)


@pytest.mark.parametrize("backbone,head", [("paper", "dense"), ("mobilenet_v3_small", "conv")])
def test_localizer_save_load_round_trip(tmp_path, backbone, head):
    cfg = dataclasses.replace(TINY, backbone=backbone, head=head)
    model = build_localizer(cfg)
    x = _images()
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, 8, 8, 5, 2)
    assert np.all((y >= 0) & (y <= 1))
    path = tmp_path / "localizer.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), y, atol=1e-6)
    # Functional config round trip gives the same architecture (same weight shapes, same names).
    clone = keras.Model.from_config(model.get_config())
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]


def test_classifier_probabilities_and_save_load(tmp_path):
    model = build_classifier(TINY)
    x = _images(3)
    p = np.asarray(model(x, training=False))
    assert p.shape == (3, TINY.num_classes + 1)  # background + 2 classes
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, atol=1e-5)
    path = tmp_path / "classifier.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), p, atol=1e-6)


@pytest.mark.parametrize("head,copied", [("dense", ["trunk", "embedding"]), ("conv", ["trunk"])])
def test_localizer_initialised_from_classifier(head, copied):
    cfg = dataclasses.replace(TINY, head=head)
    classifier, localizer = build_classifier(cfg), build_localizer(cfg)
    x = _images()
    before = np.asarray(localizer.get_layer("trunk")(x))
    assert init_localizer_from_classifier(localizer, classifier) == copied
    for name in copied:
        pairs = zip(
            localizer.get_layer(name).get_weights(), classifier.get_layer(name).get_weights()
        )
        for a, b in pairs:
            np.testing.assert_array_equal(a, b)
    after = np.asarray(localizer.get_layer("trunk")(x))
    np.testing.assert_allclose(after, np.asarray(classifier.get_layer("trunk")(x)), atol=1e-6)
    assert not np.allclose(before, after)  # the two networks started from different weights

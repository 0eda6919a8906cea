"""The inference copies of the networks (models.folding): batch norm and the input's rescaling
folded into the convolutions, the same function as the trained network."""

import dataclasses

import keras
import numpy as np
import pytest
from keras import layers

from dnet_tf.config import named_config
from dnet_tf.models.classifier import build_classifier
from dnet_tf.models.folding import fold_trunk, for_inference
from dnet_tf.models.localizer import build_localizer


def _randomise_batch_norms(model, rng):
    """Moving statistics and affine weights far from their initial (identity) values."""
    for layer in model.get_layer("trunk").layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n))
            layer.beta.assign(rng.normal(0.0, 0.2, n))
            layer.moving_mean.assign(rng.normal(0.0, 0.5, n))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n))


def test_hand_worked_fold_of_rescaling_conv_and_batch_norm():
    # x -> x * 0.5 - 1 -> 3 x 3 "valid" conv of ones -> BN(gamma 2, beta 1, mean 3, var 4 - eps).
    # On x = 4 everywhere: rescaled 1, conv 9, BN 2 (9 - 3) / 2 + 1 = 7. Folded: kernel
    # 0.5 * 1 * (2 / 2) = 0.5 per tap, bias (-1 * 9) * 1 + (1 - 1 * 3) = -11; 9 * 0.5 * 4 - 11 = 7.
    inputs = keras.Input((3, 3, 1), name="images")
    x = layers.Rescaling(0.5, offset=-1.0)(inputs)
    conv = layers.Conv2D(1, 3, padding="valid", use_bias=False, name="conv1")
    x = conv(x)
    bn = layers.BatchNormalization(name="conv1_bn")
    x = layers.ReLU()(bn(x))
    trunk = keras.Model(inputs, x, name="trunk")
    conv.set_weights([np.ones((3, 3, 1, 1), np.float32)])
    bn.set_weights(
        [np.array([2.0]), np.array([1.0]), np.array([3.0]), np.array([4.0 - bn.epsilon])]
    )

    folded = fold_trunk(trunk)
    kinds = [type(layer) for layer in folded.layers]
    assert layers.BatchNormalization not in kinds and layers.Rescaling not in kinds
    (conv_f,) = [layer for layer in folded.layers if isinstance(layer, layers.Conv2D)]
    kernel, bias = conv_f.get_weights()
    np.testing.assert_allclose(kernel, np.full((3, 3, 1, 1), 0.5), rtol=1e-6)
    np.testing.assert_allclose(bias, [-11.0], rtol=1e-6)
    image = np.full((1, 3, 3, 1), 4.0, np.float32)
    np.testing.assert_allclose(folded(image).numpy().ravel(), [7.0], rtol=1e-6)
    np.testing.assert_allclose(trunk(image, training=False).numpy().ravel(), [7.0], rtol=1e-6)


def test_rescaling_before_a_same_padded_conv_is_kept():
    # Zero padding of the rescaled input is not zero padding of the raw one: only the batch norm
    # folds, and the borders still agree.
    rng = np.random.default_rng(1)
    inputs = keras.Input((6, 6, 2), name="images")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    conv = layers.Conv2D(3, 3, padding="same", use_bias=False)
    bn = layers.BatchNormalization()
    trunk = keras.Model(inputs, bn(conv(x)), name="trunk")
    conv.set_weights([rng.normal(size=(3, 3, 2, 3)).astype(np.float32)])
    bn.set_weights(
        [rng.uniform(0.5, 1.5, 3), rng.normal(size=3), rng.normal(size=3), rng.uniform(0.5, 2, 3)]
    )
    folded = fold_trunk(trunk)
    kinds = [type(layer) for layer in folded.layers]
    assert layers.Rescaling in kinds and layers.BatchNormalization not in kinds
    image = rng.uniform(0, 255, (2, 6, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(
        folded(image).numpy(), trunk(image, training=False).numpy(), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("config_name", ["paper", "paper_full"])
def test_folded_networks_compute_the_trained_ones(config_name):
    rng = np.random.default_rng(0)
    model_cfg = dataclasses.replace(named_config(config_name).model, num_classes=3)
    image = rng.uniform(0, 255, (3, model_cfg.input_size, model_cfg.input_size, 3))
    for network in (build_localizer(model_cfg), build_classifier(model_cfg)):
        _randomise_batch_norms(network, rng)
        served = for_inference(network)
        assert served is not network and served.name == network.name
        trunk_layers = served.get_layer("trunk").layers
        assert not any(isinstance(layer, layers.BatchNormalization) for layer in trunk_layers)
        # Every layer after the trunk is the trained network's own (the same weights).
        for layer in served.layers[2:]:
            assert network.get_layer(layer.name) is layer
        want = network(image.astype(np.float32), training=False).numpy()
        got = served(image.astype(np.float32), training=False).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_networks_without_a_foldable_trunk_are_returned_as_they_are():
    model_cfg = dataclasses.replace(named_config("mobilenet_v3_small").model, num_classes=2)
    mobilenet = build_localizer(model_cfg)  # its trunk is not a chain
    assert for_inference(mobilenet) is mobilenet
    inputs = keras.Input((8, 8, 3))
    plain = keras.Model(inputs, layers.Dense(2)(layers.Flatten()(inputs)))
    assert for_inference(plain) is plain


def test_bfloat16_trunk_stays_close_to_float32():
    from dnet_tf.core.policy import NETWORK_PRECISIONS
    from dnet_tf.models.folding import POLICIES

    assert set(POLICIES) == set(NETWORK_PRECISIONS)
    rng = np.random.default_rng(2)
    model_cfg = dataclasses.replace(named_config("paper").model, num_classes=3)
    image = rng.uniform(0, 255, (2, model_cfg.input_size, model_cfg.input_size, 3))
    image = image.astype(np.float32)
    for network in (build_localizer(model_cfg), build_classifier(model_cfg)):
        _randomise_batch_norms(network, rng)
        served = for_inference(network, "bfloat16")
        convs = [
            layer for layer in served.get_layer("trunk").layers if isinstance(layer, layers.Conv2D)
        ]
        assert len(convs) == 5
        assert all(c.compute_dtype == "bfloat16" and c.kernel.dtype == "float32" for c in convs)
        got = served(image, training=False)
        assert got.dtype == "float32"  # the heads compute in float32
        want = network(image, training=False).numpy()
        # bfloat16 keeps 8 significant bits: sigmoid masks and softmax probabilities in [0, 1]
        # move by about 1e-3, far from the 0.5 coverage threshold's scale.
        np.testing.assert_allclose(got.numpy(), want, atol=2e-2)
        assert float(np.max(np.abs(got.numpy() - want))) > 1e-6  # it did compute in bfloat16


def test_bfloat16_needs_a_foldable_trunk():
    inputs = keras.Input((8, 8, 3))
    plain = keras.Model(inputs, layers.Dense(2)(layers.Flatten()(inputs)), name="plain")
    with pytest.raises(ValueError, match="network_precision.*'plain'"):
        for_inference(plain, "bfloat16")
    with pytest.raises(ValueError, match="precision must be one of"):
        fold_trunk(build_localizer(named_config("paper").model).get_layer("trunk"), "int8")

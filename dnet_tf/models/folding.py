"""Inference copies of the networks with the per-channel affine layers folded into the convolutions.

At inference a BatchNormalization layer is a fixed affine map per channel,
y = s (x - mean) + beta with s = gamma / sqrt(moving_variance + epsilon). After a convolution
without bias it folds into that convolution: kernel' = kernel * s (per output channel),
bias' = beta - s * mean. The input's Rescaling (x * a + b) folds into the first convolution
when that one is "valid"-padded (every output reads only real pixels): kernel' = a * kernel,
bias' += b * (sum of the kernel over its taps and input channels). The folded network computes the
same function up to float rounding (a few 1e-7 on the masks), with two elementwise passes per
layer fewer, and TensorFlow's graph optimiser fuses each convolution with its bias and ReLU into
one kernel (x0.90-0.96 per localizer call on a 2-core CPU; README "Speed").

With ``precision`` "bfloat16" the folded trunk computes in bfloat16 (Keras' "mixed_bfloat16"
policy: float32 weights, bfloat16 arithmetic; oneDNN's bfloat16 convolutions on CPUs with
AVX512_BF16 or AMX), the layers after it in float32 as before.

The copies are snapshots: their weights are computed from the trained network's when they are
built (the inference graph is built from a finished run). Only the chain-shaped trunk of the
"paper" backbone folds; any other network (MobileNetV3's trunk, the tests' stand-ins) is
returned as it is.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

TRUNK = "trunk"  # the backbone's sub-model name (models.backbones)


def _chain(model: keras.Model) -> list | None:
    """The layers of a functional model after its one input, when each reads the one before
    (a chain); else None."""
    if not isinstance(model, keras.Model) or len(model.inputs or []) != 1:
        return None
    body = [layer for layer in model.layers if not isinstance(layer, layers.InputLayer)]
    previous = model.inputs[0]
    for layer in body:
        nodes = getattr(layer, "_inbound_nodes", [])
        owned = [n for n in nodes if any(t is previous for t in n.input_tensors)]
        if len(owned) != 1 or len(owned[0].input_tensors) != 1:
            return None
        previous = owned[0].output_tensors[0]
    return body if previous is model.outputs[0] else None


def _batch_norm_affine(bn: layers.BatchNormalization) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) [channels] float64 of a BatchNormalization at inference."""
    mean = np.asarray(bn.moving_mean, np.float64)
    var = np.asarray(bn.moving_variance, np.float64)
    gamma = np.asarray(bn.gamma, np.float64) if bn.scale else np.ones_like(mean)
    beta = np.asarray(bn.beta, np.float64) if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + bn.epsilon)
    return scale, beta - scale * mean


def _foldable_conv(layer) -> bool:
    return (
        type(layer) is layers.Conv2D
        and layer.activation in (keras.activations.linear, None)
        and layer.data_format == "channels_last"
        and layer.groups == 1
    )


def _as(layer, dtype):
    """``layer`` itself, or (dtype given) a copy of its config computing in ``dtype``: for
    layers without weights (ReLU, pooling, Rescaling)."""
    if dtype is None:
        return layer
    return type(layer).from_config(
        {**layer.get_config(), "dtype": dtype, "name": f"{layer.name}_mixed"}
    )


# Keras dtype policy of each precision (core.policy.NETWORK_PRECISIONS; None: the layers' own,
# float32).
POLICIES = {"float32": None, "bfloat16": "mixed_bfloat16"}


def fold_trunk(trunk: keras.Model, precision: str = "float32") -> keras.Model | None:
    """The trunk with each Conv2D -> BatchNormalization pair as one Conv2D with bias, and an
    input Rescaling folded into a "valid" first convolution.

    Args:
      trunk: chain-shaped keras.Model [B, S, S, 3] -> [B, h, w, c] (models.backbones "paper").
      precision: "float32" or "bfloat16" (the new trunk's arithmetic; see the module docstring).
    Returns:
      a new keras.Model named ``trunk.name`` computing the same function (float32 output for
      "float32", bfloat16 for "bfloat16"), or None when nothing folds (not a chain, or no
      Conv2D -> BatchNormalization pair); in float32 the other layers (ReLU, pooling) are
      shared with ``trunk``.
    Raises:
      ValueError: an unknown precision.
    """
    if precision not in POLICIES:
        raise ValueError(f"precision must be one of {list(POLICIES)}, got {precision!r}")
    dtype = POLICIES[precision]
    body = _chain(trunk)
    if body is None:
        return None
    inputs = keras.Input(trunk.inputs[0].shape[1:], name=trunk.inputs[0].name)
    x, folded_any, i = inputs, False, 0
    while i < len(body):
        layer = body[i]
        rescale = None
        if (
            isinstance(layer, layers.Rescaling)
            and i + 1 < len(body)
            and _foldable_conv(body[i + 1])
            and body[i + 1].padding == "valid"
            and np.ndim(layer.scale) == 0
            and np.ndim(layer.offset) == 0
        ):
            rescale, i = (float(layer.scale), float(layer.offset)), i + 1
            layer = body[i]
        bn = body[i + 1] if i + 1 < len(body) else None
        # A batch norm over the channels (the last axis) folds; one over another axis does not.
        fold_bn = isinstance(bn, layers.BatchNormalization) and bn.axis in (-1, 3, [-1], [3])
        if _foldable_conv(layer) and (rescale is not None or fold_bn):
            kernel = np.asarray(layer.kernel, np.float64)  # [kh, kw, cin, cout]
            bias = (
                np.asarray(layer.bias, np.float64) if layer.use_bias else np.zeros(kernel.shape[-1])
            )
            if rescale is not None:  # conv(a x + b) = a conv(x) + b sum(kernel)
                bias = bias + rescale[1] * kernel.sum(axis=(0, 1, 2))
                kernel = rescale[0] * kernel
            if fold_bn:
                scale, shift = _batch_norm_affine(bn)
                kernel, bias = kernel * scale, bias * scale + shift
                i += 1
            config = {**layer.get_config(), "use_bias": True, "name": f"{layer.name}_folded"}
            if dtype is not None:
                config["dtype"] = dtype
            conv = layers.Conv2D.from_config(config)
            x = conv(x)
            conv.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
            folded_any = True
        else:
            if rescale is not None:  # not folded after all: keep the Rescaling
                x = _as(body[i - 1], dtype)(x)
            x = _as(layer, dtype)(x)
        i += 1
    return keras.Model(inputs, x, name=trunk.name) if folded_any else None


def for_inference(network: keras.Model, precision: str = "float32") -> keras.Model:
    """``network`` with its sub-model "trunk" replaced by ``fold_trunk`` of it.

    Args:
      network: a chain-shaped keras.Model whose first layer is the sub-model "trunk" (the
        localizer, the classifier of models.localizer / models.classifier).
      precision: the folded trunk's arithmetic, "float32" or "bfloat16".
    Returns:
      a keras.Model named ``network.name`` with the same input and output (up to float rounding;
      float32 output either way), sharing every layer but the trunk with ``network``;
      ``network`` itself when it has no foldable trunk and precision is "float32".
    Raises:
      ValueError: "bfloat16" for a network without a foldable trunk (config field
        network_precision), or an unknown precision.
    """
    body = _chain(network)
    trunk = fold_trunk(body[0], precision) if body and body[0].name == TRUNK else None
    if trunk is None:
        if precision != "float32":
            raise ValueError(
                f"config field 'network_precision': {precision!r} needs the paper backbone's "
                f"trunk (a chain of convolutions and batch norms); network {network.name!r} "
                "has none"
            )
        return network
    inputs = keras.Input(network.inputs[0].shape[1:], name=network.inputs[0].name)
    x = trunk(inputs)
    for layer in body[1:]:
        x = layer(x)
    return keras.Model(inputs, x, name=network.name)

"""Backbones shared by the localizer and the classifier (paper §4).

A backbone is split in two Keras models so both heads of the design can use it:

  trunk       images [B, S, S, 3] float32 RGB in [0, 255] -> spatial features [B, h, w, c]
              (normalisation included: a Rescaling layer maps [0, 255] to [-1, 1]).
  embedding   spatial features [B, h, w, c] -> feature vector [B, F] (the fully connected part).

The classifier uses trunk + embedding; the localizer's "dense" head (the paper's) uses trunk +
embedding too, its "conv" head only the trunk. Training the classifier first and copying the
trunk (and embedding) weights into the localizer is the paper's recipe (§6); both networks
therefore build their trunk and embedding with the same function and the same layer names.

Backbones:
  "paper"               AlexNet-like [14]: 5 convolutions + 2 fully connected layers, ReLU,
                        max-pooling after conv1, conv2 and conv5. Channels and FC units are scaled
                        by ModelConfig.width (1.0 = 96/256/384/384/256 channels, 4096 FC units).
                        Deviations from [14], on purpose: BatchNormalization after each convolution
                        instead of local response normalisation (trains in far fewer steps), and
                        "same"-padded pools so every input size >= 32 px works. At S = 225 the
                        trunk gives 14 x 14 features (conv5, before pool5); pool5 opens the
                        embedding and gives 7 x 7.
  "mobilenet_v3_small"  keras.applications.MobileNetV3Small(include_top=False, weights=None), its
                        own Rescaling to [-1, 1] included, alpha = ModelConfig.width. At S = 225 the
                        trunk gives 8 x 8 features (stride 32). Its embedding: a 1 x 1 convolution
                        to 128 * width channels, flatten, one fully connected layer of 1024 * width
                        units.
"""

from __future__ import annotations

import dataclasses

import keras
from keras import layers

from dnet_tf.config import ModelConfig

BACKBONES = ("paper", "mobilenet_v3_small")

# BatchNormalization momentum of every backbone. MobileNetV3's own 0.999 needs thousands of steps
# before the moving statistics leave their initial values (0.999^1000 = 0.37 of the initial value
# remains), so a model trained for ~1000 steps on a CPU would predict with wrong statistics.
BN_MOMENTUM = 0.9


@dataclasses.dataclass(frozen=True)
class PaperWidths:
    """Channel/unit counts of the paper backbone at a given width multiplier."""

    conv: tuple  # channels of conv1..conv5
    fc: int  # units of each of the two fully connected layers

    @classmethod
    def at(cls, width: float) -> PaperWidths:
        def scale(n: int) -> int:
            return max(8, int(round(n * width / 8.0)) * 8)  # multiples of 8, at least 8

        return cls(conv=tuple(scale(n) for n in (96, 256, 384, 384, 256)), fc=scale(4096))


def _check_backbone(name: str) -> None:
    if name not in BACKBONES:
        raise ValueError(
            f"config field 'backbone': unknown backbone {name!r}; known: {list(BACKBONES)}"
        )


def build_trunk(model_cfg: ModelConfig, name: str = "trunk") -> keras.Model:
    """Builds the convolutional part of the backbone.

    Args:
      model_cfg: uses backbone, input_size S, width.
      name: Keras name of the returned model (weights are copied between networks by this name).
    Returns:
      keras.Model: images [B, S, S, 3] float32 RGB in [0, 255] -> features [B, h, w, c] float32.
    Raises:
      ValueError: unknown backbone name.
    """
    _check_backbone(model_cfg.backbone)
    s = model_cfg.input_size
    if model_cfg.backbone == "paper":
        w = PaperWidths.at(model_cfg.width)
        inputs = keras.Input((s, s, 3), name="images")
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
        # (kernel, stride, max-pool after) per conv layer, as in [14].
        plan = ((11, 4, True), (5, 1, True), (3, 1, False), (3, 1, False), (3, 1, False))
        for k, ((kernel, stride, pool), channels) in enumerate(zip(plan, w.conv), start=1):
            x = layers.Conv2D(
                channels,
                kernel,
                strides=stride,
                padding="valid" if k == 1 else "same",
                use_bias=False,
                name=f"conv{k}",
            )(x)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"conv{k}_bn")(x)
            x = layers.ReLU(name=f"conv{k}_relu")(x)
            if pool:
                x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{k}")(x)
        return keras.Model(inputs, x, name=name)

    net = keras.applications.MobileNetV3Small(
        input_shape=(s, s, 3),
        alpha=model_cfg.width,
        include_top=False,
        weights=None,
        include_preprocessing=True,
        name=name,
    )
    for layer in net.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    return net


def image_input_and_trunk(model_cfg: ModelConfig):
    """The network input "images" [B, S, S, 3] float32 RGB 0..255 and the trunk's features on it
    (a sub-model named "trunk", shared by name between the classifier and the localizer).

    Raises:
      ValueError: an invalid config field.
    """
    model_cfg.validate()
    inputs = keras.Input((model_cfg.input_size, model_cfg.input_size, 3), name="images")
    return inputs, build_trunk(model_cfg)(inputs)


def build_embedding(model_cfg: ModelConfig, feature_shape, name: str = "embedding") -> keras.Model:
    """Builds the fully connected part of the backbone.

    Args:
      model_cfg: uses backbone, width, dropout.
      feature_shape: (h, w, c) of the trunk's output.
      name: Keras name of the returned model.
    Returns:
      keras.Model: features [B, h, w, c] -> vector [B, F] float32 (ReLU outputs).
    """
    _check_backbone(model_cfg.backbone)
    inputs = keras.Input(tuple(feature_shape), name="features")
    if model_cfg.backbone == "paper":
        units = PaperWidths.at(model_cfg.width).fc
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool5")(inputs)
        x = layers.Flatten(name="flatten")(x)
        for k in (6, 7):  # fc6, fc7 in [14]'s numbering
            x = layers.Dropout(model_cfg.dropout, name=f"fc{k}_dropout")(x)
            x = layers.Dense(units, activation="relu", name=f"fc{k}")(x)
    else:
        reduce_ch = max(8, int(round(128 * model_cfg.width / 8.0)) * 8)
        units = max(8, int(round(1024 * model_cfg.width / 8.0)) * 8)
        x = layers.Conv2D(reduce_ch, 1, use_bias=False, name="reduce")(inputs)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="reduce_bn")(x)
        x = layers.ReLU(name="reduce_relu")(x)
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dropout(model_cfg.dropout, name="fc_dropout")(x)
        x = layers.Dense(units, activation="relu", name="fc")(x)
    return keras.Model(inputs, x, name=name)

"""Mask heads: backbone features -> the five masks of every class, sigmoid, [B, d, d, 5, C].

Axis order of the output (team contract): mask row i, mask column j, mask type (full, top,
bottom, left, right, see dnet_tf.constants.MASK_TYPES), class. Cell (i, j) covers input rows
[i S/d, (i+1) S/d) and columns [j S/d, (j+1) S/d).

  DenseMaskHead  the paper's regression layer: one dense layer from the feature vector to all
                 d * d * 5 * C outputs, "without any smoothness prior or convolutional structure".
  ConvMaskHead   cheaper: a 1 x 1 convolution reduces the spatial feature map to a few channels,
                 which are resized (bilinear) to d x d; a 3 x 3 convolution adds context, a
                 1 x 1 convolution gives the 5 * C masks.

Both keep their numbers in float32 and return probabilities (sigmoid), never logits.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from dnet_tf.constants import NUM_MASK_TYPES


def _check_positive(value, name: str) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"mask head argument '{name}' must be a positive integer, got {value!r}")
    return int(value)


@keras.saving.register_keras_serializable(package="dnet_tf")
class DenseMaskHead(layers.Layer):
    """The paper's dense regression head.

    Args:
      mask_size: d, cells per mask side; >= 1.
      num_classes: C; >= 1.
      bias_init: initial pre-sigmoid bias of every output (0 gives 0.5 everywhere).
    Call:
      features: [B, F] float32 feature vector.
    Returns:
      [B, d, d, 5, C] float32 in [0, 1].
    """

    def __init__(self, mask_size: int, num_classes: int, bias_init: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_size = _check_positive(mask_size, "mask_size")
        self.num_classes = _check_positive(num_classes, "num_classes")
        self.bias_init = float(bias_init)
        d, c = self.mask_size, self.num_classes
        self.regression = layers.Dense(
            d * d * NUM_MASK_TYPES * c,
            bias_initializer=keras.initializers.Constant(self.bias_init),
            dtype="float32",
            name="regression",
        )

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"DenseMaskHead expects [B, F] features, got shape {input_shape}")
        self.regression.build(input_shape)

    def call(self, features):
        d, c = self.mask_size, self.num_classes
        logits = self.regression(features)  # [B, d*d*5*C]
        logits = ops.reshape(logits, (-1, d, d, NUM_MASK_TYPES, c))
        return ops.sigmoid(ops.cast(logits, "float32"))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.mask_size, self.mask_size, NUM_MASK_TYPES, self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            mask_size=self.mask_size, num_classes=self.num_classes, bias_init=self.bias_init
        )
        return config


@keras.saving.register_keras_serializable(package="dnet_tf")
class ConvMaskHead(layers.Layer):
    """The cheaper convolutional head.

    Reducing the channels before resizing keeps the d x d part cheap whatever the backbone's
    width (MobileNetV3's 576 channels would cost ~380 M multiply-adds in a 3 x 3 convolution
    at 24 x 24; reduced to 128 first, ~90 M).

    Args:
      mask_size: d, cells per mask side; >= 1.
      num_classes: C; >= 1.
      hidden: channels of the reduction and of the 3 x 3 context convolution; >= 1.
      bias_init: initial pre-sigmoid bias of every output.
    Call:
      features: [B, h, w, c] float32 spatial features whose grid spans the whole input.
    Returns:
      [B, d, d, 5, C] float32 in [0, 1]. Output channel t * C + k of the last convolution is mask
      type t of class k.
    """

    def __init__(
        self, mask_size: int, num_classes: int, hidden: int = 128, bias_init: float = 0.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.mask_size = _check_positive(mask_size, "mask_size")
        self.num_classes = _check_positive(num_classes, "num_classes")
        self.hidden = _check_positive(hidden, "hidden")
        self.bias_init = float(bias_init)
        self.reduce = layers.Conv2D(self.hidden, 1, activation="relu", name="reduce")
        self.context = layers.Conv2D(
            self.hidden, 3, padding="same", activation="relu", name="context"
        )
        self.logits = layers.Conv2D(
            NUM_MASK_TYPES * self.num_classes,
            1,
            bias_initializer=keras.initializers.Constant(self.bias_init),
            name="logits",
        )

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"ConvMaskHead expects [B, h, w, c] features, got shape {input_shape}")
        d = self.mask_size
        self.reduce.build(input_shape)
        self.context.build((input_shape[0], d, d, self.hidden))
        self.logits.build((input_shape[0], d, d, self.hidden))

    def call(self, features):
        d, c = self.mask_size, self.num_classes
        x = self.reduce(features)  # [B, h, w, hidden]
        # Bilinear with half-pixel centres: feature cell centres map onto mask cell centres.
        x = ops.image.resize(x, (d, d), interpolation="bilinear")  # [B, d, d, hidden]
        x = self.logits(self.context(x))  # [B, d, d, 5*C]
        x = ops.reshape(x, (-1, d, d, NUM_MASK_TYPES, c))
        return ops.sigmoid(ops.cast(x, "float32"))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.mask_size, self.mask_size, NUM_MASK_TYPES, self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            mask_size=self.mask_size,
            num_classes=self.num_classes,
            hidden=self.hidden,
            bias_init=self.bias_init,
        )
        return config

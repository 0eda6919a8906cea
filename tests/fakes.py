"""Networks with known outputs, for end-to-end checks of the inference graph without training.

Images for these fakes carry their objects in colour channels: R = 255 inside the object box,
G = 255 inside its top half, B = 255 inside its left half (0 elsewhere). Averaging a crop's
channels over each mask cell is then exactly Eq. (1): R gives the full mask, G the top mask,
R - G the bottom, B the left and R - B the right. The fake localizer does just that, so its
masks are the true coverage masks of whatever object the crop shows.
"""

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="dnet_tf_tests")
class CoverageMasks(keras.layers.Layer):
    """[N, S, S, 3] coloured crop -> [N, d, d, 5, C] coverage masks (class 0 real, others 0)."""

    def __init__(self, mask_size, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.mask_size = mask_size
        self.num_classes = num_classes

    def call(self, x):
        cells = tf.image.resize(x / 255.0, [self.mask_size, self.mask_size], method="area")
        r, g, b = cells[..., 0], cells[..., 1], cells[..., 2]
        masks = tf.clip_by_value(tf.stack([r, g, r - g, b, r - b], axis=-1), 0.0, 1.0)
        others = tf.zeros_like(masks)[..., None]
        return tf.concat([masks[..., None]] + [others] * (self.num_classes - 1), axis=-1)

    def get_config(self):
        return {
            **super().get_config(),
            "mask_size": self.mask_size,
            "num_classes": self.num_classes,
        }


@keras.saving.register_keras_serializable(package="dnet_tf_tests")
class RedFraction(keras.layers.Layer):
    """[N, S, S, 3] -> [N, C + 1]: P(class 0) = fraction of red in the crop, background the rest."""

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes

    def call(self, x):
        red = tf.reduce_mean(x[..., 0], axis=[1, 2]) / 255.0
        zeros = tf.zeros_like(red)
        return tf.stack([1.0 - red, red] + [zeros] * (self.num_classes - 1), axis=-1)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def fake_localizer(input_size=225, mask_size=24, num_classes=1):
    inp = keras.Input((input_size, input_size, 3))
    return keras.Model(inp, CoverageMasks(mask_size, num_classes)(inp))


def fake_classifier(input_size=225, num_classes=1):
    inp = keras.Input((input_size, input_size, 3))
    return keras.Model(inp, RedFraction(num_classes)(inp))


def coloured_object_image(height, width, boxes_image_yxyx):
    """uint8 [H, W, 3] with each integer box drawn in the channel code above."""
    img = np.zeros((height, width, 3), np.uint8)
    for y0, x0, y1, x1 in np.asarray(boxes_image_yxyx, int):
        img[y0:y1, x0:x1, 0] = 255
        img[y0 : (y0 + y1) // 2, x0:x1, 1] = 255
        img[y0:y1, x0 : (x0 + x1) // 2, 2] = 255
    return img


def fake_localizer_with_trunk(input_size=225, mask_size=24, num_classes=1):
    """``fake_localizer`` split as models.localizer builds it: a "trunk" sub-model (the identity:
    its features are the crop itself) and the "masks" layer on its features."""
    t_in = keras.Input((input_size, input_size, 3))
    trunk = keras.Model(t_in, keras.layers.Identity()(t_in), name="trunk")
    inp = keras.Input((input_size, input_size, 3))
    masks = CoverageMasks(mask_size, num_classes, name="masks")(trunk(inp))
    return keras.Model(inp, masks, name="localizer")


def fake_class_head(input_size=225, num_classes=1):
    """A class head over the identity trunk's features: the red fraction of the crop."""
    inp = keras.Input((input_size, input_size, 3))
    return keras.Model(inp, RedFraction(num_classes)(inp), name="class_head")

"""A class head on the localizer's trunk: P(class | crop) from the features the masks come from.

The paper runs a separate classifier (its own backbone) on each first-stage box, then the
localizer again on the kept boxes' refinement crops: two network evaluations per candidate. With
this head the refinement crop goes through the localizer's trunk once and both the masks and the
class probabilities are read from it (InferenceConfig.classifier = "shared").

  class head   features [B, h, w, c] (the localizer trunk's) -> embedding -> Dense(C + 1, softmax)
               [B, C + 1] float32, index 0 = background, index k = class k - 1; the classifier's
               embedding and output layer, so it starts from the trained classifier's weights.
  joint model  images [B, S, S, 3] float32 RGB 0..255 -> {"masks": [B, d, d, 5, C],
               "class_probs": [B, C + 1]}: the localizer's own layers (same variables) and the
               head on one trunk call.
"""

from __future__ import annotations

import keras
from keras import layers

from dnet_tf.config import ModelConfig
from dnet_tf.models.backbones import build_embedding

CLASS_HEAD = "class_head"
# The layers of the classifier the head has too (same names, same shapes).
HEAD_LAYERS = ("embedding", "class_probs")


def build_class_head(model_cfg: ModelConfig, feature_shape) -> keras.Model:
    """The class head over trunk features.

    Args:
      model_cfg: validated ModelConfig (backbone, width, dropout, num_classes C).
      feature_shape: (h, w, c) of the trunk's output.
    Returns:
      keras.Model named "class_head": features [B, h, w, c] -> [B, C + 1] softmax float32, with
      sub-model "embedding" and Dense "class_probs" named as in the classifier.
    """
    inputs = keras.Input(tuple(feature_shape), name="features")
    vector = build_embedding(model_cfg, feature_shape)(inputs)
    probs = layers.Dense(
        model_cfg.num_classes + 1, activation="softmax", dtype="float32", name="class_probs"
    )(vector)
    return keras.Model(inputs, probs, name=CLASS_HEAD)


def init_head_from_classifier(head: keras.Model, classifier: keras.Model) -> list:
    """Copies the classifier's embedding and output layer into the head where shapes match.

    Returns:
      the names of the layers copied (a layer whose weight shapes differ is left as built).
    """
    copied = []
    for name in HEAD_LAYERS:
        src, dst = classifier.get_layer(name), head.get_layer(name)
        weights = src.get_weights()
        if [w.shape for w in weights] == [w.shape for w in dst.get_weights()]:
            dst.set_weights(weights)
            copied.append(name)
    return copied


def localizer_trunk(localizer: keras.Model) -> keras.Model:
    """The localizer's "trunk" sub-model (its variables, not a copy)."""
    return localizer.get_layer("trunk")


def _masks_from_features(localizer: keras.Model, features):
    """The localizer's layers after the trunk (models.localizer: "masks", after "embedding" for
    the dense head), called on ``features``."""
    names = {layer.name for layer in localizer.layers}
    if "embedding" in names:
        features = localizer.get_layer("embedding")(features)
    return localizer.get_layer("masks")(features)


def build_head_trainer(localizer: keras.Model, head: keras.Model) -> keras.Model:
    """images -> head(trunk(images)) with the trunk frozen: its BatchNormalization runs on its
    moving statistics and only the head's variables are trainable (for the training stage).

    Sets the localizer's trunk to trainable=False: use on a localizer that is no longer trained.
    """
    trunk = localizer_trunk(localizer)
    trunk.trainable = False
    inputs = keras.Input(trunk.input_shape[1:], name="images")
    probs = head(trunk(inputs, training=False))
    return keras.Model(inputs, probs, name="shared_classifier")


def build_joint_model(localizer: keras.Model, head: keras.Model) -> keras.Model:
    """One trunk call, two outputs: {"masks": [B, d, d, 5, C], "class_probs": [B, C + 1]}.

    Every layer is the localizer's or the head's own (the variables are shared, not copied).
    """
    trunk = localizer_trunk(localizer)
    inputs = keras.Input(trunk.input_shape[1:], name="images")
    features = trunk(inputs)
    return keras.Model(
        inputs,
        {"masks": _masks_from_features(localizer, features), "class_probs": head(features)},
        name="joint",
    )

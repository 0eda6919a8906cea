"""The classifier that prunes detections (paper §5.2, §6): C object classes + background.

It is also the first stage of the paper's training recipe: its trunk and embedding initialise
the localizer's.
"""

from __future__ import annotations

import keras
from keras import layers

from dnet_tf.config import ModelConfig
from dnet_tf.models.backbones import build_embedding, image_input_and_trunk


def build_classifier(model_cfg: ModelConfig) -> keras.Model:
    """Builds the classifier.

    Args:
      model_cfg: validated ModelConfig (backbone, input_size S, num_classes C, width, dropout).
        The head field does not apply: the classifier always has trunk + embedding.
    Returns:
      keras.Model named "classifier": input "images" [B, S, S, 3] float32 RGB in [0, 255]; output
      [B, C + 1] float32 softmax probabilities, index 0 = background, index k = class k - 1.
    Raises:
      ValueError: an invalid config field.
    """
    inputs, features = image_input_and_trunk(model_cfg)
    vector = build_embedding(model_cfg, features.shape[1:])(features)
    probs = layers.Dense(
        model_cfg.num_classes + 1, activation="softmax", dtype="float32", name="class_probs"
    )(vector)
    return keras.Model(inputs, probs, name="classifier")

"""The localizer: one backbone, five mask heads, all classes in one forward pass (paper §4-5.1).

The paper trains one network per mask type and class (5 per class); its §5.1 remarks that one
network could output all five masks, and that one localizer for many classes "seems also
workable". This model does both: the head predicts every mask type of every class at once.
"""

from __future__ import annotations

import keras

from dnet_tf.config import ModelConfig
from dnet_tf.models.backbones import build_embedding, image_input_and_trunk
from dnet_tf.models.heads import ConvMaskHead, DenseMaskHead

# Initial pre-sigmoid bias of the mask outputs: sigmoid(-2) = 0.12. Most target cells are 0 (60%
# of crops are negatives), so starting near 0 instead of 0.5 spares the first steps from
# un-learning a uniform grey mask.
MASK_BIAS_INIT = -2.0


def conv_head_hidden(width: float) -> int:
    """Channels of the conv head's 3 x 3 context convolution at a width multiplier."""
    return max(16, int(round(128 * width / 8.0)) * 8)


def build_localizer(model_cfg: ModelConfig) -> keras.Model:
    """Builds the five-head localizer.

    Args:
      model_cfg: validated ModelConfig (backbone, head, input_size S, mask_size d, num_classes C,
        width, dropout).
    Returns:
      keras.Model named "localizer": input "images" [B, S, S, 3] float32 RGB in [0, 255]; output
      [B, d, d, 5, C] float32 sigmoid in [0, 1], mask types in MASK_TYPES order. Sub-models
      "trunk" (and "embedding" for the dense head) have the classifier's structure and names, so
      ``dnet_tf.training.recipe.init_localizer_from_classifier`` can copy their weights.
    Raises:
      ValueError: an invalid config field.
    """
    inputs, features = image_input_and_trunk(model_cfg)
    if model_cfg.head == "dense":
        embedding = build_embedding(model_cfg, features.shape[1:])
        masks = DenseMaskHead(
            model_cfg.mask_size, model_cfg.num_classes, bias_init=MASK_BIAS_INIT, name="masks"
        )(embedding(features))
    else:
        masks = ConvMaskHead(
            model_cfg.mask_size,
            model_cfg.num_classes,
            hidden=conv_head_hidden(model_cfg.width),
            bias_init=MASK_BIAS_INIT,
            name="masks",
        )(features)
    return keras.Model(inputs, masks, name="localizer")

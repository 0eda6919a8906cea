"""Thin Keras models: backbones, the five-head localizer, the classifier; the mask loss."""

from dnet_tf.models.backbones import BACKBONES, build_embedding, build_trunk
from dnet_tf.models.classifier import build_classifier
from dnet_tf.models.heads import ConvMaskHead, DenseMaskHead
from dnet_tf.models.localizer import build_localizer
from dnet_tf.models.losses import WeightedMaskLoss, weighted_mask_error

__all__ = [
    "BACKBONES",
    "build_trunk",
    "build_embedding",
    "build_classifier",
    "build_localizer",
    "DenseMaskHead",
    "ConvMaskHead",
    "WeightedMaskLoss",
    "weighted_mask_error",
]

"""TensorFlow's array namespace for the rules of ``dnet_tf.core`` (see ``dnet_tf.core.xp``)."""

from __future__ import annotations

import types

import tensorflow as tf

TENSORFLOW = types.SimpleNamespace(
    name="tensorflow",
    floor=tf.floor,
    maximum=tf.maximum,
    minimum=tf.minimum,
    clip=tf.clip_by_value,
    where=tf.where,
    stack=tf.stack,
    any=tf.reduce_any,
    zeros_like=tf.zeros_like,
    ones_like=tf.ones_like,
    asarray=tf.constant,
)

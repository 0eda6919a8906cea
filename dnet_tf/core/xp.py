"""The array namespace the shared rules are written over.

A rule written once for both pipelines takes ``xp``, an object with the few elementwise
functions below, and otherwise uses Python operators (+, *, comparisons, indexing), which NumPy
arrays and TensorFlow tensors both support with the same meaning. ``NUMPY`` is the NumPy
namespace; ``dnet_tf.ops.xp.TENSORFLOW`` is the TensorFlow one (kept there: this package never
imports TensorFlow).

Functions (NumPy's meaning): floor, maximum, minimum, clip(x, lo, hi), where(cond, a, b),
stack(xs, axis), any(x, axis), zeros_like, ones_like, asarray(x, dtype) (a constant).
"""

from __future__ import annotations

import types

import numpy as np

NUMPY = types.SimpleNamespace(
    name="numpy",
    floor=np.floor,
    maximum=np.maximum,
    minimum=np.minimum,
    clip=np.clip,
    where=np.where,
    stack=np.stack,
    any=np.any,
    zeros_like=np.zeros_like,
    ones_like=np.ones_like,
    asarray=np.asarray,
)

"""The array namespace the shared rules are written over.

A rule written once for both pipelines takes ``xp``, an object with the few elementwise
functions below, and otherwise uses Python operators (+, *, comparisons, indexing), which NumPy
arrays and TensorFlow tensors both support with the same meaning. ``NUMPY`` is the NumPy
namespace; ``dnet_tf.ops.xp.TENSORFLOW`` is the TensorFlow one (kept there: this package never
imports TensorFlow).

Functions (NumPy's meaning): floor, maximum, minimum, clip(x, lo, hi), where(cond, a, b),
stack(xs, axis), any(x, axis), amax(x, axis), zeros_like, ones_like, asarray(x, dtype) (a
constant), cumsum(x, axis).
"""

from __future__ import annotations

import types

import numpy as np

# The functions of the namespace protocol, by their NumPy names.
FUNCTIONS = (
    "floor", "maximum", "minimum", "clip", "where", "stack", "any", "amax", "zeros_like",
    "ones_like", "asarray", "cumsum",
)  # fmt: skip

NUMPY = types.SimpleNamespace(name="numpy", **{f: getattr(np, f) for f in FUNCTIONS})

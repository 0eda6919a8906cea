"""The paper's weighted mask loss (§4): ||(Diag(m) + lambda I)^(1/2) (y - m)||^2.

Per sample it is sum_i (m_i + lambda) (y_i - m_i)^2 over every output i = every cell, mask type
and class. A small lambda penalises errors on target-0 outputs (weight lambda) far less than on
target-1 outputs (weight 1 + lambda), which keeps the network from the trivial all-zero mask.
"""

from __future__ import annotations

import keras
from keras import ops


def weighted_mask_error(masks_true, masks_pred, mask_lambda: float):
    """Per-sample weighted squared error.

    Args:
      masks_true: [B, ...] float targets m in [0, 1] (e.g. [B, d, d, 5, C] from Eq. (1)).
      masks_pred: [B, ...] float predictions y, same shape.
      mask_lambda: lambda > 0.
    Returns:
      [B] float32: sum over all non-batch axes of (m + lambda) (y - m)^2.
    """
    m = ops.cast(masks_true, "float32")
    y = ops.cast(masks_pred, "float32")
    per_output = (m + mask_lambda) * ops.square(y - m)
    return ops.sum(ops.reshape(per_output, (ops.shape(per_output)[0], -1)), axis=-1)


@keras.saving.register_keras_serializable(package="dnet_tf")
class WeightedMaskLoss(keras.losses.Loss):
    """Keras loss for the weighted mask error; per sample a sum, over the batch a mean.

    Args:
      mask_lambda: lambda > 0 (LossConfig.mask_lambda).
      reduction: Keras reduction over the batch; the default "sum_over_batch_size" is the mean of
        the per-sample sums. Use "none" for the [B] per-sample values (distributed training).
    Call:
      y_true: [B, d, d, 5, C] float32 targets in [0, 1]; y_pred: same shape, sigmoid outputs.
    Raises:
      ValueError: mask_lambda <= 0.
    """

    def __init__(
        self,
        mask_lambda: float = 0.2,
        name: str = "weighted_mask_loss",
        reduction="sum_over_batch_size",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not mask_lambda > 0:
            raise ValueError(f"WeightedMaskLoss: 'mask_lambda' must be > 0, got {mask_lambda!r}")
        self.mask_lambda = float(mask_lambda)

    def call(self, y_true, y_pred):
        return weighted_mask_error(y_true, y_pred, self.mask_lambda)

    def get_config(self):
        config = super().get_config()
        config.update(mask_lambda=self.mask_lambda)
        return config

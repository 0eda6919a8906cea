"""The weighted mask loss sum_i (m_i + lambda)(y_i - m_i)^2: hand-worked values and a matrix
oracle."""

import keras
import numpy as np
import pytest

from dnet_tf.models.losses import WeightedMaskLoss, weighted_mask_error


def _batch():
    """Two samples of shape [d=1, d=1, 5 masks, C=2]; most outputs equal their targets (error 0)."""
    m = np.zeros((2, 1, 1, 5, 2), np.float32)
    y = np.zeros((2, 1, 1, 5, 2), np.float32)
    # Sample 0: a target-1 output predicted 0.5 and a target-0 output predicted 0.5.
    m[0, 0, 0, 0, 0], y[0, 0, 0, 0, 0] = 1.0, 0.5
    m[0, 0, 0, 3, 1], y[0, 0, 0, 3, 1] = 0.0, 0.5
    # Sample 1: a half-covered cell predicted 0 and a quarter-covered cell predicted 1.
    m[1, 0, 0, 1, 0], y[1, 0, 0, 1, 0] = 0.5, 0.0
    m[1, 0, 0, 4, 1], y[1, 0, 0, 4, 1] = 0.25, 1.0
    # An output predicted exactly: contributes 0 whatever its weight.
    m[1, 0, 0, 2, 1], y[1, 0, 0, 2, 1] = 0.75, 0.75
    return m, y


def test_per_sample_values_worked_by_hand():
    m, y = _batch()
    lam = 0.2
    # Sample 0: (1 + 0.2)(0.5 - 1)^2 + (0 + 0.2)(0.5 - 0)^2 = 1.2 * 0.25 + 0.2 * 0.25 = 0.35
    # Sample 1: (0.5 + 0.2)(0 - 0.5)^2 + (0.25 + 0.2)(1 - 0.25)^2 = 0.7 * 0.25 + 0.45 * 0.5625
    #         = 0.175 + 0.253125 = 0.428125
    per_sample = np.asarray(weighted_mask_error(m, y, lam))
    np.testing.assert_allclose(per_sample, [0.35, 0.428125], rtol=1e-6)


def test_keras_loss_is_the_batch_mean_of_the_per_sample_sums():
    m, y = _batch()
    # (0.35 + 0.428125) / 2 = 0.3890625
    np.testing.assert_allclose(float(WeightedMaskLoss(mask_lambda=0.2)(m, y)), 0.3890625, rtol=1e-6)
    per_sample = np.asarray(WeightedMaskLoss(mask_lambda=0.2, reduction="none")(m, y))
    np.testing.assert_allclose(per_sample, [0.35, 0.428125], rtol=1e-6)


def test_lambda_weighs_zero_targets_less_than_one_targets():
    # The same |error| 0.5 costs lambda * 0.25 on a 0-target and (1 + lambda) * 0.25 on a 1-target.
    m = np.array([[0.0, 1.0]], np.float32)
    y = np.array([[0.5, 0.5]], np.float32)
    lam = 0.1
    zero_target_cost = float(weighted_mask_error(m[:, :1], y[:, :1], lam)[0])
    one_target_cost = float(weighted_mask_error(m[:, 1:], y[:, 1:], lam)[0])
    assert zero_target_cost == pytest.approx(0.1 * 0.25)
    assert one_target_cost == pytest.approx(1.1 * 0.25)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_papers_matrix_form(seed):
    # ||(Diag(m) + lambda I)^(1/2) (y - m)||^2 with explicit matrices, per sample.
    rng = np.random.default_rng(seed)
    m = rng.uniform(size=(3, 4, 4, 5, 2)).astype(np.float32)
    y = rng.uniform(size=(3, 4, 4, 5, 2)).astype(np.float32)
    lam = 0.3
    expected = []
    for mi, yi in zip(m.reshape(3, -1).astype(np.float64), y.reshape(3, -1).astype(np.float64)):
        w_half = np.sqrt(np.diag(mi) + lam * np.eye(mi.size))
        expected.append(np.sum((w_half @ (yi - mi)) ** 2))
    np.testing.assert_allclose(np.asarray(weighted_mask_error(m, y, lam)), expected, rtol=1e-5)


def test_config_round_trip_and_invalid_lambda():
    loss = WeightedMaskLoss(mask_lambda=0.35, reduction="none", name="masks")
    config = loss.get_config()
    assert config["mask_lambda"] == 0.35
    clone = WeightedMaskLoss.from_config(config)
    assert clone.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(revived, WeightedMaskLoss) and revived.mask_lambda == 0.35
    with pytest.raises(ValueError, match="mask_lambda"):
        WeightedMaskLoss(mask_lambda=0.0)

"""Training: one step lowers the loss, the mask IoU metric, reproducibility, the run directory."""

import dataclasses
import json
import math

import numpy as np
import pytest
import tensorflow as tf

from dnet_tf.config import DetectorConfig, ModelConfig, TrainConfig
from dnet_tf.constants import FULL, TOP
from dnet_tf.models import build_classifier, build_localizer
from dnet_tf.training import run_dir as rd
from dnet_tf.training.metrics import mask_iou
from dnet_tf.training.recipe import (
    classifier_example_loss,
    localizer_example_loss,
    make_optimizer,
    make_train_step,
)
from dnet_tf.training.sources import ToySource
from dnet_tf.training.train import train

# AdaGrad's first step moves every weight by about the learning rate; 0.05 overshoots on these
# networks (the classifier's loss rises after one step), 0.01 does not.
RECOMMENDED_LEARNING_RATE = 0.01
TINY_MODEL = ModelConfig(num_classes=2, input_size=64, mask_size=8, width=0.25, dropout=0.0)


def _tiny_cfg(**train_kwargs):
    train_cfg = dict(
        batch_size=8,
        classifier_steps=4,
        localizer_steps=6,
        steps_per_checkpoint=5,
        steps_per_log=2,
        learning_rate=RECOMMENDED_LEARNING_RATE,
    )
    train_cfg.update(train_kwargs)
    return DetectorConfig(model=TINY_MODEL, train=TrainConfig(**train_cfg))


def _fixed_batch(kind, cfg):
    src = ToySource(class_names=("a", "b"), positive_fraction=1.0)
    make = src.localizer_dataset if kind == "localizer" else src.classifier_dataset
    return next(iter(make("train", cfg, 8, seed=3)))


@pytest.mark.parametrize("kind", ["localizer", "classifier"])
def test_one_step_lowers_the_loss_on_a_fixed_batch(kind):
    cfg = _tiny_cfg()
    tf.keras.utils.set_random_seed(0)
    model = build_localizer(cfg.model) if kind == "localizer" else build_classifier(cfg.model)
    loss_fn = localizer_example_loss(cfg.loss) if kind == "localizer" else classifier_example_loss
    strategy = tf.distribute.get_strategy()
    optimizer = make_optimizer(cfg.train)  # the paper's AdaGrad
    step = make_train_step(strategy, model, optimizer, loss_fn, global_batch_size=8)
    batch = _fixed_batch(kind, cfg)
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())

    def loss_now():  # same mode as the step (batch statistics); dropout is 0 so it is deterministic
        return float(tf.reduce_mean(loss_fn(batch[1], model(batch[0], training=True))))

    before = loss_now()
    step_loss, _ = step(iterator)
    assert float(step_loss) == pytest.approx(
        before, rel=1e-4
    )  # the step reports the pre-update loss
    after = loss_now()
    assert after < before


def test_mask_iou_worked_by_hand():
    d, c = 4, 2
    target = np.zeros((3, d, d, 5, c), np.float32)
    pred = np.zeros_like(target)
    # Crop 0, class 0: target cells (0,0) (0,1) (1,0) (1,1) at 1.0; prediction (0,0) (0,1) at 0.9,
    # (2,2) (2,3) at 0.5 (0.5 counts as on). |P ∩ T| = 2, |P ∪ T| = 4 + 4 - 2 = 6 -> IoU 1/3.
    target[0, 0:2, 0:2, FULL, 0] = 1.0
    pred[0, 0:2, 0:2, FULL, 0] = [[0.9, 0.9], [0.2, 0.2]]
    pred[0, 2, 2:4, FULL, 0] = 0.5
    # Crop 0, class 1: target 0.6 on one cell (on), 0.4 on another (off); predicted exactly on
    # the 0.6 cell -> IoU 1. Its other mask types do not count.
    target[0, 3, 3, FULL, 1], target[0, 3, 2, FULL, 1] = 0.6, 0.4
    pred[0, 3, 3, FULL, 1] = 0.7
    pred[0, :, :, TOP, 1] = 1.0
    # Crop 1: a negative for both classes; class 1 predicts one cell -> one false positive of 2.
    pred[1, 1, 1, FULL, 1] = 0.8
    # Crop 2, class 0: a box covering cells by at most 0.3 -> neither positive nor negative.
    target[2, 0, 0, FULL, 0] = 0.3
    result = mask_iou(pred, target)
    assert result.num_positive == 2
    assert result.mean_iou == pytest.approx((1.0 / 3.0 + 1.0) / 2.0)
    # Negative pairs: crop 1 class 0, crop 1 class 1, crop 2 class 1 -> 3; one has a predicted cell.
    assert result.num_negative == 3
    assert result.false_positive_rate == pytest.approx(1.0 / 3.0)


def test_mask_iou_without_positives_is_nan_and_bad_shapes_raise():
    zeros = np.zeros((2, 4, 4, 5, 1), np.float32)
    result = mask_iou(zeros, zeros)
    assert math.isnan(result.mean_iou) and result.false_positive_rate == 0.0
    with pytest.raises(ValueError, match=r"\[N, d, d, 5, C\]"):
        mask_iou(zeros, zeros[:, :, :, :4])


def _weights(run_dir):
    arts = rd.load_run(run_dir)
    return [np.asarray(w) for w in arts.localizer.weights + arts.classifier.weights]


def test_same_seed_same_weights_and_a_complete_run_directory(tmp_path):
    cfg = _tiny_cfg()
    src = ToySource(class_names=("cat", "dog"))
    train(tmp_path / "a", src, cfg, progress=False, eval_crops=32)
    train(tmp_path / "b", src, cfg, progress=False, eval_crops=0)
    for w1, w2 in zip(_weights(tmp_path / "a"), _weights(tmp_path / "b")):
        np.testing.assert_array_equal(w1, w2)
    # Not a vacuous equality: training moved the classifier away from its seeded initial weights
    # (train() seeds, then builds the classifier first).
    tf.keras.utils.set_random_seed(cfg.train.seed)
    initial = [np.asarray(w) for w in build_classifier(cfg.model).weights]
    trained = [np.asarray(w) for w in rd.load_run(tmp_path / "a").classifier.weights]
    assert any(not np.array_equal(w0, w1) for w0, w1 in zip(initial, trained))
    # The run directory holds what inference needs, consistent with the config.
    arts = rd.load_run(tmp_path / "a")
    assert arts.class_names == ("cat", "dog")
    assert arts.config.to_dict() == cfg.to_dict()
    assert len(arts.aspect_ratios) == 10 and list(arts.aspect_ratios) == sorted(arts.aspect_ratios)
    summary = json.loads((tmp_path / "a" / rd.SUMMARY).read_text())
    assert summary["complete"] and summary["steps"] == {"classifier": 4, "localizer": 6}
    assert (
        summary["val_mask_iou"]["num_positive"] + summary["val_mask_iou"]["num_negative"] <= 32 * 2
    )
    assert list((tmp_path / "a" / rd.LOGS / "localizer").glob("events.out.tfevents.*"))
    # A finished run is reported, not trained again: files untouched.
    mtime = (tmp_path / "a" / rd.LOCALIZER).stat().st_mtime_ns
    assert train(tmp_path / "a", src, cfg, progress=False) == summary
    assert (tmp_path / "a" / rd.LOCALIZER).stat().st_mtime_ns == mtime
    # Resuming with a different config is refused, naming the field.
    bigger = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, localizer_steps=7))
    with pytest.raises(ValueError, match="localizer_steps: 6 != 7"):
        train(tmp_path / "a", src, bigger, progress=False)


def test_time_budget_ends_both_stages_early(tmp_path):
    cfg = _tiny_cfg(classifier_steps=10_000, localizer_steps=10_000)
    summary = train(tmp_path, ToySource(), cfg, progress=False, eval_crops=0, time_budget_s=5.0)
    assert summary["complete"] and summary["stopped_by_time_budget"]
    assert (
        0 < summary["steps"]["classifier"] < 10_000 and 0 < summary["steps"]["localizer"] < 10_000
    )
    assert rd.is_complete(tmp_path)


def test_load_run_names_missing_and_inconsistent_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        rd.load_run(tmp_path)
    rd.write_class_names(tmp_path / rd.CLASS_NAMES, ["a", "b", "c"])
    assert rd.read_class_names(tmp_path / rd.CLASS_NAMES) == ("a", "b", "c")
    with pytest.raises(ValueError, match="duplicate"):
        rd.write_class_names(tmp_path / "x.txt", ["a", "a"])
    rd.atomic_write_json(tmp_path / rd.DATASET_STATS, {"aspect_ratios": [2.0, 1.0]})
    with pytest.raises(ValueError, match="aspect_ratios.*ascending"):
        rd.read_aspect_ratios(tmp_path / rd.DATASET_STATS)
    (tmp_path / rd.CONFIG).write_text('{"model": {"num_classes": 0}}')
    with pytest.raises(ValueError, match="config.json.*num_classes"):
        rd.read_config(tmp_path / rd.CONFIG)

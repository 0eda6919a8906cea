"""Slow: a ten-minute training run on the embedded dataset gives usable masks.

Acceptance figure: the full-mask IoU on held-out crops of the validation split (definition in
dnet_tf.training.metrics) is >= 0.5 after at most 600 s of training on a 2-core CPU.
Run with: pytest -m slow tests/test_training_target.py
"""

import dataclasses
import pathlib

import pytest

from dnet_tf.config import named_config
from dnet_tf.training.train import train

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    data = REPO / "data" / "synthetic"
    if (data / "ImageSets" / "Main" / "val.txt").is_file():
        return data
    from dnet_tf.data.synthetic import write_synthetic_voc

    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic_voc(out, progress=False)
    return out


@pytest.mark.slow
def test_ten_minute_run_reaches_half_iou_on_validation_crops(tmp_path, synthetic_dir):
    cfg = named_config("paper")
    # The CPU recipe measured for the 2-core machine: paper backbone at width 0.25 with the conv
    # head, AdaGrad at 0.01, batches of 16, 200 + 1800 steps (the 600 s budget ends both stages
    # early on a loaded machine). No-ops once dnet_tf/config.py carries these defaults.
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, width=0.25, head="conv"),
        train=dataclasses.replace(
            cfg.train, learning_rate=0.01, batch_size=16, classifier_steps=200, localizer_steps=1800
        ),
    )
    summary = train(
        tmp_path / "run",
        str(synthetic_dir),
        cfg,
        time_budget_s=600.0,
        progress=False,
        eval_crops=512,
    )
    assert (
        summary["training_wall_s"] <= 600.0 + 60.0
    )  # a stage stops at its first step past the budget
    iou = summary["val_mask_iou"]
    assert iou["num_positive"] >= 100
    assert iou["mean_iou"] >= 0.5, summary

"""The class head on the localizer's trunk (InferenceConfig.classifier = "shared"): its models,
its training stage, its inference path, against the paper's separate classifier."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from fakes import (
    coloured_object_image,
    fake_class_head,
    fake_classifier,
    fake_localizer_with_trunk,
)

from dnet_tf.config import DetectorConfig, InferenceConfig, ModelConfig, TrainConfig
from dnet_tf.inference.loading import module_from_run
from dnet_tf.inference.module import DetectorModule, uint8_batch
from dnet_tf.models import build_classifier, build_localizer
from dnet_tf.models.shared_head import (
    build_class_head,
    build_head_trainer,
    build_joint_model,
    init_head_from_classifier,
    localizer_trunk,
)
from dnet_tf.ops import boxes as box_ops
from dnet_tf.ops import crops
from dnet_tf.training import run_dir as rd
from dnet_tf.training.recipe import classifier_example_loss, make_optimizer, make_train_step
from dnet_tf.training.sources import ToySource
from dnet_tf.training.train import train

ASPECTS = list(np.geomspace(0.5, 2.0, 10))
TINY_MODEL = ModelConfig(num_classes=2, input_size=64, mask_size=8, width=0.25, dropout=0.0)
WINDOWS = 1 + 9 + 25  # three scales with the default overlap, the window gate off


def _fake_module(classifier, **inference):
    cfg = DetectorConfig(
        model=ModelConfig(num_classes=1),
        inference=dataclasses.replace(
            InferenceConfig(),
            max_refine=6,
            score_mode="classifier",
            classifier=classifier,
            window_gate=0.0,  # every window: the counts below are WINDOWS + the crops
            **inference,
        ),
    )
    return DetectorModule(
        fake_localizer_with_trunk(),
        fake_classifier(),
        ["c0"],
        ASPECTS,
        cfg,
        class_head=fake_class_head(),
    )


def _detect(module, images):
    return tf.function(lambda im: module.detect(*uint8_batch(im)))(images)


# -- Models. ------------------------------------------------------------------------------------


def test_joint_model_shares_the_localizers_variables_and_reproduces_both_networks():
    cfg = TINY_MODEL
    localizer, classifier = build_localizer(cfg), build_classifier(cfg)
    trunk = localizer_trunk(localizer)
    head = build_class_head(cfg, trunk.output.shape[1:])
    assert init_head_from_classifier(head, classifier) == ["embedding", "class_probs"]
    joint = build_joint_model(localizer, head)
    joint_ids = {id(v) for v in joint.weights}
    assert {id(v) for v in localizer.weights} <= joint_ids  # the same variables, not copies
    assert {id(v) for v in head.weights} <= joint_ids
    x = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    out = joint(x, training=False)
    np.testing.assert_allclose(out["masks"], localizer(x, training=False), atol=1e-6)
    np.testing.assert_allclose(out["class_probs"], head(trunk(x, training=False)), atol=1e-6)
    # The head starts as the classifier: on the classifier's own trunk it gives its output.
    classifier_trunk = classifier.get_layer("trunk")
    np.testing.assert_allclose(
        head(classifier_trunk(x, training=False)), classifier(x, training=False), atol=1e-6
    )


def test_a_train_step_changes_the_head_only():
    cfg = DetectorConfig(model=TINY_MODEL, train=TrainConfig(batch_size=8))
    localizer = build_localizer(cfg.model)
    head = build_class_head(cfg.model, localizer_trunk(localizer).output.shape[1:])
    trainer = build_head_trainer(localizer, head)
    trunk_before = [w.copy() for w in localizer_trunk(localizer).get_weights()]  # BN stats too
    head_before = [w.copy() for w in head.get_weights()]
    optimizer = make_optimizer(cfg.train)
    step = make_train_step(
        tf.distribute.get_strategy(), trainer, optimizer, classifier_example_loss, 8
    )
    ds = ToySource(("a", "b")).classifier_dataset("train", cfg, 8, seed=1)
    step(iter(ds))
    for before, after in zip(trunk_before, localizer_trunk(localizer).get_weights()):
        np.testing.assert_array_equal(before, after)
    changed = [not np.array_equal(b, a) for b, a in zip(head_before, head.get_weights())]
    assert all(changed), changed  # every head variable took a step (its BN is in training mode)


# -- The training stage and the run directory. -------------------------------------------------


def _tiny_run_cfg(**train):
    return DetectorConfig(
        model=TINY_MODEL,
        train=TrainConfig(
            batch_size=8,
            classifier_steps=3,
            localizer_steps=3,
            steps_per_checkpoint=2,
            steps_per_log=2,
            **train,
        ),
    )


def _run_with_stage(run_dir, steps, log=None):
    cfg = _tiny_run_cfg(shared_head_steps=steps)
    return train(run_dir, ToySource(("a", "b")), cfg, progress=False, eval_crops=16, log=log)


def test_stage_added_to_a_finished_run_trains_the_head_only_and_resumes(tmp_path):
    train(tmp_path, ToySource(("a", "b")), _tiny_run_cfg(), progress=False, eval_crops=0)
    before = rd.load_run(tmp_path)
    assert before.class_head is None  # a run without the stage loads as before

    lines = []
    summary = _run_with_stage(tmp_path, 3, lines.append)
    assert summary["steps"] == {"classifier": 3, "localizer": 3, "shared_head": 3}
    assert 0.0 <= summary["val_shared_head"]["accuracy"] <= 1.0
    assert any("initialised from the classifier: embedding, class_probs" in s for s in lines)
    after = rd.load_run(tmp_path)
    assert after.config.train.shared_head_steps == 3  # config.json records the stage
    pairs = zip(
        before.localizer.weights + before.classifier.weights,
        after.localizer.weights + after.classifier.weights,
    )
    for a, b in pairs:
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # The head was trained: its output layer left the classifier's.
    assert not np.allclose(
        after.class_head.get_layer("class_probs").get_weights()[0],
        after.classifier.get_layer("class_probs").get_weights()[0],
    )

    # Asked for more steps, the stage resumes from its checkpoint.
    lines.clear()
    summary = _run_with_stage(tmp_path, 5, lines.append)
    assert summary["steps"]["shared_head"] == 5
    assert any("resumed from" in s and "shared_head step 3" in s for s in lines)


@pytest.mark.slow
def test_separate_detections_of_a_run_are_unchanged_by_the_stage(tmp_path):
    train(tmp_path, ToySource(("a", "b")), _tiny_run_cfg(), progress=False, eval_crops=0)
    image = coloured_object_image(80, 60, [[10, 12, 50, 40]])[None]
    overrides = {"coverage_threshold": 0.0, "max_refine": 3, "window_gate": 0.0}
    separate_before = _detect(module_from_run(tmp_path, overrides)[0], image)
    _run_with_stage(tmp_path, 2)
    separate_after = _detect(module_from_run(tmp_path, overrides)[0], image)
    for key, value in separate_before.items():
        np.testing.assert_array_equal(value.numpy(), separate_after[key].numpy(), err_msg=key)
    shared, _ = module_from_run(tmp_path, {**overrides, "classifier": "shared"})
    trunk = localizer_trunk(shared.localizer)
    assert {id(v) for v in trunk.weights} <= {id(v) for v in shared.joint.weights}
    # Coverage threshold 0: every box is a candidate, so max_refine = 3 of them go on; the
    # separate graph runs 3 classifier crops and one refinement per kept one, the shared 3.
    out = _detect(shared, image)
    assert int(out["network_evaluations"][0]) == WINDOWS + 3
    assert WINDOWS + 3 <= int(separate_before["network_evaluations"][0]) <= WINDOWS + 6


# -- The inference graph. ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def outputs():
    """Both graphs on an empty image and one with an object (threshold 0: nothing pruned)."""
    images = np.stack(
        [np.zeros((64, 64, 3), np.uint8), coloured_object_image(64, 64, [[10, 12, 50, 40]])]
    )
    shared = _fake_module("shared", classifier_threshold=0.0)
    separate = _fake_module("separate", classifier_threshold=0.0)
    return images, shared, _detect(shared, images), _detect(separate, images)


def test_shared_graph_counts_one_evaluation_per_candidate(outputs):
    _, shared, out_shared, out_separate = outputs
    separate_evals = out_separate["network_evaluations"].numpy()
    # Same localizer, same candidates: separate = windows + 2 x candidates (nothing pruned).
    candidates = (separate_evals - WINDOWS) // 2
    assert candidates[0] == 0 and candidates[1] >= 1
    np.testing.assert_array_equal(out_shared["network_evaluations"], WINDOWS + candidates)
    assert shared.max_network_evaluations == WINDOWS + 6


def test_shared_probability_is_the_joint_models_on_the_refinement_crop(outputs):
    images, shared, out, out_separate = outputs
    n = int(out["num_detections"][1])
    assert n >= 1
    h, w = images.shape[1:3]
    boxes = out["first_stage_boxes"][1, :n].numpy() * np.array([h, w, h, w], np.float32)
    enlarge = shared.config.inference.refine_enlarge
    grown = box_ops.scale_about_center(tf.constant(boxes), enlarge).numpy()
    # The default refinement crop (refine_crop "clip"): the grown box cut to the image.
    assert shared.config.inference.refine_crop == "clip"
    crop = np.clip(grown, 0.0, np.array([h, w, h, w], np.float32))
    patches = crops.crop_and_resize(
        tf.constant(images, tf.float32), tf.constant(crop), tf.ones([n], tf.int32), 225
    )
    probs = shared.joint(patches, training=False)["class_probs"][:, 1].numpy()
    # score_mode "classifier": the first-stage score is P(class | refinement crop).
    np.testing.assert_allclose(out["first_stage_scores"][1, :n], probs, atol=1e-4)
    # The red object fills ~1 / enlarge^2 of its enlarged crop, all of its own box's.
    assert out["first_stage_scores"][1, 0] < 0.8 <= out_separate["first_stage_scores"][1, 0]


def test_shared_head_prunes_on_the_refinement_crop():
    # A threshold of 0.8: the enlarged crop's red fraction (~1 / refine_enlarge^2) is below it,
    # the box's not.
    image = coloured_object_image(64, 64, [[10, 12, 50, 40]])[None]
    shared = _detect(_fake_module("shared", classifier_threshold=0.8), image)
    separate = _detect(_fake_module("separate", classifier_threshold=0.8), image)
    assert int(shared["num_detections"][0]) == 0
    assert int(separate["num_detections"][0]) >= 1
    # Every candidate still went through the joint network once.
    assert int(shared["network_evaluations"][0]) > WINDOWS


# -- Configuration. ----------------------------------------------------------------------------


def test_config_fields_are_validated_by_name():
    with pytest.raises(ValueError, match="'classifier'"):
        InferenceConfig(classifier="joint").validate()
    with pytest.raises(ValueError, match="'classifier_stage'.*candidates"):
        InferenceConfig(classifier_stage="after_nms").validate()
    with pytest.raises(ValueError, match="'shared_head_steps'"):
        TrainConfig(shared_head_steps=-1).validate()
    assert InferenceConfig().classifier == "separate" and TrainConfig().shared_head_steps == 0
    cfg = DetectorConfig(
        model=ModelConfig(num_classes=1),
        inference=dataclasses.replace(InferenceConfig(), classifier="shared"),
    )
    with pytest.raises(ValueError, match="'classifier'.*shared_head"):
        DetectorModule(fake_localizer_with_trunk(), fake_classifier(), ["c0"], ASPECTS, cfg)
    from dnet_tf.tflite.edge_pipeline import EdgePipeline

    with pytest.raises(ValueError, match="'classifier'"):
        EdgePipeline(lambda x: x, lambda x: x, ["c0"], ASPECTS, cfg)


@pytest.mark.slow
def test_export_with_the_shared_head_keeps_the_signatures_and_the_graphs_outputs(tmp_path):
    from dnet_tf.core import contracts
    from dnet_tf.export.saved_model import export_module

    module = _fake_module("shared", max_detections=10)
    version = export_module(module, tmp_path, "dnet")
    loaded = tf.saved_model.load(str(version))
    assert set(loaded.signatures) == {
        contracts.SERVING_DEFAULT,
        contracts.IMAGE_TENSOR,
        contracts.DETECT_WITH_MASKS,
    }
    image = coloured_object_image(64, 64, [[10, 12, 50, 40]])[None]
    exported = loaded.signatures[contracts.IMAGE_TENSOR](images=tf.constant(image))
    assert set(exported) == set(contracts.DETECTION_OUTPUTS)
    in_memory = _detect(module, image)
    assert int(in_memory["num_detections"][0]) >= 1
    for key in ("num_detections", "detection_boxes", "detection_scores", "detection_classes"):
        np.testing.assert_allclose(exported[key], in_memory[key], atol=1e-5, err_msg=key)

"""--init_weights: a fresh run's classifier trunk (and so the localizer's) starts from an earlier
run, a .keras model or a trunk's weights file saved here (no download), variable for variable;
layers that do not match are named; backbones without ImageNet weights are refused."""

import dataclasses

import keras
import numpy as np
import pytest

from dnet_tf.config import DetectorConfig, ModelConfig, TrainConfig
from dnet_tf.models.backbones import build_trunk
from dnet_tf.models.classifier import build_classifier
from dnet_tf.training import init_weights as iw
from dnet_tf.training import run_dir as rd

TINY = ModelConfig(num_classes=2, input_size=64, mask_size=8, width=0.25)


def _randomised(model, seed):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


def _same(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb))


@pytest.fixture(scope="module")
def source_classifier():
    # Another class count: the class head differs, trunk and embedding are class-independent.
    return _randomised(build_classifier(dataclasses.replace(TINY, num_classes=5)), 1)


def test_from_keras_file_copies_trunk_and_embedding_only(source_classifier, tmp_path):
    path = tmp_path / "clf.keras"
    source_classifier.save(path)
    target = build_classifier(TINY)
    head_before = target.get_layer("class_probs").get_weights()
    msg = iw.init_classifier_weights(target, str(path), TINY)
    assert "trunk" in msg and "embedding" in msg
    for name in ("trunk", "embedding"):
        assert _same(target.get_layer(name), source_classifier.get_layer(name)), name
    for a, b in zip(head_before, target.get_layer("class_probs").get_weights()):
        assert np.array_equal(a, b)  # the class head keeps its fresh initialisation


def test_from_trunk_weights_file(tmp_path):
    trunk = _randomised(build_trunk(TINY), 2)
    path = tmp_path / "trunk.weights.h5"
    trunk.save_weights(path)
    target = build_classifier(TINY)
    emb_before = target.get_layer("embedding").get_weights()
    iw.init_classifier_weights(target, str(path), TINY)
    assert _same(target.get_layer("trunk"), trunk)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(emb_before, target.get_layer("embedding").get_weights())
    )


def test_mismatch_names_the_layer_and_shapes(source_classifier, tmp_path):
    path = tmp_path / "clf.keras"
    source_classifier.save(path)
    wider = dataclasses.replace(TINY, width=0.5)
    target = build_classifier(wider)
    before = target.get_weights()
    with pytest.raises(
        ValueError,
        match=r"clf.keras \(trunk\) does not match this config's 'trunk': layer 'conv1' variable "
        r"'kernel': shape \(11, 11, 3, 24\) in the source, \(11, 11, 3, 48\) here",
    ):
        iw.init_classifier_weights(target, str(path), wider)
    assert all(np.array_equal(a, b) for a, b in zip(before, target.get_weights()))  # untouched
    other = ModelConfig(
        num_classes=2, input_size=64, mask_size=8, backbone="mobilenet_v3_small", width=0.75
    )
    with pytest.raises(
        ValueError, match=r"layers of the source not in this network: 'conv1', 'conv1_bn'"
    ):
        iw.init_classifier_weights(build_classifier(other), str(path), other)


def test_imagenet_refused_for_paper_backbone_and_odd_width():
    with pytest.raises(ValueError, match=r"no ImageNet weights for the 'paper' backbone"):
        iw.init_classifier_weights(build_classifier(TINY), "imagenet", TINY)
    cfg = ModelConfig(
        num_classes=2, input_size=64, mask_size=8, backbone="mobilenet_v3_small", width=0.5
    )
    with pytest.raises(ValueError, match=r"width 0.75 and 1.0, not 0.5"):
        iw.init_classifier_weights(build_classifier(cfg), "imagenet", cfg)


def test_imagenet_path_copies_the_pretrained_trunk(monkeypatch, tmp_path):
    cfg = ModelConfig(
        num_classes=2, input_size=64, mask_size=8, backbone="mobilenet_v3_small", width=0.75
    )
    # Stand-in for keras.applications' download: the same architecture, weights saved locally.
    weights = tmp_path / "mobilenet.weights.h5"
    _randomised(build_trunk(cfg), 3).save_weights(weights)

    def local_pretrained(model_cfg):
        net = keras.applications.MobileNetV3Small(
            input_shape=(64, 64, 3),
            alpha=model_cfg.width,
            include_top=False,
            weights=None,
            include_preprocessing=True,
            name="trunk",
        )
        net.load_weights(weights)
        return net

    monkeypatch.setitem(iw.IMAGENET_BUILDERS, "mobilenet_v3_small", local_pretrained)
    target = build_classifier(cfg)
    assert "ImageNet mobilenet_v3_small" in iw.init_classifier_weights(target, "imagenet", cfg)
    assert _same(target.get_layer("trunk"), local_pretrained(cfg))


def test_missing_sources_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run directory or file"):
        iw.init_classifier_weights(build_classifier(TINY), str(tmp_path / "nope"), TINY)
    with pytest.raises(FileNotFoundError, match=r"no classifier.keras"):
        iw.init_classifier_weights(build_classifier(TINY), str(tmp_path), TINY)


def test_train_from_earlier_run_dir(tmp_path):
    """The whole hook: a zero-step run initialised from an earlier run ends with that run's trunk
    in both networks (the localizer's copied from the classifier by the recipe)."""
    from dnet_tf.training.sources import ToySource
    from dnet_tf.training.train import train

    cfg = DetectorConfig(
        model=TINY,
        train=dataclasses.replace(
            TrainConfig(), classifier_steps=0, localizer_steps=0, batch_size=4
        ),
    )
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    src = _randomised(build_classifier(dataclasses.replace(TINY, num_classes=3)), 4)
    rd.atomic_save_model(src, earlier / rd.CLASSIFIER)
    lines = []
    run = tmp_path / "run"
    train(
        run,
        ToySource(class_names=("a", "b")),
        cfg,
        progress=False,
        eval_crops=0,
        log=lines.append,
        init_weights=str(earlier),
    )
    assert any("classifier initialised from" in ln for ln in lines)
    loaded = rd.load_run(run)
    for name in ("trunk", "embedding"):
        assert _same(loaded.classifier.get_layer(name), src.get_layer(name)), name
    assert _same(loaded.localizer.get_layer("trunk"), src.get_layer("trunk"))

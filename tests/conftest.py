"""Shared pytest fixtures. Tests using ../shared skip cleanly when it is absent."""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
RACCOON = SHARED / "datasets" / "raccoon"


@pytest.fixture(scope="session")
def raccoon_dir():
    """Path of the real raccoon VOC set; skips the test when it is not on this machine."""
    if not (RACCOON / "Annotations").is_dir():
        pytest.skip(f"raccoon dataset not present at {RACCOON}")
    return RACCOON


@pytest.fixture(scope="session")
def fake_export(tmp_path_factory):
    """(module, version dir) of a small SavedModel over the fake networks of ``fakes`` (two
    classes, at most 10 detections), exported once for every test module that needs a real
    export on disk."""
    import dataclasses

    from fakes import fake_classifier, fake_localizer

    from dnet_tf.config import DetectorConfig, InferenceConfig, ModelConfig
    from dnet_tf.export.saved_model import export_module
    from dnet_tf.inference.module import DetectorModule

    cfg = DetectorConfig(
        model=ModelConfig(num_classes=2),
        inference=dataclasses.replace(InferenceConfig(), max_refine=4, max_detections=10),
    )
    module = DetectorModule(
        fake_localizer(num_classes=2),
        fake_classifier(num_classes=2),
        ["cat", "dog"],
        [0.5, 1.0, 2.0],
        cfg,
    )
    return module, export_module(module, tmp_path_factory.mktemp("fake_export"), "dnet")

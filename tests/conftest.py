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

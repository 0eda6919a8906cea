"""Starting a run from pretrained weights instead of random ones (``--init_weights``).

The classifier is trained first and its trunk and embedding then initialise the localizer (the
paper's recipe, dnet_tf.training.recipe), so pretrained weights go into the classifier's shared
sub-models before its first step; the localizer inherits them through the recipe.

Sources:
  imagenet        keras.applications' ImageNet weights for the backbones it ships them for
                  (mobilenet_v3_small at width 0.75 or 1.0); the trunk only. Downloaded by Keras
                  on first use into ~/.keras/models, so it needs a connected machine once.
  RUN_DIR         an earlier run directory: its classifier.keras's trunk and embedding.
  FILE.keras      a saved Keras model: its "trunk" and "embedding" sub-models when it has them
                  (a classifier or localizer of this package), else the model itself as a trunk.
  FILE.weights.h5 weights saved from a trunk (``classifier.get_layer("trunk").save_weights``),
                  loaded into a trunk built with this run's model config.

Weights are copied layer by layer, by layer name; a layer missing on either side or a variable
of another shape is an error that names the layer, the shapes and the source. Only a fresh run
is initialised: a resumed run restores its own checkpoint.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import keras

from dnet_tf.config import ModelConfig
from dnet_tf.training.recipe import SHARED_SUBMODELS

IMAGENET = "imagenet"
# Backbones keras.applications has ImageNet weights for -> a builder of that pretrained trunk.
# MobileNetV3's ImageNet weights exist for alpha 0.75 and 1.0 (keras.applications.MobileNetV3).
IMAGENET_WIDTHS = {"mobilenet_v3_small": (0.75, 1.0)}


def _imagenet_mobilenet_v3_small(model_cfg: ModelConfig) -> keras.Model:
    s = model_cfg.input_size
    return keras.applications.MobileNetV3Small(
        input_shape=(s, s, 3),
        alpha=model_cfg.width,
        include_top=False,
        weights="imagenet",
        include_preprocessing=True,
    )


IMAGENET_BUILDERS: dict[str, Callable[[ModelConfig], keras.Model]] = {
    "mobilenet_v3_small": _imagenet_mobilenet_v3_small,
}


def _weighted_layers(model: keras.Model) -> dict:
    return {layer.name: layer for layer in model.layers if layer.weights}


def copy_layer_weights(source: keras.Model, target: keras.Model, what: str) -> int:
    """Copies every weighted layer of ``target`` from the layer of the same name in ``source``.

    Returns:
      the number of layers copied.
    Raises:
      ValueError: listing each layer missing in the source or the target and each variable whose
        shape differs, with ``what`` (the source's description) in the message; nothing is
        copied then.
    """
    src, dst = _weighted_layers(source), _weighted_layers(target)

    def names(ns):
        ns = sorted(ns)
        return ", ".join(repr(n) for n in ns[:8]) + (
            f" ... ({len(ns)} in all)" if len(ns) > 8 else ""
        )

    problems = []
    if missing := [n for n in dst if n not in src]:
        problems.append(f"layers missing from the source: {names(missing)}")
    if extra := [n for n in src if n not in dst]:
        problems.append(f"layers of the source not in this network: {names(extra)}")
    for name in sorted(dst.keys() & src.keys()):
        a, b = dst[name].weights, src[name].weights
        if len(a) != len(b):
            problems.append(f"layer {name!r}: {len(b)} variables in the source, {len(a)} here")
            continue
        for va, vb in zip(a, b):
            if tuple(va.shape) != tuple(vb.shape):
                problems.append(
                    f"layer {name!r} variable {va.path.split('/')[-1]!r}: shape "
                    f"{tuple(vb.shape)} in the source, {tuple(va.shape)} here"
                )
    if problems:
        more = f" (and {len(problems) - 8} more)" if len(problems) > 8 else ""
        raise ValueError(
            f"--init_weights: {what} does not match this config's {target.name!r}: "
            + "; ".join(problems[:8])
            + more
        )
    for name, layer in dst.items():
        layer.set_weights(src[name].get_weights())
    return len(dst)


def _shared_submodels(model: keras.Model) -> dict:
    names = {layer.name for layer in model.layers}
    return {n: model.get_layer(n) for n in SHARED_SUBMODELS if n in names}


def _load_keras_file(path: pathlib.Path) -> keras.Model:
    try:
        return keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for unreadable files
        raise ValueError(f"--init_weights {path}: cannot load it as a Keras model: {e}") from e


def init_classifier_weights(classifier: keras.Model, source: str, model_cfg: ModelConfig) -> str:
    """Loads pretrained weights into the classifier's trunk (and embedding, when the source has
    one) before training; returns a line saying what was loaded.

    Args:
      classifier: a model built by dnet_tf.models.classifier.build_classifier(model_cfg).
      source: "imagenet", a run directory, a .keras file or a trunk's .weights.h5 file.
      model_cfg: the run's model config (backbone, width, input size).
    Raises:
      ValueError: a backbone without ImageNet weights, an unreadable file, or layers that do not
        match (named in the message).
      FileNotFoundError: a path that does not exist, or a run directory without classifier.keras.
    """
    targets = _shared_submodels(classifier)
    if "trunk" not in targets:
        raise ValueError(
            "the classifier has no 'trunk' sub-model; was it built by build_classifier?"
        )
    if source == IMAGENET:
        backbone = model_cfg.backbone
        if backbone not in IMAGENET_BUILDERS:
            raise ValueError(
                f"--init_weights imagenet: keras.applications ships no ImageNet weights for the "
                f"{backbone!r} backbone (it does for: {sorted(IMAGENET_BUILDERS)}); give a run "
                f"directory or a weights file instead"
            )
        widths = IMAGENET_WIDTHS.get(backbone)
        if widths and model_cfg.width not in widths:
            raise ValueError(
                f"--init_weights imagenet: {backbone} ImageNet weights exist for width "
                f"{' and '.join(map(str, widths))}, not {model_cfg.width}"
            )
        pretrained = IMAGENET_BUILDERS[backbone](model_cfg)
        n = copy_layer_weights(pretrained, targets["trunk"], f"ImageNet {backbone}")
        return f"classifier trunk initialised from ImageNet {backbone} weights ({n} layers)"

    path = pathlib.Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--init_weights {source}: no such run directory or file")
    if path.is_dir():
        model_file = path / "classifier.keras"
        if not model_file.is_file():
            raise FileNotFoundError(
                f"--init_weights {path}: not a finished run directory (no classifier.keras)"
            )
        path = model_file
    if path.name.endswith(".weights.h5"):
        from dnet_tf.models.backbones import build_trunk

        trunk = build_trunk(model_cfg)
        try:
            trunk.load_weights(str(path))
        except Exception as e:  # noqa: BLE001 - Keras names the mismatch in its own words
            raise ValueError(
                f"--init_weights {path}: does not load into a {model_cfg.backbone} trunk at "
                f"width {model_cfg.width}, input {model_cfg.input_size}: {e}"
            ) from e
        n = copy_layer_weights(trunk, targets["trunk"], str(path))
        return f"classifier trunk initialised from {path} ({n} layers)"
    if path.suffix != ".keras":
        raise ValueError(
            f"--init_weights {path}: expected 'imagenet', a run directory, a .keras file or a "
            f".weights.h5 file"
        )
    model = _load_keras_file(path)
    sources = _shared_submodels(model) or {"trunk": model}
    copied = []
    for name, target in targets.items():
        if name in sources:
            n = copy_layer_weights(sources[name], target, f"{path} ({name})")
            copied.append(f"{name} ({n} layers)")
    return f"classifier initialised from {path}: {', '.join(copied)}"

"""Converts a trained run for edge teams and measures what each TFLite variant costs and loses.

``build_report(run_dir, out_dir, data)`` writes into ``out_dir`` (the "edge bundle"):

  localizer_<variant>.tflite, classifier_<variant>.tflite   the networks (see ``convert``)
  config.json, class_names.txt, dataset_stats.json          what ``EdgePipeline`` needs besides them
  report.json, report.md                                    the measurements below

Measurements, per variant:
  * size of each file;
  * max and mean absolute error of the outputs against the Keras model on held-out crops (the
    ``val`` split, crops drawn as in training by ``localizer_dataset`` / ``classifier_dataset``),
    and for the classifier the share of crops whose arg-max class agrees with Keras';
  * mAP of the edge pipeline (``EdgePipeline`` around the variant's two interpreters) on the test
    split, VOC2007 11-point and all-point, with the edge pipeline around the Keras models as the
    reference (``keras``): that one is the SavedModel's arithmetic, so its mAP is the exported
    model's (up to JPEG decoding: PIL here, tf.io.decode_image in the graph);
  * latency of the localizer per window on this machine: one window per invoke (as a device
    runs it) and a whole image's windows in one invoke, per window; 1 and 2 threads; plus the
    classifier per crop. Medians of ``latency_repeats`` timed calls after one warm-up call.

Int8 calibration uses ``calibration_crops`` crops of the ``train`` split (each network its own
kind of crops), never the evaluation images.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import platform
import shutil
import time
from collections.abc import Sequence

import numpy as np

from dnet_tf.core import contracts
from dnet_tf.tflite.convert import (
    NETWORKS,
    VARIANTS,
    TFLiteNetwork,
    check_variant,
    convert_variants,
    keras_network,
    sample_crops,
    tflite_filename,
)

BUNDLE_FILES = (contracts.CONFIG, contracts.CLASS_NAMES, contracts.DATASET_STATS)
REFERENCE = "keras"


@dataclasses.dataclass
class ReportOptions:
    """Knobs of ``build_report``."""

    variants: Sequence[str] = VARIANTS  # TFLite variants to build and measure
    calibration_split: str = "train"  # int8 calibration crops come from here
    calibration_crops: int = 256  # crops per network for int8 calibration; >= 1
    held_out_split: str = "val"  # crops for the output-error measurement
    held_out_crops: int = 256  # crops per network for the output errors; >= 1
    eval_split: str = "test"  # images for mAP
    eval_images: int | None = None  # first N images of eval_split (None: all)
    latency_repeats: int = 20  # timed calls per latency figure; >= 1
    latency_threads: Sequence[int] = (1, 2)  # interpreter thread counts timed
    interpreter_threads: int | None = (
        None  # threads of the interpreters used for mAP (None: default)
    )
    seed: int = 0  # crop sampling seed
    progress: bool = True  # tqdm bars on stderr

    def validate(self) -> ReportOptions:
        for v in self.variants:
            check_variant(v)
        for name in ("calibration_crops", "held_out_crops", "latency_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"report option '{name}' must be >= 1, got {getattr(self, name)}")
        if self.eval_images is not None and self.eval_images < 1:
            raise ValueError(
                f"report option 'eval_images' must be >= 1 or None, got {self.eval_images}"
            )
        return self


# ----------------------------------------------------------------------------------------------
# The bundle.


def write_bundle(run, run_dir, out_dir, data: str, options: ReportOptions) -> dict:
    """Converts both networks of a run to every variant and copies what the pipeline needs.

    Args:
      run: RunArtifacts of ``run_dir`` (``dnet_tf.training.run_dir.load_run``).
      run_dir: the run directory (config.json, class_names.txt, dataset_stats.json are copied).
      out_dir: the bundle directory (created).
      data: dataset source for the int8 calibration crops (VOC root or TFRecord glob).
    Returns:
      {network: {variant: {"file": name, "bytes": size, "input"/"output": {dtype, scale,
      zero_point} (scale 0 for float tensors)}}, "calibration": {...}, "seconds": {...}}.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in BUNDLE_FILES:
        shutil.copyfile(pathlib.Path(run_dir) / name, out_dir / name)
    info = {
        "calibration": {
            "split": options.calibration_split,
            "crops": options.calibration_crops,
            "seed": options.seed,
        },
        "seconds": {},
    }
    models = {"localizer": run.localizer, "classifier": run.classifier}
    for network in NETWORKS:
        calibration = None
        if "int8" in options.variants:
            calibration = sample_crops(
                data,
                options.calibration_split,
                run.class_names,
                run.config,
                network,
                options.calibration_crops,
                options.seed,
            )
        start = time.perf_counter()
        files = convert_variants(models[network], options.variants, calibration)
        info["seconds"][network] = round(time.perf_counter() - start, 1)
        info[network] = {}
        for variant, flatbuffer in files.items():
            name = tflite_filename(network, variant)
            tmp = out_dir / f".{name}.tmp"
            tmp.write_bytes(flatbuffer)
            os.replace(tmp, out_dir / name)
            net = TFLiteNetwork(flatbuffer)
            info[network][variant] = {
                "file": name,
                "bytes": len(flatbuffer),
                "input": _quantization(net.input_quantization),
                "output": _quantization(net.output_quantization),
            }
    return info


def _quantization(q) -> dict:
    return {"dtype": np.dtype(q.dtype).name, "scale": q.scale, "zero_point": q.zero_point}


def load_bundle_pipeline(bundle_dir, variant: str, num_threads: int | None = None):
    """An ``EdgePipeline`` over a bundle's two .tflite files of one variant (and its config
    files)."""
    from dnet_tf.tflite.edge_pipeline import EdgePipeline
    from dnet_tf.training import run_dir as rd

    bundle_dir = pathlib.Path(bundle_dir)
    config = rd.read_config(bundle_dir / rd.CONFIG)
    names = rd.read_class_names(bundle_dir / rd.CLASS_NAMES)
    ratios = rd.read_aspect_ratios(bundle_dir / rd.DATASET_STATS)
    localizer = TFLiteNetwork(
        bundle_dir / tflite_filename("localizer", variant), num_threads=num_threads
    )
    classifier = TFLiteNetwork(
        bundle_dir / tflite_filename("classifier", variant), num_threads=num_threads
    )
    return EdgePipeline(localizer, classifier, names, ratios, config)


# ----------------------------------------------------------------------------------------------
# Measurements.


def output_errors(reference: np.ndarray, outputs: np.ndarray, classifier: bool) -> dict:
    """Max/mean absolute error of outputs against the reference; arg-max agreement for
    probabilities."""
    err = np.abs(np.asarray(outputs, np.float64) - np.asarray(reference, np.float64))
    out = {
        "max_abs_error": float(err.max()),
        "mean_abs_error": float(err.mean()),
        "p99_abs_error": float(np.quantile(err, 0.99)),
    }
    if classifier:
        out["argmax_agreement"] = float(np.mean(np.argmax(outputs, 1) == np.argmax(reference, 1)))
    return out


def crop_errors(run, bundle_dir, data: str, options: ReportOptions) -> dict:
    """{network: {"crops": n, "split": s, variant: output_errors(...)}} on held-out crops."""
    out = {}
    models = {"localizer": run.localizer, "classifier": run.classifier}
    for network in NETWORKS:
        crops = sample_crops(
            data,
            options.held_out_split,
            run.class_names,
            run.config,
            network,
            options.held_out_crops,
            options.seed + 1,
        )
        reference = keras_network(models[network])(crops)
        out[network] = {"split": options.held_out_split, "crops": len(crops)}
        for variant in options.variants:
            net = TFLiteNetwork(
                pathlib.Path(bundle_dir) / tflite_filename(network, variant), max_batch=32
            )
            out[network][variant] = output_errors(reference, net(crops), network == "classifier")
    return out


def time_network(network, images: np.ndarray, repeats: int) -> float:
    """Median seconds of ``network(images)`` over ``repeats`` calls after one untimed call."""
    network(images)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        network(images)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def network_latency(
    models: dict,
    files: dict,
    input_size: int,
    windows: int,
    repeats: int,
    threads: Sequence[int] = (1, 2),
) -> dict:
    """Milliseconds per window (localizer) / per crop (classifier) for every variant and Keras.

    Args:
      models: {network: keras.Model}; files: {network: {variant: .tflite path or bytes}}.
      input_size: S; windows: N, the windows of one image (35 for 3 scales).
      repeats: timed calls per figure (median); threads: interpreter thread counts.
    Returns:
      {network: {variant: {"threads_<t>": {"batch_1": ms, "batch_<N>": ms per item}}}}; Keras
      (TensorFlow's own thread pool) under "keras" / "tensorflow". Inputs are uniform noise: the
      cost of these networks does not depend on the pixel values.
    """
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (windows, input_size, input_size, 3)).astype(np.float32)
    out = {}
    for network, model in models.items():
        fn = keras_network(model)
        out[network] = {
            REFERENCE: {
                "tensorflow": {
                    "batch_1": 1000 * time_network(fn, images[:1], repeats),
                    f"batch_{windows}": 1000 * time_network(fn, images, repeats) / windows,
                }
            }
        }
        for variant, file in files[network].items():
            out[network][variant] = {}
            for t in threads:
                net = TFLiteNetwork(file, num_threads=t)
                out[network][variant][f"threads_{t}"] = {
                    "batch_1": 1000 * time_network(net, images[:1], repeats),
                    f"batch_{windows}": 1000 * time_network(net, images, repeats) / windows,
                }
    return out


def latency(run, bundle_dir, options: ReportOptions) -> dict:
    """``network_latency`` of a run's networks and its bundle's files."""
    files = {
        network: {
            v: pathlib.Path(bundle_dir) / tflite_filename(network, v) for v in options.variants
        }
        for network in NETWORKS
    }
    return network_latency(
        {"localizer": run.localizer, "classifier": run.classifier},
        files,
        run.config.model.input_size,
        int(sum(run.config.inference.windows_per_scale)),
        options.latency_repeats,
        options.latency_threads,
    )


def evaluate_pipeline(pipeline, records, progress: bool = False, desc: str = "") -> dict:
    """mAP of an EdgePipeline on VOC records: VOC2007 11-point and all-point, refined and first
    stage.

    Returns dict: voc07_map, voc10_map, first_stage_voc07_map, per_class_ap07 {name: ap},
    seconds_per_image (mean, whole pipeline), network_evaluations_per_image (mean), num_images.
    """
    from dnet_tf.evaluation.runner import ground_truth_of, load_image
    from dnet_tf.evaluation.voc_ap import evaluate_detections
    from dnet_tf.tflite.edge_pipeline import detections_of

    gts, refined, first, seconds, evals = [], [], [], [], []
    items = records
    if progress:
        from tqdm import tqdm

        items = tqdm(records, desc=desc, unit="image")
    for record in items:
        image = load_image(record.image_path)
        start = time.perf_counter()
        out = pipeline.detect(image)
        seconds.append(time.perf_counter() - start)
        h, w = image.shape[:2]
        gts.append(ground_truth_of(record))
        names = pipeline.class_names
        refined.append(detections_of(out, h, w, names).arrays())
        first.append(detections_of(out, h, w, names, prefix="first_stage_").arrays())
        evals.append(out["network_evaluations"])
    c = len(pipeline.class_names)
    r07 = evaluate_detections(gts, refined, c, use_07_metric=True)
    r10 = evaluate_detections(gts, refined, c, use_07_metric=False)
    f07 = evaluate_detections(gts, first, c, use_07_metric=True)
    finite = lambda x: None if not np.isfinite(x) else float(x)  # noqa: E731
    return {
        "num_images": len(records),
        "voc07_map": finite(r07.mean_ap),
        "voc10_map": finite(r10.mean_ap),
        "first_stage_voc07_map": finite(f07.mean_ap),
        "per_class_ap07": {n: finite(a) for n, a in zip(pipeline.class_names, r07.aps)},
        "seconds_per_image": float(np.mean(seconds)),
        "network_evaluations_per_image": float(np.mean(evals)),
    }


def machine() -> dict:
    import ai_edge_litert
    import tensorflow as tf

    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()),
        "tensorflow": tf.__version__,
        "ai_edge_litert": getattr(ai_edge_litert, "__version__", "unknown"),
    }


# ----------------------------------------------------------------------------------------------
# The report.


def build_report(
    run_dir,
    out_dir,
    data: str,
    options: ReportOptions | None = None,
    whole_pipeline_saved_model: str | os.PathLike | None = None,
) -> dict:
    """Writes the edge bundle and report.json / report.md into out_dir; returns the report dict.

    Args:
      run_dir: a complete training run (``load_run``).
      out_dir: the bundle directory.
      data: the dataset (VOC root) for calibration, held-out crops and the mAP split.
      options: ReportOptions.
      whole_pipeline_saved_model: an exported SavedModel version directory to try converting whole
        (``whole_pipeline.attempt_whole_pipeline``); None skips that (it takes minutes).
    """
    from dnet_tf.data import voc
    from dnet_tf.tflite.edge_pipeline import EdgePipeline
    from dnet_tf.training.run_dir import atomic_write_json, atomic_write_text, load_run

    options = (options or ReportOptions()).validate()
    out_dir = pathlib.Path(out_dir)
    run = load_run(run_dir)
    report = {
        "run_dir": str(run_dir),
        "data": str(data),
        "machine": machine(),
        "variants": list(options.variants),
        "options": _jsonable(dataclasses.asdict(options)),
        "model": dataclasses.asdict(run.config.model),
    }
    report["files"] = write_bundle(run, run_dir, out_dir, data, options)
    report["crop_errors"] = crop_errors(run, out_dir, data, options)
    report["latency_ms"] = latency(run, out_dir, options)

    records = voc.read_voc_split(data, options.eval_split, list(run.class_names), on_error="fail")
    if options.eval_images is not None:
        records = records[: options.eval_images]
    if not records:
        raise ValueError(f"{data}: split {options.eval_split!r} has no images to evaluate")
    pipelines = {
        REFERENCE: EdgePipeline(
            keras_network(run.localizer),
            keras_network(run.classifier),
            run.class_names,
            run.aspect_ratios,
            run.config,
        )
    }
    for variant in options.variants:
        pipelines[variant] = load_bundle_pipeline(out_dir, variant, options.interpreter_threads)
    report["map"] = {
        "split": options.eval_split,
        "metric": "VOC2007 11-point (voc07) and all-point (voc10)",
    }
    for name, pipeline in pipelines.items():
        report["map"][name] = evaluate_pipeline(
            pipeline, records, options.progress, desc=f"edge {name}"
        )
    base = report["map"].get("float32", {}).get("voc07_map")
    report["map"]["delta_vs_float32_voc07"] = {
        v: (
            None
            if base is None or report["map"][v]["voc07_map"] is None
            else report["map"][v]["voc07_map"] - base
        )
        for v in pipelines
    }
    evaluation = pathlib.Path(run_dir) / contracts.EVAL_DIR / contracts.EVALUATION_JSON
    if evaluation.is_file():  # the SavedModel graph's own figure, from the evaluation command
        methods = json.loads(evaluation.read_text()).get("methods", {})
        if "DetectorNet" in methods:
            report["map"]["savedmodel_evaluation"] = {
                "file": str(evaluation),
                "num_images": json.loads(evaluation.read_text()).get("num_images"),
                "voc07_map": methods["DetectorNet"]["voc07"].get("mAP"),
            }

    if whole_pipeline_saved_model is not None:
        from dnet_tf.tflite.whole_pipeline import attempt_whole_pipeline

        report["whole_pipeline"] = {
            "saved_model": str(whole_pipeline_saved_model),
            "attempts": attempt_whole_pipeline(whole_pipeline_saved_model, out_dir),
        }
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_text(out_dir / "report.md", format_report(report))
    return report


def _jsonable(d):
    return json.loads(json.dumps(d, default=list))


def _fmt(x, digits=4):
    return "-" if x is None else f"{x:.{digits}f}"


def format_report(report: dict) -> str:
    """The report as Markdown tables (sizes and errors, mAP, latency, whole-pipeline attempts)."""
    variants = report["variants"]
    machine = report["machine"]
    lines = [
        f"# TFLite report: {report['run_dir']}",
        "",
        f"Machine: {machine['cpus']} CPUs, {machine['platform']}; "
        f"TensorFlow {machine['tensorflow']}, ai-edge-litert {machine['ai_edge_litert']}.",
        "",
    ]
    errors = report["crop_errors"]
    lines += [
        "## Files and output error against Keras (held-out crops)",
        "",
        f"Localizer: {errors['localizer']['crops']} crops, classifier: "
        f"{errors['classifier']['crops']} crops of the {errors['localizer']['split']} split.",
        "",
        "| variant | localizer MB | max err | mean err | classifier MB | max err | mean err "
        "| arg-max agree |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        le, ce = errors["localizer"][v], errors["classifier"][v]
        lb, cb = report["files"]["localizer"][v]["bytes"], report["files"]["classifier"][v]["bytes"]
        lines.append(
            f"| {v} | {lb / 2**20:.1f} | {le['max_abs_error']:.2e} | {le['mean_abs_error']:.2e} | "
            f"{cb / 2**20:.1f} | {ce['max_abs_error']:.2e} | {ce['mean_abs_error']:.2e} | "
            f"{ce['argmax_agreement']:.3f} |"
        )
    for network in NETWORKS:
        q = report["files"][network].get("int8", {})
        if "input" in q:
            lines.append(
                f"\nint8 {network} interface: input {q['input']['dtype']} "
                f"(scale {q['input']['scale']:.6g}, zero point {q['input']['zero_point']}), "
                f"output {q['output']['dtype']} "
                f"(scale {q['output']['scale']:.6g}, zero point {q['output']['zero_point']})."
            )
    m = report["map"]
    n_images = m[REFERENCE]["num_images"]
    lines += [
        "",
        f"## mAP of the edge pipeline ({m['split']} split, {n_images} images)",
        "",
        "| networks | mAP VOC07 | delta vs float32 | mAP all-point | first stage VOC07 "
        "| s / image | network evaluations / image |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in [REFERENCE] + variants:
        r = m[name]
        lines.append(
            f"| {name} | {_fmt(r['voc07_map'])} | {_fmt(m['delta_vs_float32_voc07'][name], 4)} | "
            f"{_fmt(r['voc10_map'])} | {_fmt(r['first_stage_voc07_map'])} | "
            f"{r['seconds_per_image']:.2f} | {r['network_evaluations_per_image']:.1f} |"
        )
    if "savedmodel_evaluation" in m:
        s = m["savedmodel_evaluation"]
        lines += [
            "",
            f"The SavedModel graph's own VOC07 mAP (evaluation command, {s['num_images']} images): "
            f"{_fmt(s['voc07_map'])}.",
        ]
    lat = report["latency_ms"]
    lines += [
        "",
        "## Latency on this machine (median ms; localizer per window, classifier per crop)",
        "",
    ]
    for network in NETWORKS:
        keys = sorted(
            {k for v in variants for t in lat[network][v].values() for k in t},
            key=lambda k: int(k[6:]),
        )
        threads = list(lat[network][variants[0]]) if variants else []
        header = " | ".join(
            f"{t.replace('_', ' ')}, {k.replace('_', ' ')}" for t in threads for k in keys
        )
        lines += [
            f"{network}:",
            "",
            f"| variant | {header} |",
            "|---|" + "---|" * (len(threads) * len(keys)),
        ]
        for v in variants:
            lines.append(
                f"| {v} | "
                + " | ".join(f"{lat[network][v][t][k]:.2f}" for t in threads for k in keys)
                + " |"
            )
        ref = lat[network][REFERENCE]["tensorflow"]
        lines += [
            "",
            "Keras/TensorFlow reference: "
            + ", ".join(f"{k.replace('_', ' ')} {ref[k]:.2f}" for k in keys),
            "",
        ]
    if "whole_pipeline" in report:
        lines += [
            "## Whole-pipeline conversion (exported SavedModel signatures)",
            "",
            "| signature | ops | converted | size MB | runs on LiteRT "
            "| ops the converter could not map |",
            "|---|---|---|---|---|---|",
        ]
        for a in report["whole_pipeline"]["attempts"]:
            size = f"{a['bytes'] / 2**20:.1f}" if a.get("converted") else "-"
            runs = (
                "-"
                if not a.get("converted")
                else (
                    "yes"
                    if a["runs_on_litert"]["ok"]
                    else f"no: {a['runs_on_litert'].get('error', '')[:80]}"
                )
            )
            ops = ", ".join(a.get("unsupported_ops", [])) or (
                "Flex: " + ", ".join(a.get("flex_ops", []))
                if a.get("flex_ops")
                else "error: " + a.get("errors", [""])[-1][:100]
                if a.get("errors")
                else ""
            )
            lines.append(
                f"| {a['signature']} | {a['ops_set']} | {'yes' if a['converted'] else 'no'} "
                f"| {size} | {runs} | {ops} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"

"""Evaluation of a detector (and optionally the sliding-window baseline) on a VOC split.

Writes into the output directory:
  table.md, table.json    the paper's Table 1 layout (rows: DetectorNet, DetectorNet (first stage),
                          Sliding windows when run, and the paper's rows when the classes are VOC's)
  evaluation.json         per method: 11-point and all-point AP per class, mAP, counts, timings
  pictures/figure4_pr.png precision-recall curves, first stage against refined (+ baseline if run)
  pictures/figure3_<id>.png  detections with the full-mask heat map and the half masks
  errors.md, errors.json, pictures/errors.png
                          error analysis per class and method (``errors``): duplicates, parts,
                          localization, other class, background, missed; recall of touching
                          and of isolated objects
  detections.json         every image's ground truth and each method's detections, image_yxyx
                          pixels, 0-based classes (``write_detections``): what the ablation
                          table's paired bootstrap reads (``bootstrap``)

Timing: seconds per image are wall-clock seconds of ``detector.detect`` (decode + the whole
two-stage graph) on this machine, one image at a time, after one untimed warm-up call on the first
image (graph tracing is a one-time cost, not a per-image one). The first-stage row has no cost
columns of its own: it is an intermediate result of the same run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image

from dnet_tf.core import contracts
from dnet_tf.evaluation.errors import analyse_errors, write_error_analysis
from dnet_tf.evaluation.pictures import draw_detections, plot_precision_recall
from dnet_tf.evaluation.table import PAPER_TABLE1, Table, TableRow, is_voc_class_list
from dnet_tf.evaluation.voc_ap import evaluate_detections, size_subset

REFINED = "DetectorNet"
FIRST_STAGE = "DetectorNet (first stage)"
SLIDING = "Sliding windows"
FIGURE3_MAX_BOXES = 5  # detections drawn per Figure 3 picture (best first, the pictured class)


@dataclasses.dataclass
class EvalOptions:
    """Knobs of an evaluation run."""

    use_07_metric: bool = True  # the table's metric: VOC2007 11-point (True) or all-point (False)
    iou_threshold: float = 0.5  # matching Jaccard threshold; (0, 1]
    pictures: int = 0  # Figure 3 pictures for the first N images (or picture_ids); >= 0
    picture_ids: Sequence[str] | None = None  # image ids to picture instead of the first N
    progress: bool = True  # a tqdm bar on stderr


# "Small" objects: box side below this fraction of the image's, sqrt(box area / image area)
# (a third of the synthetic set's objects; the finest windows are a quarter of the image's side).
SMALL_OBJECT_SIDE = 0.15


def load_image(path) -> np.ndarray:
    """uint8 [H, W, 3] RGB pixels of an image file.

    Pillow first; a file it refuses (a truncated JPEG) is decoded as the training pipeline does,
    with TF's recovery (dnet_tf.data.image_files). ValueError naming the file when neither can.
    """
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except OSError as e:
        from dnet_tf.data.image_files import read_rgb

        try:
            return read_rgb(path)
        except ValueError:
            raise ValueError(f"{path}: cannot read image ({e})") from e


def ground_truth_of(record) -> dict:
    """A VocRecord as evaluate_detections' ground-truth mapping (image_yxyx, 0-based ids)."""
    return {
        "boxes_yxyx": np.asarray(record.boxes_image_yxyx, np.float32).reshape(-1, 4),
        "classes": np.asarray(record.class_ids, np.int32),
        "difficult": np.asarray(record.difficult, bool),
    }


def _progress(items, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="image")


def _pick_pictured_class(dets, gt: dict) -> int:
    if len(dets):
        return int(dets.classes[int(np.argmax(dets.scores))])
    if len(gt["classes"]):
        return int(gt["classes"][0])
    return 0


def _figure3(path: str, image: np.ndarray, res, cls: int) -> str:
    """Figure 3 of one image: ``res`` a DetectionResult, ``cls`` the pictured class."""
    masks = np.asarray(res.full_masks, np.float32)
    if masks.ndim != 4 or masks.shape[2] != 5:
        raise ValueError(
            f"detector output 'full_masks' must be [h, w, 5, C], got shape {masks.shape}"
        )
    dets = res.detections
    pick = np.flatnonzero(dets.classes == cls)
    pick = pick[np.argsort(-dets.scores[pick], kind="stable")][:FIGURE3_MAX_BOXES]
    shown = dets.select(pick)
    return draw_detections(
        image, masks[..., cls], shown.boxes_image_yxyx, shown.class_names, shown.scores, path
    )


def evaluate_split(
    detector, records: Sequence, out_dir: str, baseline=None, options: EvalOptions | None = None
) -> dict:
    """Runs the detector (and the baseline) on every record and writes the table and pictures.

    Args:
      detector: object with ``class_names`` (list of C str) and ``detect(list of uint8 [H, W, 3])``
        returning a ``DetectionResult`` per image (``dnet_tf.inference.detector.Detector``).
      records: VocRecord list (``dnet_tf.data.voc.read_voc_split`` with the detector's classes).
      out_dir: output directory (created).
      baseline: optional ``SlidingWindowDetector`` (same class list as the detector).
      options: EvalOptions.
    Returns:
      the dict written to evaluation.json, plus "files": the paths written.
    """
    options = options or EvalOptions()
    if not records:
        raise ValueError("no images to evaluate (empty split)")
    class_names = list(detector.class_names)
    if baseline is not None and baseline.num_classes != len(class_names):
        raise ValueError(
            f"baseline classifier has {baseline.num_classes} classes, detector {len(class_names)}"
        )
    os.makedirs(out_dir, exist_ok=True)
    picture_dir = os.path.join(out_dir, "pictures")
    wanted = set(options.picture_ids or [r.image_id for r in records[: options.pictures]])

    gts = [ground_truth_of(r) for r in records]
    refined, first, evals, seconds = [], [], [], []
    files = []
    detector.detect([load_image(records[0].image_path)])  # untimed warm-up: graph tracing
    for record, gt in zip(_progress(records, options.progress, "DetectorNet"), gts):
        image = load_image(record.image_path)
        t0 = time.perf_counter()
        res = detector.detect([image])[0]
        seconds.append(time.perf_counter() - t0)
        refined.append(res.detections.arrays())
        first.append(res.first_stage.arrays())
        evals.append(int(res.network_evaluations))
        if record.image_id in wanted:
            cls = _pick_pictured_class(res.detections, gt)
            path = os.path.join(picture_dir, f"figure3_{record.image_id}.png")
            files.append(_figure3(path, image, res, cls))

    methods = {
        REFINED: (refined, float(np.mean(seconds)), float(np.mean(evals))),
        FIRST_STAGE: (first, None, None),
    }
    if baseline is not None:
        baseline.warm_up()
        sw, sw_seconds, sw_evals = [], [], []
        for record in _progress(records, options.progress, SLIDING):
            res = baseline.detect(load_image(record.image_path))
            sw.append(res)
            sw_seconds.append(res["seconds"])
            sw_evals.append(res["network_evaluations"])
        methods[SLIDING] = (sw, float(np.mean(sw_seconds)), float(np.mean(sw_evals)))

    summary = {
        "num_images": len(records),
        "class_names": class_names,
        "iou_threshold": options.iou_threshold,
        "table_metric": "VOC2007 11-point" if options.use_07_metric else "VOC2010 all-point",
        "methods": {},
    }
    skipped = getattr(records, "skipped", None)  # a VocSplit says what its reader left out
    if skipped is not None:
        summary["data"] = records.report()
    if baseline is not None:
        summary["sliding_window_config"] = {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(baseline.cfg).items()
        }
    rows, curves, errors = [], {}, {}
    image_hw = [(r.height, r.width) for r in records]
    for name, (dets, sec, ev) in methods.items():
        errors[name] = analyse_errors(gts, dets, class_names, options.iou_threshold)
        by_metric = {
            m: evaluate_detections(
                gts, dets, len(class_names), options.iou_threshold, use_07_metric=m
            )
            for m in (True, False)
        }
        chosen = by_metric[options.use_07_metric]
        curves[name] = chosen
        rows.append(TableRow.from_result(name, chosen, sec, ev))
        summary["methods"][name] = {
            "voc07": by_metric[True].to_dict(class_names),
            "voc10": by_metric[False].to_dict(class_names),
            "seconds_per_image": sec,
            "network_evaluations_per_image": ev,
            "errors": errors[name].to_dict(),
            # VOC07 AP over the objects with side < SMALL_OBJECT_SIDE of the image's
            "voc07_small": evaluate_detections(
                *size_subset(gts, dets, image_hw, max_side=SMALL_OBJECT_SIDE),
                len(class_names),
                options.iou_threshold,
                use_07_metric=True,
            ).to_dict(class_names),
        }
    if is_voc_class_list(class_names) and options.use_07_metric:
        rows += [TableRow.from_paper(name) for name in PAPER_TABLE1]
    table = Table(
        class_names,
        rows,
        metric=summary["table_metric"],
        iou_threshold=options.iou_threshold,
        skipped_images=None if skipped is None else len(skipped),
    )
    files += list(table.write(out_dir))
    files += write_error_analysis(errors, out_dir)
    files.append(
        plot_precision_recall(
            {
                ("refined" if n == REFINED else "first stage" if n == FIRST_STAGE else n.lower()): r
                for n, r in curves.items()
            },
            class_names,
            os.path.join(picture_dir, "figure4_pr.png"),
            title=f"Precision-recall, {summary['table_metric']} ({len(records)} images)",
        )
    )
    eval_path = os.path.join(out_dir, contracts.EVALUATION_JSON)
    with open(eval_path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    files.append(eval_path)
    files.append(
        write_detections(
            out_dir,
            [r.image_id for r in records],
            class_names,
            gts,
            {name: dets for name, (dets, _, _) in methods.items()},
        )
    )
    summary["files"] = files
    return summary


# The fields detections.json keeps of each image's mappings (a baseline's also carry timings).
_GROUND_TRUTH_FIELDS = ("boxes_yxyx", "classes", "difficult")
_DETECTION_FIELDS = ("boxes_yxyx", "scores", "classes")
_FIELD_DTYPES = {"classes": np.int64, "difficult": bool}
# detections.json of the largest split evaluated here (500 images) is ~1 MB; a file past this is
# not one the runner wrote, and is refused before it is read.
MAX_DETECTIONS_JSON_BYTES = 256 * 1024 * 1024


def _listed(mapping, fields) -> dict:
    out = {k: np.asarray(mapping[k]).tolist() for k in fields if k != "difficult"}
    if "difficult" in fields:  # optional in evaluate_detections' ground truth: none difficult
        out["difficult"] = np.asarray(
            mapping.get("difficult", np.zeros(len(out["classes"]), bool)), bool
        ).tolist()
    return out


def write_detections(out_dir, image_ids, class_names, ground_truth, methods: dict) -> str:
    """Writes ``<out_dir>/detections.json``: {"image_ids": [N], "class_names": [C],
    "ground_truth": [N x {"boxes_yxyx", "classes", "difficult"}], "methods": {name: [N x
    {"boxes_yxyx", "scores", "classes"}]}} (image_yxyx pixels, 0-based classes). Returns the path.
    """
    data = {
        "image_ids": list(image_ids),
        "class_names": list(class_names),
        "ground_truth": [_listed(g, _GROUND_TRUTH_FIELDS) for g in ground_truth],
        "methods": {
            name: [_listed(d, _DETECTION_FIELDS) for d in dets] for name, dets in methods.items()
        },
    }
    path = os.path.join(out_dir, contracts.DETECTIONS_JSON)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return path


def read_detections(eval_dir) -> dict:
    """``write_detections``' file of an evaluation directory, its lists as NumPy arrays.

    Raises:
      FileNotFoundError: no detections.json (an evaluation written before it existed).
      ValueError: a file over MAX_DETECTIONS_JSON_BYTES, not JSON, or whose lists do not cover
        its images with the fields above (naming the file, the field and the image index).
    """
    path = os.path.join(eval_dir, contracts.DETECTIONS_JSON)
    size = os.path.getsize(path)
    if size > MAX_DETECTIONS_JSON_BYTES:
        raise ValueError(f"{path}: {size} bytes, over the limit of {MAX_DETECTIONS_JSON_BYTES}")
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a detections file ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("image_ids"), list):
        raise ValueError(f"{path}: field 'image_ids' must be a list")
    n = len(data["image_ids"])

    def arrays(items, field, fields):
        if not isinstance(items, list) or len(items) != n:
            raise ValueError(f"{path}: field {field!r} must list the {n} images")
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or any(k not in item for k in fields):
                raise ValueError(f"{path}: {field}[{i}] must hold the fields {list(fields)}")
            try:
                out.append(
                    {
                        k: np.asarray(item[k], _FIELD_DTYPES.get(k, np.float64)).reshape(
                            (-1, 4) if k == "boxes_yxyx" else (-1,)
                        )
                        for k in fields
                    }
                )
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}: {field}[{i}]: {e}") from e
        return out

    data["ground_truth"] = arrays(data.get("ground_truth"), "ground_truth", _GROUND_TRUTH_FIELDS)
    methods = data.get("methods", {})
    if not isinstance(methods, dict):
        raise ValueError(f"{path}: field 'methods' must map names to lists")
    data["methods"] = {
        name: arrays(dets, f"methods.{name}", _DETECTION_FIELDS) for name, dets in methods.items()
    }
    return data


def evaluate_voc(
    detector,
    data,
    split: str,
    out_dir: str,
    *,
    baseline=None,
    options: EvalOptions | None = None,
    max_images: int | None = None,
    on_error: str = "fail",
) -> dict:
    """``evaluate_split`` on a VOC split read from disk (objects of other classes ignored).

    Args:
      detector: as ``evaluate_split``; its class list selects the ground truth.
      data: VOC root (Annotations/, JPEGImages/, ImageSets/Main/).
      split: ImageSets/Main/<split>.txt.
      out_dir, baseline, options: as ``evaluate_split``.
      max_images: evaluate only the first N images of the split.
      on_error: a bad annotation stops ("fail") or drops its image with a warning ("skip").
    Raises:
      dnet_tf.data.voc.VocError: a bad annotation (naming the file) under "fail".
      ValueError: an empty split.
    """
    from dnet_tf.data.voc import read_voc_split

    records = read_voc_split(
        data, split, detector.class_names, on_error=on_error, ignore_unknown_classes=True
    )
    if max_images is not None:
        records = records[:max_images]
    if not records:
        raise ValueError(f"{data}: split {split!r} has no images")
    return evaluate_split(detector, records, out_dir, baseline, options)

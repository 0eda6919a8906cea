"""Names shared across processes and files: written in one place, read everywhere by these names.

* The run directory a training run leaves (``dnet_tf.training.run_dir`` writes it).
* The SavedModel's layout, signatures, assets and outputs (``dnet_tf.export`` writes them; the
  local detector API, the server, the clients and the TFLite report read them).
* The evaluation's output files.
"""

from __future__ import annotations

# -- Run directory (``<run_dir>/``). ------------------------------------------------------------
CONFIG = "config.json"  # DetectorConfig.to_json()
CLASS_NAMES = "class_names.txt"  # one class name per line, in class-id order
DATASET_STATS = "dataset_stats.json"  # {"aspect_ratios": [...], ...}
LOCALIZER = "localizer.keras"
CLASSIFIER = "classifier.keras"
# optional: the class head on the localizer's trunk (features -> [B, C + 1]), present when the
# run trained it (TrainConfig.shared_head_steps > 0)
SHARED_HEAD = "shared_head.keras"
CHECKPOINTS = "checkpoints"  # tf.train.CheckpointManager
LOGS = "logs"  # TensorBoard, one folder per stage
SUMMARY = "summary.json"  # written last: {"complete": true, ...}
EVAL_DIR = "eval"  # the main job's evaluation of the run
QUERIES_DIR = "queries"  # the main job's served detections

# -- SavedModel (``<base>/<name>/<version>/``). ------------------------------------------------
SAVED_MODEL_PB = "saved_model.pb"
MAX_VERSION = 2**63 - 1  # versions are int64 in ModelSpec and ModelVersionStatus
ASSETS = "assets"
ASSET_CLASS_NAMES = "class_names.txt"  # under assets/
ASSET_DETECTOR_CONFIG = "detector_config.json"  # under assets/: every knob fixed at export
ASSET_DATASET_STATS = "dataset_stats.json"  # under assets/
ASSETS_EXTRA = "assets.extra"
WARMUP_REQUESTS = "tf_serving_warmup_requests"  # under assets.extra/, PredictionLog TFRecords

SERVING_DEFAULT = "serving_default"  # tf.string [None] encoded images
IMAGE_TENSOR = "image_tensor"  # uint8 [None, None, None, 3]
DETECT_WITH_MASKS = "detect_with_masks"  # + first stage, network evaluations, merged masks
INPUT_IMAGES = "images"  # the input name of every signature

# The outputs every detection signature returns, padded to max_detections (TF OD API names).
DETECTION_OUTPUTS = (
    "num_detections",
    "detection_boxes",
    "detection_scores",
    "detection_classes",
    "detection_class_names",
)
FIRST_STAGE_PREFIX = "first_stage_"  # detect_with_masks: first_stage_<output without detection_>
NETWORK_EVALUATIONS = "network_evaluations"
MERGED_MASKS = "merged_masks"

# -- Evaluation output (``<out>/``). ----------------------------------------------------------
TABLE_MD = "table.md"
TABLE_JSON = "table.json"
EVALUATION_JSON = "evaluation.json"
# every image's ground truth and each method's detections (``evaluation.runner``), what a paired
# bootstrap of two evaluations of the same images reads (``evaluation.bootstrap``)
DETECTIONS_JSON = "detections.json"


def parse_version(name: str) -> int | None:
    """The version a directory name stands for, or None: ASCII digits only, at most MAX_VERSION
    (TF Serving's file-system source reads version directories so).

    ``str.isdigit`` alone would accept other scripts' digits and superscripts ("²", which int()
    refuses), and an over-long number would not fit the protos.
    """
    if not name or not name.isascii() or not name.isdigit():
        return None
    value = int(name)
    return value if value <= MAX_VERSION else None

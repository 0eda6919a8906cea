"""The batch detection pipeline: read encoded images, probe them, batch, detect, write.

    images (glob of files, or TF OD API TFRecords)
      -> EncodedImage(source, data, height, width)      header read by Pillow; unreadable -> dead
      -> RunInference(SavedModelDetectionHandler)        batches of encoded bytes -> serving_default
      -> Detections (dnet_tf.core.detections)            JSON lines; optionally TF OD API TFRecords
    every image the model cannot decode             -> dead-letter JSON lines, counted, job goes on

Boxes in the JSON lines are as ``Detections.to_dict``: ``norm_yxyx`` in [0, 1] of the image,
``image_yxyx`` in continuous pixels. A batch that the graph rejects (one bad image fails the
whole batch with INVALID_ARGUMENT) is rerun one image at a time, so only the bad image is lost.

Beam Metrics, namespace ``dnet_tf.batch``: images_read, images_detected, images_dead_letter,
detections, batches_split (batches rerun image by image).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from dnet_tf.constants import CLASS_ID_OFFSET
from dnet_tf.core import contracts
from dnet_tf.core.detections import Detections
from dnet_tf.serving.detections import image_size

NAMESPACE = "dnet_tf.batch"
DEAD_LETTER = "dead_letter"
SIGNATURE = "serving_default"
# TF Object Detection API keys of detections in a tf.train.Example (its standard_fields
# TfExampleFields), beside the input keys of dnet_tf.data.tfrecord. "text" is this package's
# addition (the API has no detection class-name key), named like image/object/class/text.
DETECTION_KEYS = {
    "ymin": "image/detection/bbox/ymin",
    "xmin": "image/detection/bbox/xmin",
    "ymax": "image/detection/bbox/ymax",
    "xmax": "image/detection/bbox/xmax",
    "label": "image/detection/label",
    "score": "image/detection/score",
    "text": "image/detection/class/text",
}


class EncodedImage(NamedTuple):
    """One image to detect on: a name, its encoded bytes, its (height, width) from the header."""

    source: str
    data: bytes
    height: int
    width: int


class DetectionFailure(NamedTuple):
    """Why one image has no detections: where it failed (read, probe, model) and the message."""

    source: str
    stage: str
    error: str

    def to_dict(self) -> dict:
        return self._asdict()


def _counter(name: str):
    return beam.metrics.Metrics.counter(NAMESPACE, name)


class ProbeImage(beam.DoFn):
    """(source, bytes) -> EncodedImage, or a DetectionFailure on the dead-letter output when
    Pillow cannot read the header (empty, not an image, over max_bytes)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.read = _counter("images_read")
        self.dead = _counter("images_dead_letter")

    def process(self, element):
        source, data = element
        self.read.inc()
        if len(data) > self.max_bytes:
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER,
                DetectionFailure(source, "probe", f"{len(data)} bytes > limit {self.max_bytes}"),
            )
            return
        try:
            h, w = image_size(data)
        except ValueError as e:
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, DetectionFailure(source, "probe", str(e)))
            return
        yield EncodedImage(source, data, h, w)


class LoadedDetector:
    """The loaded SavedModel, its serving signature and servable name/version (Beam keeps the
    model behind a weak reference, so it must be an object, not a dict)."""

    def __init__(self, loaded, name: str, version: int | None):
        self.loaded = loaded
        self.fn = loaded.signatures[SIGNATURE]
        self.name = name
        self.version = version


def resolve_model_path(path: str) -> str:
    """The SavedModel directory for ``path`` (itself, or its newest integer version), on any
    filesystem TensorFlow reads (local, gs://, s3:// ...), as the workers of a remote runner see
    it.

    Raises:
      FileNotFoundError: no saved_model.pb there nor in an integer subdirectory.
    """
    import tensorflow as tf

    path = path.rstrip("/")
    if tf.io.gfile.exists(f"{path}/saved_model.pb"):
        return path
    versions = []
    if tf.io.gfile.isdir(path):
        for entry in tf.io.gfile.listdir(path):
            entry = entry.rstrip("/")
            version = contracts.parse_version(entry)
            if version is not None and tf.io.gfile.exists(f"{path}/{entry}/saved_model.pb"):
                versions.append(version)
    if not versions:
        raise FileNotFoundError(f"{path}: no saved_model.pb, nor integer version directories")
    return f"{path}/{max(versions)}"


class SavedModelDetectionHandler(ModelHandler[EncodedImage, PredictionResult, LoadedDetector]):
    """RunInference handler: loads the exported SavedModel once per worker and calls its
    ``serving_default`` signature (tf.string [B] -> the contract outputs) on each batch.

    Each PredictionResult's ``inference`` is an Detections, or a DetectionFailure (stage
    "model") for an image the graph rejected.

    Args:
      model_path: SavedModel version directory, or model directory (its newest version).
      min_batch_size, max_batch_size: passed to Beam's BatchElements.
      min_score: detections below this score are left out of the results.
    """

    def __init__(
        self,
        model_path: str,
        min_batch_size: int = 1,
        max_batch_size: int = 8,
        min_score: float = 0.0,
    ):
        super().__init__()
        self.model_path = str(model_path)
        self.min_batch_size = int(min_batch_size)
        self.max_batch_size = int(max_batch_size)
        self.min_score = float(min_score)

    def load_model(self):
        import tensorflow as tf

        saved = resolve_model_path(self.model_path)
        loaded = tf.saved_model.load(saved)
        parts = saved.rstrip("/").split("/")
        version = contracts.parse_version(parts[-1])
        name = parts[-2] if version is not None and len(parts) > 1 else parts[-1]
        return LoadedDetector(loaded, name, version)

    def _detect(self, model: LoadedDetector, batch: Sequence[EncodedImage]) -> list[Detections]:
        import tensorflow as tf

        out = model.fn(images=tf.constant([e.data for e in batch]))
        outputs = {k: v.numpy() for k, v in out.items()}
        return Detections.batch_from_outputs(
            outputs,
            [(e.height, e.width) for e in batch],
            [e.source for e in batch],
            model.name,
            model.version,
            self.min_score,
        )

    def run_inference(
        self, batch: Sequence[EncodedImage], model, inference_args=None
    ) -> Iterable[PredictionResult]:
        import tensorflow as tf

        try:
            results = self._detect(model, batch)
        except tf.errors.InvalidArgumentError:
            if len(batch) > 1:
                _counter("batches_split").inc()
            results = []
            for e in batch:  # find the bad image(s); the others keep their detections
                try:
                    results.extend(self._detect(model, [e]))
                except tf.errors.InvalidArgumentError as err:
                    message = _error_line(err.message or str(err))
                    results.append(DetectionFailure(e.source, "model", message))
        return [PredictionResult(e, r) for e, r in zip(batch, results)]

    def batch_elements_kwargs(self):
        return {"min_batch_size": self.min_batch_size, "max_batch_size": self.max_batch_size}

    def get_num_bytes(self, batch: Sequence[EncodedImage]) -> int:
        return sum(len(e.data) for e in batch)

    def get_metrics_namespace(self) -> str:
        return NAMESPACE


def _error_line(message: str) -> str:
    """The informative line of a TF error (graph errors start with "Graph execution error:")."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    hit = next((ln for ln in lines if "assertion failed" in ln or "Invalid" in ln), None)
    return (hit or (lines[-1] if lines else "unknown error"))[:500]


class SplitResults(beam.DoFn):
    """PredictionResult -> Detections on the main output, DetectionFailure on dead_letter."""

    def __init__(self):
        self.ok = _counter("images_detected")
        self.dead = _counter("images_dead_letter")
        self.dets = _counter("detections")

    def process(self, result: PredictionResult):
        inference = result.inference
        if isinstance(inference, DetectionFailure):
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, inference)
        else:
            self.ok.inc()
            self.dets.inc(len(inference.detections))
            yield inference


class ReadFile(beam.DoFn):
    """A matched file -> (path, bytes); a file over max_bytes (not read) or one that cannot be
    read goes to dead_letter (stage "read")."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.dead = _counter("images_dead_letter")

    def process(self, readable):
        path, size = readable.metadata.path, readable.metadata.size_in_bytes
        if size > self.max_bytes:
            error = f"{size} bytes > limit {self.max_bytes}"
        else:
            try:
                yield path, readable.read()
                return
            except OSError as e:
                error = f"cannot read: {e}"
        self.dead.inc()
        yield beam.pvalue.TaggedOutput(DEAD_LETTER, DetectionFailure(path, "read", error))


def read_files(pipeline, file_pattern: str, max_bytes: int):
    """(path, bytes) of every file matching a glob (any filesystem Beam knows: local, gs://...),
    and the dead_letter PCollection of files too large or unreadable."""
    from apache_beam.io import fileio

    read = (
        pipeline
        | "MatchFiles" >> fileio.MatchFiles(file_pattern)
        | "ReadMatches" >> fileio.ReadMatches()
        | "ReadFile" >> beam.ParDo(ReadFile(max_bytes)).with_outputs(DEAD_LETTER, main="ok")
    )
    return read.ok, read[DEAD_LETTER]


def example_image(serialized: bytes) -> tuple[str, bytes]:
    """(source, encoded bytes) of a TF OD API tf.train.Example (see dnet_tf.data.tfrecord): the
    source is image/filename, else image/source_id, else "<unnamed>".

    Raises:
      ValueError: when the record is not an Example or has no image/encoded bytes.
    """
    import tensorflow as tf

    from dnet_tf.data.tfrecord import KEYS

    try:
        example = tf.train.Example.FromString(serialized)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError
        raise ValueError(f"not a tf.train.Example ({len(serialized)} bytes): {e}") from e
    feature = example.features.feature

    def first(key):
        values = feature[key].bytes_list.value if key in feature else []
        return values[0] if values else None

    name = first(KEYS["filename"]) or first(KEYS["source_id"]) or b"<unnamed>"
    data = first(KEYS["encoded"])
    if data is None:
        raise ValueError(f"record {name.decode(errors='replace')!r} has no {KEYS['encoded']}")
    return name.decode("utf-8", errors="replace"), data


class ParseExample(beam.DoFn):
    """Serialized TF OD API Example -> (source, bytes); unparsable records go to dead_letter."""

    def __init__(self):
        self.dead = _counter("images_dead_letter")

    def process(self, serialized: bytes):
        try:
            yield example_image(serialized)
        except ValueError as e:
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER, DetectionFailure("<record>", "read", str(e))
            )


def detections_example(result: Detections) -> bytes:
    """A serialized tf.train.Example with the TF OD API's detection keys (boxes normalized)."""
    import tensorflow as tf

    from dnet_tf.data.tfrecord import KEYS

    def floats(v):
        return tf.train.Feature(float_list=tf.train.FloatList(value=list(v)))

    def ints(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(v)))

    def strings(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(v)))

    dets = result.detections
    feature = {
        KEYS["filename"]: strings([pathlib.PurePath(result.source).name.encode()]),
        KEYS["source_id"]: strings([result.source.encode()]),
        KEYS["height"]: ints([result.height]),
        KEYS["width"]: ints([result.width]),
        DETECTION_KEYS["label"]: ints(d.class_id + CLASS_ID_OFFSET for d in dets),  # 1-based
        DETECTION_KEYS["text"]: strings(d.class_name.encode() for d in dets),
        DETECTION_KEYS["score"]: floats(d.score for d in dets),
    }
    for i, k in enumerate(("ymin", "xmin", "ymax", "xmax")):
        feature[DETECTION_KEYS[k]] = floats(d.norm_yxyx[i] for d in dets)
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def build_pipeline(
    pipeline,
    model: str,
    output: str,
    input_glob: str | None = None,
    input_tfrecord: str | None = None,
    batch_size: int = 8,
    min_score: float = 0.0,
    write_tfrecord: bool = False,
    max_image_bytes: int = 64 << 20,
    num_shards: int = 0,
):
    """Adds the whole job to ``pipeline``; returns (detections, dead_letter) PCollections.

    Writes ``<output>detections*.jsonl`` (one Detections.to_dict per line),
    ``<output>dead_letter*.jsonl`` ({"source", "stage", "error"} per line) and, with
    write_tfrecord, ``<output>detections*.tfrecord``. num_shards 0 lets the runner choose.
    """
    if (input_glob is None) == (input_tfrecord is None):
        raise ValueError("give exactly one of input_glob and input_tfrecord")
    dead = []
    if input_glob is not None:
        encoded, dead_read = read_files(pipeline, input_glob, max_image_bytes)
        dead = [dead_read]
    else:
        parsed = (
            pipeline
            | "ReadTFRecord" >> beam.io.ReadFromTFRecord(input_tfrecord)
            | "ParseExample" >> beam.ParDo(ParseExample()).with_outputs(DEAD_LETTER, main="ok")
        )
        encoded, dead = parsed.ok, [parsed[DEAD_LETTER]]
    probed = encoded | "Probe" >> beam.ParDo(ProbeImage(max_image_bytes)).with_outputs(
        DEAD_LETTER, main="ok"
    )
    handler = SavedModelDetectionHandler(model, 1, batch_size, min_score)
    split = (
        probed.ok
        | "Detect" >> RunInference(handler)
        | "Split" >> beam.ParDo(SplitResults()).with_outputs(DEAD_LETTER, main="ok")
    )
    detections = split.ok
    dead_letter = (dead + [probed[DEAD_LETTER], split[DEAD_LETTER]]) | "AllDead" >> beam.Flatten()
    (
        detections
        | "DetectionsJson" >> beam.Map(lambda r: json.dumps(r.to_dict()))
        | "WriteDetections"
        >> beam.io.WriteToText(
            output + "detections", file_name_suffix=".jsonl", num_shards=num_shards
        )
    )
    (
        dead_letter
        | "DeadJson" >> beam.Map(lambda f: json.dumps(f.to_dict()))
        | "WriteDeadLetter"
        >> beam.io.WriteToText(
            output + DEAD_LETTER, file_name_suffix=".jsonl", num_shards=num_shards
        )
    )
    if write_tfrecord:
        (
            detections
            | "DetectionsExample" >> beam.Map(detections_example)
            | "WriteTFRecord"
            >> beam.io.WriteToTFRecord(
                output + "detections", file_name_suffix=".tfrecord", num_shards=num_shards
            )
        )
    return detections, dead_letter

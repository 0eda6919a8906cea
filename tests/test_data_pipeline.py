"""tf.data pipelines: determinism by seed, VOC and TFRecord sources agree, labels and errors."""

import numpy as np
import pytest

from dnet_tf.config import DetectorConfig, ModelConfig
from dnet_tf.data import pipeline, synthetic, tfrecord, voc

CLASSES = sorted(synthetic.SYNTHETIC_CLASSES)


@pytest.fixture(scope="module")
def small_voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    cfg = synthetic.SyntheticConfig(seed=4, num_train=6, num_val=2, num_test=0)
    synthetic.write_synthetic_voc(root, cfg, workers=1, progress=False)
    return root


def _cfg():
    return DetectorConfig(model=ModelConfig(num_classes=len(CLASSES), input_size=32, mask_size=4))


# Small buffers keep the first batch cheap; the defaults are for training.
FAST = pipeline.PipelineConfig(samples_per_image=4, sample_shuffle_buffer=16)


def _take(ds, n):
    return [tuple(t.numpy() for t in batch) for batch in ds.take(n)]


def test_same_seed_same_batches_other_seed_other_batches(small_voc):
    src = str(small_voc)
    a = _take(
        pipeline.localizer_dataset(src, "train", CLASSES, _cfg(), 4, seed=3, pipeline_cfg=FAST), 3
    )
    b = _take(
        pipeline.localizer_dataset(src, "train", CLASSES, _cfg(), 4, seed=3, pipeline_cfg=FAST), 3
    )
    c = _take(
        pipeline.localizer_dataset(src, "train", CLASSES, _cfg(), 4, seed=4, pipeline_cfg=FAST), 3
    )
    for (xa, ma), (xb, mb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ma, mb)
    assert not np.array_equal(a[0][0], c[0][0])
    x, m = a[0]
    assert x.dtype == np.float32 and m.dtype == np.float32
    assert x.shape == (4, 32, 32, 3) and m.shape == (4, 4, 4, 5, len(CLASSES))
    assert 0.0 <= x.min() and x.max() <= 255.0 and x.max() > 1.0  # pixel values, not normalized
    assert 0.0 <= m.min() and m.max() <= 1.0


def test_classifier_labels_cover_background_and_classes(small_voc):
    ds = pipeline.classifier_dataset(
        str(small_voc), "train", CLASSES, _cfg(), 32, seed=0, pipeline_cfg=FAST
    )
    labels = np.concatenate([lab for _, lab in _take(ds, 8)])
    assert labels.dtype == np.int32
    assert labels.min() >= 0 and labels.max() <= len(CLASSES)
    # 40% positives by default; crops from one image are mixed with others' before batching.
    assert 0.25 <= np.mean(labels > 0) <= 0.55
    assert len(set(labels[labels > 0].tolist())) >= 2


def _signature(example):
    img = example["image"].numpy()
    boxes = np.round(example["boxes_image_yxyx"].numpy(), 3)
    return (
        img.shape,
        tuple(map(tuple, boxes)),
        tuple(example["class_ids"].numpy()),
        int(img.sum()),
    )


def test_voc_and_tfrecord_sources_give_the_same_images_and_boxes(small_voc, tmp_path):
    records = voc.read_voc_split(small_voc, "train", CLASSES)
    tfrecord.write_tfrecords(records, CLASSES, str(tmp_path / "t-*.tfrecord"), 2, progress=False)
    from_voc = [
        _signature(e)
        for _, e in pipeline.decoded_images(str(small_voc), "train", CLASSES, 0).take(6)
    ]
    from_tfr = [
        _signature(e)
        for _, e in pipeline.decoded_images(
            str(tmp_path / "t-*.tfrecord"), "train", CLASSES, 0
        ).take(6)
    ]
    assert sorted(from_voc) == sorted(from_tfr)
    # Every image of the split appears once per epoch.
    assert len({s[3] for s in from_voc}) == 6


def test_class_names_split_queries_and_errors(small_voc):
    src = str(small_voc)
    names = pipeline.load_class_names(src, "train")
    assert names == sorted(names) and set(names) <= set(synthetic.SYNTHETIC_CLASSES)
    assert pipeline.has_split(src, "val") and not pipeline.has_split(src, "test2")
    with pytest.raises(ValueError, match="num_classes"):
        pipeline.localizer_dataset(src, "train", CLASSES[:3], _cfg(), 4, seed=0)
    with pytest.raises(voc.VocError, match="split file not found"):
        pipeline.localizer_dataset(src, "nosuch", CLASSES, _cfg(), 4, seed=0)

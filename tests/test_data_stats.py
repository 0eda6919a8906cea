"""Dataset statistics: k-means of aspect ratios in log space, counts, histogram, file round trip."""

import numpy as np
import pytest

from dnet_tf.data import stats, synthetic, tfrecord, voc

CLASSES = sorted(synthetic.SYNTHETIC_CLASSES)


def test_kmeans_hand_worked():
    # Three tight groups -> their centres.
    got = stats.kmeans_log_aspect_ratios([4.0, 1.0, 2.0, 2.0, 1.0, 4.0], k=3)
    np.testing.assert_allclose(got, [1.0, 2.0, 4.0])
    # One cluster of 1/2 and 2: the log-space mean is the geometric mean 1.0 (a linear mean would
    # say 1.25, favouring wide boxes over tall ones).
    np.testing.assert_allclose(stats.kmeans_log_aspect_ratios([0.5, 2.0], k=1), [1.0])
    # Deterministic and ascending, k values even with fewer distinct ratios than k.
    got = stats.kmeans_log_aspect_ratios([3.0, 0.5, 1.0], k=5)
    assert len(got) == 5 and got == sorted(got)
    assert got == stats.kmeans_log_aspect_ratios([3.0, 0.5, 1.0], k=5)
    with pytest.raises(ValueError):
        stats.kmeans_log_aspect_ratios([], k=2)


def test_stats_hand_worked_annotations():
    annotations = [
        # 100 x 100 image: a 10 x 20 box (w/h 2, mean side 15 / 100 = 0.15) and a 40 x 40 box (0.4).
        {
            "height": 100,
            "width": 100,
            "boxes_image_yxyx": np.array([[0, 0, 10, 20], [0, 0, 40, 40]], np.float32),
            "class_ids": np.array([0, 1]),
        },
        # 200 x 100 image (mean side 150): a 30 x 15 box (w/h 0.5, mean side 22.5 / 150 = 0.15).
        {
            "height": 200,
            "width": 100,
            "boxes_image_yxyx": np.array([[0, 0, 30, 15]], np.float32),
            "class_ids": np.array([1]),
        },
        {
            "height": 50,
            "width": 60,
            "boxes_image_yxyx": np.zeros((0, 4), np.float32),
            "class_ids": np.zeros(0),
        },
    ]
    s = stats.stats_from_annotations(annotations, ["a", "b"], num_aspect_ratios=3)
    np.testing.assert_allclose(s["aspect_ratios"], [0.5, 1.0, 2.0])
    assert s["class_counts"] == {"a": 1, "b": 2}
    assert s["num_images"] == 3 and s["num_boxes"] == 3
    edges = s["box_size_histogram"]["bin_edges"]
    counts = dict(zip(edges[:-1], s["box_size_histogram"]["counts"]))
    assert counts[0.1] == 2 and counts[0.4] == 1 and sum(counts.values()) == 3
    assert s["objects_per_image"] == {"0": 1, "1": 1, "2": 1}


def test_voc_and_tfrecord_sources_agree_and_file_round_trip(tmp_path):
    root = tmp_path / "voc"
    synthetic.write_synthetic_voc(
        root,
        synthetic.SyntheticConfig(seed=1, num_train=12, num_val=0, num_test=0),
        workers=1,
        progress=False,
    )
    records = voc.read_voc_split(root, "train", CLASSES)
    from_voc = stats.compute_dataset_stats(str(root), "train")
    assert from_voc["class_names"] == CLASSES
    assert from_voc["num_boxes"] == sum(r.num_objects for r in records)
    for i, name in enumerate(CLASSES):
        assert from_voc["class_counts"][name] == sum(int((r.class_ids == i).sum()) for r in records)
    assert len(from_voc["aspect_ratios"]) == 10 and from_voc["aspect_ratios"] == sorted(
        from_voc["aspect_ratios"]
    )
    lo, hi = from_voc["aspect_ratio_range"]
    assert lo <= from_voc["aspect_ratios"][0] and from_voc["aspect_ratios"][-1] <= hi

    tfrecord.write_tfrecords(records, CLASSES, str(tmp_path / "s-*.tfrecord"), 2, progress=False)
    from_tfr = stats.compute_dataset_stats(str(tmp_path / "s-*.tfrecord"), "train", CLASSES)
    np.testing.assert_allclose(from_tfr["aspect_ratios"], from_voc["aspect_ratios"], rtol=1e-5)
    assert from_tfr["class_counts"] == from_voc["class_counts"]

    path = tmp_path / "run" / "dataset_stats.json"
    stats.write_stats(from_voc, path)
    assert stats.read_stats(path) == from_voc
    bad = dict(from_voc, aspect_ratios=list(reversed(from_voc["aspect_ratios"])))
    stats.write_stats(bad, path)
    with pytest.raises(ValueError, match="ascending"):
        stats.read_stats(path)

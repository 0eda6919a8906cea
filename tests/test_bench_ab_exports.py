"""bench.ab_exports: its output comparison, worked by hand on two stand-in signatures."""

import numpy as np
import tensorflow as tf

from bench import ab_exports


def _signature(boxes, scores, names):
    def call(images):
        del images
        return {
            "detection_boxes": tf.constant(boxes, tf.float32),
            "detection_scores": tf.constant(scores, tf.float32),
            "detection_class_names": tf.constant(names),
        }

    return call


def test_compare_reports_the_largest_difference_and_the_images_whose_boxes_moved():
    a = _signature([[[0.1, 0.2, 0.5, 0.6]]], [[0.9]], [["ball"]])
    # Boxes 5e-4 apart (under the 1e-3 tolerance), scores 0.25 apart, a name changed.
    b = _signature([[[0.1005, 0.2, 0.5, 0.6]]], [[0.65]], [["ring"]])
    got = ab_exports.compare(a, b, [b"x", b"y"], tf)
    largest = got["largest_abs_difference"]
    np.testing.assert_allclose(largest["detection_boxes"], 5e-4, rtol=1e-3)
    np.testing.assert_allclose(largest["detection_scores"], 0.25, rtol=1e-6)
    assert largest["detection_class_names"] == 1.0
    assert got["images_whose_boxes_differ"] == 0
    # Boxes 2e-3 apart: both images count.
    c = _signature([[[0.102, 0.2, 0.5, 0.6]]], [[0.9]], [["ball"]])
    got = ab_exports.compare(a, c, [b"x", b"y"], tf)
    assert got["images_whose_boxes_differ"] == 2
    assert got["largest_abs_difference"]["detection_scores"] == 0.0

"""End-to-end correctness of the inference graph with networks whose masks are known."""

import dataclasses
import io

import numpy as np
import pytest
import tensorflow as tf
from fakes import coloured_object_image, fake_classifier, fake_localizer
from PIL import Image

from dnet_tf.config import DetectorConfig, InferenceConfig, ModelConfig
from dnet_tf.inference.decode import decode_batch
from dnet_tf.inference.module import DetectorModule, uint8_batch

# Ten aspect ratios, as k-means of training boxes gives (geometric 0.5 .. 2).
ASPECTS = list(np.geomspace(0.5, 2.0, 10))


def make_module(num_classes=1, **inference):
    cfg = DetectorConfig(
        model=ModelConfig(num_classes=num_classes),
        inference=dataclasses.replace(InferenceConfig(), **inference),
    )
    names = [f"c{i}" for i in range(num_classes)]
    return DetectorModule(
        fake_localizer(num_classes=num_classes),
        fake_classifier(num_classes=num_classes),
        names,
        ASPECTS,
        cfg,
    )


@pytest.fixture(scope="module")
def module():
    return make_module(max_refine=6)


def png(image):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def run_encoded(module):
    """One traced graph for the whole module (tracing the search costs seconds)."""
    return tf.function(
        lambda s: module.detect(*decode_batch(s, 10**7)),
        input_signature=[tf.TensorSpec([None], tf.string)],
    )


@pytest.fixture(scope="module")
def detect_fn(run_encoded):
    """uint8 [B, H, W, 3] images -> outputs, through the same graph (losslessly PNG-encoded)."""
    return lambda images: run_encoded(tf.constant([png(im) for im in images]))


def top_box_pixels(out, b, h, w):
    return out["detection_boxes"][b, 0].numpy() * np.array([h, w, h, w])


def test_planted_box_is_found_within_a_few_pixels(detect_fn):
    h, w = 300, 400
    box = [60, 100, 200, 260]  # a 140 x 160 object
    out = detect_fn(coloured_object_image(h, w, [box])[None])
    assert out["num_detections"][0] >= 1
    got = top_box_pixels(out, 0, h, w)
    # The refinement crop is 1.2 x 160 = 192 px wide at most, seen by 24 mask cells: 8 px a cell.
    # The box must sit within one such cell on every side.
    np.testing.assert_allclose(got, box, atol=8.0)
    assert int(out["num_detections"][0]) == 1  # the inner and shifted candidates were suppressed
    assert out["detection_class_names"][0, 0].numpy() == b"c0"
    assert float(out["detection_classes"][0, 0]) == 1.0  # 1-based
    # Product of P(class) (fraction of red inside the refined crop, ~1) and coverage (~1).
    assert float(out["detection_scores"][0, 0]) > 0.8


def test_refinement_is_no_worse_than_first_stage(detect_fn):
    h, w = 320, 480
    box = [37, 53, 121, 170]  # off the 5 px grid on purpose
    out = detect_fn(coloured_object_image(h, w, [box])[None])

    def iou(a):
        return float(
            tf.squeeze(
                __import__("dnet_tf.ops.boxes", fromlist=["iou"]).iou(
                    tf.constant([a], tf.float32), tf.constant([box], tf.float32)
                )
            )
        )

    refined = iou(top_box_pixels(out, 0, h, w))
    first = iou(out["first_stage_boxes"][0, 0].numpy() * np.array([h, w, h, w]))
    # The first stage only has the 90 shapes (steps of 0.1 x the mean image side = 40 px here);
    # the refinement crop's own search gets much closer (the paper's Fig. 4).
    assert refined >= 0.85
    assert refined >= first + 0.1


def test_two_touching_objects_are_separated(detect_fn):
    # Two same-class objects side by side, touching: the full mask alone shows one blob
    # [80, 60, 220, 300]; the half masks keep them apart.
    h, w = 300, 400
    boxes = [[80, 60, 220, 180], [80, 180, 220, 300]]
    out = detect_fn(coloured_object_image(h, w, boxes)[None])
    n = int(out["num_detections"][0])
    found = out["detection_boxes"][0, :n].numpy() * np.array([h, w, h, w])
    from dnet_tf.ops.boxes import iou

    overlaps = iou(tf.constant(boxes, tf.float32), tf.constant(found, tf.float32)).numpy()  # [2, n]
    best = overlaps.argmax(axis=1)
    assert best[0] != best[1]  # one detection per object
    assert (overlaps.max(axis=1) >= 0.6).all(), overlaps
    blob = iou(tf.constant([[80.0, 60.0, 220.0, 300.0]]), tf.constant(found, tf.float32)).numpy()
    assert (blob < 0.5).all(), blob  # nothing straddles the pair


def test_empty_image_gives_no_detections_and_padded_outputs(module, detect_fn):
    out = detect_fn(np.zeros((1, 200, 300, 3), np.uint8))
    k = module.config.inference.max_detections
    assert int(out["num_detections"][0]) == 0
    assert out["detection_boxes"].shape == (1, k, 4)
    assert not out["detection_scores"].numpy().any()
    assert (out["detection_class_names"].numpy() == b"").all()


def test_batch_of_different_sizes_equals_one_by_one(run_encoded):
    imgs = [
        coloured_object_image(240, 320, [[40, 50, 150, 200]]),
        coloured_object_image(300, 200, [[100, 20, 260, 180]]),
    ]
    encoded = [png(im) for im in imgs]
    run = run_encoded
    both = run(tf.constant(encoded))
    from dnet_tf.ops.boxes import iou

    for b in range(2):
        alone = run(tf.constant(encoded[b : b + 1]))
        n = int(alone["num_detections"][0])
        assert n >= 1 and int(both["num_detections"][b]) == n
        np.testing.assert_allclose(
            both["detection_scores"][b, :n], alone["detection_scores"][0, :n], atol=1e-4
        )
        np.testing.assert_array_equal(
            both["detection_classes"][b, :n], alone["detection_classes"][0, :n]
        )
        # Batched crops differ from single ones by float rounding only (the padded batch changes
        # the normalisation), which may swap two refinement boxes of equal Eq. (3) score, one
        # canvas cell apart: same boxes up to such a swap.
        same = np.diag(iou(both["detection_boxes"][b, :n], alone["detection_boxes"][0, :n]).numpy())
        assert (same >= 0.95).all(), same


def test_network_evaluations_follow_the_candidates():
    module = make_module(max_refine=6, window_gate=0.0)
    detect = tf.function(lambda images: module.detect(*uint8_batch(images)))
    empty = np.zeros((64, 64, 3), np.uint8)
    one = coloured_object_image(64, 64, [[10, 12, 50, 40]])
    out = detect(np.stack([empty, one]))
    # 1 + 9 + 25 windows (the window gate off); then each valid first-stage candidate through
    # the classifier and each one it keeps through the localizer again (max_refine = 6 a cap,
    # not a count).
    evals = out["network_evaluations"].numpy().tolist()
    assert evals[0] == 35
    assert int(out["num_detections"][1]) >= 1
    kept = int(np.sum(out["first_stage_scores"][1].numpy() > 0))
    assert 35 + 2 * kept <= evals[1] <= 35 + 2 * 6
    assert module.max_network_evaluations == 35 + 2 * 6
    # With the default gate the empty image's whole-image masks are 0 over every finer window:
    # only the whole image runs.
    gated = make_module(max_refine=6)
    assert gated.config.inference.window_gate > 0
    out = gated.detect(*uint8_batch(tf.constant(np.stack([empty, one]))))
    assert int(out["network_evaluations"][0]) == 1
    assert 1 + 2 * kept <= int(out["network_evaluations"][1]) < evals[1]


def test_real_networks_with_nothing_to_refine_run_only_the_windows():
    # Random-weight Keras networks (sigmoid masks < 1) and a coverage threshold of 1: no
    # candidate, so neither the classifier nor the refinement may run (a convolution fused with
    # batch norm fails on an empty batch on the CPU).
    from dnet_tf.models.classifier import build_classifier
    from dnet_tf.models.localizer import build_localizer

    cfg = DetectorConfig(
        model=ModelConfig(num_classes=1, input_size=64, mask_size=8),
        inference=dataclasses.replace(InferenceConfig(), coverage_threshold=1.0, max_refine=4),
    ).validate()
    m = DetectorModule(build_localizer(cfg.model), build_classifier(cfg.model), ["a"], ASPECTS, cfg)
    detect = tf.function(lambda images: m.detect(*uint8_batch(images)))
    out = detect(np.full((2, 80, 60, 3), 128, np.uint8))
    assert out["network_evaluations"].numpy().tolist() == [35, 35]
    assert out["num_detections"].numpy().tolist() == [0.0, 0.0]
    assert not out["detection_scores"].numpy().any()


def test_tiny_image_does_not_crash_and_boxes_stay_in_unit_square(detect_fn):
    out = detect_fn(np.full((1, 1, 1, 3), 255, np.uint8))
    boxes = out["detection_boxes"].numpy()
    assert np.isfinite(boxes).all() and (boxes >= 0).all() and (boxes <= 1).all()
    assert int(out["num_detections"][0]) <= out["detection_boxes"].shape[1]


def test_refined_detection_ranked_by_the_chosen_eq3_combination():
    # One object, one detection: P(class) is the same in every mode, so the refined score of
    # "mean" must be the mean, and of "min" the minimum, of the first-stage score and the score
    # the paper's "refined" gives (both agreements lie inside (0, 1], where no clip acts).
    h, w = 300, 400
    image = png(coloured_object_image(h, w, [[40, 70, 230, 300]]))
    out = {}
    for mode in ("refined", "mean", "min"):
        m = make_module(max_refine=6, refine_agreement=mode)
        out[mode] = m.detect(*decode_batch(tf.constant([image]), 10**7))
        assert int(out[mode]["num_detections"][0]) == 1
    first = float(out["refined"]["first_stage_scores"][0, 0])
    refined = float(out["refined"]["detection_scores"][0, 0])
    assert 0.0 < first < 1.0 and 0.0 < refined < 1.0
    assert abs(first - refined) > 1e-3  # the two stages score the box differently
    np.testing.assert_allclose(
        float(out["mean"]["detection_scores"][0, 0]), (first + refined) / 2, rtol=1e-5
    )
    np.testing.assert_allclose(
        float(out["min"]["detection_scores"][0, 0]), min(first, refined), rtol=1e-5
    )
    for mode in ("mean", "min"):  # the boxes are the refined ones in every mode
        np.testing.assert_allclose(
            out[mode]["detection_boxes"].numpy(), out["refined"]["detection_boxes"].numpy()
        )


def test_refine_blend_and_gate_move_the_refined_box_part_or_none_of_the_way():
    # One object, one detection. blend 1 reports the refinement's box (the paper), blend 0 the
    # first-stage box, and blend 0.25 the point a quarter of the way from the first to the
    # refined box, with the same score in every case (the blend moves boxes, it ranks nothing).
    # A box offset from the object so that the two stages disagree by several pixels.
    h, w = 300, 400
    image = png(coloured_object_image(h, w, [[37, 71, 233, 297]]))
    out = {}
    for blend in (1.0, 0.0, 0.25, "gate", "guard"):
        # "gate": the refinement kept only where its Eq. (3) beats the first stage's by 10,
        # which no box can (Eq. (3) <= 5): the first-stage box is reported. "guard": only where
        # the refined box keeps the first-stage box's whole area.
        knobs = {"refine_blend": blend}
        if blend == "gate":
            knobs = {"refine_accept_margin": 10.0}
        elif blend == "guard":
            knobs = {"refine_min_area_ratio": 1.0}
        m = make_module(max_refine=6, **knobs)
        out[blend] = m.detect(*decode_batch(tf.constant([image]), 10**7))
        assert int(out[blend]["num_detections"][0]) == 1
    hwhw = np.array([h, w, h, w])
    first = out[1.0]["first_stage_boxes"][0, 0].numpy() * hwhw
    refined = out[1.0]["detection_boxes"][0, 0].numpy() * hwhw
    assert np.abs(refined - first).max() > 2.0  # the refinement moved the box
    np.testing.assert_allclose(out[0.0]["detection_boxes"][0, 0].numpy() * hwhw, first, atol=1e-3)
    np.testing.assert_allclose(
        out[0.25]["detection_boxes"][0, 0].numpy() * hwhw,
        first + 0.25 * (refined - first),
        atol=1e-3,
    )
    np.testing.assert_allclose(
        out["gate"]["detection_boxes"][0, 0].numpy() * hwhw, first, atol=1e-3
    )

    # The refinement shrank this box (it tightens onto the object), so the guard at the whole
    # area reports the first-stage box.
    def area(b):
        return (b[2] - b[0]) * (b[3] - b[1])

    assert area(refined) < area(first), (refined, first)
    np.testing.assert_allclose(
        out["guard"]["detection_boxes"][0, 0].numpy() * hwhw, first, atol=1e-3
    )
    for blend in (0.0, 0.25, "gate", "guard"):
        np.testing.assert_allclose(
            out[blend]["detection_scores"].numpy(), out[1.0]["detection_scores"].numpy()
        )


def test_min_candidate_eq3_sends_only_candidates_that_reach_it_to_the_networks():
    # Two objects. Off (-10), every valid candidate costs a classifier and a refinement
    # evaluation; at 5 (a perfect Eq. (3), which the fake masks' blur never reaches) none goes
    # on: only the 35 windows run (every window: the window gate off) and nothing is detected;
    # in between, fewer evaluations.
    h, w = 300, 400
    image = png(coloured_object_image(h, w, [[30, 40, 150, 170], [160, 220, 280, 380]]))
    evals, found = {}, {}
    for t in (-10.0, 2.5, 5.0):
        out = make_module(max_refine=6, min_candidate_eq3=t, window_gate=0.0).detect(
            *decode_batch(tf.constant([image]), 10**7)
        )
        evals[t] = int(out["network_evaluations"][0])
        found[t] = int(out["num_detections"][0])
    assert evals[-10.0] > 35 + 2 and found[-10.0] >= 2
    assert evals[5.0] == 35 and found[5.0] == 0
    assert 35 < evals[2.5] <= evals[-10.0]


def test_sizes_per_scale_bring_part_boxes_that_factor_zero_removes():
    # With scale_size_bounds (0.2, 1) the finest scale searches only boxes up to its window's
    # side, so a 140 x 160 object (0.43 of the image) is found there only as inner boxes; refined,
    # they come out as demoted parts beside the whole box. part_score_factor 0 removes them:
    # num_detections counts what is left, and the padding slots are zero.
    h, w = 300, 400
    box = [60, 100, 200, 260]
    image = png(coloured_object_image(h, w, [box]))
    out = {}
    for factor in (0.5, 0.0):
        m = make_module(max_refine=6, scale_size_bounds=(0.2, 1.0), part_score_factor=factor)
        out[factor] = m.detect(*decode_batch(tf.constant([image]), 10**7))
    n_demoted, n_removed = (int(out[f]["num_detections"][0]) for f in (0.5, 0.0))
    assert n_demoted >= 2 and n_removed == 1
    hwhw = np.array([h, w, h, w])
    for f in (0.5, 0.0):  # the best box is the whole object either way
        np.testing.assert_allclose(out[f]["detection_boxes"][0, 0].numpy() * hwhw, box, atol=8.0)
    demoted = out[0.5]["detection_scores"][0, 1:n_demoted].numpy()
    assert (demoted < 0.5 * float(out[0.5]["detection_scores"][0, 0])).all()
    assert float(out[0.0]["detection_scores"][0, 1]) == 0.0
    assert out[0.0]["detection_class_names"][0, 1].numpy() == b""


def test_window_gate_skips_the_windows_over_nothing_and_changes_no_detection():
    # A 50 x 50 object at (10, 10) of a 300 x 300 image, masks = its true coverage. The whole
    # image's mask (24 cells of 12.5 px) is nonzero in cells 0-4 (to 62.5 px) only. Scale 1
    # (150 px windows at 0, 75, 150): only the top-left window lies over those cells. Scale 2
    # (75 px windows at 0, 56.25, 112.5, ...): the windows starting at 0 or 56.25 on both axes lie
    # over a nonzero cell of the whole image (cell 4, from 50 px), the others over zeros only:
    # 1 + 1 + 4 = 6 windows instead of 35. Every skipped window holds no object pixel, so its
    # masks would have been zeros: the detections are the same.
    image = coloured_object_image(300, 300, [[10, 10, 60, 60]])
    encoded = tf.constant([png(image), png(np.zeros_like(image))])
    out = {}
    for gate in (0.0, 0.05):
        m = make_module(max_refine=6, window_gate=gate)
        out[gate] = m.detect(*decode_batch(encoded, 10**7))
    assert int(out[0.0]["num_detections"][0]) >= 1
    crops = out[0.0]["network_evaluations"].numpy() - 35
    np.testing.assert_array_equal(out[0.05]["network_evaluations"].numpy(), crops + [6, 1])
    for key in ("detection_boxes", "detection_scores", "detection_classes", "num_detections"):
        np.testing.assert_array_equal(out[0.05][key].numpy(), out[0.0][key].numpy(), err_msg=key)

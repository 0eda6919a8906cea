"""The NumPy edge pipeline against the SavedModel's graph (DetectorModule.detect).

1. Same networks, exact arithmetic: the fake networks of tests/fakes.py (masks = the true coverage
   of the coloured object) run through both the graph and the edge pipeline's network-function
   parameter, so every difference is the pipeline's own. The images carry a faint texture: on
   perfectly flat masks many boxes tie exactly in Eq. (3), and which of two equal scores wins is
   an implementation detail of each search (the graph's two-level top-k vs a plain sort).
(The float32 TFLite networks against their Keras models through the edge pipeline: in
test_tflite_convert.py, which has the converted files.)
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from fakes import coloured_object_image, fake_classifier, fake_localizer

from dnet_tf.config import DetectorConfig, InferenceConfig, ModelConfig
from dnet_tf.core import boxes as core_boxes
from dnet_tf.inference.module import DetectorModule, uint8_batch
from dnet_tf.tflite import edge_ops
from dnet_tf.tflite.convert import keras_network
from dnet_tf.tflite.edge_pipeline import EdgePipeline, FirstStage, detections_of

ASPECTS = [0.5, 0.75, 1.0, 1.33, 2.0]
NAMES = ["cat", "dog"]


def textured(height, width, boxes, seed):
    """coloured_object_image scaled to 90% plus uniform noise in [0, 25): masks ~0.95 inside an
    object, ~0.05 outside, never exactly flat."""
    image = coloured_object_image(height, width, boxes).astype(np.float32) * 0.9
    image += np.random.default_rng(seed).uniform(0, 25, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


IMAGES = [
    textured(300, 400, [[60, 100, 200, 260]], 0),
    textured(257, 193, [[10, 20, 120, 150], [150, 40, 250, 180]], 1),  # two objects, portrait
]
EMPTY = textured(200, 300, [], 2)  # nothing to find


# The paper's candidates and Eq. (3), the local maxima with the outside half masks, and the full
# mask alone (mask_types "full": both pipelines zero the half masks in both stages).
SELECTIONS = {
    "full_mask_only": {"mask_types": "full"},
    "paper": {"candidate_selection": "top_k", "outside_halves_weight": 0.0},
    "local_max_outside_containment": {
        "candidate_selection": "local_max",
        "outside_halves_weight": 1.0,
        "refine_outside_halves_weight": 1.0,
        "outside_halves_floor": 0.3,
        "candidate_containment": 0.7,
        "across_scales_containment": 0.7,
    },
}


@pytest.fixture(scope="module", params=sorted(SELECTIONS))
def fakes(request):
    cfg = DetectorConfig(
        model=ModelConfig(num_classes=2),
        # the candidate NMS off here (the paper's; the default is 0.7):
        # test_with_candidate_nms_... turns it on
        inference=dataclasses.replace(
            InferenceConfig(),
            max_refine=6,
            candidate_nms_iou=1.0,
            window_gate=0.0,  # every window (the paper's); the gate: its own test below
            **SELECTIONS[request.param],
        ),
    )
    loc, cls = fake_localizer(num_classes=2), fake_classifier(num_classes=2)
    module = DetectorModule(loc, cls, NAMES, ASPECTS, cfg)
    graph = tf.function(
        lambda images: module.detect(*uint8_batch(images)),
        input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8)],
    )  # one trace
    edge = EdgePipeline(keras_network(loc), keras_network(cls), NAMES, ASPECTS, cfg)
    outputs = [
        ({k: v.numpy()[0] for k, v in graph(image[None]).items()}, edge.detect(image))
        for image in IMAGES
    ]
    return cfg, outputs, edge


def test_refined_detections_equal_the_graph(fakes):
    _, outputs, _ = fakes
    found = 0
    for (graph, edge), image in zip(outputs, IMAGES):
        n = int(graph["num_detections"])
        assert edge["num_detections"] == n
        h, w = image.shape[:2]
        scale = np.array([h, w, h, w])
        # Boxes come from whole canvas cells mapped through the same float32 frames: equal to
        # well under a pixel; confidences are float32 products of the same terms.
        np.testing.assert_allclose(
            edge["detection_boxes"][:n] * scale, graph["detection_boxes"][:n] * scale, atol=0.01
        )
        np.testing.assert_allclose(edge["detection_scores"], graph["detection_scores"], atol=1e-5)
        np.testing.assert_array_equal(edge["detection_classes"], graph["detection_classes"])
        assert edge["detection_class_names"] == [s.decode() for s in graph["detection_class_names"]]
        found += n
    assert found >= 3  # one + two objects found: the comparison is not vacuous


def test_first_stage_equal_up_to_nms_ties_at_the_threshold(fakes):
    # First-stage boxes sit on the 5 px grid with ratios like 2:1, so IoU = 0.5 exactly is common;
    # whether NMS (IoU > 0.5) suppresses such a box depends on the last float32 bit of the IoU,
    # which Grappler's rewrites of the graph can change. Any box kept by one and not the other
    # must be such a case: IoU with a better same-class box within 1e-5 of nms_iou.
    cfg, outputs, _ = fakes
    for (graph, edge), image in zip(outputs, IMAGES):
        h, w = image.shape[:2]
        g, e = (
            detections_of(o, h, w, NAMES, prefix="first_stage_").arrays() for o in (graph, edge)
        )
        assert len(g["boxes_yxyx"]) >= 1 or not len(e["boxes_yxyx"])
        for this, other in ((g, e), (e, g)):
            for box, cls, score in zip(this["boxes_yxyx"], this["classes"], this["scores"]):
                same = (
                    np.abs(np.reshape(other["boxes_yxyx"], (-1, 4)) - box).max(axis=1, initial=0.0)
                    < 0.01
                )
                if same.any():
                    assert abs(other["scores"][np.argmax(same)] - score) < 1e-5
                    continue
                rivals = this["boxes_yxyx"][(this["classes"] == cls) & (this["scores"] > score)]
                rivals = np.concatenate([rivals, other["boxes_yxyx"][other["classes"] == cls]])
                ious = edge_ops.iou_matrix(box[None], rivals)[0]
                assert np.any(np.abs(ious - cfg.inference.nms_iou) < 1e-5), (box, ious)


def test_network_evaluations_count_only_what_runs(fakes):
    _, outputs, pipeline = fakes
    empty = pipeline.detect(EMPTY)
    # Both run the 35 windows (the gate off), then each valid candidate through the classifier
    # and each one it keeps through the refinement: on an empty image only the windows.
    assert empty["network_evaluations"] == 35 and empty["num_detections"] == 0
    for graph, edge in outputs:
        assert int(graph["network_evaluations"]) == edge["network_evaluations"]
        assert 35 + 2 <= edge["network_evaluations"] <= 35 + 2 * 6


def graph_and_edge_on_two_objects(cfg, image=IMAGES[1], least=2):
    """The graph's and the edge pipeline's outputs on ``image`` (IMAGES[1], two objects) under
    ``cfg``, after asserting that they agree: the same detections (at least ``least``; boxes to
    0.01 px, scores to 1e-5, classes) and the same network evaluations."""
    loc, cls = fake_localizer(num_classes=2), fake_classifier(num_classes=2)
    module = DetectorModule(loc, cls, NAMES, ASPECTS, cfg)
    edge = EdgePipeline(keras_network(loc), keras_network(cls), NAMES, ASPECTS, cfg)
    graph = tf.function(lambda images: module.detect(*uint8_batch(images)))
    g = {k: v.numpy()[0] for k, v in graph(image[None]).items()}
    e = edge.detect(image)
    n = int(g["num_detections"])
    assert n >= least and e["num_detections"] == n
    h, w = image.shape[:2]
    scale = np.array([h, w, h, w])
    np.testing.assert_allclose(
        e["detection_boxes"][:n] * scale, g["detection_boxes"][:n] * scale, atol=0.01
    )
    np.testing.assert_allclose(e["detection_scores"], g["detection_scores"], atol=1e-5)
    np.testing.assert_array_equal(e["detection_classes"], g["detection_classes"])
    assert int(g["network_evaluations"]) == e["network_evaluations"]
    return g, e


def test_with_candidate_nms_and_a_blend_equal_the_graph_and_cost_less(fakes):
    # candidate_nms_iou = 0.5 (one box per object and class across scales) against off (the
    # paper's: every scale's top boxes go on; the fixture's): the graph and the pipeline agree
    # on the detections and on the evaluation count, which is smaller with it. With
    # refine_blend 0.5 both report boxes halfway between the first-stage and the refined box.
    cfg, outputs, _ = fakes
    assert cfg.inference.candidate_nms_iou == 1.0
    cfg = dataclasses.replace(
        cfg,
        inference=dataclasses.replace(cfg.inference, candidate_nms_iou=0.5, refine_blend=0.5),
    )
    _, e = graph_and_edge_on_two_objects(cfg)
    assert e["network_evaluations"] < outputs[1][1]["network_evaluations"]


def test_sizes_per_scale_and_the_refinement_gate_equal_the_graph():
    # scale_size_bounds (0.2, 1): each scale's canvas searched for its own sizes (the graph in
    # one search call per scale, the pipeline per canvas); refine_accept_margin 0: the refined
    # box only where its Eq. (3) reaches the first stage's; refine_min_area_ratio 0.9: and only
    # where it keeps 0.9 of the first-stage box's area. Same detections, same cost.
    cfg = DetectorConfig(
        model=ModelConfig(num_classes=2),
        inference=dataclasses.replace(
            InferenceConfig(),
            max_refine=6,
            scale_size_bounds=(0.2, 1.0),
            refine_accept_margin=0.0,
            refine_min_area_ratio=0.9,
        ),
    )
    graph_and_edge_on_two_objects(cfg)


def test_refinement_crops_kept_inside_the_image_equal_the_graph():
    # IMAGES[1]'s first object (rows 10-120 of 257) grown 1.6x reaches 23 px above the image:
    # with refine_crop "shift" / "clip" both pipelines crop inside the image, agree with each
    # other, and still find both planted objects whole (Jaccard >= 0.8 with each).
    planted = np.array([[10, 20, 120, 150], [150, 40, 250, 180]], np.float32)
    h, w = IMAGES[1].shape[:2]
    for mode in ("shift", "clip"):
        cfg = DetectorConfig(
            model=ModelConfig(num_classes=2),
            inference=dataclasses.replace(InferenceConfig(), max_refine=6, refine_crop=mode),
        )
        g, _ = graph_and_edge_on_two_objects(cfg)
        found = g["detection_boxes"][: int(g["num_detections"])] * np.array([h, w, h, w])
        best = core_boxes.iou(planted, found).max(axis=1)
        assert best.min() >= 0.8, (mode, best)


def test_bad_inputs_and_networks_fail_clearly():
    cfg = DetectorConfig(model=ModelConfig(num_classes=2))
    loc, cls = fake_localizer(num_classes=2), fake_classifier(num_classes=2)
    edge = EdgePipeline(keras_network(loc), keras_network(cls), NAMES, ASPECTS, cfg)
    with pytest.raises(ValueError, match=r"image must be \[H, W, 3\]"):
        edge.detect(np.zeros((20, 30), np.uint8))
    wrong = EdgePipeline(
        lambda x: np.zeros((len(x), 24, 24, 5, 3), np.float32),
        keras_network(cls),
        NAMES,
        ASPECTS,
        cfg,
    )
    with pytest.raises(ValueError, match="localizer returned shape"):
        wrong.detect(np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(ValueError, match="3 class names given"):
        EdgePipeline(keras_network(loc), keras_network(cls), NAMES + ["cow"], ASPECTS, cfg)


def test_classifying_the_final_detections_equals_the_graph_and_costs_less():
    # classifier_stage "detections": every candidate is refined, the final NMS ranks by Eq. (3)
    # agreement and only its survivors go through the classifier (each on its first-stage box,
    # as in the paper). Both pipelines agree on the detections and the cost: 35 windows + one
    # refinement per candidate + one classifier crop per survivor, against the paper's order
    # (one classifier crop and one refinement per candidate; the red-fraction classifier keeps
    # every one of them).
    planted = np.array([[10, 20, 120, 150], [150, 40, 250, 180]], np.float32)
    h, w = IMAGES[1].shape[:2]
    paper = DetectorConfig(
        model=ModelConfig(num_classes=2),
        inference=dataclasses.replace(InferenceConfig(), max_refine=6),
    )
    assert paper.inference.classifier_stage == "candidates"
    g_paper, _ = graph_and_edge_on_two_objects(paper)
    candidates = (int(g_paper["network_evaluations"]) - 35) // 2
    assert int(g_paper["network_evaluations"]) == 35 + 2 * candidates

    late = dataclasses.replace(
        paper, inference=dataclasses.replace(paper.inference, classifier_stage="detections")
    )
    g, e = graph_and_edge_on_two_objects(late)
    n = int(g["num_detections"])
    # Nothing pruned, no part removed (part_score_factor 0.5 only demotes): survivors = outputs.
    assert int(g["network_evaluations"]) == 35 + candidates + n
    assert n < candidates  # the NMS removed duplicates before the classifier saw them
    found = g["detection_boxes"][:n] * np.array([h, w, h, w])
    assert core_boxes.iou(planted, found).max(axis=1).min() >= 0.8
    # The first stage, with no classifier probability, is ranked by Eq. (3) / 5 alone.
    first = g["first_stage_scores"][: int(g["first_stage_num_detections"])]
    assert np.all(np.diff(first) <= 0) and first.max() <= 1.0
    np.testing.assert_allclose(e["first_stage_scores"], g["first_stage_scores"], atol=1e-5)


def test_interior_boxes_of_a_better_candidate_from_another_scale_are_dropped():
    # One class, three first-stage boxes (image px) as the scales leave them: A (0, 0, 100, 100)
    # Eq. (3) 4.5 from the coarsest scale; B (10, 10, 50, 50) 4.0, all of it inside A (a part
    # found at a finer scale; IoU 0.16, so the candidate NMS at 0.7 keeps it); C (60, 60, 160,
    # 160) 3.0, of whose area 40 x 40 / 100 x 100 = 0.16 lies in A. With
    # across_scales_containment 0.7 only B is dropped; off (0), all three are candidates; B
    # is never dropped for lying in C (C ranks below it), nor A for containing B.
    boxes = np.array(
        [[[0, 0, 100, 100], [10, 10, 50, 50], [60, 60, 160, 160], [0, 0, 0, 0]]], np.float32
    )
    scores = np.array([[4.5, 4.0, 3.0, -1e9]], np.float32)
    valid = np.array([[True, True, True, False]])
    loc, cls = fake_localizer(num_classes=1), fake_classifier(num_classes=1)
    for containment, expected in ((0.7, [4.5, 3.0]), (0.0, [4.5, 4.0, 3.0])):
        cfg = DetectorConfig(
            model=ModelConfig(num_classes=1),
            inference=dataclasses.replace(
                InferenceConfig(), max_refine=4, across_scales_containment=containment
            ),
        )
        module = DetectorModule(loc, cls, ["cat"], ASPECTS, cfg)
        g = module._top_candidates(tf.constant(boxes[None]), scores[None], valid[None])
        edge = EdgePipeline(keras_network(loc), keras_network(cls), ["cat"], ASPECTS, cfg)
        e = edge.top_candidates(FirstStage(boxes, scores.astype(np.float64), valid))
        for name, cand in (("graph", g), ("edge", e)):
            got = np.asarray(cand.scores).reshape(-1)[np.asarray(cand.valid).reshape(-1)]
            np.testing.assert_array_equal(got, expected, err_msg=f"{name}, {containment}")


def test_window_gate_equals_the_graph_and_runs_fewer_windows():
    # Gate 0.3 on IMAGES[0] (one object, rows 60-200 and columns 100-260 of 300 x 400): the
    # textured background's masks (~0.05) open no window, the object's (~0.95) those over it.
    # The graph and the pipeline run the same windows (the evaluation counts agree in
    # graph_and_edge_on_two_objects) and find the same detections.
    base = dict(max_refine=6, candidate_nms_iou=1.0)
    counts = {}
    for gate in (0.0, 0.3):
        cfg = DetectorConfig(
            model=ModelConfig(num_classes=2),
            inference=dataclasses.replace(InferenceConfig(), window_gate=gate, **base),
        )
        _, e = graph_and_edge_on_two_objects(cfg, IMAGES[0], least=1)
        counts[gate] = e["network_evaluations"]
    assert counts[0.3] <= counts[0.0] - 5

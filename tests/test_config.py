"""Every named config builds and validates; bad fields are named in the error; JSON round trip."""

import dataclasses

import pytest

from dnet_tf.config import (
    NAMED_CONFIGS,
    DetectorConfig,
    InferenceConfig,
    ModelConfig,
    named_config,
)
from dnet_tf.core.windows import windows_per_axis


@pytest.mark.parametrize("name", sorted(NAMED_CONFIGS))
def test_named_configs_validate_and_round_trip(name):
    cfg = named_config(name)
    assert DetectorConfig.from_json(cfg.to_json()) == cfg


def test_paper_numbers_are_the_defaults():
    inf = InferenceConfig()
    m = ModelConfig()
    assert (m.input_size, m.mask_size) == (225, 24)
    assert inf.num_scales == 3 and inf.window_overlap == 0.2
    assert len(inf.size_fractions) == 9 and inf.stride_px == 5.0
    assert inf.coverage_threshold == 0.5
    # departures chosen on validation (README, Ablations): the paper's crop is 1.2x the box, its
    # first stage keeps 5 boxes per scale and class and runs no NMS across the scales; its
    # classifier sees every candidate before the refinement (kept)
    assert inf.refine_enlarge == 1.6
    assert inf.top_k_per_scale == 8 and inf.candidate_nms_iou == 0.7
    assert inf.classifier_stage == "candidates"


def test_window_counts_worked_by_hand():
    # Scale 1: windows half the image side, stepping at most 0.8 of a window: ceil(1 / 0.8) + 1 = 3.
    # Scale 2: a quarter side: ceil(3 / 0.8) + 1 = 5. 1 + 9 + 25 = 35 windows.
    assert [windows_per_axis(s, 0.2) for s in range(3)] == [1, 3, 5]
    assert InferenceConfig().windows_per_scale == (1, 9, 25)
    # Without overlap the windows tile exactly: 2 and 4 per axis.
    assert [windows_per_axis(s, 0.0) for s in range(3)] == [1, 2, 4]


@pytest.mark.parametrize(
    "section,field,value",
    [
        ("model", "mask_size", 0),
        ("model", "head", "lstm"),
        ("inference", "stride_px", 0.0),
        ("inference", "coverage_threshold", 1.5),
        ("inference", "size_fractions", (0.0, 0.5)),
        ("inference", "refine_min_area_ratio", 1.5),
        ("inference", "refine_min_area_ratio", -0.1),
        ("loss", "mask_lambda", 0.0),
        ("train", "optimizer", "lbfgs"),
        ("sampler", "positive_coverage", 0.0),
    ],
)
def test_bad_field_is_named(section, field, value):
    cfg = DetectorConfig()
    bad = dataclasses.replace(
        cfg, **{section: dataclasses.replace(getattr(cfg, section), **{field: value})}
    )
    with pytest.raises(ValueError, match=f"'{field}'"):
        bad.validate()


def test_unknown_json_field_is_refused():
    with pytest.raises(ValueError, match="unknown field"):
        DetectorConfig.from_dict({"model": {"num_clases": 3}})


def test_stride10_config_doubles_the_first_stage_stride_only():
    fast, paper = named_config("paper_stride10"), named_config("paper")
    assert fast.model == paper.model and fast.train == paper.train
    assert (fast.inference.stride_px, paper.inference.stride_px) == (10.0, 5.0)
    assert dataclasses.replace(fast.inference, stride_px=5.0) == paper.inference


@pytest.mark.parametrize(
    "name, knobs",
    [
        ("paper_bfloat16", {"network_precision": "bfloat16"}),
        ("paper_stride10_bfloat16", {"network_precision": "bfloat16", "stride_px": 10.0}),
        (
            "paper_stride10_bfloat16_candidates25",
            {"network_precision": "bfloat16", "stride_px": 10.0, "max_candidates": 25},
        ),
    ],
)
def test_bfloat16_configs_change_inference_knobs_only(name, knobs):
    # For a run trained with the default: the same networks, computed in bfloat16.
    cfg, paper = named_config(name), named_config("paper")
    assert cfg.model == paper.model and cfg.train == paper.train
    assert cfg.inference == dataclasses.replace(paper.inference, **knobs)
    assert paper.inference.network_precision == "float32"


def test_unknown_network_precision_is_named():
    bad = dataclasses.replace(InferenceConfig(), network_precision="float16")
    with pytest.raises(ValueError, match="'network_precision'.*float16"):
        bad.validate()


def test_coarse_refinement_config_changes_inference_knobs_only():
    # It applies to a run trained with the default: same networks, a cheaper refinement search.
    coarse, paper = named_config("paper_coarse_refinement"), named_config("paper")
    assert coarse.model == paper.model and coarse.train == paper.train
    positions = lambda inf: (inf.refine_canvas / inf.refine_stride) ** 2  # noqa: E731
    assert positions(coarse.inference) == 16**2 and positions(paper.inference) == 48**2
    rest = lambda inf: dataclasses.replace(inf, refine_canvas=0, refine_stride=0)  # noqa: E731
    assert rest(coarse.inference) == rest(paper.inference)

"""The paired bootstrap of two variants' mAP (dnet_tf.evaluation.bootstrap), detections.json, and
the ablation table's bootstrap columns.

Oracles: a draw laid out image by image (each drawn image's ground truth and detections copied as
often as it was drawn) and scored by ``evaluate_detections``; a two-image split whose three
possible draws are worked out by hand.
"""

import json

import numpy as np
import pytest

from dnet_tf.evaluation import ablation, bootstrap
from dnet_tf.evaluation.runner import FIRST_STAGE, REFINED, read_detections, write_detections
from dnet_tf.evaluation.voc_ap import evaluate_detections


def random_split(rng, num_images=30, num_classes=3):
    """Images with 0-3 objects, detections near some of them and elsewhere, scores rounded to
    0.1 so that they tie within and across images, and a few difficult boxes."""
    gts, dets = [], []
    for _ in range(num_images):
        g = int(rng.integers(0, 4))
        corner = rng.uniform(0, 50, (g, 2))
        gb = np.concatenate([corner, corner + rng.uniform(10, 40, (g, 2))], axis=1)
        gc = rng.integers(0, num_classes, g)
        found = int(rng.integers(0, g + 1))
        extra = int(rng.integers(0, 3))
        near = gb[:found] + rng.normal(0, 3, (found, 4))
        far = np.sort(rng.uniform(0, 80, (extra, 2, 2)), axis=1).reshape(-1, 4)
        gts.append({"boxes_yxyx": gb, "classes": gc, "difficult": rng.random(g) < 0.1})
        dets.append(
            {
                "boxes_yxyx": np.concatenate([near, far]).reshape(-1, 4),
                "scores": np.round(rng.random(found + extra), 1),
                "classes": np.concatenate([gc[:found], rng.integers(0, num_classes, extra)]),
            }
        )
    return gts, dets


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_a_weighted_draw_scores_as_the_images_copied_out(use_07_metric):
    rng = np.random.default_rng(1)
    gts, dets = random_split(rng)
    n = len(gts)
    result = evaluate_detections(gts, dets, 3, 0.5, use_07_metric)
    draws = rng.multinomial(n, np.full(n, 1.0 / n), size=25)
    got = bootstrap.weighted_map(
        result, bootstrap.positives_per_image(gts, 3), np.vstack([np.ones(n), draws])
    )
    assert got[0] == pytest.approx(result.mean_ap, abs=1e-12)  # the split itself
    for counts, value in zip(draws, got[1:]):
        copied = np.repeat(np.arange(n), counts)
        oracle = evaluate_detections(
            [gts[i] for i in copied], [dets[i] for i in copied], 3, 0.5, use_07_metric
        ).mean_ap
        assert value == pytest.approx(oracle, abs=1e-12)


def two_image_split():
    """One class. Image 0: an object both variants find (score 0.9). Image 1: an object only
    variant b finds (0.8). On the split, a: recall 0.5 at precision 1, 11-point AP 6/11; b: 1."""
    box = np.array([[0.0, 0.0, 10.0, 10.0]])
    gts = [{"boxes_yxyx": box, "classes": np.array([0])} for _ in range(2)]
    hit = {"boxes_yxyx": box, "scores": np.array([0.9]), "classes": np.array([0])}
    none = {"boxes_yxyx": np.zeros((0, 4)), "scores": np.zeros(0), "classes": np.zeros(0, int)}
    return gts, [hit, none], [hit, dict(hit, scores=np.array([0.8]))]


def test_the_draws_of_a_two_image_split_worked_by_hand():
    gts, a, b = two_image_split()
    # Draws: image 0 twice (p 1/4): both find everything, difference 0; each once (p 1/2): the
    # split, 1 - 6/11 = 5/11; image 1 twice (p 1/4): a finds nothing (AP 0), b all: 1.
    # P(b above a) = 3/4, ties count half: 3/4 + 1/8 = 7/8. Mean 1/2 * 5/11 + 1/4 = 0.4773,
    # variance 1/2 * (5/11)^2 + 1/4 - 0.4773^2 = 0.1255: standard error 0.3543, and the 90%
    # interval 5/11 -/+ 1.6449 * 0.3543.
    diff = bootstrap.paired_bootstrap(gts, a, b, 1, samples=4000, seed=3)
    assert diff.delta == pytest.approx(5 / 11)
    assert diff.p_better == pytest.approx(7 / 8, abs=0.02)
    se = np.sqrt(0.5 * (5 / 11) ** 2 + 0.25 - (0.5 * 5 / 11 + 0.25) ** 2)
    assert diff.standard_error == pytest.approx(se, rel=0.03)
    assert diff.low == pytest.approx(5 / 11 - 1.6449 * diff.standard_error, abs=1e-4)
    assert diff.high == pytest.approx(5 / 11 + 1.6449 * diff.standard_error, abs=1e-4)
    same = bootstrap.paired_bootstrap(gts, b, b, 1, samples=50)
    assert (same.delta, same.low, same.high, same.p_better) == (0.0, 0.0, 0.0, 0.5)
    # Seeded: the same draws again.
    again = bootstrap.paired_bootstrap(gts, a, b, 1, samples=4000, seed=3)
    assert again == diff


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"samples": 0}, "samples"),
        ({"interval": 1.0}, "interval"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_knobs_are_named(kwargs, message):
    gts, a, b = two_image_split()
    with pytest.raises(ValueError, match=message):
        bootstrap.paired_bootstrap(gts, a, b, 1, **kwargs)
    with pytest.raises(ValueError, match="same images"):
        bootstrap.paired_bootstrap(gts, a, b[:1], 1)


def write_variant(directory, gts, dets, image_ids=("i0", "i1")):
    """An evaluation directory as the runner writes it: evaluation.json and detections.json."""
    directory.mkdir()
    m = evaluate_detections(gts, dets, 1).mean_ap
    method = {"voc07": {"mAP": m, "per_class": {"ball": {"ap": m}}}, "seconds_per_image": 0.1}
    (directory / "evaluation.json").write_text(
        json.dumps(
            {
                "num_images": len(gts),
                "table_metric": "VOC2007 11-point",
                "methods": {REFINED: method, FIRST_STAGE: method},
            }
        )
    )
    write_detections(directory, list(image_ids), ["ball"], gts, {REFINED: dets, FIRST_STAGE: dets})


def test_detections_json_round_trip(tmp_path):
    gts, _, b = two_image_split()
    write_variant(tmp_path / "b", gts, b)
    data = read_detections(tmp_path / "b")
    assert data["image_ids"] == ["i0", "i1"] and data["class_names"] == ["ball"]
    for got, want in zip(data["methods"][REFINED], b):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
            assert got[key].shape == np.asarray(want[key]).shape
    assert data["ground_truth"][1]["classes"].dtype == np.int64


def rows_of(out):
    return json.loads((out / "ablation.json").read_text())


def test_ablation_table_gives_the_bootstrap_against_the_first_row(tmp_path):
    gts, a, b = two_image_split()
    write_variant(tmp_path / "a", gts, a)
    write_variant(tmp_path / "b", gts, b)
    out = tmp_path / "out"
    code = ablation.main(
        ["--out", str(out), "--bootstrap", "400", f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"]
    )
    assert code == 0
    lines = [x for x in (out / "ablation.md").read_text().splitlines() if x.startswith("| ")]
    assert lines[0].endswith("| mAP vs the first (90% interval) | P(above the first) |")
    assert lines[1].startswith("| a | 0.545 |") and lines[1].endswith("| — | — |")
    b_row = rows_of(out)["b"]["bootstrap"]
    interval = f"| +0.455 [{b_row['low']:+.3f}, {b_row['high']:+.3f}] |"
    assert lines[2].startswith("| b | 1.000 |") and interval in lines[2]
    assert b_row["low"] < 0.455 < b_row["high"]
    rows = rows_of(out)
    assert rows["b"]["bootstrap"]["samples"] == 400 and rows["a"]["bootstrap"] is None
    # --bootstrap 0: no columns.
    assert ablation.main(["--out", str(out), "--bootstrap", "0", f"a={tmp_path / 'a'}"]) == 0


def test_ablation_refuses_a_bootstrap_of_different_images(tmp_path, capsys):
    gts, a, b = two_image_split()
    write_variant(tmp_path / "a", gts, a)
    write_variant(tmp_path / "b", gts, b, image_ids=("i0", "other"))
    assert (
        ablation.main(["--out", str(tmp_path / "o"), f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"])
        == 2
    )
    assert "different images" in capsys.readouterr().err


def test_a_bad_detections_file_is_refused_naming_it(tmp_path, monkeypatch, capsys):
    from dnet_tf.evaluation import runner

    gts, a, b = two_image_split()
    write_variant(tmp_path / "a", gts, a)
    write_variant(tmp_path / "b", gts, b)
    path = tmp_path / "b" / "detections.json"
    good = path.read_text()
    # Truncated: not JSON.
    path.write_text(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"detections\.json: not a detections file"):
        read_detections(tmp_path / "b")
    # An image's detections without scores: the field and the image are named.
    data = json.loads(good)
    del data["methods"][REFINED][1]["scores"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"methods\.DetectorNet\[1\] must hold the fields"):
        read_detections(tmp_path / "b")
    # Boxes that are not 4 numbers each.
    data = json.loads(good)
    data["ground_truth"][0]["boxes_yxyx"] = [[1.0, 2.0, 3.0]]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"ground_truth\[0\]"):
        read_detections(tmp_path / "b")
    # Past the size limit: refused before it is read, and the ablation says so and exits 2.
    path.write_text(good)
    monkeypatch.setattr(runner, "MAX_DETECTIONS_JSON_BYTES", len(good) - 1)
    with pytest.raises(ValueError, match=f"{len(good)} bytes, over the limit of {len(good) - 1}"):
        read_detections(tmp_path / "b")
    assert (
        ablation.main(["--out", str(tmp_path / "o"), f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"])
        == 2
    )
    assert "over the limit" in capsys.readouterr().err
    # A baseline's timing fields are not written.
    write_detections(tmp_path, ["i0"], ["ball"], gts[:1], {"x": [dict(b[0], seconds=0.5)]})
    assert set(
        json.loads(path.parent.parent.joinpath("detections.json").read_text())["methods"]["x"][0]
    ) == {"boxes_yxyx", "scores", "classes"}


def write_evaluation(directory, ids, gts, dets_by_method, names, seconds, evals):
    """evaluation.json (each method's VOC07 table, seconds and evaluations per image) and
    detections.json of the images ``ids``, as the runner writes them."""
    directory.mkdir()
    methods = {}
    for name, dets in dets_by_method.items():
        methods[name] = {
            "voc07": evaluate_detections(gts, dets, len(names)).to_dict(names),
            "seconds_per_image": seconds,
            "network_evaluations_per_image": evals,
        }
    (directory / "evaluation.json").write_text(
        json.dumps({"num_images": len(ids), "table_metric": "VOC2007 11-point", "methods": methods})
    )
    write_detections(directory, list(ids), names, gts, dets_by_method)


def test_pooled_folds_score_as_one_split_of_all_their_images(tmp_path):
    # Two variants evaluated on two disjoint folds (12 and 18 images). Pooled with "+", the row
    # is what one evaluation of all 30 images gives: mAP and per-class AP from
    # evaluate_detections on the whole split (the oracle), seconds and evaluations per image
    # weighted by the folds' images ((12 x 0.1 + 18 x 0.4) / 30 = 0.28; (12 x 50 + 18 x 60) /
    # 30 = 56), and the paired bootstrap equal to the whole split's.
    rng = np.random.default_rng(4)
    names = ["p", "q", "r"]
    gts, a = random_split(rng, num_images=30)
    b = [dict(d, scores=np.round(rng.random(len(d["scores"])), 1)) for d in a]
    ids = [f"img{i}" for i in range(30)]
    folds = [(slice(0, 12), 0.1, 50.0), (slice(12, 30), 0.4, 60.0)]
    for variant, dets in (("a", a), ("b", b)):
        for k, (part, seconds, evals) in enumerate(folds):
            write_evaluation(
                tmp_path / f"{variant}{k}",
                ids[part],
                gts[part],
                {REFINED: dets[part], FIRST_STAGE: dets[part]},
                names,
                seconds,
                evals,
            )
        write_evaluation(
            tmp_path / f"{variant}_all", ids, gts, {REFINED: dets, FIRST_STAGE: dets}, names, 0, 0
        )
    out = tmp_path / "out"
    pooled = [f"{v}={tmp_path / (v + '0')}+{tmp_path / (v + '1')}" for v in ("a", "b")]
    whole = [f"{v}_all={tmp_path / (v + '_all')}" for v in ("a", "b")]
    assert ablation.main(["--out", str(out), "--bootstrap", "200", *pooled]) == 0
    rows = rows_of(out)
    assert ablation.main(["--out", str(tmp_path / "w"), "--bootstrap", "200", *whole]) == 0
    oracle = rows_of(tmp_path / "w")
    for variant, dets in (("a", a), ("b", b)):
        want = evaluate_detections(gts, dets, 3)
        row = rows[variant]
        assert row["num_images"] == 30
        assert row["mAP"] == pytest.approx(want.mean_ap)
        assert [row["ap"][n] for n in names] == pytest.approx([c.ap for c in want.per_class])
        assert row["seconds_per_image"] == pytest.approx(0.28)
        assert row["network_evaluations_per_image"] == pytest.approx(56.0)
    for field in ("delta", "low", "high", "p_better"):
        assert rows["b"]["bootstrap"][field] == pytest.approx(oracle["b_all"]["bootstrap"][field])


def test_pooling_refuses_overlapping_folds_naming_the_image(tmp_path, capsys):
    gts, a, _ = two_image_split()
    write_variant(tmp_path / "f0", gts, a)
    write_variant(tmp_path / "f1", gts, a, image_ids=("i1", "i2"))
    code = ablation.main(["--out", str(tmp_path / "o"), f"x={tmp_path / 'f0'}+{tmp_path / 'f1'}"])
    err = capsys.readouterr().err
    assert code == 2 and "image 'i1' is in both" in err and "disjoint" in err

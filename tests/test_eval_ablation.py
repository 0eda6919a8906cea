"""The ablation table (dnet_tf.evaluation.ablation) from evaluation.json files written by hand."""

import json

from dnet_tf.evaluation import ablation


def write_eval(path, refined_map, first_map, parts, touching, seconds, small=None, evals=None):
    def method(m, ap_ball, errors):
        out = {
            "voc07": {"mAP": m, "per_class": {"ball": {"ap": ap_ball}, "star": {"ap": None}}},
            "seconds_per_image": seconds,
            "network_evaluations_per_image": evals if errors else None,
        }
        if small is not None:  # files written before the small-object AP have none
            out["voc07_small"] = {"mAP": small}
        if errors:
            out["errors"] = {
                "part_false_positives_per_image": parts,
                "totals": {"recall_touching": touching, "recall_isolated": 0.9},
            }
        return out

    path.mkdir()
    (path / "evaluation.json").write_text(
        json.dumps(
            {
                "num_images": 4,
                "table_metric": "VOC2007 11-point",
                "methods": {
                    "DetectorNet": method(refined_map, refined_map, True),
                    "DetectorNet (first stage)": method(first_map, first_map, False),
                },
            }
        )
    )


def test_table_rows_in_the_order_given(tmp_path, capsys):
    write_eval(tmp_path / "a", 0.5, 0.4, 1.25, 0.5, 0.8, small=0.25, evals=36.5)
    write_eval(tmp_path / "b", 0.75, 0.6, 0.5, None, 0.9)
    code = ablation.main(
        ["--out", str(tmp_path / "out"), f"paper={tmp_path / 'a'}", f"x=y={tmp_path / 'b'}"]
    )
    assert code == 0
    md = (tmp_path / "out" / "ablation.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert (
        lines[1]
        == "| paper | 0.500 | 0.400 | 0.500 | — | 0.250 | 1.25 | 0.500 | 0.900 | 0.80 | 36.5 |"
    )
    # A label may hold "=": the directory is what follows the last one. No touching objects and
    # no small-object AP: —.
    assert lines[2] == "| x=y | 0.750 | 0.600 | 0.750 | — | — | 0.50 | — | 0.900 | 0.90 | — |"
    rows = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert list(rows) == ["paper", "x=y"] and rows["x=y"]["first_stage_mAP"] == 0.6


def test_missing_directory_is_named(tmp_path, capsys):
    assert ablation.main(["--out", str(tmp_path), f"a={tmp_path / 'nope'}"]) == 2
    assert "nope" in capsys.readouterr().err

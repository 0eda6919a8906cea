"""bench.run_all's report: the hand-kept measurements appended one heading level down."""

from bench import run_all


def test_headings_go_one_level_down_outside_code_blocks():
    text = "# Title\n\ntext\n## Part\n```\n# a shell comment\n```\n#not-a-heading-in-text\n"
    assert run_all.demoted_headings(text) == [
        "## Title",
        "",
        "text",
        "### Part",
        "```",
        "# a shell comment",
        "```",
        "##not-a-heading-in-text",
    ]


def test_the_own_setup_file_is_a_report_section_with_its_commands():
    lines = run_all.demoted_headings(run_all.OWN_SETUP.read_text())
    assert lines[0] == "## Measurements with their own setup"
    headings = [line for line in lines if line.startswith("### ")]
    assert "### GPU" in headings
    # every measurement names the command that produced it
    assert any("bench/batch_throughput.py" in h for h in headings)
    assert any("scripts/tf_serving_compat.sh" in h for h in headings)


REPORT = """# Benchmarks

header
## A

old a
```
## not a heading (in a code block)
```
## B

old b
## Measurements with their own setup

### GPU
kept
"""


def test_a_rerun_replaces_its_own_section_only():
    got = run_all.replace_sections(REPORT, {"A": ["## A", "", "new a", ""]})
    assert got == REPORT.replace(
        "## A\n\nold a\n```\n## not a heading (in a code block)\n```\n", "## A\n\nnew a\n\n"
    )


def test_a_new_section_goes_before_the_hand_kept_measurements():
    got = run_all.replace_sections(REPORT, {"C": ["## C", "c", ""]})
    assert "old b\n## C\nc\n\n## Measurements with their own setup\n" in got
    assert got.startswith("# Benchmarks\n\nheader\n## A\n")
    assert got.endswith("### GPU\nkept\n")


def test_inference_sweep_times_the_settings_image_by_image_in_turn(tmp_path, monkeypatch):
    """Every detector is traced before any timing, then each image goes through every setting in
    turn (a drifting machine slows all alike); each row is scored on its own detections."""
    import types

    import numpy as np

    from bench import inference_sweep
    from dnet_tf.core.detections import Detections
    from dnet_tf.inference import detector as detector_module

    calls = []

    class Fake:
        class_names = ["ball"]

        def __init__(self, name, hit):
            self.name, self.hit = name, hit

        def detect_encoded(self, images):
            calls.append((self.name, images[0]))
            box = [[0.0, 0.0, 10.0, 10.0]] if self.hit else [[50.0, 50.0, 60.0, 60.0]]
            dets = Detections(
                height=100,
                width=100,
                boxes_norm_yxyx=np.asarray(box, np.float32) / 100.0,
                classes=np.asarray([0]),
                class_names=("ball",),
                scores=np.asarray([0.9], np.float32),
            )
            return [types.SimpleNamespace(detections=dets, network_evaluations=35 + self.hit)]

    monkeypatch.setattr(
        detector_module, "load_detector", lambda run, overrides: Fake(*overrides["fake"])
    )
    records = []
    for i in range(3):
        path = tmp_path / f"img{i}.jpg"
        path.write_bytes(f"jpeg {i}".encode())
        records.append(
            types.SimpleNamespace(
                image_path=str(path),
                boxes_image_yxyx=np.asarray([[0.0, 0.0, 10.0, 10.0]], np.float32),
                class_ids=np.asarray([0], np.int32),
                difficult=np.asarray([False]),
            )
        )
    rows = inference_sweep.run_settings(
        "run", records, {"a": {"fake": ("a", True)}, "b": {"fake": ("b", False)}}
    )
    images = [f"jpeg {i}".encode() for i in range(3)]
    # Tracing on the first image for both, then image by image, a then b.
    assert calls == [("a", images[0]), ("b", images[0])] + [
        (name, image) for image in images for name in ("a", "b")
    ]
    assert rows["a"]["mAP"] == 1.0 and rows["b"]["mAP"] == 0.0
    assert (rows["a"]["evaluations_mean"], rows["b"]["evaluations_mean"]) == (36.0, 35.0)
    assert rows["b"]["overrides"] == {"fake": ("b", False)}

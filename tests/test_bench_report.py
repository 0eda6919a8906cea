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

"""The training command killed with SIGKILL mid-run resumes to the same final step; files load.

Runs the real command (python -m dnet_tf.training.cli) on a generated 14-image VOC folder through
the team's data pipeline, with a tiny model (input 64, mask 8, width 0.25).
"""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dnet_tf.training import run_dir as rd

REPO = pathlib.Path(__file__).resolve().parents[1]
CLASSES = "ball,blob,crate,ring,snake,star"
CLASSIFIER_STEPS, LOCALIZER_STEPS, EVERY = 20, 40, 5


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    from dnet_tf.data.synthetic import SyntheticConfig, write_synthetic_voc

    out = tmp_path_factory.mktemp("voc")
    write_synthetic_voc(
        out,
        SyntheticConfig(num_train=10, num_val=4, num_test=0, min_side=96, max_side=160),
        workers=1,
        progress=False,
    )
    return out


def _command(run_dir, data):
    return [
        sys.executable,
        "-m",
        "dnet_tf.training.cli",
        f"--run_dir={run_dir}",
        f"--data={data}",
        f"--classes={CLASSES}",
        "--input_size=64",
        "--mask_size=8",
        "--width=0.25",
        f"--classifier_steps={CLASSIFIER_STEPS}",
        f"--localizer_steps={LOCALIZER_STEPS}",
        "--batch_size=8",
        f"--steps_per_checkpoint={EVERY}",
        "--eval_crops=16",
        "--progress=false",
        "--seed=3",
    ]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")


def _latest_checkpoint_number(run_dir):
    index = pathlib.Path(run_dir) / rd.CHECKPOINTS / "checkpoint"
    if not index.is_file():
        return None
    m = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', index.read_text(), re.M)
    return int(m.group(1)) if m else None


def test_sigkill_then_rerun_reaches_the_same_final_step(tmp_path, tiny_voc):
    run_dir = tmp_path / "run"
    cmd = _command(run_dir, tiny_voc)
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        # Kill once a checkpoint inside the localizer stage exists: the process is then training
        # (or writing the next checkpoint), past the classifier -> localizer hand-over.
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            n = _latest_checkpoint_number(run_dir)
            if n is not None and n >= CLASSIFIER_STEPS + EVERY:
                break
            time.sleep(0.05)
        assert proc.poll() is None, (
            "training ended before it could be killed:\n" + proc.stdout.read().decode()
        )
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _latest_checkpoint_number(run_dir)
    assert CLASSIFIER_STEPS + EVERY <= killed_at < CLASSIFIER_STEPS + LOCALIZER_STEPS
    assert not rd.is_complete(run_dir)

    again = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resumed from {run_dir / rd.CHECKPOINTS}/ckpt-" in again.stdout
    # The classifier stage was over: it was not trained again, nor was the localizer re-initialised.
    assert "classifier: steps" not in again.stdout
    assert "initialised from the classifier" not in again.stdout
    summary = rd.read_summary(run_dir)
    assert summary["complete"]
    assert summary["steps"] == {"classifier": CLASSIFIER_STEPS, "localizer": LOCALIZER_STEPS}
    assert _latest_checkpoint_number(run_dir) == CLASSIFIER_STEPS + LOCALIZER_STEPS
    # No temporary files left behind; every run file loads.
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]
    arts = rd.load_run(run_dir)
    assert arts.class_names == tuple(CLASSES.split(","))
    masks = np.asarray(arts.localizer(np.full((1, 64, 64, 3), 128.0, np.float32)))
    assert masks.shape == (1, 8, 8, 5, 6) and np.all((masks >= 0) & (masks <= 1))

    # (Re-running a finished run only reports it: tests/test_training.py, in-process.)


def test_bad_arguments_exit_with_a_named_error(tmp_path, capsys):
    from dnet_tf.training import cli

    argv = ["cli", f"--run_dir={tmp_path / 'r'}", f"--data={tmp_path / 'missing'}"]
    try:
        assert cli.main(cli.FLAGS(argv)) == 2
    finally:
        cli.FLAGS.unparse_flags()
    assert "missing: no such folder" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # nothing written for a bad command


@pytest.mark.slow
def test_killed_at_random_moments_still_finishes(tmp_path, tiny_voc):
    """SIGKILL at random times (during start-up, training, checkpoint or model writes), then a
    clean rerun: the run completes with the target steps and loads."""
    run_dir = tmp_path / "run"
    cmd = _command(run_dir, tiny_voc)
    rng = np.random.default_rng(0)
    for _ in range(4):
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            proc.wait(timeout=float(rng.uniform(4.0, 14.0)))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    final = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout + final.stderr
    summary = rd.read_summary(run_dir)
    assert summary["steps"] == {"classifier": CLASSIFIER_STEPS, "localizer": LOCALIZER_STEPS}
    rd.load_run(run_dir)

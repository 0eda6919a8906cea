"""Two MultiWorkerMirroredStrategy workers on localhost train in lock-step to the same weights.

Each worker is the real training command with its own TF_CONFIG (free localhost ports, CPU, tiny
model). Each worker's input pipeline is seeded differently (seed + input pipeline id), so the
workers see different batches: identical final weights show that every update was all-reduced.
Worker 0 (the chief) writes the run directory; worker 1 keeps its checkpoints in a scratch folder,
which is what the test compares against the chief's.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from dnet_tf.training import run_dir as rd
from dnet_tf.training.distribute import make_strategy

REPO = pathlib.Path(__file__).resolve().parents[1]


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _checkpoint_values(directory):
    path = tf.train.latest_checkpoint(str(directory))
    assert path is not None, f"no checkpoint in {directory}"
    reader = tf.train.load_checkpoint(path)
    # Everything but each worker's own wall clock: weights, BN statistics, optimizer slots, steps.
    return {
        k: reader.get_tensor(k)
        for k in reader.get_variable_to_shape_map()
        if not k.startswith(("elapsed_s/", "_CHECKPOINTABLE_OBJECT_GRAPH"))
    }


def test_two_workers_train_in_lock_step(tmp_path):
    run_dir = tmp_path / "run"
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    cmd = [
        sys.executable,
        "-m",
        "dnet_tf.training.cli",
        f"--run_dir={run_dir}",
        "--source=toy",
        "--input_size=64",
        "--mask_size=8",
        "--width=0.25",
        "--classifier_steps=6",
        "--localizer_steps=6",
        "--batch_size=8",
        "--steps_per_checkpoint=4",
        "--eval_crops=0",
        "--progress=false",
        "--strategy=multi_worker",
    ]
    procs = []
    for index in range(2):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(
            os.environ,
            TF_CONFIG=json.dumps(tf_config),
            TF_CPP_MIN_LOG_LEVEL="2",
            CUDA_VISIBLE_DEVICES="-1",
        )
        procs.append(
            subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=240)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out

    summary = rd.read_summary(run_dir)
    assert summary["complete"] and summary["replicas"] == 2
    assert summary["steps"] == {"classifier": 6, "localizer": 6}
    chief = _checkpoint_values(run_dir / rd.CHECKPOINTS)
    other = _checkpoint_values(run_dir / rd.CHECKPOINTS / ".worker-1")
    assert chief.keys() == other.keys() and len(chief) > 100
    assert any("_trainable_variables" in k for k in chief)  # the networks' weights are compared
    for key in chief:
        np.testing.assert_array_equal(chief[key], other[key], err_msg=key)
    # Only the chief writes the run's files.
    assert (run_dir / rd.LOCALIZER).is_file()
    assert not list((run_dir / rd.CHECKPOINTS / ".worker-1").glob("*.keras"))


def test_strategy_selection_from_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert make_strategy("auto") is tf.distribute.get_strategy()  # one device: the default one
    with pytest.raises(ValueError, match="TF_CONFIG"):
        make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        make_strategy("auto")
    with pytest.raises(ValueError, match="unknown strategy"):
        make_strategy("parameter_server")

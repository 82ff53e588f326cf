"""tf.distribute: mirrored on 2 logical CPU devices, and a real two-process MultiWorkerMirroredStrategy on
127.0.0.1. Each run is a subprocess, since logical devices and TF_CONFIG are fixed when TensorFlow starts."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.tiny import TINY_FLAGS, make_tiny_dataset

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def dsdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("datasets")
    make_tiny_dataset(d)
    return d


def trainer_cmd(dsdir: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "trainer.py"), "--dataset", "tiny", "--dataset_dir", str(dsdir),
            "--train_dir", str(run), "--num_labeled", "30", *TINY_FLAGS, *extra]


def loss_curve(run: Path, tag: str = "train/loss_sup") -> dict[int, float]:
    ea = EventAccumulator(str(run / "logs"), size_guidance={"tensors": 0})
    ea.Reload()
    return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in ea.Tensors(tag)}


def test_mirrored_on_two_cpu_devices_follows_the_single_device_trajectory(dsdir, tmp_path):
    curves = {}
    for name, flags in (("one", []), ("mirrored", ["--strategy", "mirrored", "--cpu_devices", "2"])):
        out = subprocess.run(trainer_cmd(dsdir, tmp_path / name, "--max_steps", "40", *flags), env=ENV,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        assert ("(2 replica(s))" if name == "mirrored" else "(1 replica(s))") in out.stdout
        curves[name] = loss_curve(tmp_path / name)
    one, mirrored = curves["one"], curves["mirrored"]
    assert sorted(one) == sorted(mirrored) == [10, 20, 30, 40]
    # Same global batch, seed and initial weights; only the per-replica noise streams differ. So the
    # first 10 steps (near the shared initial weights) agree; later, on 30 labelled images, the noise
    # decides how fast the loss falls to ~0 (with seeds 1-3 the two strategies differ by up to 0.35
    # at step 20), so from there both must learn, not match point by point.
    assert abs(one[10] - mirrored[10]) <= 0.35 * one[10] + 0.05, (one, mirrored)
    assert one[40] < 0.5 * one[10] and mirrored[40] < 0.5 * mirrored[10], (one, mirrored)
    resumed = subprocess.run(trainer_cmd(dsdir, tmp_path / "mirrored", "--max_steps", "50", "--strategy", "mirrored",
                                         "--cpu_devices", "2"), env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resumed from" in resumed.stdout and "at step 40" in resumed.stdout and "Step 50:" in resumed.stdout


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_workers(dsdir: Path, run: Path, *extra: str) -> list[subprocess.Popen]:
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    procs = []
    for i in range(2):
        env = {**ENV, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen(trainer_cmd(dsdir, run, "--strategy", "multi_worker", *extra), env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def test_two_worker_run_trains_and_the_chiefs_checkpoint_evaluates(dsdir, tmp_path):
    run = tmp_path / "mw"
    procs = start_workers(dsdir, run, "--max_steps", "20")
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    assert "(2 replica(s))" in outs[0][0] and "Step 20: test accuracy" in outs[0][0]
    assert tf.train.latest_checkpoint(str(run / "ckpt")).endswith("ckpt-20")
    assert not list(run.glob(".worker-*")), "the non-chief's temporary checkpoints are removed"
    ev = subprocess.run([sys.executable, str(ROOT / "evaler.py"), "--dataset", "tiny", "--dataset_dir", str(dsdir),
                         "--checkpoint", str(run), "--json"], env=ENV, capture_output=True, text=True, timeout=120)
    assert ev.returncode == 0, ev.stderr[-1500:]
    report = json.loads(ev.stdout.strip().splitlines()[-1])
    assert report["step"] == 20 and 0 <= report["accuracy"] <= 1


def test_a_dead_worker_makes_the_other_exit_with_a_clear_error(dsdir, tmp_path):
    run = tmp_path / "mw-dead"
    procs = start_workers(dsdir, run, "--max_steps", "1000000", "--collective_timeout", "15")
    deadline = time.time() + 120
    while not (run / "ckpt" / "checkpoint").exists() and time.time() < deadline:
        time.sleep(0.2)
    procs[1].kill()
    killed = time.time()
    out, err = procs[0].communicate(timeout=120)
    assert time.time() - killed < 90
    procs[1].communicate()
    assert procs[0].returncode == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: lost contact with another worker") and "restart every worker" in last
    assert "Traceback" not in err
    # Restarting every worker with the same command resumes all of them from the chief's checkpoint.
    saved = int(tf.train.latest_checkpoint(str(run / "ckpt")).rsplit("-", 1)[1])
    procs = start_workers(dsdir, run, "--max_steps", str(saved + 10), "--collective_timeout", "15")
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-1500:] for o in outs]
    for out, _ in outs:
        assert f"ckpt-{saved} at step {saved}" in out
    assert tf.train.latest_checkpoint(str(run / "ckpt")).endswith(f"ckpt-{saved + 10}")

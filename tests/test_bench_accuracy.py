"""bench/accuracy.py --quick end to end: real trainer/evaler subprocesses on the tiny dataset."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_KEYS = {"dataset", "labels", "method", "seed", "accuracy", "trainer_accuracy", "accuracy_matches_trainer", "step",
            "stopped_by", "wall_s", "cpu_s", "eval_wall_s", "run_dir", "command", "eval_command", "trainer_config"}


def run_quick(tmp_path: Path) -> tuple[subprocess.CompletedProcess, dict, float]:
    """Run the quick benchmark into tmp_path; (process, its JSON, wall seconds)."""
    out = tmp_path / "accuracy.json"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "bench/accuracy.py", "--quick", "--out", str(out),
                           "--runs_root", str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=600)
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text()), wall


def test_quick_benchmark(tmp_path):
    proc, data, wall = run_quick(tmp_path)
    print(f"bench/accuracy.py --quick: {wall:.1f} s")
    assert data["benchmark"] == "accuracy" and data["settings"]["quick"] is True
    runs = data["runs"]
    assert len(runs) == 4 and all(RUN_KEYS <= set(r) for r in runs)
    assert {(r["labels"], r["method"], r["seed"]) for r in runs} == {
        (30, m, s) for m in ("ssgan", "supervised") for s in (0, 1)}
    for r in runs:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["accuracy_matches_trainer"]
        assert r["command"].split()[1] == "trainer.py" and "--train_dir" in r["command"]
        assert ("--supervised_only" in r["command"]) == (r["method"] == "supervised")
        assert f"--seed {r['seed']}" in r["command"] and "--num_labeled 30" in r["command"]
        assert r["eval_command"].split()[1:4] == ["evaler.py", "--checkpoint", r["run_dir"]]
        assert (ROOT / r["run_dir"] / "result.json").exists()  # run_dir: relative to the repo, or absolute
    rows = {(row["labels"], row["method"]): row for row in data["summary"]}
    assert set(rows) == {(30, "ssgan"), (30, "supervised")}
    for row in rows.values():
        assert row["n"] == 2 and 0.0 <= row["accuracy_mean"] <= 1.0 and row["accuracy_std"] >= 0.0
        assert row["steps_mean"] == 20 and row["wall_s_mean"] > 0
    gain = data["gains"][0]
    assert gain["labels"] == 30 and abs(gain["gain_mean"] - (rows[30, "ssgan"]["accuracy_mean"]
                                                             - rows[30, "supervised"]["accuracy_mean"])) < 1e-9
    assert sum(line.startswith("[") and "/4]" in line for line in proc.stdout.splitlines()) == 4
    assert "supervised" in proc.stdout and "+-" in proc.stdout and "gain (ssgan - supervised)" in proc.stdout


def test_methods_flag_plans_only_those_runs():
    sys.path.insert(0, str(ROOT / "bench"))
    import accuracy
    args = accuracy.parse_args(["--labels", "100", "1000", "--seeds", "2", "--methods", "supervised"])
    assert accuracy.plan(args) == [(100, "supervised", 0), (100, "supervised", 1),
                                   (1000, "supervised", 0), (1000, "supervised", 1)]
    assert len(accuracy.plan(accuracy.parse_args(["--labels", "100", "--seeds", "2"]))) == 4


def planned_run(method: str) -> tuple:
    """bench/accuracy.py, a planned run of `method` (100 labels, seed 0), its trainer command, and the config.json
    that the trainer records for that command on Fashion-MNIST: the flags as it resolves them, and the dataset."""
    sys.path.insert(0, str(ROOT / "bench"))
    import accuracy

    import trainer
    from datasets import fashion_mnist
    args = accuracy.parse_args(["--labels", "100", "--seeds", "1", "--methods", method])
    key = (100, method, 0)
    cmd = shlex.join(accuracy.trainer_cmd(args, [], *key, Path("runs") / "r"))
    trainer_args = trainer.parse_args(shlex.split(cmd)[2:])
    names = fashion_mnist.CLASS_NAMES
    trainer.resolve_derived(trainer_args, names)
    # config.resolve_dataset records the downloaded dataset's conversion settings: the defaults, and no seed
    config = {**trainer.flags_record(trainer_args), "resize": "crop", "test_fraction": 0.1, "conversion_seed": None,
              "dataset_info": {"height": 28, "class_names": names}}
    return accuracy, key, cmd, config


def test_resume_reuses_only_runs_trained_as_the_command_trains_today():
    accuracy, key, cmd, today = planned_run("ssgan")
    assert today["g_arch"] == "conv" and today["fm_features"] == "noisy" and today["flip_classes"] == "0,1,2,3,4,6,8"
    assert today["flip_unlabeled"] == "predicted"
    assert today["d_width"] == 40  # lenet's width, recorded since stop 39
    assert accuracy.reusable({cmd: {"command": cmd, "trainer_config": today}}, {key: cmd}) == {
        key: {"command": cmd, "trainer_config": today}}
    before_g_arch = {k: v for k, v in today.items() if k != "g_arch"}  # lenet with the mlp G, before stop 18
    other_fm = {**today, "fm_features": "clean"}  # a training default other than today's (not a model flag)
    other_lr = {**today, "lr": 0.001}
    before_flips = {k: v for k, v in today.items() if k != "flip_classes"}  # no image mirrored, before stop 28
    before_flip_unlabeled = {k: v for k, v in today.items() if k != "flip_unlabeled"}  # before stop 30
    before_width = {**today, "d_width": 0}  # lenet's D was 32 wide before stop 39
    for recorded in (before_g_arch, other_fm, other_lr, before_flips, before_flip_unlabeled, before_width):
        assert accuracy.reusable({cmd: {"command": cmd, "trainer_config": recorded}}, {key: cmd}) == {}
    before_fm = {k: v for k, v in today.items() if k != "fm_features"}  # made before --fm_features: noisy
    assert accuracy.reusable({cmd: {"command": cmd, "trainer_config": before_fm}}, {key: cmd}) == {
        key: {"command": cmd, "trainer_config": before_fm}}
    assert accuracy.reusable({cmd: {"command": cmd}}, {key: cmd}) == {}  # recorded before trainer_config
    no_names = {**today, "dataset_info": {"height": 28}}  # recorded before config.json named the classes
    assert accuracy.reusable({cmd: {"command": cmd, "trainer_config": no_names}}, {key: cmd}) == {}
    assert accuracy.reusable({"other": {"command": "other"}}, {key: cmd}) == {}


def test_resume_reuses_supervised_only_runs():
    """A supervised-only run records --g_update alternating (it has no G update); the comparison derives it too."""
    accuracy, key, cmd, recorded = planned_run("supervised")
    assert recorded["supervised_only"] and recorded["g_update"] == "alternating"
    assert accuracy.reusable({cmd: {"command": cmd, "trainer_config": recorded}}, {key: cmd}) == {
        key: {"command": cmd, "trainer_config": recorded}}

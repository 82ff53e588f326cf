"""Interrupts, faults and bad input: bit-identical resume, unreadable checkpoints, divergence, and a
table of bad inputs that each give one clear line, exit status 2, and leave nothing written."""
from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import download
import errors
import evaler
import trainer
from tests.tiny import TINY_FLAGS, make_tiny_dataset

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dsdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("datasets")
    make_tiny_dataset(d)
    make_tiny_dataset(d, "tiny_rgb", shape=(10, 14, 3))
    return d


def train_args(dsdir: Path, run: Path, *extra: str) -> list[str]:
    return ["--dataset", "tiny", "--dataset_dir", str(dsdir), "--train_dir", str(run), "--num_labeled", "30",
            *TINY_FLAGS, *extra]


def weights(run: Path) -> dict[str, np.ndarray]:
    """Every saved state tensor of the latest checkpoint, but the bookkeeping of how many saves were made."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(run / "ckpt")))
    skip = ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE")
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if n not in skip}


def test_interrupted_then_resumed_run_is_bit_identical(dsdir, tmp_path):
    # No LR decay: the schedule depends on --max_steps, which differs between the two halves here.
    flags = ["--deterministic", "--ckpt_every", "7", "--steps_per_loop", "7", "--lr_decay_start", "1"]
    trainer.main(train_args(dsdir, tmp_path / "straight", *flags, "--max_steps", "21"))
    trainer.main(train_args(dsdir, tmp_path / "resumed", *flags, "--max_steps", "14"))
    trainer.main(train_args(dsdir, tmp_path / "resumed", *flags, "--max_steps", "21"))
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and len(a) > 20
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_unreadable_latest_checkpoint_falls_back_to_the_one_before(dsdir, tmp_path, capsys):
    run = tmp_path / "r"
    trainer.main(train_args(dsdir, run, "--max_steps", "20"))
    for f in (run / "ckpt").glob("ckpt-20.data-*"):
        f.write_bytes(b"cut short by a crash")
    result = trainer.main(train_args(dsdir, run, "--max_steps", "25"))
    captured = capsys.readouterr()
    assert "ckpt-20 is unreadable" in captured.err and "Resumed from" in captured.out
    assert result["step"] == 25


def test_evaler_falls_back_from_an_unreadable_latest_checkpoint_of_a_run_dir(dsdir, tmp_path, capsys):
    run = tmp_path / "r"
    trainer.main(train_args(dsdir, run, "--max_steps", "20"))
    for f in (run / "ckpt").glob("ckpt-20.data-*"):
        f.write_bytes(f.read_bytes()[:100])
    capsys.readouterr()
    common = ["--dataset", "tiny", "--dataset_dir", str(dsdir), "--json"]
    (report,) = evaler.main(["--checkpoint", str(run), *common])
    assert report["step"] == 10 and "ckpt-20 is unreadable; using the one before it" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # named explicitly, it is an error, not a silent substitute
        evaler.main(["--checkpoint", str(run / "ckpt" / "ckpt-20"), *common])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "Traceback" not in err
    assert re.search(r"ckpt-20 is unreadable: its files are cut short or missing .*pass another checkpoint of",
                     err.splitlines()[-1]), err
    exported = evaler.main(["--checkpoint", str(run), "--export", str(tmp_path / "model"), "--dataset_dir", str(dsdir)])
    assert exported["step"] == 10
    (report,) = evaler.main(["--checkpoint", str(run / "ckpt" / "ckpt-10.index"), *common])  # as tab completes it
    assert report["step"] == 10
    for f in (run / "ckpt").glob("ckpt-10.data-*"):
        f.write_bytes(f.read_bytes()[:100])
    for all_ in ([], ["--all"]):
        with pytest.raises(SystemExit) as e:
            evaler.main(["--checkpoint", str(run), *common, *all_])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and "none of the 2 checkpoints of" in err[-1], err
        assert "is readable (their files are cut short or missing); delete its ckpt folder" in err[-1]


def test_a_runs_only_checkpoint_unreadable_says_so_rather_than_to_pass_another(dsdir, tmp_path, capsys):
    run = tmp_path / "r"
    trainer.main(train_args(dsdir, run, "--max_steps", "5"))
    for f in (run / "ckpt").glob("ckpt-5.data-*"):
        f.write_bytes(f.read_bytes()[:100])
    capsys.readouterr()
    common = ["--dataset", "tiny", "--dataset_dir", str(dsdir)]
    for target, all_ in ((run, []), (run, ["--all"]), (run / "ckpt" / "ckpt-5", [])):
        with pytest.raises(SystemExit) as e:
            evaler.main(["--checkpoint", str(target), *common, *all_])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and err[-1] == (f"error: the only checkpoint of {run} is unreadable (its files are "
                                                 "cut short or missing); delete its ckpt folder and train it again")


@pytest.mark.parametrize("damage, pattern", [
    (lambda text: text[:200], r"config\.json is damaged \(.*\); restore it from a copy"),
    (lambda text: "{}", r"config\.json is not a run's config \(no dataset_info\); restore it from a copy"),
    (lambda text: '{"dataset_info": {}}', r"config\.json is damaged \(no dataset, arch, head\); restore it from"),
    (lambda text: json.dumps({**json.loads(text), "dataset_info": {"height": 12}}),
     r"config\.json is damaged \(no dataset_info\.width, dataset_info\.channels, dataset_info\.num_class\)"),
    (lambda text: json.dumps({**json.loads(text), "dataset_info": {
        k: v for k, v in json.loads(text)["dataset_info"].items() if k != "class_names"}}),
     r"config\.json is damaged \(no dataset_info\.class_names\)"),
], ids=["cut short", "not a config", "no flags", "no image shape", "no class names"])
def test_a_damaged_config_json_is_one_clear_line_for_trainer_and_evaler(damage, pattern, dsdir, tmp_path, capsys):
    run = tmp_path / "r"
    trainer.main(train_args(dsdir, run, "--max_steps", "5"))
    cfg = run / "config.json"
    cfg.write_text(damage(cfg.read_text()))
    for main, argv in ((trainer.main, train_args(dsdir, run, "--max_steps", "10")),
                       (evaler.main, ["--dataset", "tiny", "--dataset_dir", str(dsdir), "--checkpoint", str(run)])):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and "Traceback" not in err
        assert re.search(pattern, err.splitlines()[-1]), err


def test_a_checkpoint_not_matching_its_config_is_one_line_without_tensorflow_warnings(dsdir, tmp_path):
    run = tmp_path / "r"
    trainer.main(train_args(dsdir, run, "--max_steps", "5"))
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "d_width": cfg["d_width"] // 2}))  # edited by hand
    proc = subprocess.run([sys.executable, "evaler.py", "--dataset", "tiny", "--dataset_dir", str(dsdir),
                           "--checkpoint", str(run)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=300)
    assert proc.returncode == 2
    assert "does not match the model in" in proc.stderr.strip().splitlines()[-1], proc.stderr
    # TensorFlow lists every unused checkpoint value when a half-done restore is collected, unless told not to
    assert "could not be found" not in proc.stderr and "unrestored values" not in proc.stderr, proc.stderr


def test_damaged_labeled_indices_are_one_clear_line(dsdir, tmp_path, capsys):
    run = tmp_path / "r"
    trainer.main(train_args(dsdir, run, "--max_steps", "5"))
    for text in ("[1, 2", "[1, 2, 100000]"):
        (run / "labeled_indices.json").write_text(text)
        with pytest.raises(SystemExit) as e:
            trainer.main(train_args(dsdir, run, "--max_steps", "10"))
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert e.value.code == 2 and "labeled_indices.json is damaged or does not fit the dataset's 120" in err


def test_a_trailing_slash_on_the_dataset_name_is_dropped_and_old_runs_recorded_with_it_resume():
    assert trainer.parse_args(["--dataset", "shapes/"]).dataset == "shapes"  # as a shell's tab completion adds it
    assert evaler.parse_args(["--dataset", "shapes/", "--checkpoint", "x"]).dataset == "shapes"
    assert trainer.recorded_value({"dataset": "shapes/"}, "dataset") == "shapes"
    assert not trainer.config_diff({"dataset": "shapes/"}, {"dataset": "shapes"})


def test_resuming_with_other_flags_names_the_flag_given_before_the_ones_derived_from_it(dsdir, tmp_path, capsys):
    run = tmp_path / "r"
    trainer.main(train_args(dsdir, run, "--max_steps", "5", "--flip_classes", "class0"))
    with pytest.raises(SystemExit) as e:  # --supervised_only also turns --flip_unlabeled predicted into none
        trainer.main(train_args(dsdir, run, "--max_steps", "10", "--flip_classes", "class0", "--supervised_only"))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2
    assert "trained with --supervised_only False, not True, --flip_unlabeled 'predicted', not 'none'" in err, err


def test_a_time_budget_stop_says_how_to_continue(dsdir, tmp_path, capsys):
    result = trainer.main(train_args(dsdir, tmp_path / "r", "--max_steps", "50", "--time_budget_min", "1e-6"))
    out = capsys.readouterr().out
    assert result["stopped_by"] == "time" and result["step"] < 50
    assert f"Stopped by --time_budget_min 1e-06 at step {result['step']} of 50; re-run the same command" in out


def test_a_time_budget_reached_in_the_last_chunk_finishes_the_run(dsdir, tmp_path):
    run = tmp_path / "r"
    result = trainer.main(train_args(dsdir, run, "--max_steps", "5", "--steps_per_loop", "5", "--time_budget_min",
                                     "1e-6"))
    assert result["stopped_by"] == "done" and result["step"] == 5
    assert json.loads((run / "result.json").read_text())["step"] == 5


def test_resuming_with_max_steps_below_the_run_step_is_an_error_that_leaves_the_run_as_it_was(dsdir, tmp_path,
                                                                                            capsys):
    run = tmp_path / "r"
    trainer.main(train_args(dsdir, run, "--max_steps", "10", "--time_budget_min", "1e-6"))
    config_before = (run / "config.json").read_text()
    with pytest.raises(SystemExit) as e:
        trainer.main(train_args(dsdir, run, "--max_steps", "3"))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"is at step \d+, past --max_steps 3; pass --max_steps 10 or more to resume it", err), err
    with pytest.raises(SystemExit):
        trainer.main(train_args(dsdir, run, "--epochs", "0.2"))  # 120 training images, batch 12: 2 steps
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"is at step \d+, past the 2 steps of --epochs 0\.2; pass --max_steps 10 or more", err), err
    assert (run / "config.json").read_text() == config_before and not (run / "result.json").exists()
    trainer.main(train_args(dsdir, run, "--max_steps", "10"))  # finished: evaluated again with fewer steps asked
    assert trainer.main(train_args(dsdir, run, "--max_steps", "3"))["step"] == 10


def test_a_run_dir_left_with_only_a_temporary_config_by_a_crash_is_still_a_run_dir(dsdir, tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json.tmp").write_text("{")  # a crash during write_run_dir's atomic write
    assert trainer.main(train_args(dsdir, run, "--max_steps", "5"))["step"] == 5


def test_a_new_run_names_the_unfinished_run_it_did_not_resume_and_why(dsdir, tmp_path, capsys):
    common = ["--dataset", "tiny", "--dataset_dir", str(dsdir), "--runs_dir", str(tmp_path / "runs"),
              "--num_labeled", "30", *TINY_FLAGS, "--max_steps", "10"]
    first = trainer.main([*common, "--time_budget_min", "1e-6"])
    assert first["stopped_by"] == "time"
    capsys.readouterr()
    second = trainer.main([*common, "--lr", "0.001", "--beta1", "0.9"])  # --lr may change on resuming; --beta1 not
    out = capsys.readouterr().out
    assert second["run_dir"] != first["run_dir"]
    assert (f"Starting a new run: the unfinished run {first['run_dir']} was trained with --beta1 0.5, not 0.9 "
            f"(pass --train_dir {first['run_dir']} with its flags to resume it).") in out, out


def test_divergence_stops_with_a_clear_message_and_keeps_the_last_checkpoint(dsdir, tmp_path, capsys):
    run = tmp_path / "nan"
    trainer.main(train_args(dsdir, run, "--max_steps", "10"))
    with pytest.raises(SystemExit) as e:
        trainer.main(train_args(dsdir, run, "--max_steps", "60", "--lr", "1e30"))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "diverged" in err and "ckpt-10 is kept" in err
    assert tf.train.latest_checkpoint(str(run / "ckpt")).endswith("ckpt-10")
    assert all(np.isfinite(w).all() for w in weights(run).values() if w.dtype.kind == "f")


def test_nan_policy_restore_rolls_back_and_lowers_the_lr(dsdir, tmp_path, capsys):
    run = tmp_path / "nanr"
    trainer.main(train_args(dsdir, run, "--max_steps", "10"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # an LR of 1e30 diverges even after halving it 5 times
        trainer.main(train_args(dsdir, run, "--max_steps", "60", "--lr", "1e30", "--nan_policy", "restore"))
    out = capsys.readouterr()
    rollbacks = re.findall(r"rolled back to \S*ckpt-10 and halved the LR \(scale ([0-9.e-]+)\)", out.err + out.out)
    assert [float(x) for x in rollbacks] == [0.5, 0.25, 0.125, 0.0625, 0.03125]
    assert e.value.code == 2 and "diverged" in out.err and "rolled back 5 times" in out.err


def test_nan_policy_restore_with_no_checkpoint_yet_says_so(dsdir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        trainer.main(train_args(dsdir, tmp_path / "r", "--max_steps", "60", "--lr", "1e30", "--nan_policy", "restore"))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and "no checkpoint had been written yet" in err
    assert "had no checkpoint to roll back to" in err and "pass --nan_policy restore" not in err


# ---------------------------------------------------------------- the table of bad inputs


def _truncated(d: Path) -> None:
    p = d / "trunc" / "data.hdf5"
    p.parent.mkdir(parents=True)
    p.write_bytes((d / "tiny" / "data.hdf5").read_bytes()[:5000])


def _foreign(d: Path) -> None:
    p = d / "foreign" / "data.hdf5"
    p.parent.mkdir(parents=True)
    with h5py.File(p, "w") as f:
        f["x"] = np.zeros(3)


# (name, program, argv (DS = dataset dir, RUN = a fresh run dir, OLD = a trained tiny run), message pattern)
BAD_INPUTS = [
    ("missing dataset", "trainer", ["--dataset", "mnist"], r"not found .* create it with: python download\.py mnist"),
    ("missing own dataset", "trainer", ["--dataset", "nosuch"], r"neither a public dataset .* nor an image folder"),
    ("misspelled dataset", "trainer", ["--dataset", "tinny"], r"\(did you mean tiny or tiny_rgb\?\)"),
    ("truncated hdf5", "trainer", ["--dataset", "trunc"], r"not a readable dataset file"),
    ("foreign hdf5", "trainer", ["--dataset", "foreign"], r"not a dataset file of format version"),
    ("num_labeled not divisible", "trainer", ["--num_labeled", "31"], r"multiple of the 3 classes"),
    ("num_labeled too large", "trainer", ["--num_labeled", "300"], r"has only 40: pass --num_labeled 120 or fewer"),
    ("num_labeled not a number", "trainer", ["--num_labeled", "lots"], r"a number or 'all'"),
    ("batch larger than data", "trainer", ["--batch_size", "1000"], r"larger than the 120 training images"),
    ("zero batch", "trainer", ["--batch_size", "0"], r"must be a positive integer"),
    ("negative size", "trainer", ["--input_height", "-4"], r"must be a positive integer"),
    ("negative noise", "trainer", ["--d_input_noise", "-0.1"], r"must be >= 0, got -0\.1"),
    ("negative hidden noise", "trainer", ["--d_hidden_noise", "-1"], r"must be >= 0, got -1"),
    ("hidden noise for conv", "trainer", ["--arch", "conv", "--d_hidden_noise", "0.3"], r"conv D has dropout instead"),
    ("mixup under XLA", "trainer", ["--sup_mixup", "1", "--jit"], r"XLA cannot compile; drop --jit or --sup_mixup"),
    ("mixup with smoothing", "trainer", ["--sup_mixup", "1", "--sup_smoothing", "0.1"],
     r"both soften the labelled targets; choose one"),
    ("dropout of every pixel", "trainer", ["--d_input_dropout", "1"], r"must be below 1, got 1"),
    ("negative width", "trainer", ["--d_width", "-3"], r"--d_width: must be >= 0, got -3"),
    ("negative learning rate", "trainer", ["--lr", "-1"], r"--lr: must be a positive number, got -1"),
    ("EMA decay above 1", "trainer", ["--ema_decay", "2"], r"--ema_decay: must be below 1, got 2"),
    ("negative memory budget", "trainer", ["--memory_budget_gb", "-1"], r"must be >= 0, got -1"),
    ("other dataset", "trainer", ["--train_dir", "OLD", "--dataset", "tiny_rgb"],
     r"trained with --dataset 'tiny', not 'tiny_rgb'"),
    ("unknown flip class", "trainer", ["--flip_classes", "class0,hat"], r"'hat' is neither a class of tiny"),
    ("height disagrees", "trainer", ["--input_height", "28"], r"--input_height 28 does not match dataset tiny"),
    ("negative steps", "trainer", ["--max_steps", "-1"], r"--max_steps: must be >= 0, got -1"),
    ("negative seed", "trainer", ["--seed", "-1"], r"--seed: must be >= 0, got -1"),
    ("epochs not a number", "trainer", ["--epochs", "nan"], r"--epochs: must be a positive number, got nan"),
    ("endless time budget", "trainer", ["--time_budget_min", "inf"], r"--time_budget_min: must be a positive number"),
    ("unwritable train_dir", "trainer", ["--train_dir", "/proc/ssgan-run"], r"cannot write to run dir"),
    ("train_dir holding other files", "trainer", ["--train_dir", "DSDIR"], r"holds other files and no run"),
    ("other architecture", "trainer", ["--train_dir", "OLD", "--arch", "conv"], r"trained with --arch 'mlp'"),
    ("checkpoint of another size", "evaler", ["--dataset", "tiny_rgb", "--checkpoint", "OLD"],
     r"trained on 12x12x1"),
    ("evaler bad checkpoint path", "evaler", ["--dataset", "tiny", "--checkpoint", "RUN"], r"neither a run dir"),
    ("evaler arch disagrees", "evaler", ["--dataset", "tiny", "--checkpoint", "OLD", "--arch", "conv"],
     r"--arch conv does not match the run"),
    ("unknown download", "download", ["imagenet"], r"unknown dataset 'imagenet'"),
]


@pytest.fixture(scope="module")
def old_run(dsdir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("old") / "run"
    trainer.main(train_args(dsdir, run, "--max_steps", "5"))
    _truncated(dsdir)
    _foreign(dsdir)
    return run


@pytest.mark.parametrize("name, program, argv, pattern", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gives_one_clear_line_and_writes_nothing(name, program, argv, pattern, dsdir, old_run, tmp_path,
                                                           capsys):
    run = tmp_path / "run"
    argv = [{"OLD": str(old_run), "RUN": str(run), "DSDIR": str(dsdir)}.get(a, a) for a in argv]
    if program == "trainer":
        base = train_args(dsdir, run, "--max_steps", "5")
        main = trainer.main
    elif program == "evaler":
        base, main = ["--dataset_dir", str(dsdir)], evaler.main
    else:
        base, main = ["--dataset_dir", str(tmp_path / "dl")], download.main
    before = sorted(p.name for p in old_run.rglob("*"))
    with pytest.raises(SystemExit) as e:
        main(base + argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2
    assert "Traceback" not in err
    assert re.search(pattern, err.splitlines()[-1]), err
    assert not run.exists(), "a bad input must not leave a run dir behind"
    assert sorted(p.name for p in old_run.rglob("*")) == before


def test_full_disk_is_one_clear_line(dsdir, tmp_path, monkeypatch, capsys):
    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(evaler, "write_atomic", no_space)
    with pytest.raises(SystemExit) as e:
        trainer.main(train_args(dsdir, tmp_path / "full", "--max_steps", "5"))
    assert e.value.code == 2 and "no space left on device" in capsys.readouterr().err.lower()


def test_unwritable_dataset_dir_is_one_clear_line(tmp_path, capsys):
    """Converting an image folder into a --dataset_dir that cannot be created (/proc: not even root may)."""
    for c in ("a", "b"):
        (tmp_path / "pics" / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "pics" / c / f"{i}.png")
    with pytest.raises(SystemExit) as e:
        download.main(["--folder", str(tmp_path / "pics"), "--dataset_dir", "/proc/ssgan-datasets"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "Traceback" not in err
    assert re.search(r"^error: cannot write /proc/ssgan-datasets/pics/data\.hdf5 .* choose a writable --dataset_dir",
                     err.splitlines()[-1]), err


def test_a_permission_error_anywhere_is_one_clear_line(capsys):
    """The last net under every CLI: an OSError naming a file it may not touch (as root in CI, chmod cannot make
    one, so it is raised here) is one line naming the file, not a traceback; other errors still raise."""
    @errors.exits_cleanly
    def main(exc):
        raise exc
    with pytest.raises(SystemExit) as e:
        main(PermissionError(errno.EACCES, "Permission denied", "/srv/runs/x/result.json"))
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: cannot access /srv/runs/x/result.json (Permission denied); "
                                               "check its permissions, or choose another path")
    with pytest.raises(ConnectionResetError):
        main(ConnectionResetError(errno.ECONNRESET, "reset"))


def test_no_pickle_eval_or_exec_of_input_anywhere():
    sources = [p for p in ROOT.glob("**/*.py") if ".venv" not in p.parts and "tests" not in p.parts]
    assert len(sources) > 10
    for p in sources:
        text = p.read_text()
        for banned in ("import pickle", "pickle.load", "np.load(", "allow_pickle=True", "eval(", "exec(",
                       "extractall("):
            assert banned not in text, f"{p.name} uses {banned}"


# ---------------------------------------------------------------- TensorFlow's start-up lines


FAKE_TENSORFLOW = '''import os
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
os.write(2, b"I0000 00:00:1795850504.127041    5929 port.cc:153] oneDNN custom operations are on.\\n")
os.write(2, b"W0000 00:00:1795850504.127041    5929 gpu.cc:12] a warning the user must see\\n")
if os.environ.get("FAIL") == "raise":
    raise ImportError("broken install")
if os.environ.get("FAIL") == "abort":  # TensorFlow's fatal CPU check
    os.write(2, b"F0000 00:00:1795850504.2  5929 cpu_feature_guard.cc:1] TensorFlow was compiled to use AVX\\n")
    os.abort()
'''


@pytest.mark.parametrize("fail", ["", "raise", "abort"])
def test_tensorflow_import_drops_only_its_info_lines(tmp_path, fail):
    (tmp_path / "tensorflow.py").write_text(FAKE_TENSORFLOW)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "FAIL": fail}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    code = "import errors, os; errors.import_tensorflow_quietly(); print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert "a warning the user must see" in result.stderr
    assert "oneDNN" not in result.stderr and "absl" not in result.stderr
    if fail == "raise":
        assert result.returncode == 1 and "ImportError: broken install" in result.stderr
    elif fail == "abort":  # the process dies inside the import: its last line still reaches the user
        assert result.returncode < 0 and "compiled to use AVX" in result.stderr
    else:  # TF_CPP_MIN_LOG_LEVEL 1: TensorFlow's later INFO lines off, its warnings on
        assert result.returncode == 0 and result.stdout == "1\n"
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"  # every line
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert "port.cc:153] oneDNN" in result.stderr and "absl" in result.stderr


def test_quiet_import_is_a_no_op_once_tensorflow_is_imported(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert "tensorflow" in sys.modules
    errors.import_tensorflow_quietly()
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ


def test_cli_help_writes_nothing_to_stderr():
    for script in ("trainer.py", "evaler.py"):
        result = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0 and "--dataset_dir" in result.stdout
        assert result.stderr == "", result.stderr

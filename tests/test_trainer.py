"""Real tiny runs of trainer.py and evaler.py: learning, checkpoints, resume, summaries, errors."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import config
import evaler
import input_ops
import trainer
from datasets import fashion_mnist
from datasets import format as fmt
from errors import UserError
from tests.tiny import TINY_FLAGS, make_tiny_dataset, sup_loss_floor

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dsdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("datasets")
    make_tiny_dataset(d)
    return d


def train(dsdir: Path, run: Path, *extra: str) -> dict:
    return trainer.main(["--dataset", "tiny", "--dataset_dir", str(dsdir), "--train_dir", str(run),
                         "--num_labeled", "30", *TINY_FLAGS, *extra])


def scalars(run: Path, tag: str) -> dict[int, float]:
    ea = EventAccumulator(str(run / "logs"), size_guidance={"tensors": 0})
    ea.Reload()
    return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in ea.Tensors(tag)}


def steps_written(run: Path, tag: str) -> list[int]:
    """The steps of every point of `tag` in the run's event files, in TensorBoard's reading order (duplicates
    kept: TensorBoard would draw each)."""
    ea = EventAccumulator(str(run / "logs"), size_guidance={"tensors": 0})
    ea.Reload()
    return [e.step for e in ea.Tensors(tag)] if tag in ea.Tags()["tensors"] else []


@pytest.fixture(scope="module")
def trained(dsdir, tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("runs") / "ssgan"
    return run, train(dsdir, run, "--max_steps", "40", "--lr", "0.003")


def test_short_run_lowers_supervised_loss_and_learns(trained):
    run, result = trained
    loss = scalars(run, "train/loss_sup")
    assert sorted(loss) == [10, 20, 30, 40]
    assert loss[40] < 0.5 * loss[10]
    assert result["step"] == 40 and result["test_accuracy"] > 0.6  # 3 classes: chance is 0.33


def test_sup_smoothing_keeps_the_labelled_loss_above_its_targets_entropy(dsdir, tmp_path):
    run = tmp_path / "smooth"
    train(dsdir, run, "--max_steps", "40", "--lr", "0.003", "--sup_smoothing", "0.3")
    loss = scalars(run, "train/loss_sup")
    floor = sup_loss_floor(3, 0.3)  # 0.64; one-hot targets (the trained fixture) fall far below it
    assert min(loss.values()) > floor - 1e-3 and loss[40] - floor < 0.5 * (loss[10] - floor), loss


def test_sup_mixup_trains_on_blends_with_soft_targets(dsdir, tmp_path):
    run = tmp_path / "mixup"
    result = train(dsdir, run, "--max_steps", "40", "--lr", "0.003", "--sup_mixup", "1")
    loss = scalars(run, "train/loss_sup")
    # blends of two classes cannot be fitted to one-hot confidence: the loss keeps the entropy of their
    # soft targets (about 0.4 nats on average for a = 1), where the one-hot fixture falls far below it
    assert min(loss.values()) > 0.2 and loss[40] < loss[10], loss
    assert result["test_accuracy"] > 0.6


def test_run_dir_holds_config_indices_checkpoints_and_samples(trained):
    run, result = trained
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["num_labeled"] == 30 and cfg["dataset_info"]["class_names"] == ["class0", "class1", "class2"]
    idx = json.loads((run / "labeled_indices.json").read_text())
    assert len(idx) == 30 and len(set(idx)) == 30
    assert result["checkpoint"].endswith("ckpt-40")
    assert (run / "samples" / "step_0000040.png").exists()
    assert json.loads((run / "result.json").read_text())["step"] == 40


def test_a_new_default_run_dir_whose_name_was_taken_since_gets_a_suffix(tmp_path):
    """Two runs started in the same second pick the same default name; the second to create it takes NAME-2."""
    taken = tmp_path / "tiny-implicit-mlp-30-20261129-080000"
    taken.mkdir()
    (taken / "config.json").write_text('{"seed": 0}')
    with contextlib.ExitStack() as held:
        made = trainer.write_run_dir(taken, {"seed": 1}, np.arange(3), held, fresh=True, named=False)
        assert made == tmp_path / f"{taken.name}-2" and json.loads((made / "config.json").read_text()) == {"seed": 1}
        assert json.loads((taken / "config.json").read_text()) == {"seed": 0}
        assert not (taken / "labeled_indices.json").exists()
        again = trainer.write_run_dir(taken, {"seed": 2}, np.arange(3), held, fresh=True, named=False)
        assert again.name == f"{taken.name}-3"
        with pytest.raises(UserError, match="is being trained by another process"):  # its lock is held
            trainer.write_run_dir(again, {"seed": 2}, np.arange(3), held, fresh=True)
        with pytest.raises(UserError, match=f"another process started {taken} meanwhile; run the command again"):
            trainer.write_run_dir(taken, {"seed": 5}, np.arange(3), contextlib.ExitStack(), fresh=True)  # --train_dir
    assert json.loads((taken / "config.json").read_text()) == {"seed": 0}
    # resuming: the same dir, locked before its data was loaded
    assert trainer.write_run_dir(taken, {"seed": 0}, np.arange(3), contextlib.ExitStack(), named=False) == taken


def test_a_default_run_dir_taken_while_this_run_loads_its_data_is_not_read(dsdir, tmp_path, monkeypatch):
    """Another run started in the same second made the dir and wrote its labelled subset after this one chose the
    name: this one draws its own and trains in NAME-2."""
    monkeypatch.setattr(trainer.time, "strftime", lambda fmt: "20261129-080000")
    theirs = tmp_path / "tiny-implicit-mlp-30-20261129-080000"
    theirs.mkdir()
    (theirs / "labeled_indices.json").write_text(json.dumps(list(range(30))))
    result = trainer.main(["--dataset", "tiny", "--dataset_dir", str(dsdir), "--runs_dir", str(tmp_path),
                           "--num_labeled", "30", *TINY_FLAGS, "--max_steps", "2"])
    assert result["run_dir"] == str(tmp_path / f"{theirs.name}-2")
    ours = json.loads((tmp_path / f"{theirs.name}-2" / "labeled_indices.json").read_text())
    assert len(ours) == 30 and ours != list(range(30))


def test_a_run_being_trained_by_another_process_is_refused_not_shared(dsdir, tmp_path, capsys):
    run = tmp_path / "r"
    argv = ["--dataset", "tiny", "--dataset_dir", str(dsdir), "--train_dir", str(run), "--num_labeled", "30",
            *TINY_FLAGS]
    trainer.main([*argv, "--max_steps", "2"])
    with trainer.run_lock(run):  # as another process training it holds it
        with pytest.raises(SystemExit) as e:
            trainer.main([*argv, "--max_steps", "4"])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and err[-1] == (f"error: {run} is being trained by another process; wait for it "
                                                 "to end, or start another run (--new_run, or another --train_dir "
                                                 "if you named this one)")
    assert trainer.main([*argv, "--max_steps", "4"])["step"] == 4  # once it has ended


def test_summaries_hold_losses_accuracy_images_and_histograms(trained, dsdir):
    run, _ = trained
    ea = EventAccumulator(str(run / "logs"), size_guidance={"tensors": 0})
    ea.Reload()
    tags = set(ea.Tags()["tensors"])
    for tag in ("train/loss_d", "train/loss_sup", "train/loss_unsup", "train/loss_g", "train/acc_lab",
                "test/accuracy", "test/confusion", "samples", "D/p_real_unlabeled", "D/p_real_generated"):
        assert tag in tags, tag
    assert scalars(run, "test/accuracy")[40] == pytest.approx(json.loads((run / "result.json").read_text())
                                                              ["test_accuracy"])
    # the confusion image is the evaler's picture of the evaler's confusion matrix of the last checkpoint
    (event,) = [e for e in ea.Tensors("test/confusion") if e.step == 40]
    shown = tf.io.decode_png(tf.make_ndarray(event.tensor_proto)[2]).numpy()
    (r,) = evaler.main(["--dataset", "tiny", "--dataset_dir", str(dsdir), "--checkpoint", str(run), "--json",
                        "--samples", "0"])
    drawn = evaler.confusion_image(r["confusion"], r["class_names"])
    np.testing.assert_array_equal(shown, drawn)
    np.testing.assert_array_equal(tf.io.decode_png(Path(r["confusion_png"]).read_bytes()).numpy(), drawn)


def test_curves_keep_what_the_summaries_hold_and_are_drawn(trained):
    run, result = trained
    curves = json.loads((run / "curves.json").read_text())
    for tag in ("test/accuracy", "train/loss_sup", "train/loss_g", "train/p_real"):
        assert dict(map(tuple, curves[tag])) == pytest.approx(scalars(run, tag)), tag
    assert curves["test/accuracy"][-1] == [40, pytest.approx(result["test_accuracy"])]
    with Image.open(run / "curves.png") as im:
        assert im.format == "PNG" and im.width > 3 * im.height  # accuracy, losses, D's P(real) side by side


def test_curves_resume_from_the_checkpoints_step_and_leave_out_empty_panels(tmp_path):
    (tmp_path / "curves.json").write_text(json.dumps({"test/accuracy": [[10, 0.5], [20, 0.6], [30, 0.7]]}))
    assert trainer.Curves(tmp_path, 20).series == {"test/accuracy": {10: 0.5, 20: 0.6}}  # 30 is trained again
    (tmp_path / "curves.json").write_text("{")
    assert trainer.Curves(tmp_path, 20).series == {}  # damaged: they start again, the run goes on
    acc, loss = [(10, 0.5), (20, 0.6)], [(10, 1.0), (20, 0.5)]
    gan = evaler.curves_image({"test/accuracy": acc, "train/loss_d": loss, "train/p_real": loss}, "run")
    supervised = evaler.curves_image({"test/accuracy": acc, "train/loss_d": loss, "train/loss_g": [(10, 0.0)],
                                      "train/p_real": [(10, 0.0)]}, "run")
    assert gan.shape[0] == supervised.shape[0] and gan.shape[1] == pytest.approx(1.5 * supervised.shape[1], rel=0.02)


def test_confusion_image_shades_each_row_by_its_shares():
    def pixels(cm, rgb):
        im = evaler.confusion_image(np.array(cm), ["T-shirt/top", "Trouser"])
        assert im.dtype == np.uint8 and im.shape[2] == 3
        return int((im == rgb).all(-1).sum())
    full, half, white = (30, 80, 165), (142, 167, 210), (255, 255, 255)
    assert pixels([[7, 0], [0, 3]], full) > 2 * 600  # two cells of share 1 (28x28 px, less their counts)
    # an empty row (no test images of the class) is white, not 0/0
    assert pixels([[7, 0], [0, 0]], full) < 800
    assert pixels([[7, 0], [0, 0]], white) > pixels([[7, 0], [0, 3]], white) + 600
    assert pixels([[5, 5], [0, 9]], half) > 2 * 600 and 600 < pixels([[5, 5], [0, 9]], full) < 800


def test_resume_continues_at_saved_step_with_same_labeled_subset(dsdir, trained, capsys):
    run, _ = trained
    before = (run / "labeled_indices.json").read_text()
    result = train(dsdir, run, "--max_steps", "50", "--lr", "0.003")
    assert "Resumed from" in capsys.readouterr().out
    assert result["step"] == 50
    assert sorted(scalars(run, "train/loss_sup")) == [10, 20, 30, 40, 50]
    assert (run / "labeled_indices.json").read_text() == before
    curves = json.loads((run / "curves.json").read_text())
    assert [s for s, _ in curves["test/accuracy"]] == [10, 20, 30, 40, 50]


def test_resume_with_other_model_flags_is_a_clear_error(dsdir, trained, capsys):
    run, _ = trained
    with pytest.raises(SystemExit) as e:
        train(dsdir, run, "--max_steps", "60", "--lr", "0.003", "--head", "nplus1")
    assert e.value.code == 2
    assert "was trained with --head 'implicit'" in capsys.readouterr().err


def test_evaler_on_run_dir_and_checkpoint_file(trained, dsdir, capsys):
    run, result = trained
    common = ["--dataset", "tiny", "--dataset_dir", str(dsdir), "--json"]
    (r_dir,) = evaler.main(["--checkpoint", str(run), *common])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["step"] == r_dir["step"] >= 40
    assert set(out) >= {"accuracy", "per_class", "confusion", "checkpoint", "step"}
    cm = np.array(out["confusion"])
    assert cm.shape == (3, 3) and cm.sum() == 30
    assert out["accuracy"] == pytest.approx(np.trace(cm) / 30)
    (r_file,) = evaler.main(["--checkpoint", str(run / "ckpt" / "ckpt-40"), *common])
    assert r_file["step"] == 40 and r_file["accuracy"] == pytest.approx(result["test_accuracy"])
    assert Path(r_file["samples_png"]).exists()


def test_evaler_all_evaluates_every_kept_checkpoint(trained, dsdir):
    run, _ = trained
    reports = evaler.main(["--checkpoint", str(run), "--dataset", "tiny", "--dataset_dir", str(dsdir), "--all"])
    assert [r["step"] for r in reports] == sorted(r["step"] for r in reports) and len(reports) == 3
    for r in reports:  # one model, each checkpoint restored into it: same as evaluating that file alone
        (alone,) = evaler.main(["--checkpoint", r["checkpoint"], "--dataset", "tiny", "--dataset_dir", str(dsdir)])
        assert alone["confusion"] == r["confusion"] and alone["step"] == r["step"]


def test_compiled_predictor_goes_with_its_model():
    import gc
    import weakref

    import model
    D = model.build_discriminator("mlp", (8, 8, 1), 3, width=16)
    cm = evaler._compiled(D, ())(tf.zeros([4, 8, 8, 1]), tf.constant([0, 1, 2, 0], tf.int64), 3, None).numpy()
    assert cm.sum() == 4 and D in evaler._COMPILED
    alive = weakref.ref(D)
    del D
    gc.collect()
    assert alive() is None  # the cache does not keep models alive (evaler --all, many runs in one process)


def test_evaler_prints_confusion_matrix_with_class_names(trained, dsdir, capsys):
    run, _ = trained
    evaler.main(["--checkpoint", str(run), "--dataset", "tiny", "--dataset_dir", str(dsdir)])
    out = capsys.readouterr().out
    assert "test accuracy:" in out and "confusion matrix" in out and "class2" in out


@pytest.mark.parametrize("flags, message", [
    (["--input_height", "13"], "--input_height 13 does not match the run"),
    (["--num_class", "4"], "--num_class 4 does not match the run"),
    (["--arch", "conv"], "--arch conv does not match the run"),
])
def test_evaler_flags_that_disagree_with_the_run_are_clear_errors(trained, dsdir, capsys, flags, message):
    run, _ = trained
    with pytest.raises(SystemExit) as e:
        evaler.main(["--checkpoint", str(run), "--dataset", "tiny", "--dataset_dir", str(dsdir), *flags])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_supervised_only_trains_the_classifier_without_a_gan(dsdir, tmp_path):
    run = tmp_path / "sup"
    result = train(dsdir, run, "--max_steps", "20", "--supervised_only")
    assert result["test_accuracy"] > 0.6
    assert steps_written(run, "train/loss_sup") == [10, 20]  # and nothing of a GAN it does not have:
    for tag in ("train/loss_g", "train/p_real", "D/p_real_generated", "samples"):
        assert steps_written(run, tag) == [], tag
    assert not (run / "samples").exists() and "train/loss_g" not in json.loads((run / "curves.json").read_text())


@pytest.mark.parametrize("flags,env,message", [
    (["--cpu_devices", "2"], {}, "error: --cpu_devices 2 splits the CPU into devices for --strategy mirrored; add "
     "--strategy mirrored, or drop --cpu_devices"),
    (["--strategy", "mirrored", "--cpu_devices", "2", "--num_labeled", "9"], {},
     "error: the labelled batch, 9 (all the labelled images), must be divisible by the 2 replicas; label a multiple "
     "of 6 images (e.g. --num_labeled 6), or train with fewer replicas (a run already started: --strategy default)"),
    (["--strategy", "multi_worker", "--cpu_devices", "2"], {}, "error: --cpu_devices 2 splits the CPU into devices "
     "for --strategy mirrored"),
    (["--strategy", "multi_worker"], {"TF_CONFIG": "not json"}, "error: TF_CONFIG is not a cluster this worker can "
     "join (Expecting value: line 1 column 1 (char 0)); it must be JSON like"),
    (["--strategy", "multi_worker"], {"TF_CONFIG": '{"cluster": {"worker": ["127.0.0.1:29111"]}, "task": {"type": '
                                                   '"worker", "index": 3}}'},
     "error: TF_CONFIG is not a cluster this worker can join (The `task_id` 3 exceeds"),
])
def test_devices_and_clusters_no_run_can_use_are_one_line_errors(dsdir, tmp_path, flags, env, message):
    cmd = [sys.executable, str(ROOT / "trainer.py"), "--dataset", "tiny", "--dataset_dir", str(dsdir), "--train_dir",
           str(tmp_path / "r"), "--num_labeled", "30", *TINY_FLAGS, "--max_steps", "2", *flags]
    proc = subprocess.run(cmd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(message), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "r").exists()


def test_a_rollback_drops_the_tensorboard_points_after_its_checkpoint(dsdir, tmp_path, monkeypatch, capsys):
    real = trainer.make_train_loop

    def nan_once_at_step_30(gan, *a, **k):  # as a loss that became NaN in the chunk ending at step 30
        loop, read = real(gan, *a, **k)
        hit = []

        def flaky(*args):
            p_real, p_fake, finite = loop(*args)
            if int(gan.step.numpy()) == 30 and not hit:
                hit.append(True)
                return p_real, p_fake, tf.constant(False)
            return p_real, p_fake, finite
        return flaky, read
    monkeypatch.setattr(trainer, "make_train_loop", nan_once_at_step_30)
    run = tmp_path / "r"
    train(dsdir, run, "--max_steps", "40", "--ckpt_every", "20", "--summary_every", "5", "--eval_every", "5",
          "--nan_policy", "restore")
    out = capsys.readouterr()
    assert "rolled back to" in out.err + out.out
    # Step 25 was written, then rolled back to 20 and trained again: shown once, from the second time.
    for tag in ("train/loss_sup", "test/accuracy", "samples"):
        assert steps_written(run, tag) == [5, 10, 15, 20, 25, 30, 35, 40], tag


def test_new_run_with_a_train_dir_that_holds_a_run_is_refused(dsdir, tmp_path, capsys):
    train(dsdir, tmp_path / "r", "--max_steps", "2")
    with pytest.raises(SystemExit) as e:
        train(dsdir, tmp_path / "r", "--max_steps", "4", "--new_run")
    assert e.value.code == 2 and capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: --new_run starts a new default run dir, but --train_dir {tmp_path / 'r'} holds a run; drop --new_run "
        "to resume it, or choose a new --train_dir")


def test_tensorboard_shows_each_step_once_across_stops_resumes_crashes_and_re_runs(dsdir, tmp_path, monkeypatch):
    run = tmp_path / "r"
    tags = ("train/loss_sup", "test/accuracy", "samples")
    # A time-budget stop after the first chunk of 5 steps: its summary and evaluation at step 5.
    assert train(dsdir, run, "--max_steps", "30", "--time_budget_min", "1e-6")["step"] == 5
    assert not (run / "result.json").exists()
    assert [steps_written(run, t) for t in tags] == [[5]] * 3
    train(dsdir, run, "--max_steps", "30")
    assert [steps_written(run, t) for t in tags] == [[5, 10, 20, 30]] * 3
    assert json.loads((run / "result.json").read_text())["step"] == 30
    # Re-running the finished run evaluates nothing again.
    before = scalars(run, "test/accuracy")
    assert train(dsdir, run, "--max_steps", "30")["test_accuracy"] == before[30]
    assert [steps_written(run, t) for t in tags] == [[5, 10, 20, 30]] * 3
    # Trained further, it is unfinished until it gets there: its result.json goes.
    assert train(dsdir, run, "--max_steps", "50", "--time_budget_min", "1e-6")["step"] == 35
    assert not (run / "result.json").exists()
    # A crash after step 40 that left its checkpoint unreadable: the run goes on from step 35, and the points it
    # wrote after that are dropped, not shown beside the new ones.
    train(dsdir, run, "--max_steps", "40")
    for f in (run / "ckpt").glob("ckpt-40.*"):
        f.write_bytes(b"")
    (run / "result.json").unlink()
    train(dsdir, run, "--max_steps", "40")
    assert [steps_written(run, t) for t in tags] == [[5, 10, 20, 30, 35, 40]] * 3
    # Re-run with another --prior (a flag that may change on resuming), the finished run is evaluated again.
    calls = []
    real = trainer.RunContext.test_accuracy
    monkeypatch.setattr(trainer.RunContext, "test_accuracy", lambda *a, **k: calls.append(1) or real(*a, **k))
    train(dsdir, run, "--max_steps", "40")
    assert calls == []
    train(dsdir, run, "--max_steps", "40", "--prior", "none")
    assert calls == [1] and config.read_run_config(run)["prior"] == "none"


@pytest.mark.parametrize("head,g_loss,augment,g_update", [("nplus1", "gan", "labeled", "alternating"),
                                                        ("implicit", "fm", "diff", "joint")])
def test_heads_and_generator_losses_train(dsdir, tmp_path, head, g_loss, augment, g_update):
    result = train(dsdir, tmp_path / "r", "--max_steps", "20", "--head", head, "--g_loss", g_loss,
                   "--g_steps", "2", "--g_update", g_update, "--label_smoothing", "0.1", "--entropy_weight", "0.1",
                   "--pt_weight", "0.1", "--fake_entropy_weight", "0.1",
                   "--vat_weight", "1", "--balance_weight", "1", "--consistency_weight", "1", "--augment", augment)
    assert np.isfinite(result["test_accuracy"]) and result["step"] == 20
    loss_cons = scalars(tmp_path / "r", "train/loss_cons")  # two passes with their own noise: never equal
    assert loss_cons and all(0 < v <= 2 for v in loss_cons.values())
    loss_vat = scalars(tmp_path / "r", "train/loss_vat")
    assert loss_vat and all(np.isfinite(v) and v > 0 for v in loss_vat.values())
    loss_bal = scalars(tmp_path / "r", "train/loss_bal")  # KL to uniform over 3 classes: in (0, log 3]
    assert loss_bal and all(0 < v <= np.log(3) + 1e-6 for v in loss_bal.values())
    loss_fent = scalars(tmp_path / "r", "train/loss_fent")  # each generated image's KL to uniform, averaged
    assert loss_fent and all(0 < v <= np.log(3) + 1e-6 for v in loss_fent.values())


def test_consistency_compares_two_passes_over_the_same_unlabelled_images(dsdir, tmp_path):
    """Without D's noise the two passes agree exactly, so a term that compared other rows would show."""
    train(dsdir, tmp_path / "quiet", "--max_steps", "5", "--summary_every", "1", "--consistency_weight", "1",
          "--d_input_noise", "0", "--d_hidden_noise", "0")
    loss_cons = scalars(tmp_path / "quiet", "train/loss_cons")
    assert len(loss_cons) == 5 and all(v == pytest.approx(0.0, abs=1e-6) for v in loss_cons.values())


@pytest.mark.parametrize("arch", ["lenet", "conv"])
def test_conv_archs_train_on_odd_rgb_size_and_evaluate(tmp_path, arch):
    make_tiny_dataset(tmp_path, "rgb", shape=(10, 14, 3))
    common = ["--dataset", "rgb", "--dataset_dir", str(tmp_path)]
    result = trainer.main([*common, "--train_dir", str(tmp_path / "r"), "--num_labeled", "30", *TINY_FLAGS,
                           "--arch", arch, "--d_width", "4", "--g_width", "4", "--max_steps", "10", "--augment"])
    assert result["step"] == 10
    (report,) = evaler.main(["--checkpoint", str(tmp_path / "r"), *common])
    assert report["accuracy"] == pytest.approx(result["test_accuracy"])


def test_data_init_sets_d_and_its_ema_from_real_images(dsdir, tmp_path):
    args = trainer.parse_args(["--dataset", "tiny", *TINY_FLAGS, "--data_init"])
    gan = trainer.GAN(args, (12, 12, 1), 3)
    split = input_ops.load_split(fmt.dataset_path(dsdir, "tiny"), "train")
    trainer.init_weights(gan, split, args, tf.distribute.get_strategy())
    g = [v.numpy() for v in gan.D.weights if v.path.endswith("/g")]
    assert len(g) == 6 and not np.allclose(g[0], 1.0)  # scales set from the data, not the constant initialiser
    for e, v in zip(gan.D_ema.weights, gan.D.weights):
        np.testing.assert_array_equal(e.numpy(), v.numpy())
    assert train(dsdir, tmp_path / "r", "--max_steps", "10", "--data_init")["step"] == 10


def test_max_steps_zero_builds_and_stops(dsdir, tmp_path, capsys):
    result = train(dsdir, tmp_path / "r0", "--max_steps", "0")
    assert result["step"] == 0 and "nothing trained" in capsys.readouterr().out


def test_sigterm_saves_a_checkpoint_and_rerun_resumes(dsdir, tmp_path):
    run = tmp_path / "sig"
    cmd = [sys.executable, str(ROOT / "trainer.py"), "--dataset", "tiny", "--dataset_dir", str(dsdir),
           "--train_dir", str(run), "--num_labeled", "30", *TINY_FLAGS, "--ckpt_every", "1000",
           "--max_steps", "1000000"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    # The first evaluation written (step 10): the loop runs, with its signal handler. (The event file alone is made
    # before the handler is set: a SIGTERM then, on a loaded machine, ended the process before it could save.)
    while not (run / "curves.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Interrupted: saved" in out
    saved = int(tf.train.latest_checkpoint(str(run / "ckpt")).rsplit("-", 1)[1])
    assert saved > 0 and saved % 5 == 0  # a step at the end of a compiled chunk, not 0
    rerun = subprocess.run([*cmd[:-1], str(saved + 5)], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"Resumed from {run / 'ckpt' / f'ckpt-{saved}'} at step {saved}." in rerun.stdout
    assert json.loads((run / "result.json").read_text())["step"] == saved + 5
    summaries = [s for s, _ in json.loads((run / "curves.json").read_text())["train/loss_d"]]
    # none lost to the stop, none twice: the stop wrote the steps since the last summary at its step
    want = sorted({*range(10, saved + 1, 10), saved, saved + 5})
    assert summaries == steps_written(run, "train/loss_d") == want, summaries
    # Restoring the networks first and the optional state after reads the checkpoint twice, on purpose:
    # TensorFlow must not warn at exit that a checkpoint was only partly restored.
    assert "could not be found" not in rerun.stderr and "unrestored values" not in rerun.stderr


def test_a_run_from_before_a_flag_existed_still_resumes(dsdir, tmp_path, capsys):
    run = tmp_path / "old"
    train(dsdir, run, "--max_steps", "10")
    cfg = json.loads((run / "config.json").read_text())
    for flag in ("deterministic", "nan_policy", "sup_smoothing", "d_hidden_noise", "balance_weight",
                 "consistency_weight", "flip_unlabeled"):
        del cfg[flag]  # as written before these flags
    (run / "config.json").write_text(json.dumps(cfg))
    assert train(dsdir, run, "--max_steps", "15")["step"] == 15
    assert "Resumed from" in capsys.readouterr().out


def test_evaler_rebuilds_the_input_noise_and_dropout_the_run_had(dsdir, tmp_path, capsys):
    """D's input layers fix its checkpoint layout: runs without input noise, and conv runs from before
    --d_input_dropout (which then dropped 20% of the pixels), restore and resume."""
    common = ["--dataset", "tiny", "--dataset_dir", str(dsdir)]
    train(dsdir, tmp_path / "quiet", "--max_steps", "5", "--d_input_noise", "0", "--d_hidden_noise", "0")
    assert json.loads((tmp_path / "quiet" / "config.json").read_text())["d_hidden_noise"] == 0.0
    assert evaler.main(["--checkpoint", str(tmp_path / "quiet"), *common])[0]["step"] == 5
    old = tmp_path / "oldconv"
    conv = ["--arch", "conv", "--d_width", "4", "--g_width", "4"]
    train(dsdir, old, *conv, "--max_steps", "5", "--d_input_dropout", "0.2")
    cfg = json.loads((old / "config.json").read_text())
    del cfg["d_input_dropout"]  # as written by a version without the flag
    (old / "config.json").write_text(json.dumps(cfg))
    assert evaler.main(["--checkpoint", str(old), *common])[0]["step"] == 5
    with pytest.raises(SystemExit):
        train(dsdir, old, *conv, "--max_steps", "10")
    assert "was trained with --d_input_dropout 0.2, not 0.0" in capsys.readouterr().err
    assert train(dsdir, old, *conv, "--max_steps", "10", "--d_input_dropout", "0.2")["step"] == 10


def test_a_lenet_run_from_before_g_arch_keeps_its_mlp_generator(dsdir, tmp_path, capsys):
    """lenet's default G became the conv G in stop 18: older lenet runs (no g_arch in config.json, the
    mlp G) still evaluate, and resume only with --g_arch mlp."""
    common = ["--dataset", "tiny", "--dataset_dir", str(dsdir)]
    lenet = ["--arch", "lenet", "--d_width", "4", "--g_width", "4"]
    new = tmp_path / "new"
    train(dsdir, new, *lenet, "--max_steps", "5")
    assert json.loads((new / "config.json").read_text())["g_arch"] == "conv"
    assert json.loads((new / "config.json").read_text())["fm_features"] == "noisy"
    old = tmp_path / "old"
    train(dsdir, old, *lenet, "--g_arch", "mlp", "--max_steps", "5")
    cfg = json.loads((old / "config.json").read_text())
    del cfg["g_arch"]  # as written by a version without the flag
    (old / "config.json").write_text(json.dumps(cfg))
    assert evaler.main(["--checkpoint", str(old), *common, "--samples", "4"])[0]["step"] == 5
    with pytest.raises(SystemExit):
        evaler.main(["--checkpoint", str(old), *common, "--g_arch", "conv"])
    assert "--g_arch conv does not match the run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train(dsdir, old, *lenet, "--max_steps", "10")
    assert "was trained with --g_arch 'mlp', not 'conv'" in capsys.readouterr().err
    assert train(dsdir, old, *lenet, "--g_arch", "mlp", "--max_steps", "10")["step"] == 10


def test_a_lenet_run_from_before_stop_39_keeps_its_32_wide_d(dsdir, tmp_path, capsys):
    """lenet's D became 40 wide in stop 39, and config.json records the width since: an older lenet run
    (--d_width 0 in its config.json: 32 then) still evaluates, and resumes only with --d_width 32."""
    common = ["--dataset", "tiny", "--dataset_dir", str(dsdir)]
    lenet = ["--arch", "lenet", "--g_width", "4"]
    assert trainer.parse_args([*common, *lenet]).d_width == 40
    assert trainer.parse_args([*common, "--arch", "mlp"]).d_width == 1000
    old = tmp_path / "old"
    train(dsdir, old, *lenet, "--d_width", "32", "--max_steps", "5")
    cfg = json.loads((old / "config.json").read_text())
    assert cfg["d_width"] == 32
    (old / "config.json").write_text(json.dumps({**cfg, "d_width": 0}))  # as written before stop 39
    assert evaler.main(["--checkpoint", str(old), *common])[0]["step"] == 5
    with pytest.raises(SystemExit):
        evaler.main(["--checkpoint", str(old), *common, "--d_width", "40"])
    assert "--d_width 40 does not match the run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaler.main(["--checkpoint", str(old), *common, "--d_width", "0"])  # 0: lenet's width, 40 today
    assert "--d_width 40 does not match the run" in capsys.readouterr().err
    assert evaler.main(["--checkpoint", str(old), *common, "--d_width", "32"])[0]["step"] == 5
    with pytest.raises(SystemExit):
        train(dsdir, old, *lenet, "--d_width", "0", "--max_steps", "10")  # 0: lenet's width, 40 today
    assert "was trained with --d_width 32, not 40" in capsys.readouterr().err
    assert train(dsdir, old, *lenet, "--d_width", "32", "--max_steps", "10")["step"] == 10
    for arch in ("mlp", "conv"):  # their widths did not change: an older run's 0 resumes with today's flags
        today = trainer.flags_record(trainer.parse_args([*common, "--arch", arch]))
        assert not trainer.config_diff({**today, "d_width": 0}, today)
    assert config.recorded({"arch": "lenet"}, "d_width") == 32  # no d_width (edited by hand): 0, as before stop 39
    assert config.recorded({}, "d_width") is None  # no arch either: nothing to read (config_diff names arch)


def test_a_test_split_streamed_from_its_file_trains_and_evaluates(dsdir, tmp_path):
    run = tmp_path / "streamed"
    result = train(dsdir, run, "--max_steps", "5", "--in_memory", "no")
    report = evaler.main(["--checkpoint", str(run), "--dataset", "tiny", "--dataset_dir", str(dsdir),
                          "--in_memory", "no"])[0]
    assert report["step"] == 5 and report["accuracy"] == result["test_accuracy"]


def test_flip_classes_resolve_to_indices_by_name_index_or_the_datasets_own_list():
    fashion = fashion_mnist.CLASS_NAMES
    assert trainer.flip_classes("auto", "fashion_mnist", fashion) == [0, 1, 2, 3, 4, 6, 8]  # not the shoes
    assert trainer.flip_classes("auto", "mnist", [str(d) for d in range(10)]) == []
    assert trainer.flip_classes("auto", "my_folder", ["cat", "dog"]) == []
    assert trainer.flip_classes("Shirt, 0,Shirt", "fashion_mnist", fashion) == [0, 6]
    assert trainer.flip_classes("all", "my_folder", ["cat", "dog"]) == [0, 1]
    assert trainer.flip_classes("none", "fashion_mnist", fashion) == []
    with pytest.raises(trainer.UserError, match="'10' is neither a class of fashion_mnist"):
        trainer.flip_classes("10", "fashion_mnist", fashion)


def test_a_run_records_its_flip_classes_and_a_run_from_before_the_flag_resumes_unflipped(dsdir, tmp_path, capsys):
    run = tmp_path / "flip"
    train(dsdir, run, "--max_steps", "5", "--flip_classes", "class1,0")
    assert json.loads((run / "config.json").read_text())["flip_classes"] == "0,1"
    assert train(dsdir, run, "--max_steps", "10", "--flip_classes", "0,class1")["step"] == 10
    with pytest.raises(SystemExit):
        train(dsdir, run, "--max_steps", "15")  # auto: none for a dataset of its own
    assert "was trained with --flip_classes '0,1', not 'none'" in capsys.readouterr().err
    cfg = json.loads((run / "config.json").read_text())
    del cfg["flip_classes"], cfg["flip_unlabeled"]  # as written by a version without the flags: nothing mirrored
    (run / "config.json").write_text(json.dumps(cfg))
    assert train(dsdir, run, "--max_steps", "15")["step"] == 15


def test_tta_mirror_uses_the_runs_flip_classes_in_trainer_and_evaler_alike(dsdir, tmp_path, capsys):
    run = tmp_path / "tta"
    # After 5 alternating steps, D on the tiny set is unsure of every image, so mirroring changes its predictions
    # (after 5 joint ones it puts every image in one class).
    alt = ["--g_update", "alternating"]
    result = train(dsdir, run, "--max_steps", "5", "--flip_classes", "0,2", "--prior", "none", *alt)  # mirroring alone
    common = ["--checkpoint", str(run), "--dataset", "tiny", "--dataset_dir", str(dsdir), "--samples", "0"]
    (mirrored,) = evaler.main(common)  # as the run was trained: --tta mirror
    (plain,) = evaler.main([*common, "--tta", "none"])
    assert mirrored["tta_mirror"] == ["class0", "class2"] and plain["tta_mirror"] == []
    assert mirrored["confusion"] != plain["confusion"]  # D, 5 steps old, is unsure of every image
    assert mirrored["accuracy"] == pytest.approx(result["test_accuracy"])
    cfg, D, _, _ = evaler.load_classifier(run, str(run / "ckpt" / "ckpt-5"))
    split = input_ops.load_split(dsdir / "tiny" / "data.hdf5", "test", "yes", 1.0)
    assert plain["confusion"] == evaler.confusion_of(D, split, 100, 3).tolist()
    assert mirrored["confusion"] == evaler.confusion_of(D, split, 100, 3, (0, 2)).tolist()
    result = train(dsdir, run, "--max_steps", "6", "--flip_classes", "0,2", "--tta", "none", *alt)  # resumes
    assert result["step"] == 6
    (r,) = evaler.main(common)  # now as recorded: one pass
    assert r["tta_mirror"] == [] and r["accuracy"] == pytest.approx(result["test_accuracy"])
    cfg = json.loads((run / "config.json").read_text())
    del cfg["tta"]  # as written before the flag: its evaluations took one pass
    (run / "config.json").write_text(json.dumps(cfg))
    assert evaler.main(common)[0]["tta_mirror"] == [] and evaler.main([*common, "--tta", "mirror"])[0]["tta_mirror"]
    assert train(dsdir, run, "--max_steps", "7", "--flip_classes", "0,2", *alt)["step"] == 7  # resumes, now mirroring
    cfg["flip_classes"] = "0;2"  # a hand-edited config.json
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SystemExit):
        evaler.main([*common, "--tta", "mirror"])
    assert "flip_classes '0;2' in the run's config.json is not a list of class indices" in capsys.readouterr().err


def test_prior_labeled_classifies_alike_in_trainer_and_evaler_and_older_runs_as_they_did(dsdir, tmp_path, capsys):
    run = tmp_path / "prior"
    result = train(dsdir, run, "--max_steps", "5")  # --prior labeled, the default
    common = ["--checkpoint", str(run), "--dataset", "tiny", "--dataset_dir", str(dsdir), "--samples", "0"]
    (aligned,) = evaler.main(common)  # as the run was trained
    (plain,) = evaler.main([*common, "--prior", "none"])
    assert aligned["accuracy"] == pytest.approx(result["test_accuracy"]) and plain["prior_offsets"] is None
    assert list(aligned["prior_offsets"]) == ["class0", "class1", "class2"]
    cfg, D, _, _ = evaler.load_classifier(run, str(run / "ckpt" / "ckpt-5"))
    train_split = input_ops.load_split(dsdir / "tiny" / "data.hdf5", "train", "yes", 1.0)
    predicted = {}
    for name, r in (("aligned", aligned), ("plain", plain)):
        offsets = None if r["prior_offsets"] is None else np.array(list(r["prior_offsets"].values()))
        probs = evaler.probabilities_fn(D, (12, 12, 1), (), offsets)(tf.constant(train_split.images)).numpy()
        predicted[name] = probs.mean(0)
    np.testing.assert_allclose(predicted["aligned"], 1 / 3, atol=1e-5)  # the tiny set's 40 images per class
    assert np.abs(predicted["plain"] - 1 / 3).max() > 1e-3  # D, 5 steps old, does not spread its guesses evenly
    saved = json.loads((run / "ckpt" / "ckpt-5.prior.json").read_text())  # the offsets the evaler used
    assert saved["offsets"] == pytest.approx(list(aligned["prior_offsets"].values()), abs=1e-12)
    (run / "ckpt" / "ckpt-5.prior.json").unlink()
    (refit,) = evaler.main(common)  # fitted again on the training images: the same
    assert list(refit["prior_offsets"].values()) == pytest.approx(saved["offsets"], abs=1e-4)
    (run / "ckpt" / "ckpt-5.prior.json").write_text(json.dumps({**saved, "offsets": [5.0, 0.0, -5.0]}))
    assert list(evaler.main(common)[0]["prior_offsets"].values()) == [5.0, 0.0, -5.0]  # read, not refitted
    assert evaler.main([*common, "--weights", "raw"])[0]["prior_offsets"] != {"class0": 5.0, "class1": 0.0,
                                                                              "class2": -5.0}  # fitted for raw D
    for bad in ('{"offsets": [1.0', json.dumps({**saved, "offsets": [5.0, 0.0, -5.0], "step": 4})):
        (run / "ckpt" / "ckpt-5.prior.json").write_text(bad)  # cut short; another checkpoint's
        (r,) = evaler.main(common)
        assert list(r["prior_offsets"].values()) == pytest.approx(saved["offsets"], abs=1e-4)
        assert "ckpt-5.prior.json is unreadable" in capsys.readouterr().err
    train(dsdir, run, "--max_steps", "45", "--keep", "2")  # checkpoints at 10, ..., 40, 45; the last 2 kept
    assert sorted(p.name for p in (run / "ckpt").glob("*.prior.json")) == ["ckpt-40.prior.json",
                                                                            "ckpt-45.prior.json"]
    (run / "ckpt" / "ckpt-45.prior.json").unlink()  # as if killed between the checkpoint and its offsets
    train(dsdir, run, "--max_steps", "45", "--keep", "2")  # at its end already: writes them
    assert json.loads((run / "ckpt" / "ckpt-45.prior.json").read_text())["step"] == 45
    result = train(dsdir, run, "--max_steps", "46", "--prior", "none", "--keep", "2")  # resumes
    (r,) = evaler.main(common)  # now as recorded: as D gives them
    assert r["prior_offsets"] is None and r["accuracy"] == pytest.approx(result["test_accuracy"])
    cfg = json.loads((run / "config.json").read_text())
    del cfg["prior"]  # as written before the flag
    (run / "config.json").write_text(json.dumps(cfg))
    assert evaler.main(common)[0]["prior_offsets"] is None
    assert evaler.main([*common, "--prior", "labeled"])[0]["prior_offsets"] is not None
    assert sorted(p.name for p in (run / "ckpt").glob("*.prior.json")) == ["ckpt-45.prior.json"]  # 40's went


def test_prior_split_takes_the_runs_dataset_as_converted_and_says_what_to_pass_otherwise(dsdir, tmp_path):
    args = evaler.parse_args(["--checkpoint", "x", "--dataset_dir", str(dsdir)])
    cfg = {"dataset": "tiny", "dataset_info": {"height": 12, "width": 12, "channels": 1, "num_class": 3}}
    assert len(evaler.prior_split(args, cfg, tmp_path)) == 120
    for bad, message in (({"dataset": "gone"}, "dataset 'gone' is not at"),
                         ({"dataset_info": {**cfg["dataset_info"], "height": 16}}, r"holds 12x12x1 images of 3 classes "
                          r"\(class0, class1, class2\) and the run .* was trained on 16x12x1 images of 3 classes;"),
                         ({"dataset_info": {**cfg["dataset_info"], "class_names": ["a", "b", "c"]}},
                          r"was trained on 12x12x1 images of 3 classes \(a, b, c\)")):
        with pytest.raises(UserError, match=message + ".*pass the --dataset_dir that holds it, or --prior none"):
            evaler.prior_split(args, {**cfg, **bad}, tmp_path)


def test_mirror_guessed_mirrors_only_images_the_classifier_puts_in_a_flip_class():
    args = trainer.parse_args(["--dataset", "x", "--arch", "mlp", "--d_width", "16", "--g_width", "8", "--z_dim", "4"])
    D = trainer.GAN(args, (6, 6, 1), 3).D_ema
    images = tf.random.stateless_uniform([200, 6, 6, 1], [1, 2], -1.0, 1.0)
    guess = np.argmax(D(images, training=False)[0].numpy(), -1)
    assert len(set(guess)) > 1  # a random D still spreads random images over the classes
    out = trainer.mirror_guessed(D, images, [0, 2], tf.constant([3, 4])).numpy()
    same = (out == images.numpy()).all(axis=(1, 2, 3))
    mirrored = (out == images.numpy()[:, :, ::-1]).all(axis=(1, 2, 3))
    assert (same | mirrored).all()
    assert not mirrored[guess == 1].any()
    in_flip = mirrored[guess != 1]
    assert 0.3 < in_flip.mean() < 0.7  # each with probability 1/2
    none = trainer.mirror_guessed(D, images, [], tf.constant([3, 4])).numpy()
    assert (none == images.numpy()).all()


def test_a_run_with_flip_unlabeled_predicted_records_it_and_resumes_only_with_it(dsdir, tmp_path, capsys):
    run = tmp_path / "flip_unl"
    flags = ["--flip_classes", "all", "--flip_unlabeled", "predicted"]
    assert train(dsdir, run, "--max_steps", "5", *flags)["step"] == 5
    assert json.loads((run / "config.json").read_text())["flip_unlabeled"] == "predicted"
    assert train(dsdir, run, "--max_steps", "10", *flags)["step"] == 10
    with pytest.raises(SystemExit):
        train(dsdir, run, "--max_steps", "15", "--flip_classes", "all", "--flip_unlabeled", "none")
    assert "was trained with --flip_unlabeled 'predicted', not 'none'" in capsys.readouterr().err
    plain = tmp_path / "no_flips"  # the default --flip_unlabeled, but no class to mirror
    train(dsdir, plain, "--max_steps", "5")
    assert json.loads((plain / "config.json").read_text())["flip_unlabeled"] == "none"


def test_a_run_from_before_g_update_resumes_alternating_only(dsdir, tmp_path, capsys):
    run = tmp_path / "old_g"
    train(dsdir, run, "--max_steps", "5", "--g_update", "alternating")
    cfg = json.loads((run / "config.json").read_text())
    del cfg["g_update"]  # as written before the flag: G had D's passes of its own
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SystemExit):
        train(dsdir, run, "--max_steps", "10")
    assert "was trained with --g_update 'alternating', not 'joint'" in capsys.readouterr().err
    assert train(dsdir, run, "--max_steps", "10", "--g_update", "alternating")["step"] == 10
    sup = tmp_path / "old_sup"  # no G to update: a supervised-only run records and resumes either way
    train(dsdir, sup, "--max_steps", "5", "--supervised_only")
    cfg = json.loads((sup / "config.json").read_text())
    assert cfg["g_update"] == "alternating"
    del cfg["g_update"]
    (sup / "config.json").write_text(json.dumps(cfg))
    assert train(dsdir, sup, "--max_steps", "10", "--supervised_only")["step"] == 10


def test_joint_g_update_takes_gs_gradient_against_d_before_its_update():
    """--g_update joint: D's update is the alternating one's; G's first Adam step follows the feature-matching
    gradient through the D of before that update, on the same generated images D trained on."""
    flags = ["--dataset", "tiny", *TINY_FLAGS, "--arch", "lenet", "--d_width", "4", "--g_width", "4",
             "--d_input_noise", "0", "--d_hidden_noise", "0"]  # no noise: D's passes can be repeated exactly
    rng = np.random.default_rng(0)
    x_lab, x_unl = (tf.constant(rng.uniform(-1, 1, (6, 12, 12, 1)), tf.float32) for _ in range(2))
    y_lab = tf.constant([0, 1, 2, 0, 1, 2])
    after = {}
    for mode in trainer.G_UPDATES:
        args = trainer.parse_args([*flags, "--g_update", mode])
        gan = trainer.GAN(args, (12, 12, 1), 3)
        g0 = [v.numpy() for v in gan.G.trainable_variables]
        z = tf.random.Generator.from_state(gan.rng.state.numpy(), gan.rng.algorithm).normal([6, args.z_dim])
        with tf.GradientTape() as tape:  # G's loss against the D of before the step
            feats = gan.D(x_unl, training=True)[2]
            loss_g = tf.reduce_mean(tf.square(tf.reduce_mean(feats, 0)
                                              - tf.reduce_mean(gan.D(gan.G(z, training=True), training=True)[2], 0)))
        grads = [g.numpy() for g in tape.gradient(loss_g, gan.G.trainable_variables)]
        for v, w in zip(gan.G.trainable_variables, g0):  # the manual pass moved G's batch-norm statistics only
            v.assign(w)
        loop, _ = trainer.make_train_loop(gan, args, tf.distribute.get_strategy())
        lab = iter(tf.data.Dataset.from_tensors((x_lab, y_lab)).repeat())
        unl = iter(tf.data.Dataset.from_tensors(x_unl).repeat())
        assert bool(loop(lab, unl, tf.constant(1))[2])
        after[mode] = [v.numpy() for v in gan.D.trainable_variables], [v.numpy() for v in gan.G.trainable_variables]
        if mode == "joint":  # Keras' first Adam step: -lr * g / (|g| + epsilon / sqrt(1 - beta_2)), g as above
            opt = gan.opt_g
            lr, eps = float(opt.learning_rate), opt.epsilon / np.sqrt(1 - opt.beta_2)
            for w1, w0, g in zip(after[mode][1], g0, grads):
                np.testing.assert_allclose(w1, w0 - lr * g / (np.abs(g) + eps), rtol=1e-4, atol=1e-6)
    for a, b in zip(after["alternating"][0], after["joint"][0]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert not all(np.allclose(a, b) for a, b in zip(after["alternating"][1], after["joint"][1]))


def test_swa_start_makes_the_eval_weights_the_mean_of_ds_weights_since_then():
    """--swa_start 0.5 of 4 steps: after step 4, D_ema is the mean of D's weights after steps 3 and 4; without
    it, D_ema stays an EMA, which is not."""
    rng = np.random.default_rng(0)
    x_lab, x_unl = (tf.constant(rng.uniform(-1, 1, (6, 12, 12, 1)), tf.float32) for _ in range(2))
    lab = tf.data.Dataset.from_tensors((x_lab, tf.constant([0, 1, 2, 0, 1, 2]))).repeat()
    unl = tf.data.Dataset.from_tensors(x_unl).repeat()
    for extra, is_mean in (["--swa_start", "0.5"], True), ([], False):
        args = trainer.parse_args(["--dataset", "tiny", *TINY_FLAGS, "--arch", "lenet", "--d_width", "4",
                                   "--g_width", "4", *extra])
        gan = trainer.GAN(args, (12, 12, 1), 3)
        loop, _ = trainer.make_train_loop(gan, args, tf.distribute.get_strategy(), max_steps=4)
        lab_it, unl_it = iter(lab), iter(unl)
        seen = []
        for _ in range(4):
            assert bool(loop(lab_it, unl_it, tf.constant(1))[2])
            seen.append([v.numpy() for v in gan.D.trainable_variables])
        mean = [(a + b) / 2 for a, b in zip(seen[2], seen[3])]
        ema = [v.numpy() for v in gan.D_ema.trainable_variables]
        close = all(np.allclose(e, m, rtol=1e-5, atol=1e-6) for e, m in zip(ema, mean))
        assert close == is_mean, extra

"""bench/speed.py --quick measures every config in seconds; the trainer's --mixed_precision trains and evaluates."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import evaler
import model
import trainer
from tests.tiny import TINY_FLAGS, make_tiny_dataset

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"mlp28", "lenet28", "conv28", "conv32"}
POSITIVE = ("ms_per_step", "ms_per_step_best_window", "cpu_ms_per_step", "train_img_per_s", "flops_per_step",
            "flops_per_step_traced", "achieved_flop_per_s", "fraction_of_peak", "input_img_per_s", "eval_img_per_s",
            "epoch_60k_s")


def test_quick_benchmark_reports_every_field_of_every_config(tmp_path):
    out = tmp_path / "speed.json"
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "bench/speed.py", "--quick", "--out", str(out)], cwd=ROOT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True,
                          timeout=180)  # ~30 s on 2 idle cores; the bound only catches hangs on a loaded machine
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {r["config"] for r in result["rows"]} == CONFIGS
    for row in result["rows"]:
        for key in POSITIVE:
            assert row[key] > 0, (row["config"], key, row[key])
        assert row["flops_per_step"] <= row["flops_per_step_traced"]
        assert row["fraction_of_peak"] == pytest.approx(row["achieved_flop_per_s"] / result["machine"]
                                                        ["peak_flop_per_s"])
        assert row["windows_timed"] == 3 and row["ms_per_step_best_window"] <= row["ms_per_step"]
        assert row["fraction_of_peak_best_window"] == pytest.approx(
            row["fraction_of_peak"] * row["ms_per_step"] / row["ms_per_step_best_window"])
    assert "profiler" in result["flops_counted_by"]
    assert "ms/step" in proc.stdout and "mlp28" in proc.stdout
    assert "remapper failed" not in proc.stderr  # Grappler gave up on keras' LeakyReLU after a conv (ops.LeakyReLU)
    print(f"bench/speed.py --quick took {time.perf_counter() - t:.1f} s")


def test_quick_bfloat16_benchmark_records_the_bfloat16_matmul_peak(tmp_path):
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, "bench/speed.py", "--quick", "--configs", "conv28", "--mixed_precision",
                           "bfloat16", "--out", str(out)], cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["machine"]["peak_flop_per_s_bfloat16"] > 0 and "bfloat16 matmul" in proc.stdout
    assert [r["mixed_precision"] for r in result["rows"]] == ["bfloat16"]


def test_mixed_precision_trains_in_float16_with_float32_losses_and_is_recorded(tmp_path):
    dsdir = tmp_path / "ds"
    make_tiny_dataset(dsdir)
    run = tmp_path / "run"
    common = ["--dataset", "tiny", "--dataset_dir", str(dsdir), "--train_dir", str(run), "--num_labeled", "30",
              *TINY_FLAGS]
    result = trainer.main([*common, "--mixed_precision", "--max_steps", "5"])
    assert result["step"] == 5 and 0 <= result["test_accuracy"] <= 1
    assert tf.keras.mixed_precision.global_policy().name == "float32"  # restored after building the models
    assert json.loads((run / "config.json").read_text())["mixed_precision"] == "float16"
    (evaluated,) = evaler.main(["--checkpoint", str(run), "--dataset", "tiny", "--dataset_dir", str(dsdir)])
    assert evaluated["step"] == 5
    with pytest.raises(SystemExit) as e:  # not resumable with other precision: the checkpoint's optimisers differ
        trainer.main([*common, "--max_steps", "10"])
    assert e.value.code == 2


def test_mixed_precision_model_computes_in_float16_and_keeps_float32_weights():
    args = trainer.parse_args(["--dataset", "x", "--arch", "mlp", "--d_width", "16", "--g_width", "8",
                               "--z_dim", "4", "--mixed_precision"])
    gan = trainer.GAN(args, (8, 8, 1), 3)
    logits, _, _ = gan.D(tf.zeros([2, 8, 8, 1]))
    assert logits.dtype == tf.float16 and gan.G(tf.zeros([2, 4])).dtype == tf.float16
    assert {v.dtype for v in gan.D.trainable_variables} == {"float32"}
    assert isinstance(gan.opt_d, tf.keras.optimizers.LossScaleOptimizer)


def test_bfloat16_computes_in_bfloat16_without_loss_scaling():
    args = trainer.parse_args(["--dataset", "x", "--arch", "conv", "--d_width", "4", "--g_width", "4",
                               "--z_dim", "4", "--mixed_precision", "bfloat16"])
    gan = trainer.GAN(args, (8, 8, 1), 3)
    logits, _, _ = gan.D(tf.zeros([2, 8, 8, 1]))
    assert logits.dtype == tf.bfloat16 and gan.G(tf.zeros([2, 4])).dtype == tf.bfloat16
    assert {v.dtype for v in gan.D.trainable_variables} == {"float32"}
    assert not isinstance(gan.opt_d, tf.keras.optimizers.LossScaleOptimizer)


def test_a_run_recorded_with_the_old_boolean_flag_resumes(tmp_path):
    dsdir = tmp_path / "ds"
    make_tiny_dataset(dsdir)
    run = tmp_path / "run"
    common = ["--dataset", "tiny", "--dataset_dir", str(dsdir), "--train_dir", str(run), "--num_labeled", "30",
              *TINY_FLAGS, "--mixed_precision", "--augment"]
    trainer.main([*common, "--max_steps", "5"])
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["augment"] == "all"
    # as versions before bfloat16 and before --augment labeled
    (run / "config.json").write_text(json.dumps({**cfg, "mixed_precision": True, "augment": True}))
    assert trainer.main([*common, "--max_steps", "10"])["step"] == 10


def test_eval_speed_times_one_pass_and_tta_mirror_on_a_trained_run(tmp_path):
    """Each row scores as the evaler does, in float32 and with --mixed_precision bfloat16 (D in bfloat16)."""
    from bench import eval_speed
    dsdir = tmp_path / "datasets"
    make_tiny_dataset(dsdir)
    run = tmp_path / "run"
    trainer.main(["--dataset", "tiny", "--dataset_dir", str(dsdir), "--train_dir", str(run), "--num_labeled", "30",
                  *TINY_FLAGS, "--max_steps", "3", "--flip_classes", "class1"])
    out = tmp_path / "eval_speed.json"
    result = eval_speed.main(["--dataset", "tiny", "--dataset_dir", str(dsdir), "--checkpoint", str(run),
                              "--passes", "1", "--precision", "float32", "bfloat16", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert [r["precision"] for r in result["rows"]] == ["float32", "bfloat16"]
    for row in result["rows"]:
        assert row["step"] == 3 and row["test_images"] == 30 and row["mirror_classes"] == ["class1"]
        assert row["img_per_s_none"] > 0 and row["img_per_s_mirror"] > 0 and 0 <= row["mirrored_share"] <= 1
        assert row["train_images"] == 120 and row["prior_fit_s"] > 0
        precision = [] if row["precision"] == "float32" else ["--mixed_precision", row["precision"]]
        for key, flags in (("none", ["--tta", "none", "--prior", "none"]),
                           ("mirror", ["--tta", "mirror", "--prior", "none"]),
                           ("mirror_prior", [])):  # the run's own: --tta mirror --prior labeled
            (report,) = evaler.main(["--dataset", "tiny", "--dataset_dir", str(dsdir), "--checkpoint", str(run),
                                     "--samples", "0", *flags, *precision])
            assert row[f"accuracy_{key}"] == pytest.approx(report["accuracy"])
            assert report["precision"] == row["precision"]


def test_evaler_mixed_precision_computes_d_in_bfloat16_with_float32_weights_and_probabilities():
    cfg = {"arch": "lenet", "g_arch": "conv", "head": "implicit", "d_width": 4, "g_width": 4, "z_dim": 4, "seed": 0,
           "dataset_info": {"height": 8, "width": 8, "channels": 1, "num_class": 3}}
    D32, _ = evaler.build_models(cfg)
    D16, G = evaler.build_models(cfg, "bfloat16")
    assert tf.keras.mixed_precision.global_policy().name == "float32"  # restored
    assert {w.dtype for w in D16.weights} == {"float32"} and G.compute_dtype == "float32"
    assert D16.get_layer("class_logits").compute_dtype == "bfloat16" and D32.compute_dtype == "float32"
    for a, b in zip(D16.weights, D32.weights, strict=True):
        a.assign(b)
    x = tf.random.uniform([16, 8, 8, 1], -1, 1, seed=1)
    p16, p32 = (model.class_probabilities(d, x, (1,)) for d in (D16, D32))
    assert p16.dtype == tf.float32
    np.testing.assert_allclose(p16.numpy(), p32.numpy(), atol=0.02)  # bfloat16 keeps ~3 significant digits
    assert not np.allclose(p16.numpy(), p32.numpy(), atol=1e-6, rtol=0)  # ... and computed them in bfloat16

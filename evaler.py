"""Evaluate a trained discriminator as a classifier on a dataset's test split.

    python evaler.py --dataset fashion_mnist --checkpoint train_dir/RUN
    python evaler.py --dataset MY_SET --input_height h --input_width w --num_class c --checkpoint RUN

--checkpoint is a run dir (its latest checkpoint; --all: every kept one) or one checkpoint
(e.g. train_dir/RUN/ckpt/ckpt-6000). The model is rebuilt from the run's config.json; flags
given here must agree with it. Prints accuracy, per-class accuracy and the confusion matrix
(--json: one JSON object), and writes a grid of generated samples next to the checkpoint.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

import config
import input_ops
import model
from errors import UserError, exits_cleanly

EPILOG = """examples:
  python evaler.py --dataset fashion_mnist --checkpoint train_dir/fashion_mnist-implicit-mlp-100-20260101-120000
  python evaler.py --dataset fashion_mnist --checkpoint train_dir/RUN/ckpt/ckpt-6000 --json
  python evaler.py --dataset fashion_mnist --checkpoint train_dir/RUN --all
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Evaler flags: the shared data flags, optional model flags (checked against config.json)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                formatter_class=config.HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a run dir (latest checkpoint) or one checkpoint path")
    p.add_argument("--all", action="store_true", help="evaluate every kept checkpoint of the run dir")
    p.add_argument("--json", action="store_true", help="print one JSON object (per checkpoint) on stdout")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help="D's EMA (Polyak) weights or raw ones")
    p.add_argument("--samples", type=int, default=100, help="generated images in the sample grid PNG (0: none)")
    config.add_data_flags(p)
    config.add_model_flags(p, defaults=False)
    return p.parse_args(argv)


# ---------------------------------------------------------------- evaluation, shared with trainer.py


def confusion_of(D: tf.keras.Model, split: input_ops.Split, batch: int, num_class: int) -> np.ndarray:
    """Confusion matrix [true, predicted] of D's n-way predictions over a labelled split."""
    predict = _predictor(D)
    cm = np.zeros((num_class, num_class), np.int64)
    for x, y in input_ops.eval_stream(split, batch):
        cm += predict(x, y, num_class).numpy()
    return cm


def accuracy_of(D: tf.keras.Model, split: input_ops.Split, batch: int, num_class: int) -> float:
    """Test accuracy of D's n-way predictions."""
    cm = confusion_of(D, split, batch, num_class)
    return float(np.trace(cm) / max(cm.sum(), 1))


_PREDICTORS: dict[int, tf.types.experimental.GenericFunction] = {}


def _predictor(D):
    if id(D) not in _PREDICTORS:
        @tf.function(jit_compile=True)
        def predict(x, y, num_class):
            logits, _, _ = D(x, training=False)
            return tf.math.confusion_matrix(y, tf.argmax(logits, -1), num_classes=num_class, dtype=tf.int64)
        _PREDICTORS[id(D)] = predict
    return _PREDICTORS[id(D)]


def image_grid(images: np.ndarray) -> np.ndarray:
    """Images in [-1, 1], [N,H,W,C] -> one uint8 grid image [rows*H, cols*W, C] (as square as possible)."""
    n, h, w, c = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.zeros((rows * h, cols * w, c), np.uint8)
    pix = np.clip((images + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = pix[i]
    return grid


def save_png(grid: np.ndarray, path: Path) -> None:
    """Write a uint8 [H,W,1|3] image as PNG (atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(tmp, format="PNG")
    tmp.replace(path)


# ---------------------------------------------------------------- restoring a run


def find_run(checkpoint: str) -> tuple[Path, list[str]]:
    """(run dir, checkpoint paths) for a run dir or a checkpoint path."""
    p = Path(checkpoint)
    if p.is_dir() and (p / "config.json").exists():
        state = tf.train.get_checkpoint_state(str(p / "ckpt"))
        if state is None or not state.all_model_checkpoint_paths:
            raise UserError(f"run dir {p} has no checkpoint yet; train it first with trainer.py")
        return p, list(state.all_model_checkpoint_paths)
    if Path(str(p) + ".index").exists():
        run = p.parent.parent if p.parent.name == "ckpt" else p.parent
        if not (run / "config.json").exists():
            raise UserError(f"no config.json found for checkpoint {p} (looked in {run})")
        return run, [str(p)]
    raise UserError(f"--checkpoint {checkpoint} is neither a run dir (with config.json) nor a checkpoint "
                    "(a path whose .index file exists)")


def load_classifier(run: Path, ckpt_path: str, weights: str = "ema"):
    """Rebuild D (and G) from the run's config.json and restore them; returns (cfg, D, G, step)."""
    cfg = json.loads((run / "config.json").read_text())
    info = cfg["dataset_info"]
    shape = (info["height"], info["width"], info["channels"])
    D = model.build_discriminator(cfg["arch"], shape, info["num_class"], cfg["head"], cfg["d_width"])
    G = model.build_generator(cfg["arch"], shape, cfg["z_dim"], cfg["g_width"])
    step = tf.Variable(0, dtype=tf.int64)
    parts = {"D_ema" if weights == "ema" else "D": D, "G": G, "step": step}
    try:
        tf.train.Checkpoint(**parts).restore(ckpt_path).expect_partial().assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as e:
        raise UserError(f"checkpoint {ckpt_path} does not match the model in {run}/config.json "
                        f"({str(e).splitlines()[0][:200]})") from None
    return cfg, D, G, int(step.numpy())


def check_against_config(args: argparse.Namespace, cfg: dict, run: Path) -> None:
    """Flags given to the evaler must agree with what the run was trained with."""
    info = cfg["dataset_info"]
    config.check_shape_flags(args, info["height"], info["width"], info["num_class"], f"the run {run}")
    for k in config.MODEL_KEYS:
        given = getattr(args, k, None)
        if given is not None and given != cfg[k]:
            raise UserError(f"--{k} {given} does not match the run {run}, trained with --{k} {cfg[k]}; "
                            "drop the flag or pass the trained value")


# ---------------------------------------------------------------- report


def report(cm: np.ndarray, class_names: list[str], ckpt: str, step: int) -> dict:
    """Accuracy, per-class accuracy and confusion matrix as a JSON-ready dict."""
    per_class = cm.diagonal() / np.maximum(cm.sum(1), 1)
    return {"accuracy": float(np.trace(cm) / max(cm.sum(), 1)), "num_examples": int(cm.sum()),
            "per_class": {name: float(a) for name, a in zip(class_names, per_class)},
            "confusion": cm.tolist(), "class_names": class_names, "checkpoint": ckpt, "step": step}


def format_report(r: dict) -> str:
    """A human-readable table of a report dict."""
    names = r["class_names"]
    w = max(8, *(len(n) for n in names))
    lines = [f"checkpoint {r['checkpoint']} (step {r['step']})",
             f"test accuracy: {r['accuracy']:.4f} on {r['num_examples']} images", "", "per-class accuracy:"]
    lines += [f"  {n:<{w}} {a:.4f}" for n, a in r["per_class"].items()]
    cw = max(6, len(str(max(max(row) for row in r["confusion"]))) + 1)
    lines += ["", "confusion matrix (rows: true class, columns: predicted):",
              " " * (w + 2) + "".join(f"{i:>{cw}}" for i in range(len(names)))]
    lines += [f"  {n:<{w}}" + "".join(f"{v:>{cw}}" for v in row) + f"   {i}" for i, (n, row) in
              enumerate(zip(names, r["confusion"]))]
    return "\n".join(lines)


def evaluate(args: argparse.Namespace) -> list[dict]:
    """Evaluate the asked checkpoint(s) on the dataset's test split; print and return the reports."""
    run, ckpts = find_run(args.checkpoint)
    if not args.all:
        ckpts = ckpts[-1:]
    cfg = json.loads((run / "config.json").read_text())
    check_against_config(args, cfg, run)
    path, info = config.resolve_dataset(args)
    trained = cfg["dataset_info"]
    if (info.height, info.width, info.channels, info.num_class) != (
            trained["height"], trained["width"], trained["channels"], trained["num_class"]):
        raise UserError(f"dataset {args.dataset} is {info.height}x{info.width}x{info.channels} with "
                        f"{info.num_class} classes but the run {run} was trained on "
                        f"{trained['height']}x{trained['width']}x{trained['channels']} with {trained['num_class']}")
    test = input_ops.load_split(path, "test", args.in_memory, args.memory_budget_gb)
    reports = []
    for ckpt in ckpts:
        _, D, G, step = load_classifier(run, ckpt, args.weights)
        r = report(confusion_of(D, test, args.batch_size * 5, info.num_class), info.class_names, ckpt, step)
        if args.samples > 0 and cfg.get("supervised_only") is False:
            z = tf.random.stateless_normal([args.samples, cfg["z_dim"]], seed=[cfg["seed"], 7])
            r["samples_png"] = str(run / f"samples_{Path(ckpt).name}.png")
            save_png(image_grid(G(z, training=False).numpy()), Path(r["samples_png"]))
        print(json.dumps(r) if args.json else format_report(r) + "\n")
        reports.append(r)
    return reports


@exits_cleanly
def main(argv: list[str] | None = None) -> list[dict]:
    """CLI entry point."""
    return evaluate(parse_args(argv))


if __name__ == "__main__":
    main()
    sys.exit(0)

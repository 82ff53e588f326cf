"""Evaluate a trained discriminator as a classifier on a dataset's test split.

    python evaler.py --dataset fashion_mnist --checkpoint train_dir/RUN
    python evaler.py --dataset MY_SET --input_height h --input_width w --num_class c --checkpoint RUN

--checkpoint is a run dir (its latest checkpoint; --all: every kept one) or one checkpoint
(e.g. train_dir/RUN/ckpt/ckpt-6000). The model is rebuilt from the run's config.json; flags
given here must agree with it. Prints accuracy, per-class accuracy and the confusion matrix
(--json: one JSON object), and writes the confusion matrix as an image (confusion_<ckpt>.png) and a grid of
generated samples (samples_<ckpt>.png) into the run dir.

Using the trained classifier (no --dataset needed):
    python evaler.py --checkpoint RUN --predict IMAGE_OR_FOLDER [--output predictions.csv]
    python evaler.py --checkpoint RUN --export exported_model      # a TensorFlow SavedModel
    python evaler.py --checkpoint RUN --samples 64 --output grid.png

D's class logits get --prior labeled's offsets (the default for runs that were trained with it): the trainer
saves them beside each checkpoint (ckpt-N.prior.json). For a checkpoint without them (a run from before the flag
evaluated with --prior labeled, or --weights raw) they are fitted on the run's training images, which must then be
in --dataset_dir.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import glob
import io
import json
import math
import os
import re
import shutil
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from errors import import_tensorflow_quietly

import_tensorflow_quietly()  # before TensorFlow's first import: no C++ start-up lines on stderr

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

import config
import datasets
import input_ops
import model
from datasets import folder
from datasets import format as fmt
from errors import HelpFormatter, UserError, exits_cleanly, positive_int

EPILOG = """examples:
  python evaler.py --dataset fashion_mnist --checkpoint train_dir/fashion_mnist-implicit-mlp-100-20260101-120000
  python evaler.py --dataset fashion_mnist --checkpoint train_dir/RUN/ckpt/ckpt-6000 --json
  python evaler.py --dataset fashion_mnist --checkpoint train_dir/RUN --all
  python evaler.py --checkpoint train_dir/RUN --predict my_images/ --output predictions.csv
  python evaler.py --checkpoint train_dir/RUN --export exported_model
  python evaler.py --checkpoint train_dir/RUN --samples 64 --output grid.png
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Evaler flags: the shared data flags, optional model flags (checked against config.json)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a run dir (latest checkpoint) or one checkpoint path")
    p.add_argument("--all", action="store_true", help="evaluate every kept checkpoint of the run dir")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (per checkpoint) on stdout; evaluating only")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema", help="D's EMA (Polyak) weights or raw ones")
    p.add_argument("--samples", type=int, default=100, action=Given,
                   help="generated images in the sample grid PNG (0: none); given without --dataset: "
                        "write only the grid (to --output)")
    g = p.add_argument_group("using the classifier (no --dataset needed)")
    jobs = g.add_mutually_exclusive_group()
    jobs.add_argument("--predict", metavar="PATH", help="classify an image file or a folder (recursively): a CSV "
                      "of path, class, confidence, top3")
    jobs.add_argument("--export", metavar="DIR", help="write the classifier as a TensorFlow SavedModel to DIR")
    jobs.add_argument("--samples_only", "--samples-only", action="store_true",
                      help="only write the --samples grid (to --output), even when --dataset is given")
    g.add_argument("--output", metavar="FILE", help="--predict: the CSV (default, or -: stdout); --samples alone: the "
                   "grid PNG (default: samples_<ckpt>.png in the run dir)")
    g.add_argument("--force", action="store_true", help="--export: replace an earlier export (or a file) at DIR")
    g.add_argument("--workers", type=positive_int, default=None,
                   help="--predict: processes decoding images (default: all CPUs)")
    config.add_data_flags(p)
    config.add_model_flags(p, defaults=False)
    config.add_precision_flag(config.add_eval_flags(p, defaults=False), evaluating=True)
    dataset = p._option_string_actions["--dataset"]  # shared flag: required only to evaluate (checked in main)
    dataset.required, dataset.help = False, dataset.help + "; needed to evaluate, not with --predict/--export/--samples"
    return p.parse_args(argv)


class Given(argparse.Action):
    """Store a flag's value and record in `<dest>_given` that it was given (not just defaulted)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


# ---------------------------------------------------------------- evaluation, shared with trainer.py


def eval_batch(batch_size: int, shape: tuple[int, ...]) -> int:
    """Images per evaluation batch: about 2M input values (2,500 28x28 images), between --batch_size and 25x it.

    Bigger batches evaluate faster on a CPU: lenet 28x28 ran at 20k img/s in batches of 500 and 26k in
    batches of 2,500 (bench/speed.py); the bound on input values keeps large images within memory.
    """
    return max(batch_size, min(25 * batch_size, 2_000_000 // math.prod(shape)))


def confusion_of(D: tf.keras.Model, split: input_ops.Split, batch: int, num_class: int,
                 mirror: tuple[int, ...] = (), offsets: np.ndarray | None = None) -> np.ndarray:
    """Confusion matrix [true, predicted] of D's n-way predictions over a labelled split (`mirror`: the classes
    --tta mirrors; `offsets`: --prior's, prior_offsets_of; model.class_probabilities)."""
    predict = _compiled(D, mirror)
    shift = None if offsets is None else tf.constant(offsets, tf.float32)
    cm = np.zeros((num_class, num_class), np.int64)
    for x, y in input_ops.eval_stream(split, batch):
        cm += predict(x, y, num_class, shift).numpy()
    return cm


# --prior: D's logits are aligned over at most this many training images (a seeded sample of more).
PRIOR_IMAGES = 60_000


def prior_offsets_of(D: tf.keras.Model, train: input_ops.Split, batch: int, num_class: int) -> np.ndarray:
    """--prior labeled's offsets (model.prior_offsets) for D's class logits over the run's training split `train`:
    to the class frequencies of its labelled images (input_ops.class_frequencies)."""
    logits = _compiled(D)
    found = np.concatenate([logits(x).numpy() for x in input_ops.image_stream(train, batch, PRIOR_IMAGES)])
    return model.prior_offsets(found, input_ops.class_frequencies(train.labels, num_class))


def prior_file(ckpt: str) -> Path:
    """Where the trainer keeps --prior labeled's offsets for a checkpoint's EMA weights."""
    return Path(f"{ckpt}.prior.json")


def read_prior_file(ckpt: str, step: int, num_class: int) -> np.ndarray | None:
    """The offsets the trainer saved with a checkpoint of `step` for its EMA weights, or None if it saved none (an
    unreadable file, or one of another step: a warning)."""
    path = prior_file(ckpt)
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
        offsets = np.array(saved["offsets"], np.float64)
        if offsets.shape != (num_class,) or not np.isfinite(offsets).all():
            raise ValueError(f"{offsets.shape} offsets")
        if (saved["step"], saved["weights"]) != (step, "ema"):
            raise ValueError(f"saved for step {saved['step']}, {saved['weights']} weights")
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"warning: {path} is unreadable ({e}); fitting --prior's offsets again", file=sys.stderr)
        return None
    return offsets


# Compiled test-time functions per live model; an entry goes when its model is garbage-collected.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled(D, mirror: tuple[int, ...] | None = None):
    """A tf.function of D for images x in [-1, 1], compiled once: with `mirror` (the classes --tta mirrors),
    confusion(x, y, num_class, offsets), the confusion matrix of its predictions (model.class_probabilities);
    without, logits(x), its class logits."""
    compiled = _COMPILED.setdefault(D, {})
    if mirror not in compiled:
        model_ref = weakref.ref(D)  # the function must not keep its model alive

        def logits(x):
            return tf.cast(model_ref()(x, training=False)[0], tf.float32)

        def confusion(x, y, num_class, offsets):
            probs = model.class_probabilities(model_ref(), x, mirror, offsets)
            return tf.math.confusion_matrix(y, tf.argmax(probs, -1), num_classes=num_class, dtype=tf.int64)
        # not XLA: oneDNN's convolutions are 1.3-1.4x faster than XLA's here (lenet, conv)
        compiled[mirror] = tf.function(logits if mirror is None else confusion)
    return compiled[mirror]


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


# Above this many classes the confusion matrix is not drawn (28 px a class: 2,800 px square at 100).
MAX_IMAGE_CLASSES = 100
CONFUSION_CAPTION = "rows: true class; shade: share of the row"
PAD = 4  # px of white around the confusion image's contents


def confusion_image(cm: np.ndarray, class_names: list[str]) -> np.ndarray | None:
    """The confusion matrix as an RGB image [H, W, 3] to look at (TensorBoard, confusion_<ckpt>.png): each row (a true
    class) shaded by the share of its images predicted as each column's class, white 0 to dark blue 1, with the
    counts written in the cells, the class names down the left and their indices along the top (a name the font
    cannot draw: its index alone). None above MAX_IMAGE_CLASSES classes."""
    cm = np.asarray(cm, np.int64)
    n = len(class_names)
    if n > MAX_IMAGE_CLASSES:
        return None
    font = ImageFont.load_default()
    def width(text):
        return int(np.ceil(font.getlength(text)))
    def label(i):
        try:
            width(class_names[i])
            return f"{i} {class_names[i]}"
        except (UnicodeError, ValueError):  # a bitmap font (Pillow without FreeType) draws Latin-1 only
            return str(i)
    labels = [label(i) for i in range(n)]
    cell = max(28, width(str(cm.max())) + 8)
    # a margin of PAD around everything; the title, then the column indices, above the grid; the caption below it
    title, caption, line = "predicted class", CONFUSION_CAPTION, font.getbbox("predicted class 0123456789")[3]
    left, top = max(width(t) for t in labels) + 12, PAD + 2 * line + 6
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)  # a class without test images: a row of zeros, all white
    size = (max(left + n * cell + 1, left + width(title), PAD + width(caption)) + PAD, top + n * cell + line + 6 + PAD)
    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    draw.text((left, PAD), title, fill="black", font=font)
    for j in range(n):
        draw.text((left + j * cell + cell // 2, top - 3), str(j), fill="black", font=font, anchor="md")
    for i in range(n):
        y = top + i * cell
        draw.text((left - 6, y + cell // 2), labels[i], fill="black", font=font, anchor="rm")
        for j in range(n):
            v = float(share[i, j])
            fill = tuple(int(255 - v * d) for d in (225, 175, 90))  # white .. (30, 80, 165)
            box = (left + j * cell, y, left + (j + 1) * cell, y + cell)
            draw.rectangle(box, fill=fill, outline=(200, 200, 200))
            draw.text((box[0] + cell // 2, y + cell // 2), str(cm[i, j]), font=font, anchor="mm",
                      fill="white" if v > 0.5 else "black")
    for i in range(n):  # the diagonal (correct predictions) outlined, over its neighbours' grid lines
        draw.rectangle((left + i * cell, top + i * cell, left + (i + 1) * cell, top + (i + 1) * cell), outline="black")
    draw.text((PAD, top + n * cell + 6), caption, fill="black", font=font)
    return np.asarray(im)


# What curves_image draws: per panel, (tag, legend label, style) of the run's curves (trainer.Curves).
CURVE_PANELS = (
    ("accuracy", (("test/accuracy", "test split (EMA D, as the evaler scores)", "o-"),
                  ("train/acc_lab", "labelled batch (D in training)", "-"))),
    ("loss", (("train/loss_d", "D", "-"), ("train/loss_sup", "D's labelled part", "-"), ("train/loss_g", "G", "-"))),
    ("D's P(real)", (("train/p_real", "unlabelled images", "-"), ("train/p_fake", "generated images", "-"))),
)


def curves_image(series: dict[str, list[tuple[int, float]]], title: str) -> np.ndarray:
    """A run's curves against the step as an RGB image [H, W, 3] to look at (curves.png): test and labelled-batch
    accuracy, D's and G's losses, and D's mean P(real) on unlabelled and generated images (a loss or P(real) curve
    that is all zero, as G's for --supervised_only, is left out, and so is a panel left empty)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # imported here: 0.3 s, for runs only
    from matplotlib.figure import Figure

    def drawn(tag):
        return [(s, v) for s, v in series.get(tag, []) if math.isfinite(v)]
    panels = [(name, [(drawn(tag), label, style) for tag, label, style in curves  # all 0: no G (--supervised_only)
                      if drawn(tag) and (name == "accuracy" or any(v != 0 for _, v in drawn(tag)))])
              for name, curves in CURVE_PANELS]
    panels = [(name, curves) for name, curves in panels if curves] or [("accuracy", [])]
    fig = Figure(figsize=(4.2 * len(panels), 3.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=9)
    for ax, (name, curves) in zip(np.atleast_1d(fig.subplots(1, len(panels))), panels):
        for points, label, style in curves:
            steps, values = zip(*points)
            ax.plot(steps, values, style, label=label, markersize=3, linewidth=1.2)
            if name == "accuracy" and label.startswith("test"):
                ax.annotate(f"{values[-1]:.4f}", (steps[-1], values[-1]), textcoords="offset points",
                            xytext=(-4, 6), ha="right", fontsize=8)
        ax.set_title(name, fontsize=10)
        if name == "D's P(real)":
            ax.set_ylim(0, 1)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if curves:
            ax.legend(fontsize=7)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_png(grid: np.ndarray, path: Path) -> None:
    """Write a uint8 [H,W,1|3] image as PNG (atomic)."""
    with atomic_target(path) as tmp:
        Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(tmp, format="PNG")


# ---------------------------------------------------------------- restoring a run


def find_run(checkpoint: str) -> tuple[Path, list[str]]:
    """(run dir, checkpoint paths) for a run dir (or its ckpt folder) or a checkpoint path."""
    p = Path(checkpoint)
    if p.is_dir() and p.name == "ckpt" and (p.parent / "config.json").exists():  # a run's checkpoint folder
        p = p.parent
    if p.is_dir() and (p / "config.json").exists():
        state = tf.train.get_checkpoint_state(str(p / "ckpt"))
        if state is None or not state.all_model_checkpoint_paths:
            raise UserError(f"run dir {p} has no checkpoint yet; train it first with trainer.py")
        return p, list(state.all_model_checkpoint_paths)
    p = Path(re.sub(r"\.(index|data-\d+-of-\d+)$", "", str(p)))  # a file of the checkpoint, as tab completes it
    if Path(str(p) + ".index").exists():
        run = p.parent.parent if p.parent.name == "ckpt" else p.parent
        if not (run / "config.json").exists():
            raise UserError(f"no config.json found for checkpoint {p} (looked in {run})")
        return run, [str(p)]
    run = p.parent.parent if p.parent.name == "ckpt" else p.parent
    hint = f"; pass the run dir {run} (its latest checkpoint)" if (run / "config.json").exists() else ""
    raise UserError(f"--checkpoint {checkpoint} is neither a run dir (with config.json) nor a checkpoint "
                    f"(a path whose .index file exists){hint}")


def build_models(cfg: dict, precision: str | None = None) -> tuple[tf.keras.Model, tf.keras.Model]:
    """D and G as the run's config.json describes them, untrained; D computing in `precision` (--mixed_precision;
    None: float32)."""
    shape = image_shape(cfg)
    with model.mixed_precision(precision):
        D = config.discriminator_of(cfg, shape, cfg["dataset_info"]["num_class"])
    return D, config.generator_of(cfg, shape)


def load_classifier(run: Path, ckpt_path: str, weights: str = "ema"):
    """Rebuild D (and G) from the run's config.json and restore them; returns (cfg, D, G, step)."""
    cfg = config.read_run_config(run)
    D, G = build_models(cfg)
    return cfg, D, G, restore_into(D, G, run, ckpt_path, weights)


# What reading a checkpoint whose files were cut short (a crash, a full disk) or deleted raises.
UNREADABLE = (tf.errors.OpError, IndexError)


class UnreadableCheckpoint(UserError):
    """A checkpoint whose files cannot be read."""


def restore_into(D: tf.keras.Model, G: tf.keras.Model, run: Path, ckpt_path: str, weights: str = "ema") -> int:
    """Restore a checkpoint of the run into built D and G (D's EMA or raw weights); returns its step."""
    step = tf.Variable(0, dtype=tf.int64)
    parts = {"D_ema" if weights == "ema" else "D": D, "G": G, "step": step}
    try:
        _restore_quietly(tf.train.Checkpoint(**parts), ckpt_path)
    except UNREADABLE as e:
        raise UnreadableCheckpoint(f"checkpoint {ckpt_path} is unreadable: its files are cut short or missing "
                                   f"({type(e).__name__}); pass another checkpoint of {run}") from None
    except (ValueError, AssertionError) as e:
        raise UserError(f"checkpoint {ckpt_path} does not match the model in {run}/config.json "
                        f"({str(e).splitlines()[0][:200]})") from None
    return int(step.numpy())


def _restore_quietly(ckpt: tf.train.Checkpoint, path: str) -> None:
    """ckpt.restore(path), every object matched. A restore that fails part-way (a shape that does not match)
    leaves the checkpoint's other values unused, and TensorFlow lists each one (dozens of warning lines) when
    the half-done restore is collected; it is marked partial here, so the one error line is all a person sees."""
    try:
        ckpt.restore(path).expect_partial().assert_existing_objects_matched()
    except BaseException as e:
        tb = e.__traceback__
        while tb is not None:  # the restore's coordinator is a local of a frame inside TensorFlow
            for value in list(tb.tb_frame.f_locals.values()):
                if hasattr(value, "expect_partial_attr"):
                    value.expect_partial = True
            tb = tb.tb_next
        raise


def none_readable(run: Path, n: int) -> UserError:
    """The error when none of a run's n checkpoints can be read."""
    which = f"the only checkpoint of {run} is unreadable (its files are" if n == 1 else \
        f"none of the {n} checkpoints of {run} is readable (their files are"
    return UserError(f"{which} cut short or missing); delete its ckpt folder and train it again")


def unreadable_one(run: Path, e: UnreadableCheckpoint) -> UserError:
    """The error when the one checkpoint asked for is unreadable: `e` ("pass another checkpoint") where the run has
    others, none_readable where it has no other."""
    state = tf.train.get_checkpoint_state(str(run / "ckpt"))
    return none_readable(run, 1) if state is not None and len(state.all_model_checkpoint_paths) == 1 else e


def restore_newest(D: tf.keras.Model, G: tf.keras.Model, run: Path, ckpts: list[str], weights: str = "ema"
                   ) -> tuple[str, int]:
    """Restore the newest readable of a run's checkpoints (oldest first), as the trainer resumes: an
    unreadable one is skipped with a warning. Returns (checkpoint, step)."""
    for ckpt in reversed(ckpts):
        try:
            return ckpt, restore_into(D, G, run, ckpt, weights)
        except UnreadableCheckpoint as e:
            if len(ckpts) == 1:
                raise unreadable_one(run, e) from None
            print(f"warning: checkpoint {ckpt} is unreadable; using the one before it", file=sys.stderr)
    raise none_readable(run, len(ckpts))


def check_against_config(args: argparse.Namespace, cfg: dict, run: Path) -> None:
    """Flags given to the evaler must agree with what the run was trained with."""
    info = cfg["dataset_info"]
    config.check_shape_flags(args, info["height"], info["width"], info["num_class"], f"the run {run}")
    for k in config.MODEL_KEYS:
        given = getattr(args, k, None)
        if k == "d_width" and given == 0:  # the arch's width today, as the trainer reads it
            given = model.DISCRIMINATOR_WIDTH.get(cfg["arch"], 0)
        trained = config.recorded(cfg, k)
        if given is not None and given != trained:
            raise UserError(f"--{k} {given} does not match the run {run}, trained with --{k} {trained}; "
                            "drop the flag or pass the trained value")


# ---------------------------------------------------------------- report


def report(cm: np.ndarray, class_names: list[str], ckpt: str, step: int, mirror: tuple[int, ...] = (),
           offsets: np.ndarray | None = None, precision: str | None = None) -> dict:
    """Accuracy, per-class accuracy (None: a class without test images) and confusion matrix as a JSON-ready dict
    (`tta_mirror`: the mirrored classes; `prior_offsets`: --prior's, by class name, or null; `precision`: D's
    compute dtype, --mixed_precision's)."""
    per_class = {name: float(cm[i, i] / n) if n else None for i, (name, n) in enumerate(zip(class_names, cm.sum(1)))}
    return {"accuracy": float(np.trace(cm) / max(cm.sum(), 1)), "num_examples": int(cm.sum()), "per_class": per_class,
            "confusion": cm.tolist(), "class_names": class_names, "checkpoint": ckpt, "step": step,
            "tta_mirror": [class_names[c] for c in mirror],
            "prior_offsets": None if offsets is None else {n: float(b) for n, b in zip(class_names, offsets)},
            "precision": precision or "float32"}


def format_report(r: dict) -> str:
    """A human-readable table of a report dict."""
    names = r["class_names"]
    w = max(8, *(len(n) for n in names))
    lines = [f"checkpoint {r['checkpoint']} (step {r['step']})",
             f"test accuracy: {r['accuracy']:.4f} on {r['num_examples']} images"
             + (" (--tta mirror: averaged with mirror images where unsure)" if r.get("tta_mirror") else "")
             + (" (--prior labeled: aligned to the labelled class frequencies)" if r.get("prior_offsets") else "")
             + (f" (computed in {r['precision']})" if r.get("precision", "float32") != "float32" else ""),
             "", "per-class accuracy:"]
    lines += [f"  {n:<{w}} " + ("n/a (no test images)" if a is None else f"{a:.4f}") for n, a in r["per_class"].items()]
    cw = max(6, len(str(max(max(row) for row in r["confusion"]))) + 1)
    lines += ["", "confusion matrix (rows: true class, columns: predicted):",
              " " * (w + 2) + "".join(f"{i:>{cw}}" for i in range(len(names)))]
    lines += [f"  {n:<{w}}" + "".join(f"{v:>{cw}}" for v in row) + f"   {i}" for i, (n, row) in
              enumerate(zip(names, r["confusion"]))]
    return "\n".join(lines)


def trained_preprocessing(args: argparse.Namespace, cfg: dict) -> argparse.Namespace:
    """The flags with which an own image folder is read: the run's size and channels and, for the folder the run
    was trained on, its resize and test split, so that evaluating never converts it differently from how the run
    was trained. Another folder keeps its own conversion's resize and split unless they are given."""
    if args.dataset in datasets.SOURCES or not folder.is_folder_dataset(args.dataset, args.data_dir):
        return args  # a downloaded dataset: nothing to convert; the flags as given are checked
    info = cfg["dataset_info"]
    given = {"input_height": info["height"], "input_width": info["width"], "channels": info["channels"]}
    if cfg.get("dataset") == args.dataset:
        given |= {"resize": cfg.get("resize", args.resize),
                  "test_fraction": cfg.get("test_fraction", args.test_fraction),
                  "conversion_seed": cfg.get("conversion_seed")}  # None (a run from before stop 44): as converted
    return argparse.Namespace(**{**vars(args), **given})


def warn_unused_flags(args: argparse.Namespace, cfg: dict, run: Path, dataset: str | None,
                      keys: tuple[str, ...] = ("resize", "test_fraction", "channels")) -> None:
    """One warning naming the conversion flags (of `keys`) given that differ from the run's and so are not used
    for `dataset` (None: --predict's images): the run's own data is read as it was trained (trained_preprocessing),
    any image at the run's channels, a converted dataset file as it is."""
    own = dataset is not None and dataset not in datasets.SOURCES and folder.is_folder_dataset(dataset, args.data_dir)
    # A run from before a flag was recorded: --predict reads it with the default resize; evaluating its folder
    # converts it with the flag as given (trained_preprocessing), so there is nothing to warn about.
    runs = {"resize": cfg.get("resize", folder.DEFAULT_RESIZE if dataset is None else None),
            "channels": cfg["dataset_info"]["channels"], "test_fraction": cfg.get("test_fraction")}
    if own and cfg.get("dataset") != dataset:
        keys = ("channels",)  # another folder is converted with the resize and split given
    differ = [k for k in keys if runs[k] is not None and getattr(args, k, None) not in (None, runs[k])]
    if not differ:
        return
    why = ("the run's settings are used" if own or dataset in (None, cfg.get("dataset")) else
           f"they only convert an own image folder, and {dataset} is a converted dataset, read as it is")
    print(f"warning: {', '.join(f'--{k} {getattr(args, k)}' for k in differ)} {'is' if len(differ) == 1 else 'are'} "
          f"not what the run {run} was trained with ({', '.join(f'--{k} {runs[k]}' for k in differ)}); {why}",
          file=sys.stderr)


def warn_untested_classes(test: input_ops.Split, class_names: list[str], dataset: str) -> None:
    """One warning naming the classes of which the test split holds no image (their accuracy: n/a)."""
    counts = np.bincount(test.labels[test.labels >= 0], minlength=len(class_names))
    empty = [n for n, k in zip(class_names, counts) if k == 0]
    if empty:
        listed = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
        print(f"warning: the test split of {dataset} holds no images of {listed}, so their accuracy is n/a "
              "(null in --json)", file=sys.stderr)


def evaluate(args: argparse.Namespace) -> list[dict]:
    """Evaluate the asked checkpoint(s) on the dataset's test split; print and return the reports."""
    run, ckpts = find_run(args.checkpoint)
    cfg = config.read_run_config(run)
    check_against_config(args, cfg, run)
    warn_unused_flags(args, cfg, run, args.dataset)
    path, info = config.resolve_dataset(trained_preprocessing(args, cfg))
    trained = cfg["dataset_info"]
    if (info.height, info.width, info.channels, info.num_class) != (
            trained["height"], trained["width"], trained["channels"], trained["num_class"]):
        raise UserError(f"dataset {args.dataset} is {info.height}x{info.width}x{info.channels} with "
                        f"{info.num_class} classes but the run {run} was trained on "
                        f"{trained['height']}x{trained['width']}x{trained['channels']} with {trained['num_class']}")
    if trained.get("class_names", info.class_names) != info.class_names:
        def names(n):
            return ", ".join(n[:5]) + (", ..." if len(n) > 5 else "")
        print(f"warning: the classes of {args.dataset} ({names(info.class_names)}) are not those the run {run} was "
              f"trained on ({names(trained['class_names'])}), so the accuracy counts D's k-th class as the dataset's "
              "k-th", file=sys.stderr)
    if "files" in trained and trained["files"] != config.dataset_record(info).get("files"):
        print(f"warning: the image folder of {args.dataset} has changed since the run {run} was trained, so its "
              "test split may now hold images the run trained on", file=sys.stderr)
    test = input_ops.load_split(path, "test", args.in_memory, args.memory_budget_gb, info)
    warn_untested_classes(test, info.class_names, args.dataset)
    reports = []
    D, G = build_models(cfg, args.mixed_precision)  # built once; each checkpoint restored into it
    batch = eval_batch(args.batch_size, info.shape)
    mirror, train = tta_classes(args, cfg), functools.cache(lambda: prior_split(args, cfg, run))
    for ckpt, step in _restored(D, G, run, ckpts, args):
        offsets = prior_of(args, cfg, run, D, ckpt, step, batch, train)
        cm = confusion_of(D, test, batch, info.num_class, mirror, offsets)
        r = report(cm, info.class_names, ckpt, step, mirror, offsets, args.mixed_precision)
        name = Path(ckpt).name + ("" if cfg.get("dataset") == args.dataset else f"_{args.dataset}")
        _save_image(r, "confusion_png", config.run_image(run, "confusion", name), confusion_image(cm, info.class_names))
        if args.samples > 0 and cfg.get("supervised_only") is False:
            _save_image(r, "samples_png", config.run_image(run, "samples", Path(ckpt).name),
                        image_grid(generate(G, cfg, args.samples)),
                        "; pass --samples 0 to skip the sample grid")
        print(json.dumps(r) if args.json else format_report(r) + "\n")
        reports.append(r)
    return reports


def _save_image(r: dict, key: str, path: Path, image: np.ndarray | None, hint: str = "") -> None:
    """Write an image of the report `r` (None: none) into the run dir and name it in r[key]; a run dir one may read
    but not write only warns, and the accuracy is still reported."""
    if image is None:
        return
    try:
        save_png(image, path)
        r[key] = str(path)
    except OSError as e:
        print(f"warning: cannot write {path} ({e.strerror or e}){hint}", file=sys.stderr)


def _restored(D, G, run: Path, ckpts: list[str], args: argparse.Namespace):
    """(checkpoint, step) for each checkpoint to evaluate, restored into D and G: the newest readable one, or
    with --all every one (an unreadable one is skipped with a warning)."""
    if not args.all:
        yield restore_newest(D, G, run, ckpts, args.weights)
        return
    skipped = 0
    for ckpt in ckpts:
        try:
            yield ckpt, restore_into(D, G, run, ckpt, args.weights)
        except UnreadableCheckpoint as e:
            if len(ckpts) == 1:
                raise unreadable_one(run, e) from None
            print(f"warning: {e}; skipped", file=sys.stderr)
            skipped += 1
    if skipped == len(ckpts):
        raise none_readable(run, len(ckpts))


def generate(G: tf.keras.Model, cfg: dict, n: int) -> np.ndarray:
    """n generated images in [-1, 1] from the run's fixed evaluation noise."""
    z = model.grid_noise(cfg["seed"], cfg["z_dim"], n)
    return G(z, training=False).numpy()


# ---------------------------------------------------------------- using the classifier: predict, export, samples

SHOW_BAD = 20  # unreadable files listed by name on stderr


def job_of(args: argparse.Namespace) -> str:
    """What the flags ask for: predict, export, samples (no dataset needed) or evaluate (needs --dataset)."""
    job = ("predict" if args.predict else "export" if args.export else "samples"
           if args.samples_only or (args.dataset is None and getattr(args, "samples_given", False)) else "evaluate")
    if job == "evaluate" and args.dataset is None:
        raise UserError("--dataset is required to evaluate (e.g. --dataset fashion_mnist); to use the classifier "
                        "without one pass --predict PATH, --export DIR or --samples N --output grid.png")
    if job in ("evaluate", "export") and args.output:
        raise UserError(f"--output is for --predict (the CSV) or --samples alone (the PNG), not to {job}; drop it")
    if args.output == "-" and job != "predict":
        raise UserError("--output - (stdout) is for --predict's CSV; name the PNG file to write, e.g. --output "
                        "grid.png")
    if args.output and Path(args.output).is_dir():
        made = "predictions.csv" if job == "predict" else "samples.png"
        raise UserError(f"--output {args.output} is a folder; name the file to write, e.g. "
                        f"{Path(args.output) / made}")
    if job != "evaluate" and args.json:
        made = {"predict": "CSV rows to --output or stdout", "export": "a SavedModel", "samples": "a PNG grid"}[job]
        raise UserError(f"--json prints evaluation reports, and --{job} makes none (it writes {made}); drop --json")
    if job != "evaluate" and args.all:
        raise UserError(f"--all evaluates every checkpoint; --{job} uses one: drop --all (a run dir means its "
                        "latest checkpoint) or pass a checkpoint path")
    return job


def restore_latest(args: argparse.Namespace):
    """(run dir, cfg, checkpoint path, D, G, step) for --checkpoint, checked against the flags."""
    run, ckpts = find_run(args.checkpoint)
    cfg = config.read_run_config(run)
    check_against_config(args, cfg, run)
    D, G = build_models(cfg, args.mixed_precision)
    ckpt, step = restore_newest(D, G, run, ckpts, args.weights)
    return run, cfg, ckpt, D, G, step


def image_shape(cfg: dict) -> tuple[int, int, int]:
    """(height, width, channels) the run was trained on."""
    info = cfg["dataset_info"]
    return info["height"], info["width"], info["channels"]


def probabilities_fn(D: tf.keras.Model, shape: tuple[int, int, int], mirror: tuple[int, ...] = (),
                     offsets: np.ndarray | None = None) -> Callable[[tf.Tensor], tf.Tensor]:
    """A tf.function: uint8 images [N,H,W,C] -> D's class probabilities [N, num_class] (scaled as in training;
    `mirror`: the classes --tta mirrors; `offsets`: --prior's, prior_of)."""
    shift = None if offsets is None else tf.constant(offsets, tf.float32)

    def of(x):
        return model.class_probabilities(D, input_ops.scale(x), mirror, shift)

    @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.uint8, name="images")])
    def probabilities(images):
        # A SavedModel's signature checks only the dtype: a batch of another shape would abort the process in a
        # convolution, and an empty one fail in it, so the shape is checked (InvalidArgumentError) and an empty
        # batch gets empty probabilities.
        images = tf.ensure_shape(images, [None, *shape])
        return tf.cond(tf.shape(images)[0] > 0, lambda: of(images), lambda: of(tf.zeros([1, *shape], tf.uint8))[:0])
    return probabilities


def prior_split(args: argparse.Namespace, cfg: dict, run: Path) -> input_ops.Split:
    """The training split of the run's dataset (as converted for it: never converted here), checked against the
    run: what --prior labeled fits its offsets on when the trainer saved none with a checkpoint."""
    name, trained = str(cfg.get("dataset") or ""), cfg["dataset_info"]
    own = name not in datasets.SOURCES and folder.is_folder_dataset(name, args.data_dir)
    path = folder.converted_path(name, args.data_dir, args.dataset_dir) if own else fmt.dataset_path(
        args.dataset_dir, name)
    why = "--prior labeled fits D's class prior on the run's training images, but"
    fix = ("pass the --dataset_dir that holds it, or --prior none"
           + (" (or --weights ema, whose offsets the trainer saved)" if args.weights == "raw" else ""))
    if not name or not path.exists():
        raise UserError(f"{why} dataset {name!r} is not at {path}; {fix}")
    shape = (trained["height"], trained["width"], trained["channels"], trained["num_class"])

    def fits(info: fmt.DatasetInfo) -> bool:
        return (info.height, info.width, info.channels, info.num_class) == shape and (
            info.class_names == trained.get("class_names", info.class_names))

    def same_rows(info: fmt.DatasetInfo) -> bool:  # the run's conversion: its files, resize and split, row by row
        return fits(info) and info.extra.get("layout") == trained.get("files") and (
            info.extra.get("resize") == cfg.get("resize", info.extra.get("resize")))
    info = fmt.read_info(path)
    if own and not same_rows(info):  # converted otherwise since: the run's own conversion, if kept, else this one
        path, info = next(((p, i) for p, i in folder.kept_conversions(path) if same_rows(i)), (path, info))
    if not fits(info):
        def classes(names, n):
            return f"{n} classes ({', '.join(names)})" if names else f"{n} classes"
        held = f"{info.height}x{info.width}x{info.channels} images of {classes(info.class_names, info.num_class)}"
        raise UserError(f"{why} {path} holds {held} and the run {run} was trained on {shape[0]}x{shape[1]}x{shape[2]} "
                        f"images of {classes(trained.get('class_names'), shape[3])}; {fix}")
    return input_ops.load_split(path, "train", args.in_memory, args.memory_budget_gb, info)


def prior_of(args: argparse.Namespace, cfg: dict, run: Path, D: tf.keras.Model, ckpt: str, step: int, batch: int,
             train: Callable[[], input_ops.Split] | None = None) -> np.ndarray | None:
    """--prior's offsets for D restored from `ckpt` of `step` (None: --prior none, or the run's own before the
    flag): those the trainer saved with the checkpoint for its EMA weights, else fitted on `train()` (default:
    prior_split), the run's training split."""
    if (args.prior or config.recorded(cfg, "prior")) == "none":
        return None
    num_class = cfg["dataset_info"]["num_class"]
    saved = read_prior_file(ckpt, step, num_class) if args.weights == "ema" else None
    if saved is not None:
        return saved
    return prior_offsets_of(D, (train or (lambda: prior_split(args, cfg, run)))(), batch, num_class)


def tta_classes(args: argparse.Namespace, cfg: dict) -> tuple[int, ...]:
    """The classes --tta (without it: the run's own, none before the flag) mirrors for the run of `cfg`."""
    return config.mirror_classes(args.tta or config.recorded(cfg, "tta"), config.recorded(cfg, "flip_classes"))


def list_images(path: Path) -> list[str]:
    """`path` itself if a file, else every file under the folder (recursive, sorted) that a folder's conversion
    would read: hidden files, README/LICENSE and text-like files (.txt, .csv, .json, ...) are skipped."""
    if path.is_file():
        return [str(path)]
    if not path.is_dir():
        raise UserError(f"--predict {path} does not exist; give an image file or a folder of images")
    found = [str(path) + rel for rel, _, _ in folder.walk(path, "")]
    if not found:
        raise UserError(f"--predict folder {path} holds no image files (hidden, README and text-like files are "
                        "ignored); put images in it")
    return found


def classify_files(files: list[str], shape: tuple[int, int, int], resize: str, batch: int, workers: int,
                   load: Callable[[], Callable]) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """(readable files, their probabilities, [(bad file, reason)]); decoding starts before `load()` builds D."""
    chunk = max(1, min(batch, -(-len(files) // (4 * workers))))
    chunks = [files[i:i + chunk] for i in range(0, len(files), chunk)]
    pool = folder.process_pool(workers, len(files))
    kept: list[str] = []
    probs: list[np.ndarray] = []
    bad: list[tuple[str, str]] = []
    try:
        decoded = folder.ordered(functools.partial(folder.decode_chunk, "", shape=shape, resize=resize), chunks, pool,
                                 2 * workers)
        probabilities = load()
        with tqdm(total=len(files), unit="img", desc="classifying") as bar:  # on stderr, as a folder's conversion
            for names, (images, ok, why) in zip(chunks, decoded):
                kept += [names[i] for i in ok]
                bad += why
                if ok:
                    probs.append(probabilities(images).numpy())
                bar.update(len(names))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return kept, np.concatenate(probs) if probs else np.zeros((0, 0), np.float32), bad


def report_bad(bad: list[tuple[str, str]]) -> None:
    """List unreadable files on stderr, with their count."""
    if not bad:
        return
    print(f"warning: skipped {len(bad)} file(s) that could not be read as images:", file=sys.stderr)
    for f, why in bad[:SHOW_BAD]:
        print(f"  {f} ({why})", file=sys.stderr)
    if len(bad) > SHOW_BAD:
        print(f"  ... and {len(bad) - SHOW_BAD} more", file=sys.stderr)


def predictions_csv(files: list[str], probs: np.ndarray, class_names: list[str]) -> str:
    """CSV text: path, class, confidence, top3 ("name:prob;name:prob;name:prob")."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "class", "confidence", "top3"])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :3]
    for f, p, t in zip(files, probs, top):
        w.writerow([f, class_names[t[0]], f"{p[t[0]]:.6f}", ";".join(f"{class_names[k]}:{p[k]:.6f}" for k in t)])
    return buf.getvalue()


@contextlib.contextmanager
def atomic_target(path: Path):
    """A temporary sibling of `path` to write in the block: renamed to `path` when the block ends, removed if the
    block or the rename fails, so neither a stop nor an error leaves a cut file or a stray one behind. The sibling is
    hidden and named by this process, never a file of the user's (such as `path`.tmp). A symlink is written through
    (its target replaced); a device or pipe such as /dev/null or /dev/stdout is written to as it is."""
    special = os.path.abspath(path).startswith(("/dev/", "/proc/"))  # /dev/stdout: maybe a redirect to a file
    if special or (path.exists() and not path.is_file() and not path.is_dir()):  # a device, pipe or socket
        yield path
        return
    path = Path(os.path.realpath(path)) if path.is_symlink() else path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    """Write a text file via atomic_target. File names that are not UTF-8 (their undecodable bytes held as
    surrogates, as Python lists them) are written back as the bytes they were."""
    with atomic_target(path) as tmp:
        tmp.write_text(text, errors="surrogateescape")


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (write_atomic), keys sorted: the run records (config.json, result.json, ...)."""
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def predict(args: argparse.Namespace) -> dict:
    """Classify --predict (a file or folder) and write the CSV to --output or stdout."""
    start = time.perf_counter()
    files = list_images(Path(args.predict))
    output = None if args.output in (None, "-") else Path(args.output)
    if output is not None and output.is_file() and any(_same_file(output, f) for f in files):
        raise UserError(f"--output {output} is one of the images to classify; write the CSV elsewhere")
    run, _ = find_run(args.checkpoint)
    cfg = config.read_run_config(run)
    warn_unused_flags(args, cfg, run, None, ("resize", "channels"))
    shape, ckpt, step = image_shape(cfg), None, None

    def load():
        nonlocal ckpt, step
        _, _, ckpt, D, _, step = restore_latest(args)
        offsets = prior_of(args, cfg, run, D, ckpt, step, eval_batch(args.batch_size, shape))
        return probabilities_fn(D, shape, tta_classes(args, cfg), offsets)

    kept, probs, bad = classify_files(files, shape, cfg.get("resize", folder.DEFAULT_RESIZE),
                                      eval_batch(args.batch_size, shape), args.workers or folder.cpus(), load)
    report_bad(bad)
    if not kept:
        raise UserError(f"none of the {len(files)} file(s) in --predict {args.predict} is a readable image")
    text = predictions_csv(kept, probs, cfg["dataset_info"]["class_names"])
    if output is not None:
        try:
            write_atomic(output, text)
        except OSError as e:
            raise UserError(f"cannot write {output} ({e.strerror or e}); choose another --output") from None
    else:
        sys.stdout.write(text)
        sys.stdout.flush()  # here, so that a reader gone (BrokenPipeError) is met inside exits_cleanly
    seconds = time.perf_counter() - start
    print(f"classified {len(kept)} image(s) in {seconds:.2f} s with {ckpt} (step {step})"
          + (f" -> {output}" if output is not None else ""), file=sys.stderr)
    return {"classified": len(kept), "skipped": [f for f, _ in bad], "output": args.output, "seconds": seconds}


def _same_file(a: Path, b: str) -> bool:
    """Whether `a` and the file `b` are one file (False if either is gone)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class Classifier(tf.Module):
    """What --export saves: D's weights and two signatures. serving_default: uint8 images -> per image (all outputs
    batched, as TensorFlow Serving's row format requires) the class probabilities, the class index and its name;
    class_names: no input -> the class names in the probabilities' order."""

    def __init__(self, D: tf.keras.Model, shape: tuple[int, int, int], class_names: list[str],
                 mirror: tuple[int, ...] = (), offsets: np.ndarray | None = None):
        super().__init__(name="classifier")
        self.weights = [w.value for w in D.weights]  # the tf.Variables the traced graph reads
        probabilities = probabilities_fn(D, shape, mirror, offsets)

        names = tf.constant(class_names, tf.string)

        @tf.function(input_signature=[tf.TensorSpec([None, *shape], tf.uint8, name="images")])
        def serve(images):
            p = probabilities(images)
            k = tf.argmax(p, axis=-1, output_type=tf.int64)
            return {"probabilities": p, "classes": k, "class_name": tf.gather(names, k)}

        @tf.function(input_signature=[])
        def names_of():
            return {"class_names": names}
        self.serve, self.class_names = serve, names_of


def run_in(path: Path) -> Path | None:
    """The run dir that an existing `path` is, is a part of (other than an earlier export in it), or holds; None
    if none."""
    if path.is_dir() and (path / "config.json").exists():
        return path
    if (path.parent / "config.json").exists() and not (path / "saved_model.pb").exists():
        return path.parent
    if path.is_dir():
        return next((p.parent for p in path.rglob("config.json") if (p.parent / "ckpt").is_dir()), None)
    return None


def export(args: argparse.Namespace) -> dict:
    """Write the classifier (EMA weights by default) as a SavedModel to --export: saved beside it under a name of
    this process's own (hidden, with its pid: never a name of the user's, such as DIR.old), then swapped in."""
    shown = Path(args.export)
    out = Path(os.path.abspath(shown))  # "." and "x/.." name no folder to put a sibling beside
    _recover_export(out)
    run = out.exists() and (not out.is_dir() or any(out.iterdir())) and run_in(out)
    if run:  # --force would replace it, checkpoints and all
        raise UserError(f"--export {shown} holds the run {run} or a part of it; the SavedModel goes to a folder "
                        f"of its own, e.g. --export {run / 'export'}")
    if out.exists() and not args.force and not out.is_dir():
        raise UserError(f"--export {shown} is a file, not a folder; pass --force to replace it, or choose "
                        "another DIR")
    empty = out.is_dir() and not out.is_symlink() and not any(out.iterdir())  # filled in place: may be the cwd
    if out.is_dir() and not empty:
        if not (out / "saved_model.pb").exists():  # a folder of the user's: --force is not for that
            raise UserError(f"--export {shown} is a folder that holds files and no SavedModel; --force "
                            "replaces only an earlier export: choose another DIR")
        if not args.force:
            raise UserError(f"--export {shown} already holds a SavedModel; pass --force to replace it, "
                            "or choose another DIR")
        if Path.cwd().resolve().is_relative_to(out.resolve()):  # replacing it would delete the shell's folder
            raise UserError(f"--export {shown} holds the current folder, which replacing it would delete; run the "
                            "command from another folder")
    run, cfg, ckpt, D, _, step = restore_latest(args)
    shape, mirror = image_shape(cfg), tta_classes(args, cfg)
    offsets = prior_of(args, cfg, run, D, ckpt, step, eval_batch(args.batch_size, shape))
    module = Classifier(D, shape, cfg["dataset_info"]["class_names"], mirror, offsets)
    tmp, old = (out.with_name(f".{out.name}.{os.getpid()}.{part}") for part in ("tmp", "old"))
    try:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve,
                                                          "class_names": module.class_names})
        if empty:
            for p in tmp.iterdir():
                os.replace(p, out / p.name)
            tmp.rmdir()
        else:
            if out.exists() or out.is_symlink():
                out.rename(old)
            tmp.rename(out)
    except BaseException as e:
        _remove(tmp)
        if empty:
            for p in out.iterdir():
                _remove(p)
        if (old.exists() or old.is_symlink()) and not (out.exists() or out.is_symlink()):  # the earlier one back
            with contextlib.suppress(OSError):
                old.rename(out)
        if not isinstance(e, (OSError, tf.errors.OpError)):  # TensorFlow's file errors are not OSErrors
            raise
        why = e.strerror if isinstance(e, OSError) else (e.message.splitlines() or [""])[0]
        raise UserError(f"cannot write --export {shown} ({why or e}); choose a writable DIR") from None
    _remove(old)
    print(f"exported {ckpt} (step {step}, {args.weights} weights) to {shown}", file=sys.stderr)
    return {"export": str(shown), "checkpoint": ckpt, "step": step}


def _remove(path: Path) -> None:
    """Remove a file, link or folder tree if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def _recover_export(out: Path) -> None:
    """What an export killed before it ended left beside `out`: its temporary folder goes, and an earlier export
    it had moved aside (with `out` missing) comes back. Names of live processes (an export running) are left."""
    for p in sorted(out.parent.glob(f".{glob.escape(out.name)}.*.*")):
        pid, part = p.name[len(out.name) + 2:].rpartition(".")[::2]
        if part not in ("tmp", "old") or not pid.isdigit() or _alive(int(pid)):
            continue
        if part == "tmp":
            _remove(p)
        elif not (out.exists() or out.is_symlink()):
            with contextlib.suppress(OSError):
                p.rename(out)
                print(f"note: {out}, moved aside by an export that was stopped, is back", file=sys.stderr)
        else:  # the swap had ended: the earlier export, replaced
            _remove(p)


def _alive(pid: int) -> bool:
    """Whether a process of this pid runs (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's
        return True
    return True


def write_samples(args: argparse.Namespace) -> dict:
    """Write --samples generated images as one grid PNG (to --output, or next to the checkpoint)."""
    if args.samples <= 0:
        raise UserError(f"--samples must be a positive number of images to write a grid, got {args.samples}")
    run, cfg, ckpt, _, G, step = restore_latest(args)
    if cfg.get("supervised_only"):
        raise UserError(f"the run {run} was trained with --supervised_only: its generator was never trained")
    path = Path(args.output) if args.output else config.run_image(run, "samples", Path(ckpt).name)
    try:
        save_png(image_grid(generate(G, cfg, args.samples)), path)
    except OSError as e:
        raise UserError(f"cannot write {path} ({e.strerror or e}); choose another --output") from None
    print(f"wrote {args.samples} samples of {ckpt} (step {step}) to {path}", file=sys.stderr)
    return {"samples_png": str(path), "checkpoint": ckpt, "step": step}


@exits_cleanly
def main(argv: list[str] | None = None) -> list[dict] | dict:
    """CLI entry point: evaluate (a list of reports), or predict/export/samples (one dict)."""
    args = parse_args(argv)
    job = job_of(args)
    return {"predict": predict, "export": export, "samples": write_samples, "evaluate": evaluate}[job](args)


if __name__ == "__main__":
    main()
    sys.exit(0)

"""Train a semi-supervised GAN: the discriminator learns n classes from few labels and real-vs-fake
from every image; at the end it is the classifier.

    python trainer.py --dataset fashion_mnist --num_labeled 100
    python trainer.py --dataset MY_SET --input_height 32 --input_width 32 --num_class 5

A run dir holds config.json, the labelled indices, checkpoints, TensorBoard events and sample
grids. Re-running the same command resumes the run; Ctrl-C or SIGTERM saves a checkpoint first.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import itertools
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from errors import import_tensorflow_quietly

import_tensorflow_quietly()  # before TensorFlow's first import: no C++ start-up lines on stderr

import numpy as np
import tensorflow as tf
from tqdm import tqdm

import config
import datasets
import evaler
import input_ops
import model
import ops
from datasets import folder
from errors import (
    HelpFormatter,
    UserError,
    exits_cleanly,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    rate,
)

# How G's update meets D's (--g_update): after it, with D's passes of its own, or from D's pass, before its update.
G_UPDATES = ("alternating", "joint")

EPILOG = """examples:
  python trainer.py --dataset fashion_mnist --num_labeled 100 --max_steps 6000
  python trainer.py --dataset fashion_mnist --num_labeled 100 --supervised_only
  python trainer.py --dataset MY_SET --input_height 32 --input_width 32 --num_class 5
  tensorboard --logdir train_dir
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Trainer flags (data and model flags are shared with evaler.py via config.py)."""
    args = build_parser().parse_args(argv)
    args.num_labeled = _parse_num_labeled(args.num_labeled)
    args.g_arch = args.g_arch or model.DEFAULT_GENERATOR[args.arch]  # recorded explicitly in config.json
    args.d_width = args.d_width or model.DISCRIMINATOR_WIDTH[args.arch]  # so is D's width (config.LEGACY_D_WIDTH)
    return args


def build_parser() -> argparse.ArgumentParser:
    """The trainer's argparse parser."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                formatter_class=HelpFormatter)
    config.add_data_flags(p)
    config.add_model_flags(p)
    config.add_eval_flags(p)
    g = p.add_argument_group("semi-supervised protocol")
    g.add_argument("--num_labeled", default="100",
                   help="labelled training images, balanced over classes, or 'all' (fully supervised)")
    g.add_argument("--supervised_only", action="store_true",
                   help="train the same discriminator on the labelled subset alone: the baseline")
    g.add_argument("--seed", type=non_negative_int, default=0,
                   help="seeds the labelled subset, data order, weights and noise")
    g = p.add_argument_group("optimisation")
    g.add_argument("--max_steps", type=non_negative_int, default=None,
                   help="training steps (default: from --epochs)")
    g.add_argument("--epochs", type=positive_float, default=10,
                   help="epochs of the unlabelled set, if --max_steps is unset")
    g.add_argument("--time_budget_min", type=positive_float, default=None,
                   help="stop (and save) after this many minutes")
    g.add_argument("--lr", type=positive_float, default=0.003, help="Adam learning rate of D and G")
    g.add_argument("--beta1", type=rate, default=0.5, help="Adam beta1 (Salimans et al.: 0.5)")
    g.add_argument("--lr_decay_start", type=fraction, default=0.5,
                   help="fraction of max_steps after which the LR decays linearly to 0 (1: no decay)")
    g.add_argument("--g_loss", choices=("fm", "gan"), default="fm", help="feature matching or non-saturating GAN loss")
    g.add_argument("--fm_features", choices=model.FEATURES, default="noisy",
                   help="D's features that feature matching and the pull-away term compare: its last hidden layer "
                        "after the Gaussian noise D adds to it in training, or before it (Salimans et al.; faster "
                        "early, level or behind at the end); the conv arch has no noise there")
    g.add_argument("--g_steps", type=non_negative_int, default=1,
                   help="generator updates per discriminator update")
    g.add_argument("--g_update", choices=G_UPDATES, default="joint",
                   help="joint: G's (first) update takes its loss from D's own pass, before D's update (the same D "
                        "and noise on both sides of feature matching), so G needs no passes of D of its own: a "
                        "quarter less time per step at the same accuracy (docs/experiments.md, stop 37); "
                        "alternating: G's update passes D over the unlabelled and freshly generated images again, "
                        "after D's update (the default until stop 37)")
    g.add_argument("--label_smoothing", type=rate, default=0.0,
                   help="one-sided smoothing of D's real/fake loss: real target 1 - s")
    g.add_argument("--sup_smoothing", type=rate, default=0.0,
                   help="label smoothing of the labelled images' class targets: 1 - s + s/n on the true class")
    g.add_argument("--sup_mixup", type=non_negative_float, default=0.0,
                   help="mixup of the labelled images (Zhang et al.): each blended with another of its batch, "
                        "its own weight max(l, 1 - l), l ~ Beta(a, a), and the labels blended alike; a = this "
                        "value (0: off; it lifts the supervised-only baseline, not the SSGAN: docs/experiments.md). "
                        "train/acc_lab then scores the blends against each one's own label")
    g.add_argument("--unsup_weight", type=non_negative_float, default=1.0, help="weight of D's real/fake loss")
    g.add_argument("--entropy_weight", type=non_negative_float, default=0.0,
                   help="entropy minimisation on unlabelled (Dai et al.)")
    g.add_argument("--balance_weight", type=non_negative_float, default=0.0,
                   help="weight of KL(D's mean class posterior on each replica's unlabelled batch || uniform): "
                        "spreads its predictions evenly over the classes (CatGAN's marginal entropy); for balanced "
                        "data only")
    g.add_argument("--fake_entropy_weight", type=non_negative_float, default=0.0,
                   help="weight of KL(D's class posterior on generated images || uniform): D is pushed to place "
                        "generated images between its classes (CatGAN's term on fakes; 0: off; it learns faster "
                        "early and ends behind at 1000 labels: docs/experiments.md)")
    g.add_argument("--consistency_weight", type=non_negative_float, default=0.0,
                   help="weight of the squared distance between D's class posteriors on two passes over the "
                        "unlabelled batch, each with its own noise and --augment diff shift (the Pi-model of Laine "
                        "& Aila, without its ramp-up); D's pass then takes the unlabelled batch twice, about a third "
                        "more work per D update. It needs D's noise or dropout: without them the passes agree")
    g.add_argument("--pt_weight", type=non_negative_float, default=0.0,
                   help="pull-away term on generated features (Dai et al.)")
    g.add_argument("--vat_weight", type=non_negative_float, default=0.0,
                   help="virtual adversarial training (Miyato et al.) of D's class posterior on unlabelled images")
    g.add_argument("--vat_eps", type=non_negative_float, default=3.0,
                   help="L2 norm of the virtual adversarial perturbation, on images scaled to [-1, 1]")
    g.add_argument("--data_init", action=argparse.BooleanOptionalAction, default=False,
                   help="set D's weight-norm scales and biases from a batch of real images at step 0 (Salimans et al.)")
    g.add_argument("--d_input_noise", type=non_negative_float, default=None,
                   help="std of the Gaussian noise D adds to its input images in training (images in [-1, 1]; "
                        f"default per arch: {', '.join(f'{a} {v:g}' for a, v in model.INPUT_NOISE.items())})")
    g.add_argument("--d_hidden_noise", type=non_negative_float, default=None,
                   help="std of the Gaussian noise the mlp and lenet Ds add after each hidden layer in training "
                        f"(default {model.HIDDEN_NOISE:g}, Salimans et al.'s MNIST D; the conv D has dropout)")
    g.add_argument("--d_input_dropout", type=rate, default=0.0,
                   help="fraction of input pixels D drops in training (Salimans et al.'s CIFAR-10 net: 0.2; it "
                        "hurts on images with a constant background such as Fashion-MNIST)")
    g.add_argument("--ema_decay", type=rate, default=0.999, help="Polyak/EMA decay of D's weights used for eval")
    g.add_argument("--swa_start", type=fraction, default=1.0,
                   help="fraction of max_steps from which the weights used for eval are the uniform average of D's "
                        "weights since then (SWA, Izmailov et al. 2018) instead of the EMA; pair with "
                        "--lr_decay_start 1 (1: the EMA throughout)")
    g.add_argument("--nan_policy", choices=("stop", "restore"), default="stop",
                   help="on a NaN/Inf loss: stop (keeping the last good checkpoint), or roll back and halve the LR")
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic ops (tf.config.experimental.enable_op_determinism): a resumed run ends "
                        "bit-identical to an uninterrupted one")
    g.add_argument("--augment", nargs="?", const="all", default="none", choices=("none", "labeled", "all", "diff"),
                   help="random 2-pixel translations of the labelled real images, or of all real images (the flag "
                        "alone: all), in the input pipeline; diff: of every image D trains on, the generated ones "
                        "too, inside the train step, so G's gradient passes through them (DiffAugment)")
    g.add_argument("--flip_classes", default="auto", metavar="auto|none|all|CLASSES",
                   help="mirror the labelled images of these classes left-right at random: a comma-separated list "
                        "of class names or indices, for classes whose mirror image is still that class and looks "
                        "like the data. auto: the dataset's list (fashion_mnist: all but the three shoe classes, "
                        "which all point left; none for digits, cifar10 and own folders)")
    g.add_argument("--flip_unlabeled", choices=("none", "predicted"), default="predicted",
                   help="predicted: mirror each unlabelled image with probability 1/2 if D's EMA copy puts it in a "
                        "--flip_classes class (its label is never read), before D and feature matching see it; "
                        "one more forward pass of D per step. Nothing to do without --flip_classes")
    config.add_precision_flag(g)
    g.add_argument("--jit", action=argparse.BooleanOptionalAction, default=False,
                   help="XLA-compile the train step (off: XLA's CPU random numbers make noise/dropout nets slower)")
    g = p.add_argument_group("devices (tf.distribute)")
    g.add_argument("--strategy", choices=("default", "mirrored", "multi_worker"), default="default",
                   help="one device; all local GPUs (or --cpu_devices) mirrored; several machines (TF_CONFIG)")
    g.add_argument("--cpu_devices", type=positive_int, default=1,
                   help="split the CPU into N logical devices (to run --strategy mirrored without GPUs)")
    g.add_argument("--collective_timeout", type=non_negative_float, default=120.0,
                   help="multi_worker: seconds before a lost peer makes the run stop with an error")
    g = p.add_argument_group("run dir, checkpoints and summaries")
    g.add_argument("--train_dir", default=None,
                   help="run dir (default: <runs_dir>/<dataset>-<head>-<arch>-<num_labeled>-<time>, or the "
                        "unfinished run of the same config there)")
    g.add_argument("--runs_dir", default="train_dir", help="parent of default run dirs")
    g.add_argument("--new_run", action="store_true", help="never resume an unfinished run by default")
    g.add_argument("--ckpt_every", type=positive_int, default=1000, help="checkpoint every N steps")
    g.add_argument("--keep", type=positive_int, default=3, help="checkpoints kept")
    g.add_argument("--eval_every", type=positive_int, default=1000, help="test accuracy every N steps")
    g.add_argument("--summary_every", type=positive_int, default=100, help="scalar summaries every N steps")
    g.add_argument("--steps_per_loop", type=positive_int, default=50,
                   help="training steps per compiled call (at most summary_every)")
    return p


FLAG_DEFAULTS = {a.dest: a.default for a in build_parser()._actions}


def _parse_num_labeled(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise UserError(f"--num_labeled must be a number or 'all', got {text!r}") from None


# ---------------------------------------------------------------- run dir


def choose_run_dir(args: argparse.Namespace, info) -> tuple[Path, dict]:
    """The run dir (a new one, or the one to resume) and the config record; writes nothing."""
    record = flags_record(args)
    record["dataset_info"] = config.dataset_record(info)
    run = Path(args.train_dir) if args.train_dir else _default_run_dir(args, record)
    if (run / "config.json").exists():
        if args.new_run and args.train_dir:
            raise UserError(f"--new_run starts a new default run dir, but --train_dir {run} holds a run; drop "
                            "--new_run to resume it, or choose a new --train_dir")
        old = config.read_run_config(run)
        diff = config_diff(old, record)
        if diff:
            given = ", ".join(_changed(k, old, record) for k in diff[:3])
            more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
            raise UserError(f"{run} was trained with {given}{more}; pass the same flags to resume it, or choose a "
                            "new --train_dir")
        change = dataset_change(old["dataset_info"], record["dataset_info"], seeds_of(old, record))
        if change:
            raise UserError(f"{run} was trained on {change}")
    elif run.exists() and not run.is_dir():
        raise UserError(f"--train_dir {run} is a file; choose a folder")
    elif run.is_dir() and any(not is_run_file(p.name) for p in run.iterdir()):
        raise UserError(f"--train_dir {run} holds other files and no run (no config.json); choose a new or empty "
                        "folder")
    return run, record


def _changed(flag: str, old: dict, record: dict) -> str:
    """How `flag` differs between a run's config.json `old` and this command's `record`, as messages say it (None:
    'all' for --num_labeled, else unset)."""
    def shown(value) -> str:
        if value is None:
            return "'all'" if flag == "num_labeled" else "unset"
        return repr(value)
    return f"--{flag} {shown(recorded_value(old, flag))}, not {shown(record.get(flag))}"


# What a run dir holds (write_run_dir, the checkpoint manager, the summaries, the sample grids, the final result; the
# evaler adds images): a folder with anything else is not taken for a run.
RUN_FILES = {"config.json", "labeled_indices.json", "ckpt", "logs", "samples", "result.json", "curves.json",
             "curves.png"}


def is_run_file(name: str) -> bool:
    """Whether a run dir may hold `name` (hidden names, e.g. the workers' checkpoint folders, included)."""
    name = name.removesuffix(".tmp")  # left by a crash during a write (evaler.atomic_target's are hidden as well)
    return name in RUN_FILES or name.startswith(".") or config.is_run_image(name)


def seeds_of(old: dict, record: dict) -> tuple:
    """The own folder conversion seeds of a run's config.json and of this command's record (None: unknown)."""
    return old.get("conversion_seed"), record.get("conversion_seed")


def dataset_change(old: dict, new: dict, seeds: tuple = (None, None)) -> str | None:
    """How the dataset a run was trained on (its config.json's dataset_info) differs from `new`, and the fix;
    None if it does not. `seeds`: the run's own folder conversion seed and the current conversion's, if known."""
    shape, now = (old["height"], old["width"], old["channels"]), (new["height"], new["width"], new["channels"])
    if shape != now:
        sizes = f"--input_height {shape[0]} --input_width {shape[1]}" + (
            f" --channels {shape[2]}" if shape[2] != now[2] else "")
        return (f"{'x'.join(map(str, shape))} images, not {'x'.join(map(str, now))}; pass {sizes} to resume it "
                "(an own image folder goes back to its conversion at that size, kept from before or made again), "
                "or choose a new --train_dir")
    if old["class_names"] != new["class_names"]:
        return (f"the classes {', '.join(old['class_names'])}, but the dataset now has "
                f"{', '.join(new['class_names'])}; restore them to resume it, or choose a new --train_dir")
    if "files" in old and old["files"] != new.get("files"):  # runs from before stop 32 did not record the files
        if None not in seeds and seeds[0] != seeds[1]:
            return (f"its image folder converted with --seed {seeds[0]}, not the current conversion's --seed "
                    f"{seeds[1]}; pass the run as --train_dir to resume it on its own conversion (kept from before "
                    "or made again), or choose a new --train_dir")
        return ("its image folder as it was, and the folder has changed since (images added, removed or renamed), "
                "so the run's labelled subset and test split would now be other images; restore the folder to "
                "resume the run, or choose a new --train_dir")
    return None


def check_resume_step(run: Path, max_steps: int, args: argparse.Namespace) -> None:
    """An unfinished run resumed with fewer steps than it has trained is an error: it would end there, unfinished.
    (A finished run, with result.json, reports its result again, evaluated again if --tta or --prior changed;
    --max_steps 0 builds the model.)"""
    latest = tf.train.latest_checkpoint(str(run / "ckpt"))
    step = int(latest.rsplit("-", 1)[1]) if latest else 0
    if step > max_steps > 0 and not (run / "result.json").exists():
        asked = (f"--max_steps {max_steps}" if args.max_steps is not None else
                 f"the {max_steps} steps of --epochs {args.epochs:g}")
        own = config.read_run_config(run).get("max_steps") if (run / "config.json").exists() else None
        fix = own if own and own >= step else step
        raise UserError(f"{run} is at step {step}, past {asked}; pass --max_steps {fix} or more to resume it, or "
                        "choose a new --train_dir")


def write_run_dir(run: Path, record: dict, lab_idx: np.ndarray, held: contextlib.ExitStack,
                  fresh: bool = False, named: bool = True) -> Path:
    """Create the run dir, take its lock (run_lock, into `held`) unless taken, write its config.json and labelled
    indices, and return it; an unwritable dir is a clear error. A `fresh` default run dir (not `named` by
    --train_dir) is made anew: if another run took its name since (two runs started in the same second), this one
    gets the name with -2, -3, ... appended."""
    try:
        if fresh and not named:
            names = itertools.chain([run], (run.with_name(f"{run.name}-{i}") for i in itertools.count(2)))
            run = next(name for name in names if _made(name))
        else:
            run.mkdir(parents=True, exist_ok=True)
        if fresh:  # a resumed run's was taken before its data was loaded
            held.enter_context(run_lock(run))
            if (run / "config.json").exists():
                raise UserError(f"another process started {run} meanwhile; run the command again to resume it "
                                "(with the flags it was started with), or choose another --train_dir")
        evaler.write_json(run / "config.json", record)
        if not (run / "labeled_indices.json").exists():
            evaler.write_json(run / "labeled_indices.json", lab_idx.tolist())
    except OSError as e:
        raise UserError(f"cannot write to run dir {run} ({e.strerror}); choose a writable --train_dir, "
                        "or free space") from None
    return run


def _made(folder: Path) -> bool:
    """Create `folder` if no one has: whether this call made it."""
    try:
        folder.mkdir(parents=True)
        return True
    except FileExistsError:
        return False


# Flags that may change between a run and its resumption, and flags that are not the run's.
RESUMABLE_KEYS = {"lr", "max_steps", "epochs", "time_budget_min", "ckpt_every", "keep", "eval_every", "summary_every",
                  "steps_per_loop", "in_memory", "memory_budget_gb", "jit", "nan_policy", "strategy", "cpu_devices",
                  "collective_timeout", "tta", "prior"}
RUN_ONLY_KEYS = {"train_dir", "runs_dir", "new_run", "dataset_dir", "data_dir"}


# Flag values written by older versions, and what they mean now.
LEGACY_VALUES = {"mixed_precision": {True: "float16", False: None}, "augment": {True: "all", False: "none"}}


def flags_record(args: argparse.Namespace) -> dict:
    """The flags config.json records: all but the run-only ones."""
    return {k: v for k, v in vars(args).items() if k not in RUN_ONLY_KEYS}


# Flags that trainer.py sets from others (resolve_derived): a difference in them follows from one in those.
DERIVED_KEYS = ("flip_unlabeled", "g_update")


# The size flags: what they asked for is compared as the images' shape (dataset_change), so a run started without
# them resumes with the flags of the size it was trained at, as that error advises.
SHAPE_KEYS = {"input_height", "input_width", "channels"}
# The conversion seed of an own folder (config.resolve_dataset) is compared as the rows it gives (dataset_change), and
# resume_preprocessing takes the run's: a run from before stop 44 has none.
CONVERSION_KEYS = {"conversion_seed"}


def config_diff(old: dict, record: dict, ignore=RESUMABLE_KEYS | SHAPE_KEYS | CONVERSION_KEYS) -> list[str]:
    """Flags that differ between a run's config.json and this command (those in `ignore` aside; the
    dataset and the size flags are compared by dataset_change), the ones trainer.py derives from others last.

    A flag missing from an older config.json counts as having had its default then (LEGACY_DEFAULTS) or
    now, so runs made before the flag existed still resume.
    """
    keys = sorted(set(old) | set(record), key=lambda k: (k in DERIVED_KEYS, k))
    return [k for k in keys if k not in ignore and k != "dataset_info" and recorded_value(old, k) != record.get(k)]


def recorded_value(old: dict, k: str):
    """The value of flag `k` a run was made with, from its config.json `old`, in today's terms."""
    v = config.recorded(old, k, FLAG_DEFAULTS.get(k))
    if k == "dataset" and isinstance(v, str):  # recorded with a trailing slash before stop 32
        v = v.rstrip("/") or v
    return LEGACY_VALUES.get(k, {}).get(v, v) if isinstance(v, bool) else v


def _default_run_dir(args: argparse.Namespace, record: dict) -> Path:
    labels = "all" if args.num_labeled is None else args.num_labeled
    mode = "sup" if args.supervised_only else args.head
    prefix = f"{args.dataset}-{mode}-{args.arch}-{labels}-"
    root = Path(args.runs_dir)
    passed_over = None  # the newest unfinished run of this dataset, arch and labels that differs, and how
    if not args.new_run and root.is_dir():
        for run in sorted(root.glob(prefix + "*"), reverse=True):
            if (run / "config.json").exists() and not (run / "result.json").exists():
                try:
                    old = config.read_run_config(run)
                except UserError:  # a damaged run dir is not resumed by default; naming it with --train_dir says why
                    continue
                diff = config_diff(old, record)
                change = dataset_change(old["dataset_info"], record["dataset_info"], seeds_of(old, record))
                if not diff and not change:
                    print(f"Resuming the unfinished run {run} (same flags); --new_run starts afresh.")
                    return run
                if passed_over is None:
                    how = f"with {_changed(diff[0], old, record)}" if diff else "on " + change.split(";")[0]
                    passed_over = (run, how)
    new = root / (prefix + time.strftime("%Y%m%d-%H%M%S"))
    if passed_over:
        print(f"Starting a new run: the unfinished run {passed_over[0]} was trained {passed_over[1]} "
              f"(pass --train_dir {passed_over[0]} with its flags to resume it).")
    return new


def flip_classes(spec: str, dataset: str, class_names: list[str]) -> list[int]:
    """--flip_classes as sorted class indices; a name or index the dataset lacks is a UserError."""
    if spec in ("none", "all"):
        return list(range(len(class_names))) if spec == "all" else []
    names = datasets.mirror_classes(dataset) if spec == "auto" else [s.strip() for s in spec.split(",") if s.strip()]
    indices = set()
    for name in names:
        if name in class_names:
            indices.add(class_names.index(name))
        elif name.isdigit() and int(name) < len(class_names):
            indices.add(int(name))
        else:
            raise UserError(f"--flip_classes: {name!r} is neither a class of {dataset} ({', '.join(class_names)}) "
                            f"nor a class index below {len(class_names)}; fix the list, or pass none")
    return sorted(indices)


def resolve_derived(args: argparse.Namespace, class_names: list[str]) -> list[int]:
    """Sets DERIVED_KEYS as config.json records them, and returns --flip_classes as class indices.

    args.flip_classes becomes their plain spelling ("0,2" or "none"), not "auto", whose meaning depends on the
    dataset (and may change). With no class to mirror, or no unlabelled images (--supervised_only),
    --flip_unlabeled does nothing and is recorded as none; with no G update (--supervised_only, --g_steps 0),
    --g_update is recorded as alternating; so such runs from before either flag resume.
    """
    flips = flip_classes(args.flip_classes, args.dataset, class_names)
    args.flip_classes = ",".join(map(str, flips)) or "none"
    if not flips or args.supervised_only:
        args.flip_unlabeled = "none"
    if args.supervised_only or not args.g_steps:
        args.g_update = "alternating"
    return flips


def labeled_indices(run: Path | None, labels: np.ndarray, args: argparse.Namespace, class_names: list[str]
                    ) -> np.ndarray:
    """The labelled subset: read from the run dir when resuming, else (or with no `run`) drawn (balanced, seeded)."""
    path = None if run is None else run / "labeled_indices.json"
    if path is None or not path.exists():
        return input_ops.select_labeled(labels, args.num_labeled, len(class_names), args.seed, class_names)
    try:
        idx = np.asarray(json.loads(path.read_text()), dtype=np.int64)
    except (ValueError, TypeError):
        idx = np.zeros([0, 0], np.int64)
    if idx.ndim != 1 or not len(idx) or idx.min() < 0 or idx.max() >= len(labels) or (labels[idx] < 0).any():
        raise UserError(f"{path} is damaged or does not fit the dataset's {len(labels)} training images; "
                        "restore it from a copy, or choose a new --train_dir")
    return idx


# ---------------------------------------------------------------- signals


class StopFlag:
    """SIGINT/SIGTERM set a flag that the loop checks between compiled calls; a second Ctrl-C aborts."""

    def __init__(self):
        self.signum = None
        self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def __bool__(self) -> bool:
        return self.signum is not None


# ---------------------------------------------------------------- the model state and one step


class GAN(tf.Module):
    """Everything a checkpoint holds: both networks, D's EMA copy, optimisers, step and noise RNG."""

    def __init__(self, args: argparse.Namespace, shape: tuple[int, int, int], num_class: int):
        super().__init__(name="gan")
        self.num_class = num_class
        keras_seed(args.seed)
        with model.mixed_precision(args.mixed_precision):
            self.D, self.D_ema = (config.discriminator_of(vars(args), shape, num_class) for _ in range(2))
            self.G = config.generator_of(vars(args), shape)
        for e, v in zip(self.D_ema.weights, self.D.weights):
            e.assign(v)
        self.opt_d = tf.keras.optimizers.Adam(args.lr, beta_1=args.beta1)
        self.opt_g = tf.keras.optimizers.Adam(args.lr, beta_1=args.beta1)
        if args.mixed_precision == "float16":  # float16 gradients underflow without a (dynamic) loss scale
            self.opt_d, self.opt_g = (tf.keras.optimizers.LossScaleOptimizer(o) for o in (self.opt_d, self.opt_g))
        # Keras 3 optimisers create slots lazily; build them so a restore fills every variable.
        self.opt_d.build(self.D.trainable_variables)
        self.opt_g.build(self.G.trainable_variables)
        self.step = tf.Variable(0, dtype=tf.int64, name="step")
        self.lr_scale = tf.Variable(1.0, name="lr_scale")  # halved by each --nan_policy restore
        self.rng = tf.random.Generator.from_seed(args.seed)

    def checkpoint(self, core_only: bool = False) -> tf.train.Checkpoint:
        """The tf.train.Checkpoint of this state (the evaler restores parts of it).

        `core_only`: without the state added after the first release of the format (noise seed
        states, LR scale), which older checkpoints lack.
        """
        if core_only:
            return tf.train.Checkpoint(D=self.D, D_ema=self.D_ema, G=self.G, opt_d=self.opt_d, opt_g=self.opt_g,
                                       step=self.step, rng=self.rng)
        # Keras 3 does not checkpoint the states of dropout/noise seed generators with the model:
        # list them, so a resumed run draws the same noise as an uninterrupted one.
        seeds = [v for v in self.D.variables + self.G.variables if "seed_generator_state" in v.path]
        return tf.train.Checkpoint(D=self.D, D_ema=self.D_ema, G=self.G, opt_d=self.opt_d, opt_g=self.opt_g,
                                   step=self.step, rng=self.rng, lr_scale=self.lr_scale, seeds=seeds)


def keras_seed(seed: int) -> None:
    """Seed weight initialisers and Keras' dropout/noise layers."""
    import keras
    keras.utils.set_random_seed(seed)


METRICS = ("loss_d", "loss_sup", "loss_unsup", "loss_ent", "loss_bal", "loss_fent", "loss_vat", "loss_cons", "loss_g",
           "acc_lab", "p_real", "p_fake")
# The metrics of the terms on unlabelled and generated images, which a --supervised_only run does not have (not
# written for it).
UNSUPERVISED_METRICS = ("loss_unsup", "loss_ent", "loss_bal", "loss_fent", "loss_vat", "loss_cons", "loss_g", "p_real",
                        "p_fake")


def mirror_guessed(classifier, images: tf.Tensor, flip_classes: Sequence[int], seed: tf.Tensor) -> tf.Tensor:
    """Mirror each image left-right with probability 1/2 if `classifier` (a D, run as at test time) puts it in
    one of `flip_classes`: for unlabelled images, whose label is unknown."""
    guess = tf.argmax(float32(classifier(images, training=False))[0], -1, output_type=tf.int32)
    return input_ops.mirror(images, guess, flip_classes, seed)


def make_train_loop(gan: GAN, args: argparse.Namespace, strategy: tf.distribute.Strategy,
                    flips: Sequence[int] = (), max_steps: int | None = None):
    """A tf.function running n steps from the two (distributed) iterators; returns D's last probabilities
    and whether every loss stayed finite, and a reader of the metric means since the last read.

    `flips` are the --flip_classes class indices, for --flip_unlabeled predicted; `max_steps` places
    --swa_start (without it, the EMA throughout)."""
    with strategy.scope():
        sums = tf.Variable(tf.zeros([len(METRICS)]), trainable=False, name="metric_sums")
        count = tf.Variable(0.0, trainable=False)
    losses = [METRICS.index("loss_d"), METRICS.index("loss_g")]
    D, G, opt_d, opt_g = gan.D, gan.G, gan.opt_d, gan.opt_g
    ema_pairs = list(zip(gan.D_ema.trainable_variables, D.trainable_variables))
    # Each replica's loss is a mean over its share of the global batch and the optimiser sums the
    # replicas' gradients, so dividing by the replica count gives the gradient of the global mean.
    replicas = float(strategy.num_replicas_in_sync)
    vat = args.vat_weight > 0 and not args.supervised_only
    consistency = args.consistency_weight > 0
    # VAT's finite-difference probe: a 1e-6 step vanishes when D computes in 16 bits (3 significant digits).
    vat_xi = 1.0 if args.mixed_precision else 1e-6
    flip_unlabeled = args.flip_unlabeled == "predicted" and bool(flips) and not args.supervised_only
    joint = int(args.g_update == "joint" and args.g_steps > 0 and not args.supervised_only)

    def class_logits(x):
        return float32(D(x, training=False))[0]

    def seen(x):
        """The images D trains on, as --augment diff shifts them."""
        if args.augment != "diff":
            return x
        shift = input_ops.MAX_SHIFT
        return ops.translate(x, gan.rng.uniform([tf.shape(x)[0], 2], -shift, shift + 1, tf.int32))

    def generator_loss(feats_real, logits, fake, feats):
        """G's loss from D's outputs on generated images (and its features of real ones, for feature matching)."""
        if args.g_loss == "fm":
            loss_g = ops.feature_matching_loss(feats_real, feats)
        else:
            loss_g = ops.generator_gan_loss(ops.real_logit(logits, fake))
        if args.pt_weight:
            loss_g += args.pt_weight * ops.pull_away_loss(feats)
        return loss_g

    def d_step(x_lab, y_lab, x_unl):
        """D's update; with --g_update joint, also G's first update, from the same pass of D."""
        n_l, n_u = tf.shape(x_lab)[0], tf.shape(x_unl)[0]
        z = gan.rng.normal([n_u, args.z_dim])
        target = None
        if args.sup_mixup:
            x_lab, target = ops.mixup(x_lab, y_lab, gan.num_class, args.sup_mixup, gan.rng.make_seeds(1)[:, 0])

        def sup_loss(logits):
            if target is not None:
                return ops.soft_supervised_loss(logits, target)
            return ops.supervised_loss(logits, y_lab, args.sup_smoothing)
        loss_vat = loss_g = tf.constant(0.0)
        if vat:
            # VAT regularises the classifier used at test time: D without its noise and dropout.
            clean = class_logits(x_unl)
            r_adv = ops.virtual_adversarial_direction(class_logits, x_unl, clean, gan.rng.normal(tf.shape(x_unl)),
                                                      args.vat_eps, xi=vat_xi)
        with tf.GradientTape() as tape, tf.GradientTape() as g_tape:
            if vat:
                loss_vat = ops.kl_divergence(clean, class_logits(x_unl + r_adv))
            if args.supervised_only:
                logits, _, _ = float32(D(seen(x_lab), training=True))
                loss_sup = sup_loss(logits)
                loss_unsup = loss_ent = loss_bal = loss_cons = loss_fent = tf.constant(0.0)
                p_real = p_fake = tf.zeros([n_u])
            else:
                # One pass over labelled, unlabelled and generated images (and, for the consistency term, the
                # unlabelled images again, with other noise): D has no batch statistics, so this equals
                # separate passes and runs faster. With a joint G update the generated images get a pass of their
                # own, so that G's backward pass runs through D for them only.
                x_fake = tf.cast(G(z, training=True), x_unl.dtype)
                again = [x_unl] if consistency else []
                if joint:
                    logits, fake, feats = float32(D(seen(tf.concat([x_lab, x_unl, *again], 0)), training=True))
                    logits_g, fake_g, feats_g = float32(D(seen(x_fake), training=True))
                    loss_g = generator_loss(tf.stop_gradient(feats[n_l:n_l + n_u]), logits_g, fake_g, feats_g)
                    logits, fake = (tf.concat([t[:n_l + n_u], t_g, t[n_l + n_u:]], 0)
                                    for t, t_g in ((logits, logits_g), (fake, fake_g)))
                else:
                    logits, fake, _ = float32(D(seen(tf.concat([x_lab, x_unl, x_fake, *again], 0)), training=True))
                real = ops.real_logit(logits, fake)
                unl, gen = slice(n_l, n_l + n_u), slice(n_l + n_u, n_l + 2 * n_u)
                loss_sup = sup_loss(logits[:n_l])
                loss_unsup = ops.unsupervised_loss(real[unl], real[gen], args.label_smoothing)
                loss_ent = ops.entropy_loss(logits[unl])
                loss_bal = ops.balance_loss(logits[unl])
                loss_fent = ops.uniform_kl(logits[gen])
                loss_cons = ops.consistency_loss(logits[unl], logits[n_l + 2 * n_u:]) if consistency \
                    else tf.constant(0.0)
                p_real, p_fake = tf.sigmoid(real[unl]), tf.sigmoid(real[gen])
            loss_d = (loss_sup + args.unsup_weight * loss_unsup + args.entropy_weight * loss_ent
                      + args.balance_weight * loss_bal + args.vat_weight * loss_vat
                      + args.consistency_weight * loss_cons + args.fake_entropy_weight * loss_fent)
            scaled = opt_d.scale_loss(loss_d / replicas)
            scaled_g = opt_g.scale_loss(loss_g / replicas) if joint else None
        grads = tape.gradient(scaled, D.trainable_variables)
        if joint:  # both gradients before either update: G's is taken against the D that D's was
            opt_g.apply_gradients(zip(g_tape.gradient(scaled_g, G.trainable_variables), G.trainable_variables))
        opt_d.apply_gradients(zip(grads, D.trainable_variables))
        return dict(loss_d=loss_d, loss_sup=loss_sup, loss_unsup=loss_unsup, loss_ent=loss_ent, loss_bal=loss_bal,
                    loss_fent=loss_fent,
                    loss_vat=loss_vat, loss_cons=loss_cons, loss_g=loss_g,
                    acc_lab=ops.accuracy(logits[:n_l], y_lab)), p_real, p_fake

    def g_step(x_unl):
        z = gan.rng.normal([tf.shape(x_unl)[0], args.z_dim])
        # Feature matching's real side is a constant of G's loss: D sees the real images outside the
        # tape, so the backward pass runs through D for the generated images only.
        feats_real = float32(D(seen(x_unl), training=True))[2] if args.g_loss == "fm" else None
        with tf.GradientTape() as tape:
            x_fake = tf.cast(G(z, training=True), x_unl.dtype)
            loss_g = generator_loss(feats_real, *float32(D(seen(x_fake), training=True)))
            scaled = opt_g.scale_loss(loss_g / replicas)
        opt_g.apply_gradients(zip(tape.gradient(scaled, G.trainable_variables), G.trainable_variables))
        return loss_g

    def step(x_lab, y_lab, x_unl):
        if flip_unlabeled:  # the same mirrored batch feeds D and feature matching
            x_unl = mirror_guessed(gan.D_ema, x_unl, flips, gan.rng.make_seeds(1)[:, 0])
        m, p_real, p_fake = d_step(x_lab, y_lab, x_unl)
        if not args.supervised_only:
            for _ in range(args.g_steps - joint):
                m["loss_g"] = g_step(x_unl)
        m["p_real"], m["p_fake"] = tf.reduce_mean(p_real), tf.reduce_mean(p_fake)
        return tf.stack([tf.cast(m[k], tf.float32) for k in METRICS]), p_real, p_fake

    compiled_step = tf.function(step, jit_compile=args.jit)

    swa_from = float(round(args.swa_start * max_steps)) if max_steps and args.swa_start < 1 else None

    def update_ema():
        # EMA warm-up as tf.train.ExponentialMovingAverage(num_updates): short runs still average.
        t = tf.cast(gan.step, tf.float32)
        decay = tf.minimum(args.ema_decay, (1.0 + t) / (10.0 + t))
        if swa_from is not None:  # from swa_from, the mean of the weights after each step since (decay 0 first)
            decay = tf.where(t >= swa_from, 1.0 - 1.0 / (t - swa_from + 1.0), decay)
        for e, v in ema_pairs:
            e.assign(decay * e + (1.0 - decay) * v)

    def mean(per_replica):
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    @tf.function
    def loop(lab_iter, unl_iter, n):
        p_real = p_fake = tf.zeros([args.batch_size])
        finite = tf.constant(True)
        for _ in tf.range(n):
            tf.autograph.experimental.set_loop_options(
                shape_invariants=[(p_real, tf.TensorShape([None])), (p_fake, tf.TensorShape([None]))])
            x_lab, y_lab = next(lab_iter)
            x_unl = next(unl_iter)
            m, p_real_r, p_fake_r = strategy.run(compiled_step, args=(x_lab, y_lab, x_unl))
            update_ema()
            v = mean(m)  # the metrics stacked: one cross-replica reduce for all of them
            sums.assign_add(v)
            finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(tf.gather(v, losses))))
            p_real, p_fake = (tf.concat(strategy.experimental_local_results(p), 0) for p in (p_real_r, p_fake_r))
            count.assign_add(1.0)
            gan.step.assign_add(1)
        return p_real, p_fake, finite

    def read_and_reset() -> dict[str, float]:
        means = sums.numpy() / max(count.numpy(), 1.0)
        out = {k: float(v) for k, v in zip(METRICS, means)}
        sums.assign(tf.zeros_like(sums))
        count.assign(0.0)
        return out

    return loop, read_and_reset


# ---------------------------------------------------------------- the loop


def float32(tensors) -> tuple:
    """D's outputs as float32 (a no-op unless --mixed_precision): losses are always computed in float32."""
    return tuple(tf.cast(t, tf.float32) for t in tensors)


def learning_rate(args: argparse.Namespace, step: int, max_steps: int) -> float:
    """Constant, then linear decay to 0 over the last (1 - lr_decay_start) of training."""
    start = args.lr_decay_start * max_steps
    if step < start or max_steps <= start:
        return args.lr
    return args.lr * max(0.0, (max_steps - step) / (max_steps - start))


# What a collective op raises when a peer worker has died or stopped answering.
PEER_LOST = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError,
             tf.errors.CancelledError, tf.errors.InternalError)


def make_strategy(args: argparse.Namespace) -> tf.distribute.Strategy:
    """The tf.distribute strategy of --strategy (after splitting the CPU into --cpu_devices logical devices)."""
    if args.cpu_devices > 1 and args.strategy != "mirrored":
        raise UserError(f"--cpu_devices {args.cpu_devices} splits the CPU into devices for --strategy mirrored; add "
                        "--strategy mirrored, or drop --cpu_devices")
    if args.cpu_devices > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_devices)
        except RuntimeError:  # already initialised in this process (tests): keep what is there
            pass
    if args.strategy == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if args.strategy == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("--strategy multi_worker needs the TF_CONFIG environment variable (see README: "
                            "several machines)")
        try:
            tf_config = json.loads(os.environ["TF_CONFIG"])
            if not isinstance(tf_config.get("cluster"), dict) or not isinstance(tf_config.get("task"), dict):
                raise ValueError('it has no "cluster" and "task" objects')
            options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=args.collective_timeout)
            return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        except (ValueError, AttributeError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError
            why = (str(e).splitlines() or [type(e).__name__])[0][:200]
            raise UserError(f"TF_CONFIG is not a cluster this worker can join ({why}); it must be JSON like "
                            '{"cluster": {"worker": ["hostA:2222", "hostB:2222"]}, "task": {"type": "worker", '
                            '"index": 0}} (see README: several machines)') from None
    return tf.distribute.get_strategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run dir, checkpoints and summaries (the chief, or worker 0)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (not has_chief and resolver.task_type == "worker"
                                              and resolver.task_id == 0)


def train(args: argparse.Namespace) -> dict:
    """The whole run: data, model, restore, loop with summaries/eval/checkpoints, final result."""
    with contextlib.ExitStack() as held:  # the run dir's lock, from when it is known to the end
        return _train(args, held)


def lost_peer(e: Exception, args: argparse.Namespace, kept: str) -> Exception:
    """A lost multi-worker peer as one line (another worker's own error says why it stopped); else `e` itself."""
    if args.strategy != "multi_worker":
        return e
    return UserError(f"lost contact with another worker ({str(e).strip().splitlines()[0][:160]}); {kept}: see the "
                     "other workers' output, and restart every worker with the same command to resume")


@contextlib.contextmanager
def run_lock(run: Path):
    """Held while this process trains `run`: another process on the same run dir is refused, so two never
    write its checkpoints in turn (the evaler may read them meanwhile)."""
    with open(run / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{run} is being trained by another process; wait for it to end, or start another run "
                            "(--new_run, or another --train_dir if you named this one)") from None
        except OSError as e:  # some network filesystems have no flock (ENOSYS, ENOLCK, EOPNOTSUPP)
            print(f"warning: cannot lock {run} ({e.strerror or e}); make sure no other process trains it",
                  file=sys.stderr)
        yield  # closing the file releases the lock


def _train(args: argparse.Namespace, held: contextlib.ExitStack) -> dict:
    strategy = make_strategy(args)
    chief = is_chief(strategy)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    resume_preprocessing(args)
    path, info = config.resolve_dataset(args)
    # Everything is checked before the run dir is made: a bad flag leaves nothing behind.
    flips = resolve_derived(args, info.class_names)
    run, record = choose_run_dir(args, info)
    fresh = not (run / "config.json").exists()
    # Whether the run classified as now when it last stopped (--tta and --prior may change on resuming): then an
    # evaluation it made at the step it resumes from stands.
    same_eval = fresh or all(config.recorded(config.read_run_config(run), k, None) == record.get(k)
                             for k in ("tta", "prior"))
    if chief and not fresh:  # resuming: refused at once if another process is training it
        held.enter_context(run_lock(run))
    train_split = input_ops.load_split(path, "train", args.in_memory, args.memory_budget_gb, info)
    test_split = input_ops.load_split(path, "test", args.in_memory, args.memory_budget_gb, info)
    # A new default run dir may yet be taken by a run started in the same second (write_run_dir then appends -2):
    # nothing in it is this run's.
    new_default = fresh and not args.train_dir
    lab_idx = labeled_indices(None if new_default else run, train_split.labels, args, info.class_names)
    check_sizes(args, len(train_split), len(test_split), strategy.num_replicas_in_sync, len(lab_idx), info.num_class)
    max_steps = args.max_steps if args.max_steps is not None else max(1, int(args.epochs * len(train_split)
                                                                            / args.batch_size))
    if not new_default:
        check_resume_step(run, max_steps, args)
    try:
        with strategy.scope():
            gan = GAN(args, info.shape, info.num_class)
    except PEER_LOST as e:  # e.g. the chief stopped at once: its run dir is being trained by another process
        raise lost_peer(e, args, "nothing was trained") from None
    if chief:
        run = write_run_dir(run, record, lab_idx, held, fresh, named=bool(args.train_dir))
    # Every worker takes part in saving (collective ops), but only the chief's files are kept.
    ckpt_dir = run / "ckpt" if chief else run / f".worker-{strategy.cluster_resolver.task_id}-ckpt"
    manager = tf.train.CheckpointManager(gan.checkpoint(), str(ckpt_dir), max_to_keep=args.keep if chief else 1)
    # Every worker resumes from the chief's checkpoints (its own folder is only for writing).
    restore(gan, manager if chief else tf.train.CheckpointManager(gan.checkpoint(), str(run / "ckpt"), None), run)
    if args.data_init and int(gan.step.numpy()) == 0:
        init_weights(gan, train_split, args, strategy)
    if chief and int(gan.step.numpy()) < max_steps:  # a finished run trained further is unfinished again
        (run / "result.json").unlink(missing_ok=True)
    if max_steps == 0:
        print(f"Built the model in {run} (max_steps 0): nothing trained.")
        return {"run_dir": str(run), "step": int(gan.step.numpy())}
    loop, read_metrics = make_train_loop(gan, args, strategy, flips, max_steps)
    if chief:
        trim_events(run / "logs", int(gan.step.numpy()))
    writer = tf.summary.create_file_writer(str(run / "logs")) if chief else tf.summary.create_noop_writer()
    z_fixed = model.grid_noise(args.seed, args.z_dim, 100)
    print(f"Training {run} on {args.dataset} ({strategy.num_replicas_in_sync} replica(s)): {len(lab_idx)} labelled "
          f"of {len(train_split)} train images, "
          f"{len(test_split)} test; steps {int(gan.step.numpy())} -> {max_steps}.  "
          f"TensorBoard: tensorboard --logdir {run.parent}")
    ctx = RunContext(args, gan, manager, writer, loop, read_metrics, train_split, test_split, lab_idx, flips, run,
                     info, z_fixed, max_steps, strategy, chief)
    if not same_eval:
        ctx.evaluated = None
    stop = StopFlag()
    try:
        status = _loop(ctx, stop)
    except PEER_LOST as e:
        raise lost_peer(e, args, f"the last checkpoint {manager.latest_checkpoint} is kept") from None
    finally:
        stop.restore()
    return _finish(ctx, status)


def resume_preprocessing(args: argparse.Namespace) -> None:
    """Resuming a run of an own image folder (--train_dir holding its config.json): the conversion flags not given
    take the run's values (size, channels, resize, test split), so the folder goes back to the run's conversion
    (kept from before, or made again) rather than whichever it was converted to last. Given ones are compared."""
    if not args.train_dir or not (Path(args.train_dir) / "config.json").exists():
        return
    cfg = config.read_run_config(Path(args.train_dir))
    if cfg.get("dataset") != args.dataset:
        return  # the dataset differs: choose_run_dir says so
    trained = evaler.trained_preprocessing(args, cfg)
    old = cfg.get("dataset_info") or {}
    asked = {key: getattr(args, flag) for key, flag in (("height", "input_height"), ("width", "input_width"),
                                                         ("channels", "channels")) if getattr(args, flag) is not None}
    known = {"height", "width", "channels", "class_names"} <= old.keys()  # else choose_run_dir says what is wrong
    change = dataset_change(old, {**old, **asked}) if trained is not args and asked and known else None
    if change:  # before converting the folder at a size the run cannot resume on
        raise UserError(f"{args.train_dir} was trained on {change}")
    differ = [k for k in ("resize", "test_fraction") if trained is not args and getattr(args, k, None) is not None
              and getattr(args, k) != getattr(trained, k, None)]
    if differ:  # nor with a resize or test split it was not trained with (which would become the folder's current)
        raise UserError(f"{args.train_dir} was trained with {', '.join(_changed(k, cfg, vars(args)) for k in differ)}"
                        "; pass the same flags to resume it, or choose a new --train_dir")
    for k in folder.CONVERSION_FLAGS:
        if getattr(args, k, None) is None:
            setattr(args, k, getattr(trained, k, None))
    args.conversion_seed = getattr(trained, "conversion_seed", None)


def init_weights(gan: GAN, split: input_ops.Split, args: argparse.Namespace, strategy) -> None:
    """Data-dependent init of D (and so of D_ema) from up to 500 training images, the same on every worker."""
    x = next(iter(input_ops.unlabeled_stream(split, min(500, len(split)), args.seed)))
    with strategy.scope():
        ops.data_dependent_init(gan.D, x)
        for e, v in zip(gan.D_ema.weights, gan.D.weights):
            e.assign(v)


def check_sizes(args: argparse.Namespace, n_train: int, n_test: int, replicas: int = 1,
                n_labeled: int | None = None, num_class: int = 1) -> None:
    """Flag values that no run could use, stated before anything is written."""
    if args.batch_size % replicas:
        raise UserError(f"--batch_size {args.batch_size} must be divisible by the {replicas} replicas "
                        f"(e.g. {replicas * max(1, args.batch_size // replicas)})")
    lab_batch = min(args.batch_size, n_labeled or args.batch_size)  # input_ops.labeled_stream's
    if lab_batch % replicas:  # the replicas' halves would weigh unequally in the global mean
        m = math.lcm(replicas, num_class)  # --num_labeled is a multiple of the classes too
        raise UserError(f"the labelled batch, {lab_batch} (all the labelled images), must be divisible by the "
                        f"{replicas} replicas; label a multiple of {m} images (e.g. --num_labeled "
                        f"{m * max(1, lab_batch // m)}), or train with fewer replicas (a run already started: "
                        "--strategy default)")
    if args.d_hidden_noise is not None and args.arch == "conv":
        raise UserError("--d_hidden_noise is for the mlp and lenet Ds; the conv D has dropout instead: drop the flag")
    if args.sup_mixup and args.sup_smoothing:
        raise UserError("--sup_mixup and --sup_smoothing both soften the labelled targets; choose one")
    if args.sup_mixup and args.jit:
        raise UserError("--sup_mixup draws Beta-distributed weights, which XLA cannot compile; "
                        "drop --jit or --sup_mixup")
    if args.batch_size > n_train:
        raise UserError(f"--batch_size {args.batch_size} is larger than the {n_train} training images; lower it")
    if n_test == 0:
        raise UserError("the dataset has no test images, so accuracy cannot be measured; add a test split")


class Curves:
    """A run's scalars over the steps (test accuracy at each evaluation; losses, labelled-batch accuracy and D's P(real)
    at each summary), kept in RUN/curves.json (at each evaluation and checkpoint) and drawn in RUN/curves.png. A
    resumed (or rolled back) run goes on from those up to its checkpoint's step."""

    DRAW_EVERY_S = 60

    def __init__(self, run: Path, step: int):
        self.path, self.png, self.drawn, self.can_draw = run / "curves.json", run / "curves.png", -float("inf"), True
        try:
            kept = json.loads(self.path.read_text())
            self.series = {tag: {int(s): float(v) for s, v in points} for tag, points in kept.items()}
        except (OSError, ValueError, TypeError, AttributeError):  # none yet, or damaged: they start again
            self.series = {}
        self.trim(step)

    def trim(self, step: int) -> None:
        """Forget the points after `step`: the steps a resumed or rolled-back run trains again."""
        self.series = {tag: {s: v for s, v in points.items() if s <= step} for tag, points in self.series.items()}

    def add(self, step: int, values: dict) -> None:
        for tag, v in values.items():
            self.series.setdefault(tag, {})[step] = float(v)

    def write(self, title: str | None = None, final: bool = False) -> None:
        """curves.json and, given a `title`, curves.png at the end (`final`) or if DRAW_EVERY_S seconds have passed
        (drawing takes ~0.4 s). A run dir one cannot write to, or no matplotlib, only warns."""
        series = {tag: sorted(points.items()) for tag, points in self.series.items()}
        path = self.path
        try:
            evaler.write_json(path, series)
            if title and self.can_draw and (final or time.monotonic() - self.drawn >= self.DRAW_EVERY_S):
                path = self.png
                evaler.save_png(evaler.curves_image(series, title), path)
                self.drawn = time.monotonic()
        except OSError as e:
            print(f"warning: cannot write {path} ({e.strerror or e})", file=sys.stderr)
        except ImportError as e:  # installed before matplotlib was a requirement
            self.can_draw = False
            print(f"warning: no curves.png ({e}); pip install -r requirements.txt to draw it", file=sys.stderr)


class RunContext:
    """What the loop and the end of a run share (a plain record of the objects built in train)."""

    def __init__(self, args, gan, manager, writer, loop, read_metrics, train_split, test_split, lab_idx, flips, run,
                 info, z_fixed, max_steps, strategy, chief):
        self.strategy, self.chief = strategy, chief
        self.args, self.gan, self.manager, self.writer = args, gan, manager, writer
        self.loop, self.read_metrics = loop, read_metrics
        self.train_split, self.test_split, self.lab_idx, self.flips = train_split, test_split, lab_idx, flips
        self.run, self.info, self.z_fixed, self.max_steps = run, info, z_fixed, max_steps
        self._prior: tuple[int, np.ndarray] | None = None  # (step, offsets) of --prior labeled's last fit
        step = int(gan.step.numpy())
        self.curves = Curves(run, step)
        # (step, accuracy) of the last evaluation; one at the start step was made before a stop there, with these
        # weights
        acc = self.curves.series.get("test/accuracy", {}).get(step)
        self.evaluated = None if acc is None else (step, acc)
        self.title = f"{run.name}: {args.dataset}, {len(lab_idx)} labels"
        self.pending = False  # whether steps were trained since the last summary

    def lr(self, step: int) -> float:
        """The learning rate of the step after `step`: the schedule's, times --nan_policy restore's scale."""
        return learning_rate(self.args, step, self.max_steps) * float(self.gan.lr_scale.numpy())

    def iterators(self):
        """Fresh labelled and unlabelled iterators positioned at the current step."""
        a, step = self.args, int(self.gan.step.numpy())
        lab = input_ops.labeled_stream(self.train_split, self.lab_idx, a.batch_size, a.seed, step,
                                       a.augment in ("labeled", "all"), self.flips)
        unl = input_ops.unlabeled_stream(self.train_split, a.batch_size, a.seed, step, a.augment == "all")
        dist = self.strategy.experimental_distribute_dataset
        return iter(dist(input_ops.shard_by_data(lab))), iter(dist(input_ops.shard_by_data(unl)))

    def prior_offsets(self) -> np.ndarray | None:
        """--prior labeled's offsets for D's EMA weights of this step (fitted once per step), or None."""
        if self.args.prior != "labeled":
            return None
        step = int(self.gan.step.numpy())
        if self._prior is None or self._prior[0] != step:
            batch = evaler.eval_batch(self.args.batch_size, self.info.shape)
            self._prior = step, evaler.prior_offsets_of(self.gan.D_ema, self.train_split, batch, self.info.num_class)
        return self._prior[1]

    def test_accuracy(self, step: int, final: bool = False) -> float:
        """D's (EMA) test accuracy, classifying as the evaler does (--tta, --prior); written to TensorBoard with
        the confusion matrix as an image, and to the run's curves (drawn if `final`, the run's end, or due)."""
        a = self.args
        cm = evaler.confusion_of(self.gan.D_ema, self.test_split, evaler.eval_batch(a.batch_size, self.info.shape),
                                 self.info.num_class, config.mirror_classes(a.tta, a.flip_classes),
                                 self.prior_offsets())
        acc = float(np.trace(cm) / max(cm.sum(), 1))
        image = evaler.confusion_image(cm, self.info.class_names)
        with self.writer.as_default(step=step):
            tf.summary.scalar("test/accuracy", acc)
            if image is not None:
                tf.summary.image("test/confusion", image[None])
        self.curves.add(step, {"test/accuracy": acc})
        self.curves.write(self.title, final)
        self.evaluated = step, acc
        return acc

    def save(self, step: int) -> None:
        """A checkpoint of this step, its --prior offsets (save_prior) and the curves so far."""
        self.save_prior(self.manager.save(checkpoint_number=step), step)
        if self.chief:
            self.curves.write()

    def save_prior(self, ckpt: str, step: int) -> None:
        """The chief keeps --prior labeled's offsets for checkpoint `ckpt` of this step beside it (evaler.prior_file),
        so that the evaler, --predict and --export need not fit them again (with --prior none: none, nor an older
        file of that name), and drops those of checkpoints let go."""
        if not self.chief:
            return
        path = evaler.prior_file(ckpt)
        if self.args.prior == "labeled":
            evaler.write_json(path, {"offsets": self.prior_offsets().tolist(), "step": step, "weights": "ema"})
        else:
            path.unlink(missing_ok=True)
        kept = {evaler.prior_file(c).name for c in self.manager.checkpoints}
        for old in Path(self.manager.directory).glob("*.prior.json"):
            if old.name not in kept:
                old.unlink(missing_ok=True)


def restore(gan: GAN, manager: tf.train.CheckpointManager, run: Path) -> None:
    """Resume from the newest readable checkpoint in the run dir, if any; a model mismatch is a clear error.

    A checkpoint that cannot be read (e.g. its files were cut by a crash) is skipped with a warning
    and the one before it is used.
    """
    core, full = gan.checkpoint(core_only=True), gan.checkpoint()
    for path in reversed(manager.checkpoints):
        try:
            core.restore(path).expect_partial().assert_existing_objects_matched()  # full restores the rest
            full.restore(path).expect_partial()  # the optional state, where the checkpoint has it
        except evaler.UNREADABLE as e:  # files cut short or missing
            print(f"warning: checkpoint {path} is unreadable ({type(e).__name__}); trying the one before it",
                  file=sys.stderr)
            continue
        except (ValueError, AssertionError) as e:
            raise UserError(f"the checkpoint in {run} does not match these flags ({str(e).splitlines()[0][:200]}); "
                            "pass the flags it was trained with, or choose a new --train_dir") from None
        print(f"Resumed from {path} at step {int(gan.step.numpy())}.")
        return
    if manager.checkpoints:
        raise UserError(f"no checkpoint in {run / 'ckpt'} is readable; delete that folder to start the run afresh")


def _loop(ctx: RunContext, stop: StopFlag) -> str:
    """Run compiled chunks of steps until max_steps, the time budget or a signal; returns why it stopped."""
    args, gan, max_steps = ctx.args, ctx.gan, ctx.max_steps
    deadline = time.time() + 60 * args.time_budget_min if args.time_budget_min else None
    lab_iter, unl_iter = ctx.iterators()
    step = int(gan.step.numpy())
    events = (args.summary_every, args.eval_every, args.ckpt_every)
    with tqdm(total=max_steps, initial=step, unit="step", dynamic_ncols=True, mininterval=2.0) as bar:
        while step < max_steps:
            n = min(args.steps_per_loop, max_steps - step, *(e - step % e for e in events))
            lr = ctx.lr(step)
            gan.opt_d.learning_rate.assign(lr)
            gan.opt_g.learning_rate.assign(lr)
            p_real, p_fake, finite = ctx.loop(lab_iter, unl_iter, tf.constant(n))
            if not bool(finite):
                _on_divergence(ctx, step + n, bar)
                lab_iter, unl_iter = ctx.iterators()
                step = int(gan.step.numpy())
                bar.reset(total=max_steps)
                bar.update(step)
                continue
            step += n
            bar.update(n)
            ctx.pending = step % args.summary_every != 0 and step != max_steps  # steps not yet in a summary
            if not ctx.pending:
                m = _write_summary(ctx, step, lr, p_real, p_fake)
                shown = ("loss_d", "acc_lab") if args.supervised_only else ("loss_d", "loss_g", "acc_lab")
                bar.set_postfix({k: f"{m[k]:.3g}" for k in shown}, refresh=False)
            if step % args.eval_every == 0 and step < max_steps and ctx.chief:
                acc = ctx.test_accuracy(step)
                bar.write(f"step {step}: test accuracy {acc:.4f}")
                if not args.supervised_only:
                    _write_samples(ctx, step)
            if step % args.ckpt_every == 0:
                ctx.save(step)
            if stop:
                return "signal"
            if deadline and time.time() > deadline and step < max_steps:  # at max_steps the run is done
                return "time"
    return "done"


MAX_NAN_RESTORES = 5


def _on_divergence(ctx: RunContext, step: int, bar) -> None:
    """A NaN/Inf loss: stop (keeping the last good checkpoint), or roll back and halve the LR."""
    ctx.read_metrics()
    last = ctx.manager.latest_checkpoint
    ctx.restores = getattr(ctx, "restores", 0) + 1
    if ctx.args.nan_policy != "restore" or last is None or ctx.restores > MAX_NAN_RESTORES:
        kept = f"the last good checkpoint {last} is kept" if last else "no checkpoint had been written yet"
        fix = ("lower --lr (or pass --nan_policy restore)" if ctx.args.nan_policy != "restore" else
               "lower --lr (--nan_policy restore had no checkpoint to roll back to; --ckpt_every sets how often "
               "one is written)" if last is None else
               f"lower --lr (--nan_policy restore rolled back {MAX_NAN_RESTORES} times)")
        raise UserError(f"training diverged by step {step} (a loss became NaN/Inf); {kept}; {fix} and re-run")
    scale = float(ctx.gan.lr_scale.numpy()) / 2
    restore(ctx.gan, ctx.manager, ctx.run)
    step_back = int(ctx.gan.step.numpy())
    ctx.pending = False
    ctx.curves.trim(step_back)
    if ctx.chief:  # TensorBoard's points after the checkpoint go too: those steps are trained again
        ctx.writer.close()
        trim_events(ctx.run / "logs", step_back)
        ctx.writer = tf.summary.create_file_writer(str(ctx.run / "logs"))
    if ctx.evaluated and ctx.evaluated[0] > step_back:
        ctx.evaluated = None
    ctx._prior = None  # fitted for the weights rolled back from
    ctx.gan.lr_scale.assign(scale)
    bar.write(f"step {step}: a loss became NaN/Inf; rolled back to {last} and halved the LR (scale {scale:g})")


def _write_summary(ctx: RunContext, step: int, lr: float, p_real=None, p_fake=None) -> dict:
    """The metrics' means over the steps since the last summary, as train/* scalars (TensorBoard and the curves),
    with D's P(real) histograms of the last step's batches (if given); returns them."""
    m = ctx.read_metrics()
    if ctx.args.supervised_only:
        m = {k: v for k, v in m.items() if k not in UNSUPERVISED_METRICS}
    with ctx.writer.as_default(step=step):
        for k, v in m.items():
            tf.summary.scalar(f"train/{k}", v)
        tf.summary.scalar("train/lr", lr)
        if p_real is not None and not ctx.args.supervised_only:
            tf.summary.histogram("D/p_real_unlabeled", p_real)
            tf.summary.histogram("D/p_real_generated", p_fake)
    ctx.curves.add(step, {f"train/{k}": v for k, v in m.items()})
    return m


def trim_events(logs: Path, step: int) -> None:
    """Drop the points after `step` from a run's TensorBoard event files: the steps a resumed or rolled-back run
    trains again, which TensorBoard would otherwise show twice (it drops stale points only at a SessionLog.START
    event, which TensorFlow 2's summary writers never write). A record cut short by a crash ends its file."""
    from tensorflow.core.util import event_pb2

    for path in sorted(logs.glob("events.out.tfevents.*")):
        kept, dropped = [], False
        records = iter(tf.data.TFRecordDataset(str(path)))
        while True:
            try:
                record = next(records).numpy()
            except StopIteration:
                break
            except tf.errors.DataLossError:  # the tail a killed process left half-written
                dropped = True
                break
            event = event_pb2.Event.FromString(record)
            if event.HasField("summary") and event.step > step:
                dropped = True
            else:
                kept.append(record)
        if not dropped:
            continue
        tmp = logs / f".trim-{os.getpid()}.tmp"  # no "tfevents" in its name: TensorBoard never reads it
        try:
            with tf.io.TFRecordWriter(str(tmp)) as w:
                for record in kept:
                    w.write(record)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _write_samples(ctx: RunContext, step: int) -> None:
    if not ctx.chief:
        return
    grid = evaler.image_grid(ctx.gan.G(ctx.z_fixed, training=False).numpy())
    with ctx.writer.as_default(step=step):
        tf.summary.image("samples", grid[None])
    evaler.save_png(grid, ctx.run / "samples" / f"step_{step:07d}.png")


def _finish(ctx: RunContext, status: str) -> dict:
    """Save, evaluate and report at the end of a run (or exit 130 after a signal)."""
    step, manager = int(ctx.gan.step.numpy()), ctx.manager
    if ctx.pending:  # a stop between summaries: the steps since the last one, at this step
        _write_summary(ctx, step, ctx.lr(step - 1))
    if manager.latest_checkpoint is None or not manager.latest_checkpoint.endswith(f"-{step}"):
        ctx.save(step)
    elif ctx.args.prior == "labeled" and not evaler.prior_file(manager.latest_checkpoint).exists():
        ctx.save_prior(manager.latest_checkpoint, step)  # a run resumed at its end, saved without them
    if not ctx.chief:
        shutil.rmtree(manager.directory, ignore_errors=True)
        if status == "signal":
            sys.exit(130)
        return {"run_dir": str(ctx.run), "step": step, "stopped_by": status}
    if status == "signal":
        ctx.curves.write()  # with the stop's own summary, also when its checkpoint was already saved
        ctx.writer.flush()
        print(f"Interrupted: saved {manager.latest_checkpoint} at step {step}; re-run the same command to resume.")
        sys.exit(130)
    if ctx.evaluated and ctx.evaluated[0] == step:  # evaluated at this step already (then stopped, or re-run)
        acc = ctx.evaluated[1]
        ctx.curves.write(ctx.title, final=True)
    else:
        acc = ctx.test_accuracy(step, final=True)
        if not ctx.args.supervised_only:
            _write_samples(ctx, step)
    ctx.writer.flush()
    result = {"run_dir": str(ctx.run), "checkpoint": manager.latest_checkpoint, "step": step,
              "test_accuracy": acc, "stopped_by": status}
    if status == "done":
        evaler.write_json(ctx.run / "result.json", result)
    print(f"Step {step}: test accuracy {acc:.4f} ({len(ctx.test_split)} test images). Checkpoint: "
          f"{manager.latest_checkpoint}")
    if status == "time":
        print(f"Stopped by --time_budget_min {ctx.args.time_budget_min:g} at step {step} of {ctx.max_steps}; "
              "re-run the same command to continue.")
    return result


@exits_cleanly
def main(argv: list[str] | None = None) -> dict:
    """Parse flags, train, evaluate; returns the final result (also written to result.json)."""
    return train(parse_args(argv))


if __name__ == "__main__":
    main()

"""Flags shared by trainer.py and evaler.py, defined once, and how a dataset name becomes a file."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import datasets
import model
from datasets import folder
from datasets import format as fmt
from errors import UserError, non_negative_float, non_negative_int, positive_int

# Flags that fix the networks: recorded in config.json and checked when a checkpoint is restored.
MODEL_KEYS = ("arch", "g_arch", "head", "d_width", "g_width", "z_dim")

# What a flag missing from an older config.json meant, where that differs from today's default:
# the conv D dropped 20% of its input pixels before --d_input_dropout existed, lenet had the mlp G
# before --g_arch existed, no labelled (unlabelled) image was mirrored before --flip_classes (--flip_unlabeled),
# a run's evaluations took one pass per test image before --tta, D's probabilities as they came before --prior, and
# G's update had D's passes of its own after D's update before --g_update.
LEGACY_DEFAULTS = {"d_input_dropout": lambda cfg: 0.2 if cfg.get("arch") == "conv" else 0.0,
                   "g_arch": lambda cfg: "conv" if cfg.get("arch") == "conv" else "mlp",
                   "flip_classes": lambda cfg: "none", "flip_unlabeled": lambda cfg: "none", "tta": lambda cfg: "none",
                   "prior": lambda cfg: "none", "g_update": lambda cfg: "alternating"}


# What --d_width 0 (the arch's width) meant where config.json records it, as configs from before stop 39 do (since,
# the trainer records the width itself): lenet's D was 32 wide.
LEGACY_D_WIDTH = {"lenet": 32}


def recorded(cfg: dict, key: str, default=None):
    """A flag's value in a run's flags or config.json, including older configs made before the flag (or before
    the flag's value 0 meant what it means today); `default` for a flag neither names."""
    value = cfg[key] if key in cfg else LEGACY_DEFAULTS.get(key, lambda _: default)(cfg)
    if key == "d_width" and not value:  # 0, or (a config.json edited by hand) missing
        arch = cfg.get("arch")
        return LEGACY_D_WIDTH.get(arch, model.DISCRIMINATOR_WIDTH.get(arch, value))
    return value


def discriminator_of(cfg: dict, shape: tuple[int, int, int], num_class: int):
    """D as a run's flags (as trainer.parse_args resolves them) or config.json describe it.

    The input noise and dropout layers are among D's layers, so they fix its checkpoint's layout too:
    the evaler must build D with the values the run was trained with.
    """
    return model.build_discriminator(cfg["arch"], shape, num_class, cfg["head"], width=recorded(cfg, "d_width"),
                                     input_noise=cfg.get("d_input_noise"),
                                     input_dropout=recorded(cfg, "d_input_dropout"),
                                     features=cfg.get("fm_features", "noisy"),
                                     hidden_noise=cfg.get("d_hidden_noise"))


def generator_of(cfg: dict, shape: tuple[int, int, int]):
    """G as a run's flags or config.json describe it."""
    g_arch = recorded(cfg, "g_arch")
    width = cfg["g_width"] or model.generator_width(cfg["arch"], g_arch)
    return model.build_generator(g_arch, shape, cfg["z_dim"], width)


def read_run_config(run: Path) -> dict:
    """A run dir's config.json; an unreadable or damaged one is a UserError naming the file."""
    path = Path(run) / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e})") from None
    except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError
        raise UserError(f"{path} is damaged ({str(e).splitlines()[0][:80]}); restore it from a copy, "
                        "or train a new run") from None
    if not isinstance(cfg, dict) or "dataset_info" not in cfg:
        raise UserError(f"{path} is not a run's config (no dataset_info); restore it from a copy, or train a new run")
    info = cfg["dataset_info"]
    missing = [k for k in RUN_CONFIG_KEYS if k not in cfg] + (
        [f"dataset_info.{k}" for k in DATASET_INFO_KEYS if k not in info] if isinstance(info, dict)
        else ["dataset_info's fields"])
    if missing:
        raise UserError(f"{path} is damaged (no {', '.join(missing[:3])}); restore it from a copy, or train a new run")
    return cfg


# What every run's config.json has held, and the code reads without a fallback for older runs.
RUN_CONFIG_KEYS = ("dataset", "arch", "head", "z_dim", "g_width", "seed")
DATASET_INFO_KEYS = ("height", "width", "channels", "num_class", "class_names")


# The images the evaler writes into a run dir, by kind: a run dir may hold them (trainer.is_run_file).
RUN_IMAGE_KINDS = ("confusion", "samples")


def run_image(run: Path, kind: str, name: str) -> Path:
    """Where the evaler writes a run's image of `kind` (RUN_IMAGE_KINDS) for `name` (a split or a checkpoint)."""
    assert kind in RUN_IMAGE_KINDS, kind
    return run / f"{kind}_{name}.png"


def is_run_image(name: str) -> bool:
    """Whether a file name in a run dir is one of the evaler's images (run_image)."""
    return name.endswith(".png") and name.startswith(tuple(f"{kind}_" for kind in RUN_IMAGE_KINDS))


def dataset_record(info: fmt.DatasetInfo) -> dict:
    """What config.json records of the dataset: image shape and classes and, for an own image folder, which files
    the rows of its splits hold, to which the run's labelled indices and test split refer."""
    record = {"height": info.height, "width": info.width, "channels": info.channels, "num_class": info.num_class,
              "class_names": info.class_names}
    if "layout" in info.extra:  # conversions since stop 32: which file (and label) each row of each split holds
        record["files"] = info.extra["layout"]
    return record


DEFAULT_DATA_DIR = "data"


class _FolderOfPath(str):
    """--data_dir as a --dataset folder path set it: the folder holding that image folder."""


class _GivenDataDir(str):
    """--data_dir as given on the command line (so a --dataset path after it is checked even against 'data')."""


def split_dataset_path(value: str) -> tuple[str, str | None]:
    """--dataset's value as (name, the folder holding it): None for a name; a path must be an existing folder."""
    if not any(sep and sep in value for sep in ("/", os.sep, os.altsep)):
        return value, None
    parent, name = os.path.split(os.path.normpath(value))
    if os.path.isfile(os.path.join(value, fmt.FILE_NAME)):
        raise UserError(f"--dataset {value} is a converted dataset's folder, not an image folder; pass "
                        f"--dataset {name} --dataset_dir {parent or '.'}")
    if name in datasets.SOURCES:
        raise UserError(f"--dataset {value}: an image folder named like the public dataset {name} would be taken for "
                        "it; rename the folder, or pass --dataset as a name")
    if not os.path.isdir(value) or name in ("", ".", ".."):
        raise UserError(f"--dataset takes a dataset name or the path of an image folder, but {value} is not a "
                        f"folder; fix the path, or pass a name ({', '.join(datasets.SOURCES)}, or a folder's name "
                        "in --data_dir)")
    return name, parent or "."


def _check_data_dirs(folder_of_path: str, data_dir: str) -> None:
    """A --dataset folder path and a --data_dir given with it must name the same folder."""
    if os.path.realpath(folder_of_path) != os.path.realpath(data_dir):
        raise UserError(f"--dataset names an image folder in {folder_of_path} but --data_dir is {data_dir}; "
                        "drop --data_dir, or pass --dataset as a name")


class DatasetFlag(argparse.Action):
    """--dataset NAME, or the path of an image folder: then NAME is its base name and --data_dir its parent."""

    def __call__(self, parser, namespace, value, option_string=None):
        name, parent = split_dataset_path(value)
        if parent is not None:
            given = getattr(namespace, "data_dir", None)
            if isinstance(given, _GivenDataDir):
                _check_data_dirs(parent, given)
            namespace.data_dir = _FolderOfPath(parent)
        namespace.dataset = name


class DataDirFlag(argparse.Action):
    """--data_dir, checked against a --dataset folder path given before it."""

    def __call__(self, parser, namespace, value, option_string=None):
        given = getattr(namespace, "data_dir", None)
        if isinstance(given, _FolderOfPath):
            _check_data_dirs(given, value)
        else:
            namespace.data_dir = _GivenDataDir(value)


def add_data_flags(p: argparse.ArgumentParser) -> None:
    """--dataset and where/how to read it; --input_height/--input_width/--num_class as in the original toolkit."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=True, type=lambda name: name.rstrip("/") or name, action=DatasetFlag,
                   help="a downloaded dataset (mnist, fashion_mnist, cifar10, svhn), a folder name under --data_dir, "
                   "or the path of an image folder (then --data_dir is the folder holding it)")
    datasets.add_dataset_dir_flag(g)
    g.add_argument("--data_dir", default=DEFAULT_DATA_DIR, action=DataDirFlag,
                   help="where your own image folders live (data/<NAME>/<class>/...)")
    folder.add_conversion_flags(g)
    g.add_argument("--num_class", type=positive_int, default=None,
                   help="number of classes; must agree with the dataset")
    g.add_argument("--in_memory", choices=("auto", "yes", "no"), default="auto",
                   help="hold images in memory, or stream from the HDF5 file (auto: by --memory_budget_gb)")
    g.add_argument("--memory_budget_gb", type=non_negative_float, default=4.0,
                   help="largest split held in memory with auto")
    g.add_argument("--batch_size", type=positive_int, default=100, help="images per batch (each stream)")


def add_model_flags(p: argparse.ArgumentParser, defaults: bool = True) -> None:
    """The network flags; the evaler takes them without defaults (they come from config.json)."""
    g = p.add_argument_group("model")
    d = (lambda v: v) if defaults else (lambda v: None)
    g.add_argument("--arch", choices=model.ARCHS, default=d("lenet"),
                   help="network pair (see model.py): lenet for small images, conv for larger natural ones, "
                        "mlp the cheapest")
    g.add_argument("--g_arch", choices=model.GENERATORS, default=None,
                   help="generator: mlp (Salimans' MNIST G) or conv (DCGAN-style); None: the arch's "
                        f"({', '.join(f'{a}: {g}' for a, g in model.DEFAULT_GENERATOR.items())})")
    g.add_argument("--head", choices=model.HEADS, default=d("implicit"),
                   help="implicit: n logits, fake logit 0 (Salimans); nplus1: explicit n+1 softmax (Odena)")
    g.add_argument("--d_width", type=non_negative_int, default=d(0), help="discriminator width (0: the arch's: "
                   + ", ".join(f"{a} {w}" for a, w in model.DISCRIMINATOR_WIDTH.items()) + ")")
    g.add_argument("--g_width", type=non_negative_int, default=d(0),
                   help="generator width (0: mlp G 500 units; conv G 32 channels with lenet, else 64)")
    g.add_argument("--z_dim", type=positive_int, default=d(100), help="generator noise dimension")


def add_eval_flags(p: argparse.ArgumentParser, defaults: bool = True) -> argparse._ArgumentGroup:
    """How the trained classifier meets test images: the trainer's evaluations and the evaler's (which, without
    the flag, classifies as the run's trainer did). Returns the flags' group."""
    g = p.add_argument_group("evaluation")
    g.add_argument("--tta", choices=("mirror", "none"), default="mirror" if defaults else None,
                   help="test-time augmentation: mirror averages D's class probabilities for an image and its "
                        "mirror image where D predicts one of the run's --flip_classes with probability below "
                        f"{model.MIRROR_GATE} (none: one pass; nothing to do for a run without --flip_classes)"
                        + ("" if defaults else "; default: as the run was trained (runs from before the flag: none)"))
    g.add_argument("--prior", choices=("labeled", "none"), default="labeled" if defaults else None,
                   help="labeled: add offsets to D's class logits (before --tta) so that its mean class "
                        "probabilities over the training images (up to 60,000, labelled or not) are the class "
                        "frequencies of the labelled ones (a downloaded dataset's training labels, an own folder's "
                        "class folders); fitted for each checkpoint and saved beside it (none: D's logits as they are)"
                        + ("" if defaults else "; default: as the run was trained (runs from before the flag: none)"))
    return g


PRECISIONS = ("float16", "bfloat16")


def add_precision_flag(g, evaluating: bool = False) -> None:
    """--mixed_precision on a parser or group: the one definition for the trainer (training and its evaluations),
    the evaler (`evaluating`: which computes in float32 unless told, however the run was trained) and bench/speed.py."""
    g.add_argument("--mixed_precision", nargs="?", const="float16", default=None, choices=PRECISIONS,
                   help="compute in float16 (GPUs" + ("" if evaluating else "; dynamic loss scaling") + ") or "
                   "bfloat16 (CPUs with AMX, or AMD Zen 4's AVX512-BF16: 1.3-2x faster there; time it, older "
                   "AVX512-BF16 CPUs were slower) with float32 weights" + ("" if evaluating else " and losses")
                   + "; the flag alone means float16" + ("; D only (not the sample grid's G), and an --export "
                   "computes so too (default: float32, however the run was trained)" if evaluating else ""))


def mirror_classes(tta: str, flip_classes: str | None) -> tuple[int, ...]:
    """The classes --tta mirrors at test time: a run's --flip_classes as recorded ("0,2,3" or "none")."""
    if tta != "mirror" or flip_classes in (None, "", "none"):
        return ()
    try:
        return tuple(int(c) for c in flip_classes.split(","))
    except ValueError:
        raise UserError(f"flip_classes {flip_classes!r} in the run's config.json is not a list of class indices "
                        "(such as 0,2,3 or none); restore the file, or pass --tta none") from None


def resolve_dataset(args: argparse.Namespace) -> tuple[Path, fmt.DatasetInfo]:
    """The dataset file for args.dataset (converting an own image folder on first use), checked against the flags.

    A public dataset name (mnist, ...) always means the downloaded file, never a folder of that name.
    """
    if args.dataset not in datasets.SOURCES and folder.is_folder_dataset(args.dataset, args.data_dir):
        path = folder.ensure(args.dataset, data_dir=args.data_dir, dataset_dir=args.dataset_dir,
                             height=args.input_height, width=args.input_width, channels=args.channels,
                             num_class=args.num_class, test_fraction=args.test_fraction, resize=args.resize,
                             seed=getattr(args, "conversion_seed", None))
    else:
        path = datasets.require(args.dataset_dir, args.dataset, args.data_dir)
    info = fmt.read_info(path)
    # What the images were converted with (an own folder), recorded in the run's config.json; a downloaded dataset
    # records the defaults, as runs always have.
    args.resize = info.extra.get("resize", args.resize or folder.DEFAULT_RESIZE)
    args.test_fraction = float(info.extra.get("test_fraction", args.test_fraction or folder.DEFAULT_TEST_FRACTION))
    # An own folder's conversion seed (`download.py --folder --seed`: its test split and train order), so that
    # resuming or evaluating the run goes back to the conversion of that seed (None: a downloaded dataset).
    args.conversion_seed = info.extra.get("seed")
    check_shape_flags(args, info.height, info.width, info.num_class, f"dataset {args.dataset}")
    return path, info


def check_shape_flags(args: argparse.Namespace, height: int, width: int, num_class: int, what: str) -> None:
    """--input_height/--input_width/--num_class, where given, must agree with `what`."""
    for flag, value in (("input_height", height), ("input_width", width), ("num_class", num_class)):
        given = getattr(args, flag, None)
        if given is not None and given != value:
            raise UserError(f"--{flag} {given} does not match {what}, which has {flag} {value}; "
                            f"drop the flag or pass --{flag} {value}")

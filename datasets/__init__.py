"""Datasets: the HDF5 format (format.py) and one small module per source.

Every dataset lives in one file, `<dataset_dir>/<name>/data.hdf5` (see format.py), made by
`python download.py NAME`. `SOURCES` maps each public dataset name to its module; adding a
source is one module plus one line here. A source module defines:

    HEIGHT, WIDTH, CHANNELS, CLASS_NAMES, HOMEPAGE
    MIRROR_CLASSES  the classes whose labelled images the trainer mirrors by default (--flip_classes auto)
    MIRRORS     base URLs (HTTPS), tried in order; a raw file's URL is base + file name
    FILES       {raw file name: (accepted SHA-256, ...)}, pinned
    LOCAL_DIRS  folders searched for the raw files before any download (may be empty)
    load(raw: dict[str, Path]) -> Iterator[(split, images uint8 [n,H,W,C], labels int64 [n])]

The trainer and evaler share the `--dataset_dir` flag (`add_dataset_dir_flag`) and find a
dataset with `require(dataset_dir, name)`, whose error says how to create a missing one.
"""
from __future__ import annotations

import argparse
import difflib
import os
from pathlib import Path
from types import ModuleType

from datasets import cifar10, fashion_mnist, mnist, svhn
from datasets.format import dataset_path, read_info
from errors import UserError

DEFAULT_DATASET_DIR = "datasets"

SOURCES: dict[str, ModuleType] = {
    "mnist": mnist,
    "fashion_mnist": fashion_mnist,
    "cifar10": cifar10,
    "svhn": svhn,
}


def source(name: str) -> ModuleType:
    """The source module of public dataset `name`; an unknown name is a UserError listing the known ones."""
    if name not in SOURCES:
        close = _closest(name, list(SOURCES))
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise UserError(f"unknown dataset {name!r}{hint}; known: {', '.join(SOURCES)} "
                        "(for your own images use: python download.py --folder data/NAME)")
    return SOURCES[name]


def mirror_classes(name: str) -> list[str]:
    """The classes of dataset `name` whose mirror images are images of that class: its source's MIRROR_CLASSES,
    none for an own image folder."""
    return list(SOURCES[name].MIRROR_CLASSES) if name in SOURCES else []


def add_dataset_dir_flag(parser: argparse.ArgumentParser) -> None:
    """Define `--dataset_dir` on a parser: the one definition shared by download.py, trainer and evaler."""
    parser.add_argument("--dataset_dir", default=DEFAULT_DATASET_DIR, metavar="DIR",
                        help="folder holding <name>/data.hdf5 for each dataset")


def path(dataset_dir: str | os.PathLike, name: str) -> Path:
    """Where dataset `name` lives under `dataset_dir` (whether or not it exists yet)."""
    return dataset_path(dataset_dir, name)


def create_command(name: str, dataset_dir: str | os.PathLike = DEFAULT_DATASET_DIR) -> str:
    """The shell command that creates dataset `name` in `dataset_dir`, for error messages."""
    where = "" if str(dataset_dir) == DEFAULT_DATASET_DIR else f" --dataset_dir {dataset_dir}"
    if name in SOURCES:
        return f"python download.py {name}{where}"
    return f"python download.py --folder data/{name} --input_height H --input_width W{where}"


def require(dataset_dir: str | os.PathLike, name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """Path of an existing, valid dataset file; if it is missing, a UserError naming the command to create it or,
    for a name that is neither a public dataset nor a folder in `data_dir` (when given), the closest names."""
    p = path(dataset_dir, name)
    if not p.exists():
        if data_dir is not None and name not in SOURCES and not (Path(data_dir) / name).is_dir():
            raise UserError(_unknown(name, dataset_dir, data_dir))
        raise UserError(f"dataset {name!r} not found at {p}; create it with: {create_command(name, dataset_dir)}")
    read_info(p)
    return p


def _unknown(name: str, dataset_dir: str | os.PathLike, data_dir: str | os.PathLike) -> str:
    """The error for a dataset name that is nothing known: the closest names and how to make either kind."""
    where = "" if str(dataset_dir) == DEFAULT_DATASET_DIR else f" --dataset_dir {dataset_dir}"
    from datasets.folder import subdirs  # here: it loads Pillow, which only this error needs

    converted = [d for d in subdirs(dataset_dir) if path(dataset_dir, d).is_file()]
    close = _closest(name, [*SOURCES, *subdirs(data_dir), *converted])
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return (f"dataset {name!r} is neither a public dataset ({', '.join(SOURCES)}) nor an image folder in "
            f"{os.path.join(data_dir, '')}{hint}; download a public one with: python download.py NAME{where}, or "
            f"put your images in {Path(data_dir) / name}/<class>/")


def _closest(name: str, names: list[str]) -> list[str]:
    """Up to three of `names` closest to `name` (case aside), best first."""
    by_lower = {n.lower(): n for n in reversed(names)}  # the first spelling of a name wins
    return [by_lower[n] for n in difflib.get_close_matches(name.lower(), list(by_lower), n=3)]



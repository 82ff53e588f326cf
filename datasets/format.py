"""The one on-disk dataset format: `<dataset_dir>/<name>/data.hdf5`, read, written, validated here.

Layout (FORMAT_VERSION 1):
    train/images  uint8 [N, H, W, C]   contiguous along N, chunked
    train/labels  int64 [N]            -1 = no label (unlabelled images)
    test/images   uint8 [M, H, W, C]
    test/labels   int64 [M]            every test image has a label
    attrs: format_version, name, height, width, channels, num_class,
           class_names (JSON list), sources (JSON {file: sha256}), extra (JSON)

Files are written under a temporary name in the same folder and renamed at the end, so a
reader never sees a half-written file: an interrupted write leaves no `data.hdf5` behind.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from errors import UserError

FORMAT_VERSION = 1
FILE_NAME = "data.hdf5"
SPLITS = ("train", "test")
CHUNK_IMAGES = 1024


@dataclass
class DatasetInfo:
    """What a dataset is: its name, image shape, classes and where its raw files came from."""

    name: str
    height: int
    width: int
    channels: int
    class_names: list[str]
    sources: dict[str, str] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def num_class(self) -> int:
        return len(self.class_names)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)


def dataset_path(dataset_dir: str | os.PathLike, name: str) -> Path:
    """Where dataset `name` lives under `dataset_dir`."""
    return Path(dataset_dir) / name / FILE_NAME


class Writer:
    """Write a dataset in chunks, atomically: `with Writer(path, info) as w: w.append(...)`.

    Arrays grow as chunks are appended, so a dataset larger than memory can be written.
    On a clean exit the temporary file is renamed to `path`; on any exception it is removed.
    """

    def __init__(self, path: str | os.PathLike, info: DatasetInfo):
        self.path = Path(path)
        self.info = info
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.file: h5py.File | None = None

    def __enter__(self) -> "Writer":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = h5py.File(self.tmp, "w")
        except OSError as e:
            self._discard()
            raise UserError(f"cannot write {self.path} ({e.strerror or e}); choose a writable --dataset_dir "
                            "with free space") from None
        try:
            for split in SPLITS:
                g = self.file.create_group(split)
                g.create_dataset("images", shape=(0, *self.info.shape), maxshape=(None, *self.info.shape),
                                 dtype=np.uint8, chunks=(min(CHUNK_IMAGES, 64), *self.info.shape))
                g.create_dataset("labels", shape=(0,), maxshape=(None,), dtype=np.int64,
                                 chunks=(CHUNK_IMAGES,))
        except BaseException:  # __exit__ is not called when __enter__ fails: remove the temporary file here
            self._discard()
            raise
        return self

    def _discard(self) -> None:
        """Close and remove the temporary file, if there is one."""
        try:
            if self.file is not None:
                self.file.close()
        finally:
            with contextlib.suppress(OSError):
                self.tmp.unlink()

    def append(self, split: str, images: np.ndarray, labels: np.ndarray) -> None:
        """Append images [n,H,W,C] uint8 and labels [n] int64 (-1 = unlabelled) to a split."""
        images = np.asarray(images)
        labels = np.asarray(labels, dtype=np.int64)
        if images.dtype != np.uint8 or images.shape[1:] != self.info.shape:
            raise ValueError(f"images must be uint8 {self.info.shape}, got {images.dtype} {images.shape[1:]}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        g = self.file[split]
        n = g["images"].shape[0]
        for key, arr in (("images", images), ("labels", labels)):
            g[key].resize(n + len(arr), axis=0)
            g[key][n:] = arr

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                _write_attrs(self.file, self.info)
                self.file.flush()
                self.file.close()
                _validate_open(self.tmp)
                os.replace(self.tmp, self.path)
            else:
                self.file.close()
        finally:
            if self.tmp.exists():
                self.tmp.unlink()


def write(path: str | os.PathLike, info: DatasetInfo, splits: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """Write in-memory arrays {split: (images, labels)} as one dataset file, atomically."""
    with Writer(path, info) as w:
        for split, (images, labels) in splits.items():
            w.append(split, images, labels)
    return Path(path)


def _write_attrs(f: h5py.File, info: DatasetInfo) -> None:
    f.attrs.update({
        "format_version": FORMAT_VERSION,
        "name": info.name,
        "height": info.height,
        "width": info.width,
        "channels": info.channels,
        "num_class": info.num_class,
        "class_names": json.dumps(info.class_names),
        "sources": json.dumps(info.sources),
        "extra": json.dumps(info.extra),
    })


def read_info(path: str | os.PathLike) -> DatasetInfo:
    """Validate the file at `path` and return its DatasetInfo; a bad file is a UserError."""
    return _validate_open(Path(path))


def _validate_open(path: Path) -> DatasetInfo:
    if not path.exists():
        raise UserError(f"dataset file {path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            return _check(f, path)
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a readable dataset file ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else 'bad content'}); "
                        "delete it and run download.py again") from None


def _check(f: h5py.File, path: Path) -> DatasetInfo:
    a = f.attrs
    if a.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} is not a dataset file of format version {FORMAT_VERSION} "
                        f"(found {a.get('format_version')!r}); delete it and run download.py again")
    info = DatasetInfo(name=str(a["name"]), height=int(a["height"]), width=int(a["width"]),
                       channels=int(a["channels"]), class_names=json.loads(a["class_names"]),
                       sources=json.loads(a["sources"]), extra=json.loads(a["extra"]))
    if int(a["num_class"]) != info.num_class:
        raise ValueError("num_class disagrees with class_names")
    for split in SPLITS:
        images, labels = f[f"{split}/images"], f[f"{split}/labels"]
        if images.dtype != np.uint8 or images.shape[1:] != info.shape:
            raise ValueError(f"{split}/images has shape {images.shape} dtype {images.dtype}, "
                             f"expected [N, {info.height}, {info.width}, {info.channels}] uint8")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{split} has {images.shape[0]} images but {labels.shape[0]} labels")
    return info


def load(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a whole split into memory: (images uint8 [N,H,W,C], labels int64 [N])."""
    read_info(path)
    with h5py.File(path, "r") as f:
        return f[f"{split}/images"][...], f[f"{split}/labels"][...]


def split_size(path: str | os.PathLike, split: str) -> int:
    """Number of images in a split, without reading them."""
    with h5py.File(path, "r") as f:
        return int(f[f"{split}/labels"].shape[0])

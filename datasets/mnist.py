"""MNIST handwritten digits (idx format), and the idx parsing that Fashion-MNIST shares."""
from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from errors import UserError

HEIGHT, WIDTH, CHANNELS = 28, 28, 1
CLASS_NAMES = [str(d) for d in range(10)]
MIRROR_CLASSES: list[str] = []  # a mirrored digit is not a digit
HOMEPAGE = "http://yann.lecun.com/exdb/mnist/"
# yann.lecun.com no longer serves the files freely; these two mirrors hold the identical files.
MIRRORS = [
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
]
# SHA-256 as pinned by tensorflow/datasets (url_checksums/mnist.txt) and torchvision's mirrors.
FILES: dict[str, tuple[str, ...]] = {
    "train-images-idx3-ubyte.gz": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",),
    "train-labels-idx1-ubyte.gz": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",),
    "t10k-images-idx3-ubyte.gz": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",),
    "t10k-labels-idx1-ubyte.gz": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",),
}
LOCAL_DIRS: list[Path] = []

SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_IDX_UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped idx file of unsigned bytes (the MNIST container) into an array of its declared shape."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != _IDX_UBYTE:
        raise UserError(f"{path} is not an idx file of unsigned bytes")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if len(data) - header != int(np.prod(shape)):
        raise UserError(f"{path} holds {len(data) - header} bytes of data but declares shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_split(raw: dict[str, Path], prefix: str, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Images [n,H,W,1] uint8 and labels [n] int64 of one split from its two idx files."""
    images = read_idx(raw[f"{prefix}-images-idx3-ubyte.gz"])
    labels = read_idx(raw[f"{prefix}-labels-idx1-ubyte.gz"]).astype(np.int64)
    if images.ndim != 3 or images.shape[1:] != (height, width):
        raise UserError(f"{prefix} images have shape {images.shape}, expected [n, {height}, {width}]")
    if labels.shape != (images.shape[0],):
        raise UserError(f"{prefix} has {images.shape[0]} images but labels of shape {labels.shape}")
    return images[..., None], labels


def load(raw: dict[str, Path]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield (split, images, labels) for train and test from the four idx files."""
    for split, prefix in SPLIT_PREFIX.items():
        yield (split, *read_idx_split(raw, prefix, HEIGHT, WIDTH))

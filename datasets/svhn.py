"""SVHN cropped digits (32x32) from the official MATLAB files train_32x32.mat and test_32x32.mat."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from errors import UserError

HEIGHT, WIDTH, CHANNELS = 32, 32, 3
CLASS_NAMES = [str(d) for d in range(10)]
MIRROR_CLASSES: list[str] = []  # a mirrored digit is not a digit
HOMEPAGE = "http://ufldl.stanford.edu/housenumbers/"
MIRRORS = ["https://ufldl.stanford.edu/housenumbers/"]
# SHA-256 as pinned by tensorflow/datasets (url_checksums/svhn_cropped.txt) and torchvision's prototype.
FILES: dict[str, tuple[str, ...]] = {
    "train_32x32.mat": ("435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8",),
    "test_32x32.mat": ("cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b",),
}
LOCAL_DIRS: list[Path] = []

SPLIT_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
CHUNK = 8192


def read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """X [32,32,3,N] uint8 and labels [N] int64 (the file's label 10 means digit 0) from one .mat file."""
    from scipy.io import loadmat  # scipy is only needed for this source

    try:
        mat = loadmat(path)
    except (ValueError, OSError) as e:
        raise UserError(f"{path} is not a readable MATLAB file ({e})") from None
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None or x.shape[:3] != (HEIGHT, WIDTH, CHANNELS) or y.size != x.shape[3]:
        raise UserError(f"{path} lacks X [32,32,3,N] and y [N] as in the official SVHN files")
    labels = y.reshape(-1).astype(np.int64)
    labels[labels == 10] = 0
    return x.astype(np.uint8, copy=False), labels


def load(raw: dict[str, Path]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield (split, images [n,32,32,3], labels) in chunks, transposing X from [H,W,C,N]."""
    for split, name in SPLIT_FILES.items():
        x, labels = read_mat(raw[name])
        for start in range(0, len(labels), CHUNK):
            chunk = x[..., start:start + CHUNK]
            yield split, np.ascontiguousarray(chunk.transpose(3, 0, 1, 2)), labels[start:start + CHUNK]

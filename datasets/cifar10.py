"""CIFAR-10 from its binary release: records of 1 label byte + 3072 pixel bytes (CHW), read from the tar.gz.

Members are read straight from the archive, never extracted, and no pickle is ever loaded.
"""
from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from errors import UserError

HEIGHT, WIDTH, CHANNELS = 32, 32, 3
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# Every class is mirror-symmetric, but flips are not measured here (no network): off until they are.
MIRROR_CLASSES: list[str] = []
HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
MIRRORS = ["https://www.cs.toronto.edu/~kriz/"]
ARCHIVE = "cifar-10-binary.tar.gz"
# SHA-256 as pinned by tensorflow/datasets (url_checksums/cifar10.txt, 170052171 bytes).
FILES: dict[str, tuple[str, ...]] = {
    ARCHIVE: ("c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",),
}
LOCAL_DIRS: list[Path] = []

MEMBER_DIR = "cifar-10-batches-bin"
SPLIT_MEMBERS = {
    "train": [f"data_batch_{i}.bin" for i in range(1, 6)],
    "test": ["test_batch.bin"],
}
RECORD = 1 + HEIGHT * WIDTH * CHANNELS


def parse_records(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Images [n,32,32,3] uint8 (HWC) and labels [n] int64 from CIFAR-10 binary records."""
    if len(data) % RECORD:
        raise UserError(f"{where} is {len(data)} bytes, not a whole number of {RECORD}-byte CIFAR-10 records")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    images = records[:, 1:].reshape(-1, CHANNELS, HEIGHT, WIDTH).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), records[:, 0].astype(np.int64)


def read_members(archive: Path, wanted: set[str]) -> dict[str, bytes]:
    """Bytes of the wanted batch files, read from regular members at their exact expected path only."""
    found: dict[str, bytes] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parent, _, base = member.name.rpartition("/")
            if member.isfile() and parent == MEMBER_DIR and base in wanted:
                found[base] = tar.extractfile(member).read()
    missing = sorted(wanted - found.keys())
    if missing:
        raise UserError(f"{archive} lacks {', '.join(f'{MEMBER_DIR}/{m}' for m in missing)}")
    return found


def load(raw: dict[str, Path]) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield (split, images, labels) per batch file: train batches 1..5 in order, then the test batch."""
    members = read_members(raw[ARCHIVE], {m for names in SPLIT_MEMBERS.values() for m in names})
    for split, names in SPLIT_MEMBERS.items():
        for name in names:
            yield (split, *parse_records(members.pop(name), f"{MEMBER_DIR}/{name}"))

"""A tiny, learnable dataset (class c = a bright square at one of a few spots) and tiny model flags."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from datasets import format as fmt

TINY_FLAGS = ["--arch", "mlp", "--d_width", "64", "--g_width", "32", "--z_dim", "8", "--batch_size", "12",
              "--summary_every", "10", "--eval_every", "10", "--ckpt_every", "10", "--steps_per_loop", "5"]


def sup_loss_floor(num_class: int, smoothing: float) -> float:
    """The lowest train/loss_sup a run with --sup_smoothing can log: the entropy of its smoothed targets."""
    target = np.full(num_class, smoothing / num_class)
    target[0] += 1 - smoothing
    return float(-(target * np.log(target)).sum())


def tiny_images(labels: np.ndarray, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Noise images with a bright 4x4 square whose position encodes the label."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    x = rng.integers(0, 60, size=(len(labels), h, w, c), dtype=np.uint8)
    for i, y in enumerate(labels):
        top, left = (y * 4) % (h - 3), (y * 7) % (w - 3)
        x[i, top:top + 4, left:left + 4, :] = 255
    return x


def make_tiny_dataset(dataset_dir: Path, name: str = "tiny", shape=(12, 12, 1), num_class: int = 3,
                      per_class: int = 40, test_per_class: int = 10) -> Path:
    """Write a tiny dataset file and return its path."""
    ytr = np.repeat(np.arange(num_class), per_class)
    yte = np.repeat(np.arange(num_class), test_per_class)
    info = fmt.DatasetInfo(name, *shape, [f"class{i}" for i in range(num_class)])
    return fmt.write(fmt.dataset_path(dataset_dir, name), info,
                     {"train": (tiny_images(ytr, shape, 0), ytr), "test": (tiny_images(yte, shape, 1), yte)})

"""Benchmark datasets/folder.py: convert N synthetic 64x64x3 JPEGs; print images/s and peak RSS.

    python bench/folder_convert.py [--n 20000] [--workers W]

Writes bench/results/folder_convert.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datasets import folder  # noqa: E402
from datasets.format import read_info, split_size  # noqa: E402

CLASSES = 10
SIZE = 64


def generate(root: Path, n: int, seed: int = 0) -> int:
    """Write n smooth random 64x64 RGB JPEGs into root/c0..c9 (10% into root/unlabeled); return bytes written."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    total = 0
    for i in range(n):
        sub = "unlabeled" if i % 10 == 9 else f"c{i % CLASSES}"
        a, b, c = rng.uniform(0, 255, (3, 3, 1, 1))
        img = a * xx + b * yy + c * (1 - xx) * yy + rng.normal(0, 12, (3, SIZE, SIZE))
        arr = np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        path = root / sub / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr, "RGB").save(path, quality=90)
        total += path.stat().st_size
    return total


def peak_rss_mb(who: int) -> float:
    """Peak resident set size in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    r = resource.getrusage(who).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024


def main() -> None:
    """Generate, convert, report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="number of JPEGs to generate (default 20000)")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "folder_convert.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="folder_bench_") as tmp:
        src = Path(tmp) / "data" / "bench"
        t0 = time.perf_counter()
        nbytes = generate(src, args.n)
        gen_s = time.perf_counter() - t0
        rss_before = peak_rss_mb(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        path = folder.convert(src, Path(tmp) / "datasets", height=SIZE, width=SIZE, channels=3,
                              workers=args.workers)
        conv_s = time.perf_counter() - t0
        info = read_info(path)
        n_out = split_size(path, "train") + split_size(path, "test")
        out_mb = path.stat().st_size / 2**20
        t0 = time.perf_counter()
        folder.convert(src, Path(tmp) / "datasets", height=SIZE, width=SIZE, channels=3, workers=args.workers)
        noop_s = time.perf_counter() - t0
    result = {
        "n_images": args.n, "n_written": n_out, "shape": list(info.shape),
        "workers": args.workers or folder.cpus(), "cpus": os.cpu_count(),
        "jpeg_mb": round(nbytes / 2**20, 1), "hdf5_mb": round(out_mb, 1),
        "generate_s": round(gen_s, 2), "convert_s": round(conv_s, 2),
        "images_per_s": round(args.n / conv_s, 1), "noop_rerun_s": round(noop_s, 3),
        "peak_rss_main_mb_before_convert": round(rss_before, 1),
        "peak_rss_main_mb": round(peak_rss_mb(resource.RUSAGE_SELF), 1),
        "peak_rss_worker_mb": round(peak_rss_mb(resource.RUSAGE_CHILDREN), 1),
        "decoded_dataset_mb": round(args.n * SIZE * SIZE * 3 / 2**20, 1),
        "python": platform.python_version(), "pillow": Image.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.n} images in {conv_s:.1f} s: {result['images_per_s']:.0f} images/s with {result['workers']} "
          f"worker(s); peak RSS main {result['peak_rss_main_mb']:.0f} MB, worker {result['peak_rss_worker_mb']:.0f} "
          f"MB (decoded data {result['decoded_dataset_mb']:.0f} MB); no-op re-run {noop_s:.2f} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Benchmark download.py on the real Fashion-MNIST from /usr/share/datasets/fashion-mnist (no network).

    python bench/import_speed.py [--repeats 3]

Times `download.py fashion_mnist --source DIR --force` end to end (a fresh process: imports, SHA-256 of the
four raw files, idx parsing, HDF5 write) into a temporary dataset_dir, then the no-op re-run.
Writes bench/results/import_speed.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path("/usr/share/datasets/fashion-mnist")
IMAGES = 70000


def run(args: list[str]) -> float:
    """Seconds one `download.py` process takes; a non-zero exit aborts the benchmark."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "download.py"), *args], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    """Time the conversion and the no-op re-run; print a table; write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="timed conversions (default 3)")
    ap.add_argument("--source", default=str(SOURCE), help=f"raw Fashion-MNIST folder (default {SOURCE})")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "import_speed.json"))
    args = ap.parse_args()
    if not Path(args.source).is_dir():
        sys.exit(f"error: {args.source} not found (apt-get install dataset-fashion-mnist)")
    with tempfile.TemporaryDirectory(prefix="import_speed_") as tmp:
        base = ["fashion_mnist", "--source", args.source, "--dataset_dir", tmp]
        convert_s = [run([*base, "--force"]) for _ in range(args.repeats)]
        noop_s = [run(base) for _ in range(args.repeats)]
        size_mb = (Path(tmp) / "fashion_mnist" / "data.hdf5").stat().st_size / 2**20
    result = {
        "command": "download.py fashion_mnist --source " + args.source + " --force",
        "images": IMAGES, "repeats": args.repeats,
        "convert_s": [round(s, 3) for s in convert_s], "convert_median_s": round(statistics.median(convert_s), 3),
        "images_per_s": round(IMAGES / statistics.median(convert_s)),
        "noop_rerun_median_s": round(statistics.median(noop_s), 3), "hdf5_mb": round(size_mb, 1),
        "cpus": os.cpu_count(), "python": platform.python_version(),
    }
    print(f"{'what':<34}{'median s':>10}{'runs':>30}")
    print(f"{'convert 70000 images (--force)':<34}{result['convert_median_s']:>10.3f}"
          f"{' '.join(f'{s:.3f}' for s in convert_s):>30}")
    print(f"{'no-op re-run':<34}{result['noop_rerun_median_s']:>10.3f}{' '.join(f'{s:.3f}' for s in noop_s):>30}")
    print(f"{result['images_per_s']} images/s end to end, data.hdf5 {result['hdf5_mb']} MB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

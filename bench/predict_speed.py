"""Benchmark `evaler.py --predict`: classify N synthetic 28x28 PNGs end to end; print images/s.

    python bench/predict_speed.py [--n 5000 20000] [--repeat 3]

Builds a run dir by a 1-step train of the default mlp (MNIST-sized) on a tiny 28x28 dataset, then times
the whole command (python start, TensorFlow import, listing, decoding, D, CSV) and, from the evaler's own
stderr line, the part after the imports. Writes bench/results/predict_speed.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def generate(root: Path, n: int, seed: int = 0) -> None:
    """Write n 28x28 grayscale PNGs (blurred noise) into root/c0..c9."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = rng.integers(0, 256, (28, 28)).astype(np.float32)
        a = (a + np.roll(a, 1, 0) + np.roll(a, 1, 1)) / 3
        path = root / f"c{i % 10}" / f"{i:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a.astype(np.uint8), "L").save(path)


def make_run(tmp: Path) -> Path:
    """A run dir of the default mlp D on 28x28x1, 10 classes, after 1 training step."""
    code = ("import sys; from pathlib import Path; from tests.tiny import make_tiny_dataset; import trainer; "
            "make_tiny_dataset(Path(sys.argv[1]), shape=(28, 28, 1), num_class=10, per_class=4, test_per_class=2); "
            "trainer.main(['--dataset', 'tiny', '--dataset_dir', sys.argv[1], '--train_dir', sys.argv[2], "
            "'--num_labeled', '10', '--batch_size', '10', '--max_steps', '1'])")
    run = tmp / "run"
    subprocess.run([sys.executable, "-c", code, str(tmp / "ds"), str(run)], cwd=ROOT, env=ENV, check=True,
                   capture_output=True)
    return run


def timed(cmd: list[str]) -> tuple[float, str]:
    """(wall seconds, stderr) of a command that must succeed."""
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return wall, proc.stderr


def predict_once(run: Path, images: Path, out: Path, workers: int) -> tuple[float, float]:
    """(whole-command seconds, seconds after imports as evaler reports them) of one --predict."""
    wall, err = timed([sys.executable, "evaler.py", "--checkpoint", str(run), "--predict", str(images),
                       "--output", str(out), "--workers", str(workers), "--dataset_dir", str(run.parent / "ds")])
    inner = float(re.search(r"classified \d+ image\(s\) in ([\d.]+) s", err).group(1))
    return wall, inner


def main() -> None:
    """Generate, time, report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[5000, 20000], help="numbers of PNGs to classify")
    ap.add_argument("--repeat", type=int, default=3, help="runs per setting (the median is reported)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "predict_speed.json"))
    args = ap.parse_args()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = make_run(tmp)
        startup = statistics.median(timed([sys.executable, "-c", "import evaler"])[0] for _ in range(args.repeat))
        for n in args.n:
            generate(tmp / f"png{n}", n)
            for workers in sorted({1, cpus}):
                times = [predict_once(run, tmp / f"png{n}", tmp / "out.csv", workers) for _ in range(args.repeat)]
                rows.append(row(n, workers, times, tmp / "out.csv"))
    report(rows, startup, cpus, args.out)


def row(n: int, workers: int, times: list[tuple[float, float]], csv_path: Path) -> dict:
    """One result row: medians and images/s, the CSV checked to hold n predictions."""
    assert len(csv_path.read_text().splitlines()) == n + 1
    wall, inner = statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)
    return {"images": n, "workers": workers, "wall_s": round(wall, 3), "wall_img_per_s": round(n / wall),
            "after_imports_s": round(inner, 3), "after_imports_img_per_s": round(n / inner)}


def report(rows: list[dict], startup: float, cpus: int, out: str) -> None:
    """Print a table and write the JSON result."""
    print(f"python + imports (python -c 'import evaler'): {startup:.2f} s; CPUs: {cpus}; "
          f"load average: {os.getloadavg()[0]:.2f}")
    print(f"{'images':>7} {'workers':>7} {'command s':>10} {'img/s':>8} {'after-import s':>15} {'img/s':>8}")
    for r in rows:
        print(f"{r['images']:>7} {r['workers']:>7} {r['wall_s']:>10.2f} {r['wall_img_per_s']:>8} "
              f"{r['after_imports_s']:>15.2f} {r['after_imports_img_per_s']:>8}")
    result = {"benchmark": "evaler.py --predict, 28x28 grayscale PNGs, default mlp D (1000-500-250-250-250)",
              "startup_import_s": round(startup, 3), "cpus": cpus, "loadavg_1min": round(os.getloadavg()[0], 2),
              "python": platform.python_version(), "platform": platform.platform(), "rows": rows}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

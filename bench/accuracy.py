"""Benchmark test accuracy: the SSGAN against the same discriminator trained on the labels alone.

For every label count and seed (seed s draws a different balanced labelled subset), run
`python trainer.py` twice in fresh run dirs (the SSGAN, then `--supervised_only`), each under a time
budget, then `python evaler.py --checkpoint RUN --json` and take its accuracy (checked against the run's
result.json). Prints one line per finished run, then a table of mean +- std test accuracy per
(labels, method) and the gain SSGAN - supervised; writes every run's numbers and exact commands to
bench/results/accuracy.json after each run (atomically), so `--resume` continues a stopped benchmark.

    python bench/accuracy.py --quick                     # tiny synthetic dataset, 2 seeds (~40 CPU s; tests)
    python bench/accuracy.py                             # Fashion-MNIST, 100 and 1000 labels, 3 seeds (hours)
    python bench/accuracy.py --resume                    # continue it after a stop, skipping recorded runs
    python bench/accuracy.py --labels 100 --seeds 5 --budget_min 60 --max_steps 40000
    python bench/accuracy.py --ssgan_flags "--entropy_weight 0.1" --common_flags "--augment"
    python bench/accuracy.py --labels 100 --methods supervised --sup_steps 3000   # the baselines alone

Other datasets (download them first, e.g. `python download.py mnist cifar10`; not possible offline):

    python bench/accuracy.py --dataset mnist --labels 100 1000
    python bench/accuracy.py --dataset cifar10 --labels 4000 --common_flags "--arch conv"
    python bench/accuracy.py --dataset svhn --labels 1000 --common_flags "--arch conv"

The table (wall s: the trainer command's wall time; steps: the evaluated checkpoint's step; n: seeds):

    dataset        labels  method          test accuracy    wall s    steps   n
    ---------------------------------------------------------------------------
    fashion_mnist     100  ssgan       0.7500 +- 0.0100    1800.0    12000   3
    fashion_mnist     100  supervised  0.6500 +- 0.0100     120.0     2000   3
    gain (ssgan - supervised), 100 labels: +0.1000 +- 0.0100 (paired over 3 seeds)

(numbers for illustration). --budget_min is trainer.py's --time_budget_min (wall clock on this machine; a run stops at
--max_steps / --sup_steps or at the budget, whichever comes first, and the JSON records which).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
METHODS = ("ssgan", "supervised")
# Data flags of --common_flags that the evaler needs too (it shares them with the trainer via config.py).
EVAL_DATA_FLAGS = ("--dataset_dir", "--data_dir", "--input_height", "--input_width", "--num_class", "--channels",
                   "--resize", "--test_fraction", "--in_memory", "--memory_budget_gb")
QUICK = {"dataset": "tiny", "labels": [30], "seeds": 2, "max_steps": 20, "sup_steps": 20, "jobs": 2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Benchmark flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--dataset", default="fashion_mnist", help="dataset name, as for trainer.py (default fashion_mnist)")
    p.add_argument("--labels", type=int, nargs="+", default=[100, 1000],
                   help="label counts (--num_labeled; default 100 1000)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per label count (default 3)")
    p.add_argument("--budget_min", type=float, default=30.0, help="trainer --time_budget_min of every run (default 30)")
    p.add_argument("--max_steps", type=int, default=12000, help="trainer --max_steps of the SSGAN runs (default 12000)")
    p.add_argument("--sup_steps", type=int, default=2000, help="trainer --max_steps of supervised runs (default 2000)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="which runs: the SSGAN, the supervised-only baseline, or both (default)")
    p.add_argument("--ssgan_flags", default="", help="extra trainer flags of the SSGAN runs (one string)")
    p.add_argument("--common_flags", default="", help="extra trainer flags of every run (one string)")
    p.add_argument("--runs_root", default=None, help="parent of the run dirs (default bench/results/runs; "
                   "--quick: a temporary folder, deleted at the end)")
    p.add_argument("--out", default=None, help="the JSON (default bench/results/accuracy.json; "
                   "--quick: bench/results/accuracy_quick.json)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1: timings undisturbed; "
                   "--quick: 2)")
    p.add_argument("--resume", action="store_true", help="skip runs whose result (same command) is in the JSON")
    p.add_argument("--quick", action="store_true",
                   help="tiny synthetic dataset (tests.tiny), 2 seeds, 30 labels, 20 steps, 2 jobs: a smoke test")
    if p.parse_args(argv).quick:  # --quick changes the defaults; flags given still win
        p.set_defaults(**QUICK)
    return p.parse_args(argv)


# ---------------------------------------------------------------- plan and commands


def rel(path: Path) -> str:
    """A path relative to the repo root when inside it (commands run there), else absolute."""
    path = Path(os.path.normpath(Path(path).absolute()))  # no resolve(): keep the venv's python symlink
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def python_cmd() -> str:
    """This interpreter (e.g. .venv/bin/python), as a command run from the repo root."""
    return rel(Path(sys.executable))


def run_name(dataset: str, labels: int, method: str, seed: int) -> str:
    """The run dir's name under --runs_root."""
    return f"{dataset}-{labels}-{method}-seed{seed}"


def trainer_cmd(args: argparse.Namespace, common: list[str], labels: int, method: str, seed: int,
                run_dir: Path) -> list[str]:
    """The exact `python trainer.py ...` command of one run."""
    steps = args.max_steps if method == "ssgan" else args.sup_steps
    cmd = [python_cmd(), "trainer.py", "--dataset", args.dataset, "--num_labeled", str(labels), "--seed", str(seed),
           "--max_steps", str(steps), "--time_budget_min", f"{args.budget_min:g}", "--train_dir", rel(run_dir)]
    extra = shlex.split(args.ssgan_flags) if method == "ssgan" else ["--supervised_only"]
    return cmd + common + extra


def eval_data_flags(common: list[str]) -> list[str]:
    """The data flags among the common trainer flags, to pass on to the evaler."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for flag in EVAL_DATA_FLAGS:
        p.add_argument(flag)
    known, _ = p.parse_known_args(common)
    return [x for flag in EVAL_DATA_FLAGS if (v := getattr(known, flag[2:])) is not None for x in (flag, v)]


def evaler_cmd(args: argparse.Namespace, common: list[str], run_dir: Path) -> list[str]:
    """The exact `python evaler.py --checkpoint RUN --json ...` command of one run."""
    return [python_cmd(), "evaler.py", "--checkpoint", rel(run_dir), "--json", "--dataset", args.dataset,
            "--samples", "0", *eval_data_flags(common)]


def plan(args: argparse.Namespace) -> list[tuple[int, str, int]]:
    """(labels, method, seed) of every run, in the order they are run."""
    return [(n, m, s) for n in args.labels for s in range(args.seeds) for m in METHODS if m in args.methods]


# ---------------------------------------------------------------- one run


def timed_run(cmd: list[str], log: Path) -> tuple[str, float, float]:
    """Run a command from the repo root, its output to log.out/log.err; (stdout, wall s, CPU s of the child)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out, err = log.with_name(log.name + ".out"), log.with_name(log.name + ".err")
    t0 = time.perf_counter()
    with out.open("w") as fo, err.open("w") as fe:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=fo, stderr=fe)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU time, also when runs overlap (--jobs)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"failed (exit {proc.returncode}): {shlex.join(cmd)}\n{err.read_text()[-3000:]}\nlog: {rel(err)}")
    return out.read_text(), wall, usage.ru_utime + usage.ru_stime


def last_json(stdout: str) -> dict:
    """The last JSON object line of the evaler's --json output."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        sys.exit(f"the evaler printed no JSON report:\n{stdout[-2000:]}")
    return json.loads(lines[-1])


def trainer_stop(stdout: str, run_dir: Path) -> tuple[str, float | None]:
    """How the run ended and the trainer's own accuracy (result.json's, else its printed 4-digit one)."""
    result = run_dir / "result.json"
    if result.exists():
        r = json.loads(result.read_text())
        return r.get("stopped_by", "done"), float(r["test_accuracy"])
    m = re.findall(r"Step \d+: test accuracy ([\d.]+)", stdout)
    return "time", (float(m[-1]) if m else None)


def one_run(args: argparse.Namespace, common: list[str], runs_root: Path, key: tuple[int, str, int]) -> dict:
    """Train in a fresh run dir, evaluate with the evaler, and return the run's record."""
    labels, method, seed = key
    run_dir = runs_root / run_name(args.dataset, labels, method, seed)
    if run_dir.exists():  # a leftover of an interrupted benchmark: start afresh
        shutil.rmtree(run_dir)
    cmd = trainer_cmd(args, common, labels, method, seed, run_dir)
    stdout, wall, cpu = timed_run(cmd, runs_root / "logs" / f"{run_dir.name}.train")
    ecmd = evaler_cmd(args, common, run_dir)
    estdout, ewall, _ = timed_run(ecmd, runs_root / "logs" / f"{run_dir.name}.eval")
    report = last_json(estdout)
    stopped_by, trainer_acc = trainer_stop(stdout, run_dir)
    trainer_config = json.loads((run_dir / "config.json").read_text())
    tol = 1e-9 if (run_dir / "result.json").exists() else 5e-5  # printed with 4 decimals when no result.json
    matches = trainer_acc is not None and abs(trainer_acc - report["accuracy"]) <= tol
    if not matches:
        print(f"warning: evaler accuracy {report['accuracy']} != trainer's {trainer_acc} ({rel(run_dir)})",
              file=sys.stderr)
    return {"dataset": args.dataset, "labels": labels, "method": method, "seed": seed,
            "accuracy": report["accuracy"], "trainer_accuracy": trainer_acc, "accuracy_matches_trainer": matches,
            "step": report["step"], "stopped_by": stopped_by, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "eval_wall_s": round(ewall, 2), "num_test": report["num_examples"], "run_dir": rel(run_dir),
            "checkpoint": report["checkpoint"], "command": shlex.join(cmd), "eval_command": shlex.join(ecmd),
            "trainer_config": trainer_config}


# ---------------------------------------------------------------- summary and output


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(runs: list[dict]) -> tuple[list[dict], list[dict]]:
    """One row per (dataset, labels, method), and the gain SSGAN - supervised per label count."""
    rows = []
    for ds, n, m in sorted({(r["dataset"], r["labels"], r["method"]) for r in runs}, key=lambda k: (k[1], k[2])):
        group = [r for r in runs if (r["dataset"], r["labels"], r["method"]) == (ds, n, m)]
        mean, std = mean_std([r["accuracy"] for r in group])
        rows.append({"dataset": ds, "labels": n, "method": m, "accuracy_mean": mean, "accuracy_std": std,
                     "wall_s_mean": statistics.fmean(r["wall_s"] for r in group),
                     "steps_mean": statistics.fmean(r["step"] for r in group), "n": len(group)})
    return rows, gains(runs)


def gains(runs: list[dict]) -> list[dict]:
    """Per label count: mean accuracy gain and its std over seeds (paired: the same labelled subset)."""
    acc = {(r["labels"], r["method"], r["seed"]): r["accuracy"] for r in runs}
    out = []
    for n in sorted({r["labels"] for r in runs}):
        diffs = [acc[n, "ssgan", s] - acc[n, "supervised", s] for (k, m, s) in acc
                 if k == n and m == "ssgan" and (n, "supervised", s) in acc]
        if diffs:
            mean, std = mean_std(diffs)
            out.append({"labels": n, "gain_mean": mean, "gain_std": std, "n": len(diffs)})
    return out


def table(rows: list[dict], gain_rows: list[dict]) -> str:
    """The printed results table and gain lines."""
    head = (f"{'dataset':<14} {'labels':>6}  {'method':<10}  {'test accuracy':>17}  {'wall s':>8}  {'steps':>7}  "
            f"{'n':>2}")
    lines = [head, "-" * len(head)]
    lines += [f"{r['dataset']:<14} {r['labels']:>6}  {r['method']:<10}  "
              f"{r['accuracy_mean']:.4f} +- {r['accuracy_std']:.4f}  {r['wall_s_mean']:>8.1f}  "
              f"{r['steps_mean']:>7.0f}  {r['n']:>2}" for r in rows]
    lines += [f"gain (ssgan - supervised), {g['labels']} labels: {g['gain_mean']:+.4f} +- {g['gain_std']:.4f} "
              f"(paired over {g['n']} seeds)" for g in gain_rows]
    return "\n".join(lines)


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write JSON via a temporary file and rename, so a stop never leaves a cut file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def settings(args: argparse.Namespace, common: list[str]) -> dict:
    """The benchmark's settings and machine, recorded in the JSON."""
    keys = ("dataset", "labels", "seeds", "methods", "budget_min", "max_steps", "sup_steps", "ssgan_flags",
            "common_flags", "jobs", "quick")
    return {**{k: getattr(args, k) for k in keys}, "trainer_common_args": common,
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}}


def save(path: Path, meta: dict, runs: list[dict]) -> None:
    """Write the JSON with every run so far and their summary."""
    rows, gain_rows = summarise(runs)
    write_json_atomic(path, {"benchmark": "accuracy", "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             "settings": meta, "runs": runs, "summary": rows, "gains": gain_rows})


def recorded(path: Path, resume: bool) -> dict[str, dict]:
    """With --resume, the runs already in the JSON, by their exact trainer command."""
    if not resume or not path.exists():
        return {}
    return {r["command"]: r for r in json.loads(path.read_text()).get("runs", [])}


def reusable(old: dict[str, dict], cmds: dict) -> dict:
    """The planned runs (key -> command) whose recorded run was trained as the command trains today.

    The same command can train otherwise after a default changes (lenet's generator in stop 18, feature
    matching's features in stop 19), so a recorded run counts only if every flag in its config.json equals
    what the command gives today, as the trainer checks before resuming a run; runs recorded without it do not.
    """
    found = {k: c for k, c in cmds.items() if c in old}
    if not found:
        return {}
    sys.path.insert(0, str(ROOT))
    import trainer  # TensorFlow: loaded only when there is something to compare

    def same(recorded: dict, cmd: str) -> bool:
        args = trainer.parse_args(shlex.split(cmd)[2:])
        trainer.resolve_derived(args, recorded["dataset_info"]["class_names"])  # as the trainer records them
        for k in ("resize", "test_fraction"):  # recorded as the dataset was converted; unset, they take those
            if getattr(args, k) is None:
                setattr(args, k, recorded.get(k))
        return not trainer.config_diff(recorded, trainer.flags_record(args),
                                       ignore={"dataset_info", *trainer.CONVERSION_KEYS})

    return {k: old[c] for k, c in found.items()
            if "class_names" in old[c].get("trainer_config", {}).get("dataset_info", {})
            and same(old[c]["trainer_config"], c)}


# ---------------------------------------------------------------- main


def setup(args: argparse.Namespace, tmp: Path) -> tuple[list[str], Path, Path]:
    """The common trainer flags, the runs root and the JSON path (--quick: a tiny dataset in RUNS_ROOT/datasets)."""
    common = shlex.split(args.common_flags)
    default_root = tmp / "runs" if args.quick else ROOT / "bench" / "results" / "runs"
    runs_root = Path(args.runs_root or default_root).resolve()
    if args.quick:
        sys.path.insert(0, str(ROOT))
        from tests.tiny import TINY_FLAGS, make_tiny_dataset
        make_tiny_dataset(runs_root / "datasets")
        common = ["--dataset_dir", rel(runs_root / "datasets"), *TINY_FLAGS, *common]
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / (
        "accuracy_quick.json" if args.quick else "accuracy.json")
    return common, runs_root, out.resolve()


def run_all(args: argparse.Namespace, common: list[str], runs_root: Path, out: Path) -> list[dict]:
    """Every planned run (--jobs at a time; recorded ones skipped with --resume); the JSON is rewritten after each."""
    old, meta, keys = recorded(out, args.resume), settings(args, common), plan(args)
    cmds = {k: shlex.join(trainer_cmd(args, common, *k, runs_root / run_name(args.dataset, *k))) for k in keys}
    done = reusable(old, cmds)
    for i, k in enumerate(done, 1):
        progress(i, len(keys), done[k], " (recorded, skipped)")
    pool = ThreadPoolExecutor(args.jobs)
    try:
        futures = {pool.submit(one_run, args, common, runs_root, k): k for k in keys if k not in done}
        for f in as_completed(futures):
            done[futures[f]] = f.result()
            save(out, meta, [done[k] for k in keys if k in done])
            progress(len(done), len(keys), done[futures[f]])
    finally:  # after a failure or Ctrl-C, start no further runs
        pool.shutdown(cancel_futures=True)
    return [done[k] for k in keys]


def progress(i: int, total: int, r: dict, note: str = "") -> None:
    """One line per finished run."""
    print(f"[{i}/{total}] {r['dataset']} {r['labels']} labels {r['method']:<10} seed {r['seed']}: accuracy "
          f"{r['accuracy']:.4f}, {r['step']} steps ({r['stopped_by']}), {r['wall_s']:.1f} s wall, "
          f"{r['cpu_s']:.1f} s CPU{note}", flush=True)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the table, write the JSON; returns the summary."""
    args = parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_accuracy_") as tmp:
        common, runs_root, out = setup(args, Path(tmp))
        print(f"{len(plan(args))} runs: {args.dataset}, labels {args.labels}, seeds 0..{args.seeds - 1}, "
              f"SSGAN {args.max_steps} / supervised {args.sup_steps} steps, budget {args.budget_min:g} min each; "
              f"run dirs in {rel(runs_root)}", flush=True)
        runs = run_all(args, common, runs_root, out)
    rows, gain_rows = summarise(runs)
    print("\n" + table(rows, gain_rows))
    print(f"\nwrote {rel(out)} ({len(runs)} runs, {time.perf_counter() - t0:.0f} s)")
    return {"summary": rows, "gains": gain_rows}


if __name__ == "__main__":
    main()

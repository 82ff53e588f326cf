"""Benchmark training speed as users get it: the trainer's own compiled loop, input pipeline and evaler.

    python bench/speed.py                           # mlp28 (jit off and on), lenet28, conv28, conv32 (H x W x C)
    python bench/speed.py --configs mlp28 --steps_per_loop 1 50 --jit --no-jit
    python bench/speed.py --configs mlp28 --intra_op 1 --inter_op 1
    python bench/speed.py --quick                   # tiny data and few steps, for the test
    python bench/speed.py --configs mlp28 --profile /tmp/prof   # then: tensorboard --logdir /tmp/prof

Synthetic uint8 images are written to a temporary HDF5 file with datasets/format.py, then for each
config at batch 100: ms per training step (wall, and process CPU time, which contention inflates less)
and unlabelled images/s of the trainer's own compiled loop (trainer.make_train_loop, after warm-up), over
--repeats timed windows: their mean, and the best window (timed as the peak is: a best of several);
float ops per step (TensorFlow's profiler on the loop's concrete graph); achieved FLOP/s and its fraction
of this machine's peak (a large float32 matmul, measured in the same run); images/s of the unlabelled
input pipeline alone, and of evaler.confusion_of over the test split.
Writes bench/results/speed.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from errors import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.framework import ops as tf_ops  # noqa: E402
from tensorflow.python.profiler import model_analyzer, option_builder  # noqa: E402
from tensorflow.python.util import deprecation  # noqa: E402

import config  # noqa: E402
import evaler  # noqa: E402
import input_ops  # noqa: E402
import trainer  # noqa: E402
from datasets import format as fmt  # noqa: E402
from errors import HelpFormatter, positive_int  # noqa: E402

# name: (arch, image shape, train images, test images); --quick shrinks the splits.
CONFIGS = {
    "mlp28": ("mlp", (28, 28, 1), 60000, 10000),
    "lenet28": ("lenet", (28, 28, 1), 60000, 10000),
    "conv28": ("conv", (28, 28, 1), 60000, 10000),
    "conv32": ("conv", (32, 32, 3), 20000, 4000),
}
BATCH = 100
NUM_CLASS = 10
EPOCH_IMAGES = 60000  # Fashion-MNIST's train split
FLOPS_HOW = ("TensorFlow's profiler flop registry (what tf.compat.v1.profiler / model_analyzer float_operation "
             "counts: 2*M*N*K per MatMul, 2*MACs per Conv2D and each of its gradients, 1 per element for arithmetic "
             "ops, 0 for ops without statistics) over the concrete graph of one loop iteration (n=1), descending into "
             "the while body and the compiled step. 'flops_per_step' counts only ops that feed an output or a "
             "variable update (Grappler prunes the rest: the generator gradients the tape records in the D step, "
             "D's weight gradients in the G step); 'flops_per_step_traced' is tfprof's total over every traced op.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Benchmark flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--configs", nargs="+", choices=tuple(CONFIGS), default=list(CONFIGS))
    p.add_argument("--steps", type=int, default=None,
                   help="timed training steps per measurement (None: about --seconds worth)")
    p.add_argument("--seconds", type=float, default=8.0, help="target time of each timed window without --steps")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="timed windows per measurement: ms/step is their mean; the best window is reported too")
    p.add_argument("--steps_per_loop", type=int, nargs="+", default=None,
                   help="the trainer's --steps_per_loop values to measure (None: the trainer's default)")
    p.add_argument("--jit", "--no-jit", dest="jit", action=JitAction, nargs=0, default=None,
                   help="measure with XLA on (--jit) or off (--no-jit), or both (--jit --no-jit); "
                        "None: mlp both ways, conv (and all with --quick) with the trainer's default")
    config.add_precision_flag(p)
    p.add_argument("--inter_op", type=int, default=0, help="tf.config.threading inter-op threads (0: TF's choice)")
    p.add_argument("--intra_op", type=int, default=0, help="tf.config.threading intra-op threads (0: TF's choice)")
    p.add_argument("--profile", metavar="DIR", help="write a TensorBoard profile trace of some training steps")
    p.add_argument("--quick", action="store_true", help="tiny splits and few steps: seconds, for the test")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "speed.json"))
    return p.parse_args(argv)


class JitAction(argparse.Action):
    """--jit and --no-jit may both be given: collect the values asked for."""

    def __call__(self, parser, namespace, values, option_string=None):
        asked = getattr(namespace, self.dest) or []
        setattr(namespace, self.dest, [*asked, not option_string.startswith("--no-")])


# ---------------------------------------------------------------- machine peak and FLOP counting


def matmul_peak(n: int, repeats: int, dtype: str = "float32") -> float:
    """Best FLOP/s of an n x n matmul (float32, or the mixed-precision dtype) in a tf.function, over `repeats` runs."""
    a, b = (tf.cast(tf.random.normal([n, n]), dtype) for _ in range(2))
    mm = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))
    mm(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        mm(a, b).numpy()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


CALLS = {"While": "body", "StatelessWhile": "body", "PartitionedCall": "f", "StatefulPartitionedCall": "f"}
TFPROF = option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation()) \
    .with_empty_output().build()


def graph_flops(graph, executed: bool) -> int:
    """Float ops of one run of `graph` and the functions it calls (while bodies counted once)."""
    ops = _live_ops(graph) if executed else graph.get_operations()
    total = sum(graph_flops(_function_graph(graph, op.get_attr(CALLS[op.type]).name), executed)
                for op in ops if op.type in CALLS)
    if executed:
        return total + sum(_op_flops(graph, op) for op in ops)
    return total + model_analyzer.profile(graph, options=TFPROF).total_float_ops


def _live_ops(graph) -> list:
    """Ops that an output or a side effect (variable update) depends on: what runs after pruning."""
    todo, seen = [t.op for t in graph.outputs] + list(graph.control_outputs), set()
    while todo:
        op = todo.pop()
        if op.name not in seen:
            seen.add(op.name)
            todo += [t.op for t in op.inputs] + list(op.control_inputs)
    return [op for op in graph.get_operations() if op.name in seen]


def _op_flops(graph, op) -> int:
    try:
        return int(tf_ops.get_stats_for_node_def(graph, op.node_def, "flops").value or 0)
    except ValueError:  # no registered statistics, or shapes unknown
        return 0


def _function_graph(graph, name: str):
    while graph is not None:
        if name in graph._functions:
            return graph._functions[name].graph
        graph = getattr(graph, "outer_graph", None)
    raise KeyError(f"function {name} not found in the graph")


# ---------------------------------------------------------------- data and measurements


def make_dataset(root: Path, name: str, shape: tuple[int, int, int], n_train: int, n_test: int) -> Path:
    """Synthetic uint8 images with random labels, written with datasets/format.py."""
    rng = np.random.default_rng(0)
    splits = {s: (rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.permutation(n) % NUM_CLASS)
              for s, n in (("train", n_train), ("test", n_test))}
    info = fmt.DatasetInfo(name, *shape, [f"c{i}" for i in range(NUM_CLASS)])
    return fmt.write(fmt.dataset_path(root, name), info, splits)


def trainer_args(arch: str, jit: bool, steps_per_loop: int, mixed: str | None) -> argparse.Namespace:
    """The trainer's own flags (and defaults) for this measurement."""
    argv = ["--dataset", "bench", "--arch", arch, "--batch_size", str(BATCH), "--jit" if jit else "--no-jit",
            "--steps_per_loop", str(steps_per_loop), "--summary_every", str(max(100, steps_per_loop))]
    return trainer.parse_args(argv + (["--mixed_precision", mixed] if mixed else []))


def input_speed(split: input_ops.Split, batches: int) -> float:
    """Images/s of the unlabelled stream alone (no training), after a few warm-up batches."""
    it = iter(input_ops.unlabeled_stream(split, BATCH, seed=0))
    for _ in range(3):
        next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * BATCH / (time.perf_counter() - t)


def eval_speed(D, split: input_ops.Split) -> float:
    """Images/s of evaler.confusion_of over the test split (the trainer's eval batch), after a warm-up pass."""
    batch = evaler.eval_batch(BATCH, split.images.shape[1:])
    evaler.confusion_of(D, split, batch, NUM_CLASS)
    t = time.perf_counter()
    cm = evaler.confusion_of(D, split, batch, NUM_CLASS)
    return int(cm.sum()) / (time.perf_counter() - t)


def build_loop(args: argparse.Namespace, split: input_ops.Split):
    """The trainer's GAN, compiled loop and its two iterators, as trainer.train builds them."""
    strategy = trainer.make_strategy(args)
    with strategy.scope():
        gan = trainer.GAN(args, split.images.shape[1:], NUM_CLASS)
    loop, _ = trainer.make_train_loop(gan, args, strategy)
    lab_idx = input_ops.select_labeled(split.labels, args.num_labeled, NUM_CLASS, args.seed)
    streams = (input_ops.labeled_stream(split, lab_idx, BATCH, args.seed),
               input_ops.unlabeled_stream(split, BATCH, args.seed))
    lab, unl = (iter(strategy.experimental_distribute_dataset(input_ops.shard_by_data(ds))) for ds in streams)
    return gan, loop, lab, unl


def train_speed(args: argparse.Namespace, split: input_ops.Split, opts: argparse.Namespace, tag: str):
    """(GAN, mean wall, best window's wall and mean CPU seconds per step, steps per window, executed and traced
    float ops per step) of the loop, over opts.repeats windows of the same steps."""
    gan, loop, lab, unl = build_loop(args, split)
    run = lambda n: bool(loop(lab, unl, tf.constant(n))[2])  # noqa: E731  (the result waits for the steps)
    run(1)  # trace and compile
    steps = opts.steps or _steps_for(opts.seconds, run)
    if opts.profile:
        tf.profiler.experimental.start(str(Path(opts.profile) / tag))
        run(min(steps, 5))
        tf.profiler.experimental.stop()
    windows, cpu = [], time.process_time()
    for _ in range(opts.repeats):
        t, done = time.perf_counter(), 0
        while done < steps:
            n = min(args.steps_per_loop, steps - done)
            run(n)
            done += n
        windows.append((time.perf_counter() - t) / steps)
    cpu_sec = (time.process_time() - cpu) / steps / len(windows)
    graph = loop.get_concrete_function(lab, unl, tf.constant(1)).graph
    with deprecation.silence():  # the registry's shape helper is a TF1 API and warns about it
        return (gan, float(np.mean(windows)), min(windows), cpu_sec, steps, graph_flops(graph, True),
                graph_flops(graph, False))


def _steps_for(seconds: float, run) -> int:
    """Steps that take about `seconds`, from the time of two (at least 10, at most 2000)."""
    t = time.perf_counter()
    run(2)
    return int(np.clip(seconds / ((time.perf_counter() - t) / 2), 10, 2000))


def measure(name: str, args: argparse.Namespace, splits: tuple, opts: argparse.Namespace, peak: float,
            io_speed: dict) -> dict:
    """One result row: training speed, FLOPs, and (once per config) input and evaler speed."""
    train, test = splits
    precision = f"-{opts.mixed_precision}" if opts.mixed_precision else ""
    tag = f"{name}-jit{int(args.jit)}-spl{args.steps_per_loop}{precision}"
    gan, sec, best, cpu_sec, steps, flops, traced = train_speed(args, train, opts, tag)
    if not io_speed:
        io_speed["input_img_per_s"] = input_speed(train, 5 if opts.quick else 300)
        io_speed["eval_img_per_s"] = eval_speed(gan.D_ema, test)
    img_s = BATCH / sec
    return {"config": name, "arch": args.arch, "g_arch": args.g_arch, "shape": list(train.images.shape[1:]),
            "batch": BATCH,
            "jit": args.jit, "steps_per_loop": args.steps_per_loop, "mixed_precision": opts.mixed_precision,
            "steps_timed": steps, "windows_timed": opts.repeats, "ms_per_step": 1000 * sec,
            "ms_per_step_best_window": 1000 * best, "cpu_ms_per_step": 1000 * cpu_sec,
            "train_img_per_s": img_s, "flops_per_step": flops, "flops_per_step_traced": traced,
            "achieved_flop_per_s": flops / sec, "fraction_of_peak": flops / sec / peak,
            "fraction_of_peak_best_window": flops / best / peak, **io_speed,
            "epoch_60k_s": EPOCH_IMAGES / img_s}


def run_config(name: str, root: Path, opts: argparse.Namespace, peak: float) -> list[dict]:
    """Write the config's data, then measure every asked (jit, steps_per_loop) variant."""
    arch, shape, n_train, n_test = CONFIGS[name]
    if opts.quick:
        n_train, n_test = 600, 200
    path = make_dataset(root, name, shape, n_train, n_test)
    splits = input_ops.load_split(path, "train"), input_ops.load_split(path, "test")
    default = trainer.parse_args(["--dataset", "bench"])
    both = arch == "mlp" and not opts.quick
    jits = opts.jit if opts.jit is not None else ([False, True] if both else [default.jit])
    io_speed: dict = {}
    rows = []
    for jit in jits:
        for spl in opts.steps_per_loop or [default.steps_per_loop]:
            rows.append(measure(name, trainer_args(arch, jit, spl, opts.mixed_precision), splits, opts, peak,
                                io_speed))
            print(format_row(rows[-1]), flush=True)
    return rows


# ---------------------------------------------------------------- report


HEADER = (f"{'config':<8} {'jit':>3} {'spl':>4} {'ms/step':>8} {'cpu ms':>7} {'train img/s':>11} {'GFLOP/step':>10} "
          f"{'GFLOP/s':>8} {'%peak':>6} {'best':>5} {'input img/s':>11} {'eval img/s':>10} {'60k epoch s':>11}")


def format_row(r: dict) -> str:
    """One line of the table."""
    return (f"{r['config']:<8} {'on' if r['jit'] else 'off':>3} {r['steps_per_loop']:>4} {r['ms_per_step']:>8.1f} "
            f"{r['cpu_ms_per_step']:>7.0f} {r['train_img_per_s']:>11.0f} {r['flops_per_step'] / 1e9:>10.2f} "
            f"{r['achieved_flop_per_s'] / 1e9:>8.1f} {100 * r['fraction_of_peak']:>6.1f} "
            f"{100 * r['fraction_of_peak_best_window']:>5.1f} "
            f"{r['input_img_per_s']:>11.0f} {r['eval_img_per_s']:>10.0f} {r['epoch_60k_s']:>11.1f}")


def machine(opts: argparse.Namespace, peak: float, n: int) -> dict:
    """What the figures depend on: CPUs, threads, load, the measured peak."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpus": cpus, "inter_op_threads": opts.inter_op, "intra_op_threads": opts.intra_op,
            "peak_flop_per_s": peak, "peak_how": f"best of several {n}x{n} float32 tf.matmul in a tf.function",
            "loadavg_1min": os.getloadavg()[0], "tensorflow": tf.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


def main(argv: list[str] | None = None) -> dict:
    """Measure every asked config; print a table; write the JSON."""
    opts = parse_args(argv)
    if opts.quick:
        opts.steps = opts.steps or 2
    tf.config.threading.set_inter_op_parallelism_threads(opts.inter_op)
    tf.config.threading.set_intra_op_parallelism_threads(opts.intra_op)
    n = 512 if opts.quick else 2048
    peak = matmul_peak(n, 3 if opts.quick else 10)
    load = os.getloadavg()[0]
    low = {}
    if opts.mixed_precision:  # %peak stays relative to float32; the low-precision matmul's peak is recorded too
        low = {f"peak_flop_per_s_{opts.mixed_precision}": matmul_peak(n, 3 if opts.quick else 10,
                                                                      opts.mixed_precision)}
    also = "".join(f"; {k.rsplit('_', 1)[1]} matmul {v / 1e9:.1f} GFLOP/s" for k, v in low.items())
    print(f"peak (best {n}x{n} float32 matmul): {peak / 1e9:.1f} GFLOP/s{also}; load average {load:.2f}\n{HEADER}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_speed_") as tmp:
        rows = [r for name in opts.configs for r in run_config(name, Path(tmp), opts, peak)]
    result = {"command": " ".join(["python bench/speed.py", *(sys.argv[1:] if argv is None else argv)]),
              "machine": {**machine(opts, peak, n), **low, "loadavg_1min_at_start": load},
              "flops_counted_by": FLOPS_HOW, "rows": rows}
    out = Path(opts.out)
    evaler.write_json(out, result)
    print(f"FLOPs: {FLOPS_HOW}\nload average at the end {result['machine']['loadavg_1min']:.2f} on "
          f"{result['machine']['cpus']} CPUs (above that: figures are under contention). Wrote {out}")
    return result


if __name__ == "__main__":
    main()

"""Benchmark the evaler on trained runs: test images/s and accuracy in one pass and with test-time mirroring,
and the time --prior labeled takes to fit its offsets.

    python bench/eval_speed.py --dataset fashion_mnist --checkpoint RUN [RUN ...]
    python bench/eval_speed.py --dataset fashion_mnist --checkpoint RUN --passes 10 --out /tmp/eval_speed.json
    python bench/eval_speed.py --dataset fashion_mnist --checkpoint RUN --precision float32 bfloat16

For each run (its newest readable checkpoint, EMA weights): evaler.confusion_of over the dataset's test split,
as `python evaler.py` scores it, with `--tta none` and with `--tta mirror`, alternating, over --passes timed
passes each after a warm-up; the best pass's images/s (timed as bench/speed.py times the peak), the share of
test images that --tta mirror mirrors, and the accuracy either way. bench/speed.py's evaler column times
untrained networks, which are unsure of every image; how many images are mirrored depends on a trained D's
confidence, hence this script. Where the trainer saved no offsets with a checkpoint, --prior labeled fits them
with one pass of D over the training images, whatever the number of test images: the best of --passes fits
(evaler.prior_offsets_of) is reported apart, with the accuracy of both flags together (the default) as the evaler
scores it (with the offsets the trainer saved, if any, else fitted ones). Prints a table and writes
bench/results/eval_speed.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from errors import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import config  # noqa: E402
import datasets  # noqa: E402
import evaler  # noqa: E402
import input_ops  # noqa: E402
import model  # noqa: E402
from errors import HelpFormatter, exits_cleanly, positive_int  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--dataset", required=True, help="the dataset the runs were trained on (its test split is timed)")
    datasets.add_dataset_dir_flag(p)
    p.add_argument("--checkpoint", nargs="+", required=True, metavar="RUN", help="run dirs or checkpoint paths")
    p.add_argument("--precision", nargs="+", choices=("float32", *config.PRECISIONS), default=["float32"],
                   help="D's compute precisions to time, each a row per run (the evaler's --mixed_precision)")
    p.add_argument("--passes", type=positive_int, default=5, help="timed passes over the test split per mode")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "eval_speed.json"))
    return p.parse_args(argv)


def measure(dataset: str, dataset_dir: str, checkpoint: str, passes: int, precision: str = "float32") -> dict:
    """One run's row: images/s (best pass) and accuracy with --tta none and mirror, and the mirrored share, with D
    computing in `precision`."""
    args = evaler.parse_args(["--dataset", dataset, "--dataset_dir", dataset_dir, "--checkpoint", checkpoint]
                             + ([] if precision == "float32" else ["--mixed_precision", precision]))
    run, ckpts = evaler.find_run(checkpoint)
    cfg = config.read_run_config(run)
    path, info = config.resolve_dataset(evaler.trained_preprocessing(args, cfg))
    test = input_ops.load_split(path, "test", "yes", args.memory_budget_gb, info)
    D, G = evaler.build_models(cfg, args.mixed_precision)
    ckpt, step = evaler.restore_newest(D, G, run, ckpts)
    batch = evaler.eval_batch(args.batch_size, info.shape)
    modes = {"none": (), "mirror": config.mirror_classes("mirror", config.recorded(cfg, "flip_classes"))}
    seconds = {mode: [] for mode in modes}
    accuracy = {}
    for i in range(passes + 1):  # pass 0 warms up (traces the predictors)
        for mode, mirror in modes.items():
            start = time.perf_counter()
            cm = evaler.confusion_of(D, test, batch, info.num_class, mirror)
            if i:
                seconds[mode].append(time.perf_counter() - start)
            accuracy[mode] = float(np.trace(cm) / cm.sum())
    train = input_ops.load_split(path, "train", "yes", args.memory_budget_gb, info)
    fits = []
    for _ in range(passes + 1):  # the first traces D's logits function
        start = time.perf_counter()
        offsets = evaler.prior_offsets_of(D, train, batch, info.num_class)
        fits.append(time.perf_counter() - start)
    offsets = evaler.prior_of(args, cfg, run, D, ckpt, step, batch, lambda: train)  # as the evaler: saved ones first
    cm = evaler.confusion_of(D, test, batch, info.num_class, modes["mirror"], offsets)
    probabilities = evaler.probabilities_fn(D, info.shape)
    images = test.images[test.labels >= 0]  # the images confusion_of scores
    probs = np.concatenate([probabilities(tf.constant(images[i:i + batch])).numpy()
                            for i in range(0, len(images), batch)])
    unsure = np.isin(probs.argmax(1), modes["mirror"]) & (probs.max(1) < model.MIRROR_GATE)
    n = len(images)
    return {"run": str(run), "checkpoint": ckpt, "step": step, "precision": precision, "test_images": n, "batch": batch,
            "mirror_classes": [info.class_names[c] for c in modes["mirror"]], "mirrored_share": float(unsure.mean()),
            **{f"img_per_s_{m}": n / min(s) for m, s in seconds.items()},
            **{f"accuracy_{m}": a for m, a in accuracy.items()},
            "train_images": min(len(train), evaler.PRIOR_IMAGES), "prior_fit_s": min(fits[1:]),
            "accuracy_mirror_prior": float(np.trace(cm) / cm.sum())}


def table(rows: list[dict]) -> str:
    head = f"{'run':<44} {'step':>6} {'precision':>9} {'mirrored':>8} {'img/s none':>10} {'img/s mirror':>12} " \
           f"{'acc none':>8} {'acc mirror':>10} {'prior fit s':>11} {'acc mirror+prior':>16}"
    lines = [head, "-" * len(head)]
    lines += [f"{Path(r['run']).name[-44:]:<44} {r['step']:>6} {r['precision']:>9} {r['mirrored_share']:>8.1%} "
              f"{r['img_per_s_none']:>10,.0f} {r['img_per_s_mirror']:>12,.0f} {r['accuracy_none']:>8.4f} "
              f"{r['accuracy_mirror']:>10.4f} {r['prior_fit_s']:>11.2f} {r['accuracy_mirror_prior']:>16.4f}"
              for r in rows]
    return "\n".join(lines)


@exits_cleanly
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    rows = [measure(args.dataset, args.dataset_dir, c, args.passes, p) for c in args.checkpoint for p in args.precision]
    print(table(rows))
    result = {"dataset": args.dataset, "passes": args.passes, "mirror_gate": model.MIRROR_GATE,
              "threads": {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                          "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
              "command": " ".join(["python", "bench/eval_speed.py", *(argv if argv is not None else sys.argv[1:])]),
              "rows": rows}
    evaler.write_json(Path(args.out), result)
    return result


if __name__ == "__main__":
    main()

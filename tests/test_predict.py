"""Using a trained classifier: evaler.py --predict (CSV), --export (SavedModel) and standalone --samples; and what
the evaler tells a person about classes, flags and paths it cannot use as given."""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageFont

import evaler
import input_ops
import trainer
from datasets import format as fmt
from datasets.folder import load_image
from tests.tiny import TINY_FLAGS, make_tiny_dataset

SHAPE = (12, 12, 1)
NAMES = ["class0", "class1", "class2"]


@pytest.fixture(scope="module")
def dsdir(tmp_path_factory) -> Path:
    dsdir = tmp_path_factory.mktemp("datasets")
    make_tiny_dataset(dsdir)
    return dsdir


@pytest.fixture(scope="module")
def run(dsdir, tmp_path_factory) -> list[str]:
    """The evaler's flags for a tiny run dir trained for 20 steps (and where its training images are)."""
    run = tmp_path_factory.mktemp("runs") / "ssgan"
    trainer.main(["--dataset", "tiny", "--dataset_dir", str(dsdir), "--train_dir", str(run), "--num_labeled", "30",
                  *TINY_FLAGS, "--max_steps", "20"])
    return ["--checkpoint", str(run), "--dataset_dir", str(dsdir)]


@pytest.fixture(scope="module")
def classifier(run, dsdir):
    """evaler's own restored model (EMA weights) for the run, and --prior labeled's offsets: D's mean
    probabilities over the 300 training images, shifted by them, are uniform (the labelled subset is balanced)."""
    _, ckpts = evaler.find_run(run[1])
    _, D, _, _ = evaler.load_classifier(Path(run[1]), ckpts[-1])
    train = input_ops.load_split(dsdir / "tiny" / "data.hdf5", "train")
    offsets = evaler.prior_offsets_of(D, train, 100, 3)
    np.testing.assert_allclose(reference_probs((D, offsets), train.images).mean(0), 1 / 3, atol=1e-5)
    assert np.abs(offsets).max() > 0.01
    return D, offsets


def reference_probs(classifier, images: np.ndarray) -> np.ndarray:
    """Class probabilities of evaler's model on uint8 images, scaled as in training, shifted by --prior's offsets."""
    D, offsets = classifier
    logits, _, _ = D(input_ops.scale(images), training=False)
    return tf.nn.softmax(tf.nn.log_softmax(logits, axis=-1) + offsets, axis=-1).numpy()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A folder of mixed formats and sizes, nested, with a corrupt file, a text file and a hidden file."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    (root / "sub" / "deeper").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), np.uint8)).save(root / "a.jpg", quality=90)
    Image.fromarray(rng.integers(0, 255, (12, 12), np.uint8)).save(root / "b.png")
    Image.fromarray(rng.integers(0, 255, (40, 12, 4), np.uint8), "RGBA").save(root / "sub" / "c.webp")
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(root / "sub" / "d.bmp")
    Image.fromarray(rng.integers(0, 255, (12, 12), np.uint8)).convert("P").save(root / "sub" / "deeper" / "e.gif")
    Image.fromarray(rng.integers(0, 255, (12, 12), np.uint8)).save(root / ".hidden.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    (root / "notes.txt").write_text("not an image\n")
    return root


GOOD = {"a.jpg", "b.png", "sub/c.webp", "sub/d.bmp", "sub/deeper/e.gif"}


def read_csv(text: str) -> list[dict]:
    """Rows of a predictions CSV, header checked."""
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["path", "class", "confidence", "top3"]
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def test_predict_folder_writes_csv_lists_bad_files_and_matches_evalers_model(run, classifier, images, tmp_path,
                                                                            capsys):
    out = tmp_path / "pred.csv"
    result = evaler.main([*run, "--predict", str(images), "--output", str(out)])
    err = capsys.readouterr().err
    # the text file and the hidden one are not images to a folder's conversion either: skipped silently
    assert "skipped 1 file(s)" in err and "broken.png" in err and "notes.txt" not in err and "hidden" not in err
    rows = read_csv(out.read_text())
    assert result["classified"] == len(rows) == len(GOOD)
    assert {Path(r["path"]).relative_to(images).as_posix() for r in rows} == GOOD
    pixels = np.stack([load_image(r["path"], *SHAPE, "crop") for r in rows])
    want = reference_probs(classifier, pixels)
    for r, p in zip(rows, want):
        top = [t.split(":") for t in r["top3"].split(";")]
        assert [n for n, _ in top] == [NAMES[k] for k in np.argsort(-p)]
        assert r["class"] == NAMES[int(np.argmax(p))] == top[0][0]
        assert float(r["confidence"]) == pytest.approx(p.max(), abs=1e-5)
        assert [float(q) for _, q in top] == pytest.approx(np.sort(p)[::-1], abs=1e-5)
    assert not list(tmp_path.glob("*.tmp"))


def test_predict_single_file_to_stdout(run, classifier, images, capsys):
    evaler.main([*run, "--predict", str(images / "sub" / "c.webp")])
    (row,) = read_csv(capsys.readouterr().out)
    p = reference_probs(classifier, load_image(images / "sub" / "c.webp", *SHAPE, "crop")[None])[0]
    assert row["path"] == str(images / "sub" / "c.webp") and row["class"] == NAMES[int(np.argmax(p))]


def test_predict_with_a_process_pool_gives_the_same_csv(run, tmp_path, capsys):
    rng = np.random.default_rng(1)
    for i in range(300):
        Image.fromarray(rng.integers(0, 255, (12, 12), np.uint8)).save(tmp_path / f"{i:03d}.png")
    outs = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}" / "pred.csv"
        evaler.main([*run, "--predict", str(tmp_path), "--output", str(out),
                     "--workers", workers, "--batch_size", "20"])
        outs.append(out.read_text())
    assert outs[0] == outs[1] and len(read_csv(outs[0])) == 300


def test_predict_to_an_unwritable_output_is_a_clear_error(run, images, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as e:
        evaler.main([*run, "--predict", str(images / "sub" / "c.webp"), "--output", str(blocker / "pred.csv")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "choose another --output" in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("job", [["--predict", "IMAGES"], ["--samples", "4"]])
def test_an_output_that_is_a_folder_is_a_clear_error_before_any_work(run, images, tmp_path, capsys, job):
    with pytest.raises(SystemExit) as e:
        evaler.main([*run, *[str(images) if a == "IMAGES" else a for a in job], "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"--output {tmp_path} is a folder; name the file" in err
    assert "classified" not in err and not list(tmp_path.parent.glob("*.tmp"))


def test_a_failed_write_leaves_neither_a_cut_file_nor_its_temporary(tmp_path):
    folder = tmp_path / "taken"
    folder.mkdir()
    with pytest.raises(IsADirectoryError):  # the rename onto a folder fails
        evaler.write_atomic(folder, "text")
    with pytest.raises(RuntimeError):  # the writing fails
        with evaler.atomic_target(tmp_path / "x.csv") as tmp:
            tmp.write_text("half")
            raise RuntimeError("stopped")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_writes_go_through_links_and_into_pipes_and_leave_the_users_files_alone(tmp_path):
    (tmp_path / "x.csv.tmp").write_text("mine")
    (tmp_path / "real.csv").write_text("old")
    (tmp_path / "link.csv").symlink_to("real.csv")
    os.mkfifo(tmp_path / "fifo")  # as --output /dev/stdout into a pipe: written to, never replaced by a file
    (tmp_path / "pipe").symlink_to("fifo")
    got = []
    reader = threading.Thread(target=lambda: got.append((tmp_path / "fifo").read_text()), daemon=True)
    reader.start()
    for name in ("x.csv", "link.csv", "pipe"):
        evaler.write_atomic(tmp_path / name, "text")
    reader.join(10)
    assert got == ["text"] and (tmp_path / "fifo").is_fifo() and (tmp_path / "pipe").is_symlink()
    assert (tmp_path / "x.csv").read_text() == "text" and (tmp_path / "x.csv.tmp").read_text() == "mine"
    assert (tmp_path / "link.csv").is_symlink() and (tmp_path / "real.csv").read_text() == "text"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "link.csv", "pipe", "real.csv", "x.csv",
                                                          "x.csv.tmp"]


def test_predict_refuses_an_output_that_is_an_input_and_writes_stdout_for_dash(run, tmp_path, capsys):
    for name in ("0.png", "license.png"):  # an image named like a LICENSE file is still an image
        Image.fromarray(np.zeros((12, 12), np.uint8)).save(tmp_path / name)
    (tmp_path / "LICENSE").write_text("MIT\n")
    with pytest.raises(SystemExit) as e:
        evaler.main([*run, "--predict", str(tmp_path), "--output", str(tmp_path / "0.png")])
    assert e.value.code == 2 and capsys.readouterr().err.strip() == (
        f"error: --output {tmp_path / '0.png'} is one of the images to classify; write the CSV elsewhere")
    assert Image.open(tmp_path / "0.png").size == (12, 12)
    evaler.main([*run, "--predict", str(tmp_path), "--output", "-"])
    rows = read_csv(capsys.readouterr().out)
    assert [Path(r["path"]).name for r in rows] == ["0.png", "license.png"] and not (Path.cwd() / "-").exists()


def test_a_samples_grid_to_stdout_is_refused(run, capsys):
    with pytest.raises(SystemExit) as e:
        evaler.main([*run, "--samples", "4", "--output", "-"])
    assert e.value.code == 2 and capsys.readouterr().err.strip() == (
        "error: --output - (stdout) is for --predict's CSV; name the PNG file to write, e.g. --output grid.png")
    assert not (Path.cwd() / "-").exists()


def test_a_reader_of_stdout_gone_ends_the_command_quietly(tmp_path):
    """`evaler.py --predict DIR | head`: once head exits, writing the CSV meets a broken pipe."""
    code = ("import sys, errors\n"
            "@errors.exits_cleanly\n"
            "def main():\n"
            "    for _ in range(100000):\n"
            "        sys.stdout.write('x' * 100 + '\\n')\n"
            "    sys.stdout.flush()\n"
            "main()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(evaler.__file__).parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.read(10)
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err == b""


def test_predict_writes_file_names_that_are_not_utf8_as_their_bytes(run, tmp_path):
    name = os.fsdecode(b"caf\xe9.png")  # as Python lists a Latin-1 name: the byte 0xe9 held as a surrogate
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(tmp_path / name)
    out = tmp_path / "pred.csv"
    evaler.main([*run, "--predict", str(tmp_path), "--output", str(out)])
    assert os.fsencode(tmp_path / name) + b"," in out.read_bytes()


def test_predict_unreadable_only_and_missing_paths_are_clear_errors(run, images, tmp_path, capsys):
    for path, message in ((images / "notes.txt", "is a readable image"), (tmp_path / "nope", "does not exist")):
        with pytest.raises(SystemExit) as e:
            evaler.main([*run, "--predict", str(path)])
        assert e.value.code == 2 and message in capsys.readouterr().err


LOAD_IN_FRESH_PROCESS = """
import json, sys
import numpy as np
import tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
serve = m.signatures["serving_default"]
x = np.load(sys.argv[2])
out = serve(images=tf.constant(x))
empty = serve(images=tf.constant(x[:0]))
rejected = []
for bad in (x[0], x[:, :-1], x[..., :0]):  # no batch axis, a row short, no channel: refused, not a crash
    try:
        serve(images=tf.constant(bad))
    except tf.errors.InvalidArgumentError:
        rejected.append(bad.shape)
print(json.dumps({"probabilities": out["probabilities"].numpy().tolist(), "classes": out["classes"].numpy().tolist(),
                  "class_name": [c.decode() for c in out["class_name"].numpy()],
                  "class_names": [c.decode() for c in m.signatures["class_names"]()["class_names"].numpy()],
                  "batched": sorted(k for k, v in out.items() if v.shape[0] == len(x)),
                  "empty": {k: list(v.shape) for k, v in empty.items()}, "rejected": len(rejected),
                  "dtypes": [out["classes"].dtype.name, out["probabilities"].dtype.name],
                  "repo_modules": sorted(set(sys.modules) & {"ops", "model", "evaler", "input_ops", "config"})}))
"""


def test_export_loads_with_tensorflow_alone_in_a_fresh_process(run, classifier, tmp_path):
    export = tmp_path / "exported"
    assert evaler.main([*run, "--export", str(export)])["export"] == str(export)
    assert (export / "saved_model.pb").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["exported"]
    x = np.random.default_rng(2).integers(0, 256, (7, *SHAPE), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    proc = subprocess.run([sys.executable, "-c", LOAD_IN_FRESH_PROCESS, str(export), str(tmp_path / "x.npy")],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    want = reference_probs(classifier, x)
    np.testing.assert_allclose(np.array(got["probabilities"]), want, atol=1e-5)
    assert got["classes"] == np.argmax(want, -1).tolist() and got["class_names"] == NAMES
    assert got["class_name"] == [NAMES[k] for k in got["classes"]]
    # every output per image, as TensorFlow Serving's row format needs; an empty batch gives empty outputs
    assert got["batched"] == ["class_name", "classes", "probabilities"]
    assert got["empty"] == {"class_name": [0], "classes": [0], "probabilities": [0, 3]} and got["rejected"] == 3
    assert got["dtypes"] == ["int64", "float32"] and got["repo_modules"] == []


def test_predict_and_export_in_bfloat16_give_float32_probabilities_close_to_float32s(run, classifier, images,
                                                                                       tmp_path, capsys):
    bf16 = ["--mixed_precision", "bfloat16"]
    evaler.main([*run, "--predict", str(images), *bf16])
    rows = read_csv(capsys.readouterr().out)
    want = reference_probs(classifier, np.stack([load_image(r["path"], *SHAPE, "crop") for r in rows]))
    # bfloat16 keeps 8 significant bits: logits of a few units come out a few hundredths off, which moves a
    # probability near 0.5 by up to about 0.03 (the tiny run's D differs from release to release).
    close = 0.05
    np.testing.assert_allclose([float(r["confidence"]) for r in rows], want.max(1), atol=close)
    export = tmp_path / "exported"
    evaler.main([*run, "--export", str(export), *bf16])
    x = np.random.default_rng(2).integers(0, 256, (7, *SHAPE), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", LOAD_IN_FRESH_PROCESS, str(export), str(tmp_path / "x.npy")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["dtypes"] == ["int64", "float32"]
    got, want = np.array(got["probabilities"]), reference_probs(classifier, x)
    np.testing.assert_allclose(got, want, atol=close)
    assert not np.allclose(got, want, atol=1e-6, rtol=0)  # computed in bfloat16, not float32


def test_export_replaces_only_an_earlier_export_and_only_when_forced(run, tmp_path, capsys):
    export = tmp_path / "exported"
    export.mkdir()
    (export / "keep.txt").write_text("mine")
    for force in ([], ["--force"]):  # a folder of the user's is never replaced
        with pytest.raises(SystemExit) as e:
            evaler.main([*run, "--export", str(export), *force])
        assert e.value.code == 2 and capsys.readouterr().err.strip() == (
            f"error: --export {export} is a folder that holds files and no SavedModel; --force replaces only an "
            "earlier export: choose another DIR")
    assert (export / "keep.txt").read_text() == "mine"
    export = tmp_path / "model"
    for mine in ("model.old", "model.tmp"):  # the user's own names beside it are not the export's to take
        (tmp_path / mine).write_text("mine")
    evaler.main([*run, "--export", str(export)])
    with pytest.raises(SystemExit) as e:
        evaler.main([*run, "--export", str(export)])
    assert e.value.code == 2 and "already holds a SavedModel; pass --force to replace it" in capsys.readouterr().err
    (export / "marker").write_text("the earlier export")
    evaler.main([*run, "--export", str(export), "--force"])
    assert (export / "saved_model.pb").exists() and not (export / "marker").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "model", "model.old", "model.tmp"]
    assert (tmp_path / "model.old").read_text() == (tmp_path / "model.tmp").read_text() == "mine"


def test_export_to_the_current_folder(run, tmp_path, monkeypatch, capsys):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert evaler.main([*run, "--export", "."])["export"] == "."
    assert (here / "saved_model.pb").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["here"]
    with pytest.raises(SystemExit) as e:  # replacing it would leave the shell in a deleted folder
        evaler.main([*run, "--export", ".", "--force"])
    assert e.value.code == 2 and "holds the current folder" in capsys.readouterr().err
    assert here.samefile(".") and (here / "saved_model.pb").exists()


def test_an_export_stopped_midway_is_cleaned_up_and_its_predecessor_put_back(run, tmp_path, capsys):
    export = tmp_path / "model"
    evaler.main([*run, "--export", str(export)])
    dead = 2 ** 22 + 1  # above Linux's largest pid: no process has it
    export.rename(tmp_path / f".model.{dead}.old")  # stopped between its two renames
    (tmp_path / f".model.{dead}.tmp").mkdir()
    evaler.main([*run, "--export", str(tmp_path / "other")])  # another export's leftovers are not its business
    assert (tmp_path / f".model.{dead}.old" / "saved_model.pb").exists()
    evaler.main([*run, "--export", str(export), "--force"])
    assert "moved aside by an export that was stopped, is back" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "other"]


def test_export_never_replaces_a_run_dir_a_part_of_one_or_a_folder_of_runs_even_forced(run, capsys):
    r = Path(run[1])
    for target in (r, r / "ckpt", r / "config.json", r.parent):
        for force in ([], ["--force"]):
            with pytest.raises(SystemExit) as e:
                evaler.main([*run, "--export", str(target), *force])
            assert e.value.code == 2 and f"--export {target} holds the run {r} or a part of it; the SavedModel goes " \
                f"to a folder of its own, e.g. --export {r / 'export'}" in capsys.readouterr().err
    assert (r / "config.json").exists() and list((r / "ckpt").glob("ckpt-20.index"))
    for _ in range(2):  # as suggested; then replaced, as an earlier export
        evaler.main([*run, "--export", str(r / "export"), "--force"])
    assert (r / "export" / "saved_model.pb").exists()
    shutil.rmtree(r / "export")


def test_export_to_a_dir_tensorflow_cannot_write_is_a_clear_error(run, tmp_path, monkeypatch, capsys):
    """TensorFlow's file errors (tf.errors.PermissionDeniedError, ...) are not OSErrors."""
    def denied(*a, **k):
        raise tf.errors.PermissionDeniedError(None, None, f"{tmp_path}/x.tmp; Permission denied")
    monkeypatch.setattr(tf.saved_model, "save", denied)
    with pytest.raises(SystemExit) as e:
        evaler.main([*run, "--export", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == (f"error: cannot write --export {tmp_path / 'x'} ({tmp_path}/x.tmp; Permission "
                                    "denied); choose a writable DIR")


def test_evaluating_a_run_dir_one_cannot_write_still_reports(run, monkeypatch, capsys):
    """The confusion image and the sample grid go into the run dir; where that fails (a colleague's run, a
    read-only mount) the accuracy is still reported, with a warning for each."""
    def denied(grid, path):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(evaler, "save_png", denied)
    (r,) = evaler.main([*run, "--dataset", "tiny", "--json"])
    err = capsys.readouterr().err
    assert 0 <= r["accuracy"] <= 1 and "samples_png" not in r and "confusion_png" not in r
    assert err.count("warning: cannot write") == 2 and "pass --samples 0" in err
    monkeypatch.undo()
    (r,) = evaler.main([*run, "--dataset", "tiny", "--json"])
    assert Path(r["samples_png"]).name == "samples_ckpt-20.png" and Path(r["confusion_png"]).exists()


def test_evaluating_on_a_dataset_with_other_class_names_warns(run, dsdir, capsys):
    """Any dataset of the run's image size and class count is evaluated (the original toolkit's evaler), but
    other class names are said: the accuracy then pairs D's classes with the dataset's by index."""
    from datasets import format as fmt
    other = fmt.DatasetInfo("renamed", *SHAPE, ["cat", "dog", "emu"])
    with fmt.Writer(fmt.dataset_path(dsdir, "renamed"), other) as w:
        for split in ("train", "test"):
            s = input_ops.load_split(dsdir / "tiny" / "data.hdf5", split, in_memory="yes")
            w.append(split, s.images, s.labels)
    (same,) = evaler.main([*run, "--dataset", "tiny", "--json", "--samples", "0"])
    assert "warning" not in capsys.readouterr().err
    (r,) = evaler.main([*run, "--dataset", "renamed", "--json", "--samples", "0"])
    err = capsys.readouterr().err
    assert "the classes of renamed (cat, dog, emu) are not those the run" in err and "(class0, class1, class2)" in err
    assert r["accuracy"] == same["accuracy"] and r["class_names"] == ["cat", "dog", "emu"]


@pytest.mark.parametrize("n, grid", [(64, (8, 8)), (10, (3, 4))])
def test_samples_standalone_writes_a_grid_png_without_a_dataset(run, tmp_path, n, grid):
    out = tmp_path / "grid.png"
    evaler.main([*run, "--samples", str(n), "--output", str(out)])
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size == (grid[1] * SHAPE[1], grid[0] * SHAPE[0]) and im.mode == "L"


@pytest.mark.parametrize("flags, message", [
    ([], "--dataset is required to evaluate"),
    (["--predict", "x", "--all"], "--all evaluates every checkpoint"),
    (["--export", "x", "--output", "y"], "--output is for --predict"),
])
def test_flag_misuse_is_a_clear_error(run, capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        evaler.main([*run, *flags])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_prior_offsets_come_with_the_checkpoint_else_from_the_runs_training_images(run, classifier, images,
                                                                                 tmp_path, capsys):
    import shutil
    D, offsets = classifier
    pixels = load_image(images / "b.png", *SHAPE, "crop")[None]
    elsewhere = ["--dataset_dir", str(tmp_path / "empty")]  # the training images are not there
    evaler.main(["--checkpoint", run[1], *elsewhere, "--predict", str(images / "b.png")])  # the trainer's offsets
    (row,) = read_csv(capsys.readouterr().out)
    assert float(row["confidence"]) == pytest.approx(reference_probs((D, offsets), pixels)[0].max(), abs=1e-5)
    copy = tmp_path / "copy"
    shutil.copytree(run[1], copy)
    for saved in (copy / "ckpt").glob("*.prior.json"):
        saved.unlink()  # as a run from before the trainer saved them, evaluated with --prior labeled
    with pytest.raises(SystemExit) as e:
        evaler.main(["--checkpoint", str(copy), *elsewhere, "--predict", str(images / "b.png")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and "--prior labeled fits D's class prior on the run's training images" in err
    assert "pass the --dataset_dir that holds it, or --prior none" in err
    evaler.main(["--checkpoint", str(copy), "--dataset_dir", run[3], "--predict", str(images / "b.png")])
    (row,) = read_csv(capsys.readouterr().out)  # fitted again, on the training images: the same offsets
    assert float(row["confidence"]) == pytest.approx(reference_probs((D, offsets), pixels)[0].max(), abs=1e-5)
    evaler.main(["--checkpoint", str(copy), *elsewhere, "--predict", str(images / "b.png"), "--prior", "none"])
    (row,) = read_csv(capsys.readouterr().out)
    assert float(row["confidence"]) == pytest.approx(reference_probs((D, np.zeros(3)), pixels)[0].max(), abs=1e-5)


# ---------------------------------------------------------------- what the evaler tells a person: classes without
# test images, --predict's progress, flags it does not use, the confusion image's layout, and the errors for a run's
# ckpt folder and an --export path that is a file


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


def test_classes_without_test_images_are_reported_as_na_not_as_zero(run, dsdir, capsys):
    """A test split that holds one class only (an own folder's test/ with one class folder)."""
    with fmt.Writer(fmt.dataset_path(dsdir, "oneclass"), fmt.DatasetInfo("oneclass", *SHAPE, NAMES)) as w:
        for split in ("train", "test"):
            s = input_ops.load_split(dsdir / "tiny" / "data.hdf5", split, in_memory="yes")
            keep = slice(None) if split == "train" else s.labels == 0
            w.append(split, s.images[keep], s.labels[keep])
    (r,) = evaler.main([*run, "--dataset", "oneclass", "--json", "--samples", "0"])
    assert r["per_class"]["class1"] is None and r["per_class"]["class2"] is None
    assert 0 <= r["per_class"]["class0"] <= 1 and r["num_examples"] == 10
    assert warnings(capsys.readouterr().err) == [
        "warning: the test split of oneclass holds no images of class1, class2, so their accuracy is n/a (null in "
        "--json)"]
    evaler.main([*run, "--dataset", "oneclass", "--samples", "0"])
    out = capsys.readouterr().out
    assert re.search(r"^  class1 +n/a \(no test images\)$", out, re.M) and "0.0000" not in out.split("confusion")[0]
    with np.errstate(all="raise"):  # an all-zero row is drawn (white), never divided by zero
        image = evaler.confusion_image(np.array(r["confusion"]), NAMES)
    assert image.shape[-1] == 3
    with Image.open(r["confusion_png"]) as png:
        assert png.size == image.shape[1::-1]


def test_predict_shows_a_progress_bar_on_stderr(run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (12, 12), np.uint8)).save(tmp_path / f"{i}.png")
    evaler.main([*run, "--predict", str(tmp_path), "--output", str(tmp_path / "out" / "pred.csv")])
    assert re.search(r"classifying: 100%.*\b5/5\b", capsys.readouterr().err)


def test_conversion_flags_that_differ_from_the_runs_are_named_in_one_warning(run, dsdir, tmp_path, capsys):
    (same,) = evaler.main([*run, "--dataset", "tiny", "--json", "--samples", "0", "--resize", "crop"])
    assert warnings(capsys.readouterr().err) == []
    (r,) = evaler.main([*run, "--dataset", "tiny", "--json", "--samples", "0", "--test_fraction", "0.5",
                        "--resize", "stretch"])
    assert warnings(capsys.readouterr().err) == [
        f"warning: --resize stretch, --test_fraction 0.5 are not what the run {run[1]} was trained with (--resize "
        "crop, --test_fraction 0.1); the run's settings are used"]
    assert r["accuracy"] == same["accuracy"] and r["num_examples"] == same["num_examples"]
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(tmp_path / "x.png")
    evaler.main([*run, "--predict", str(tmp_path / "x.png"), "--resize", "stretch", "--channels", "3"])
    assert warnings(capsys.readouterr().err) == [
        f"warning: --resize stretch, --channels 3 are not what the run {run[1]} was trained with (--resize crop, "
        "--channels 1); the run's settings are used"]


def test_unused_conversion_flags_are_named_for_the_runs_folder_another_folder_and_a_dataset_file(tmp_path, capsys):
    """The run's own folder is read as trained; another folder takes the given resize and split (its channels are
    the run's); a converted dataset file is read as it is."""
    (tmp_path / "shapes" / "a").mkdir(parents=True)
    cfg = {"dataset": "shapes", "resize": "crop", "test_fraction": 0.1, "dataset_info": {"channels": 1}}
    args = argparse.Namespace(data_dir=str(tmp_path), resize="stretch", test_fraction=0.2, channels=3)
    evaler.warn_unused_flags(args, cfg, Path("RUN"), "shapes")
    assert warnings(capsys.readouterr().err) == [
        "warning: --resize stretch, --test_fraction 0.2, --channels 3 are not what the run RUN was trained with "
        "(--resize crop, --test_fraction 0.1, --channels 1); the run's settings are used"]
    evaler.warn_unused_flags(args, {**cfg, "dataset": "other"}, Path("RUN"), "shapes")
    assert warnings(capsys.readouterr().err) == [
        "warning: --channels 3 is not what the run RUN was trained with (--channels 1); the run's settings are used"]
    evaler.warn_unused_flags(args, cfg, Path("RUN"), "converted")
    assert warnings(capsys.readouterr().err) == [
        "warning: --resize stretch, --test_fraction 0.2, --channels 3 are not what the run RUN was trained with "
        "(--resize crop, --test_fraction 0.1, --channels 1); they only convert an own image folder, and converted is a "
        "converted dataset, read as it is"]


@pytest.mark.parametrize("job, made", [("predict", "CSV rows to --output or stdout"), ("export", "a SavedModel"),
                                       ("samples", "a PNG grid")])
def test_json_with_predict_export_or_samples_is_a_one_line_error(run, tmp_path, capsys, job, made):
    (tmp_path / "x.png").write_bytes(b"")
    flags = {"predict": ["--predict", str(tmp_path / "x.png")], "export": ["--export", str(tmp_path / "model")],
             "samples": ["--samples", "4", "--output", str(tmp_path / "grid.png")]}[job]
    with pytest.raises(SystemExit) as e:
        evaler.main([*run, "--json", *flags])
    assert e.value.code == 2 and capsys.readouterr().err.strip().splitlines() == [
        f"error: --json prints evaluation reports, and --{job} makes none (it writes {made}); drop --json"]
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


CELL_GRAY, GRID_FRACTION = (200, 200, 200), 0.5


@pytest.mark.parametrize("n", [2, 3, 10])
def test_the_confusion_image_fits_its_caption_and_labels(n):
    names = ["circle", "square", "stripe", *(f"c{i}" for i in range(3, n))][:n]
    cm = np.arange(n * n).reshape(n, n) % 7
    image = evaler.confusion_image(cm, names)
    h, w, _ = image.shape
    font = ImageFont.load_default()
    assert w >= 2 * evaler.PAD + math.ceil(font.getlength(evaler.CONFUSION_CAPTION))
    white = image == 255
    assert white[:2].all() and white[-2:].all() and white[:, :2].all() and white[:, -2:].all()  # nothing cut
    # the title and the column indices above the grid: two bands of ink with white between them
    lines = ((image == CELL_GRAY).all(-1) | (image == 0).all(-1)).sum(1)
    grid_top = int(np.argmax(lines > GRID_FRACTION * 28 * n))
    inked = ~white[:grid_top].all((1, 2))
    bands = int(inked[0]) + int(np.sum(inked[1:] & ~inked[:-1]))
    assert bands == 2


def test_a_runs_ckpt_folder_means_the_run_and_other_paths_in_it_name_the_run(run, capsys):
    path = Path(run[1])
    assert evaler.find_run(str(path / "ckpt")) == evaler.find_run(str(path))
    with pytest.raises(SystemExit) as e:
        evaler.main(["--checkpoint", str(path / "ckpt" / "ckpt-999"), "--export", str(path / "x")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.endswith(f"; pass the run dir {path} (its latest checkpoint)")


def test_export_onto_a_file_says_it_is_a_file(run, tmp_path, capsys):
    target = tmp_path / "model"
    target.write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        evaler.main([*run, "--export", str(target)])
    assert e.value.code == 2 and capsys.readouterr().err.strip() == (
        f"error: --export {target} is a file, not a folder; pass --force to replace it, or choose another DIR")
    assert target.is_file()

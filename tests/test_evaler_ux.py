"""What evaler.py tells a person: classes without test images, --predict's progress, flags it does not use, the
confusion image's layout, and the errors for a run's ckpt folder and an --export path that is a file."""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFont

import evaler
import input_ops
import trainer
from datasets import format as fmt
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
    """The evaler's flags for a tiny run dir trained for 10 steps (and where its dataset is)."""
    run = tmp_path_factory.mktemp("runs") / "ssgan"
    trainer.main(["--dataset", "tiny", "--dataset_dir", str(dsdir), "--train_dir", str(run), "--num_labeled", "30",
                  *TINY_FLAGS, "--max_steps", "10"])
    return ["--checkpoint", str(run), "--dataset_dir", str(dsdir)]


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

"""The original toolkit's own-dataset usage, end to end: data/NAME/<class>/ images -> trainer -> evaler."""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import download
import evaler
import trainer
from datasets import format as fmt
from tests.tiny import TINY_FLAGS, tiny_images


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """data/shapes/{a,b,c}/ with 20 PNG/JPEG images each (24x32 RGB), plus data/shapes/unlabeled/x/."""
    root = tmp_path_factory.mktemp("data")
    labels = np.repeat(np.arange(3), 20)
    images = tiny_images(labels, (24, 32, 3), seed=3)
    for i, (x, y) in enumerate(zip(images, labels)):
        d = root / "shapes" / "abc"[y]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(d / f"{i}.{'png' if i % 2 else 'jpg'}")
    (root / "shapes" / "unlabeled" / "x").mkdir(parents=True)
    for i, x in enumerate(tiny_images(np.zeros(10, int), (24, 32, 3), seed=4)):
        Image.fromarray(x).save(root / "shapes" / "unlabeled" / "x" / f"u{i}.png")
    (root / "shapes" / "README.txt").write_text("not an image")
    return root


def flags(folder: Path, tmp: Path, h: int = 12, w: int = 16, c: int = 3) -> list[str]:
    return ["--dataset", "shapes", "--data_dir", str(folder), "--dataset_dir", str(tmp / "datasets"),
            "--input_height", str(h), "--input_width", str(w), "--num_class", str(c)]


def test_train_and_evaluate_an_image_folder_with_the_original_flags(folder, tmp_path, capsys):
    common = flags(folder, tmp_path)
    run = tmp_path / "run"
    result = trainer.main([*common, "--train_dir", str(run), "--num_labeled", "15", *TINY_FLAGS,
                           "--max_steps", "10"])
    assert result["step"] == 10
    (report,) = evaler.main([*common, "--checkpoint", str(run), "--json"])
    assert report["class_names"] == ["a", "b", "c"]
    assert report["num_examples"] == 6  # 10% of each class of 20 held out
    assert (tmp_path / "datasets" / "shapes" / "data.hdf5").exists()


def test_num_class_disagreeing_with_the_folders_is_a_clear_error(folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        trainer.main([*flags(folder, tmp_path, c=5), "--train_dir", str(tmp_path / "r"), "--max_steps", "1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "a, b, c" in err.replace("'", "")
    assert not (tmp_path / "r").exists()


def test_evaluating_uses_the_runs_preprocessing_and_never_reconverts_the_folder(folder, tmp_path):
    run = tmp_path / "stretched"
    trainer.main([*flags(folder, tmp_path), "--resize", "stretch", "--test_fraction", "0.2", "--train_dir", str(run),
                  "--num_labeled", "15", *TINY_FLAGS, "--max_steps", "5"])
    data = tmp_path / "datasets" / "shapes" / "data.hdf5"
    before = data.stat().st_mtime_ns
    (report,) = evaler.main(["--dataset", "shapes", "--data_dir", str(folder), "--dataset_dir",
                             str(tmp_path / "datasets"), "--checkpoint", str(run), "--json"])
    assert data.stat().st_mtime_ns == before
    assert report["num_examples"] == 12  # the run's 20% test split, not the evaler's default 10%


def test_the_runs_resize_and_split_apply_to_its_own_folder_only(folder, tmp_path):
    """Evaluating reads the run's folder as it was trained (its resize and test split); another folder of the same
    size keeps its own conversion's (None: the existing conversion's), unless they are given."""
    cfg = {"dataset": "shapes", "resize": "stretch", "test_fraction": 0.2,
           "dataset_info": {"height": 12, "width": 16, "channels": 3}}
    shutil.copytree(folder / "shapes", tmp_path / "others")
    for name, resize, fraction in (("shapes", "stretch", 0.2), ("others", None, None)):
        args = argparse.Namespace(dataset=name, data_dir=str(folder if name == "shapes" else tmp_path),
                                  resize=None, test_fraction=None, input_height=None, input_width=None, channels=None)
        got = evaler.trained_preprocessing(args, cfg)
        assert (got.resize, got.test_fraction, got.input_height, got.channels) == (resize, fraction, 12, 3)


def test_a_changed_folder_is_not_resumed_and_its_evaluation_warns(folder, tmp_path, capsys):
    """The run's labelled indices and test split point into the folder as it was converted: new mtimes (a copy)
    reconvert it to the same layout and the run resumes; after images are added the trainer refuses to resume
    (they would now be other images), and the evaler warns."""
    data = tmp_path / "data"
    shutil.copytree(folder, data)
    common = flags(data, tmp_path)
    run = tmp_path / "run"
    trainer.main([*common, "--train_dir", str(run), "--num_labeled", "15", *TINY_FLAGS, "--max_steps", "5"])
    for f in (data / "shapes").rglob("*"):
        os.utime(f, (1e9, 1e9))
    converted = (tmp_path / "datasets" / "shapes" / "data.hdf5").stat().st_mtime_ns
    assert trainer.main([*common, "--train_dir", str(run), "--num_labeled", "15", *TINY_FLAGS,
                         "--max_steps", "7"])["step"] == 7
    assert (tmp_path / "datasets" / "shapes" / "data.hdf5").stat().st_mtime_ns != converted  # it was reconverted
    images = tiny_images(np.zeros(5, int), (24, 32, 3), seed=5)
    for i, x in enumerate(images):
        Image.fromarray(x).save(data / "shapes" / "unlabeled" / "x" / f"new{i}.png")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        trainer.main([*common, "--train_dir", str(run), "--num_labeled", "15", *TINY_FLAGS, "--max_steps", "9"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and "the folder has changed since" in err[-1], err
    assert "Traceback" not in "\n".join(err)
    assert sorted(p.name for p in (run / "ckpt").glob("*.index")) == ["ckpt-5.index", "ckpt-7.index"]
    (report,) = evaler.main([*common, "--checkpoint", str(run), "--json"])
    assert "image folder of shapes has changed" in capsys.readouterr().err and report["step"] == 7


def test_a_run_whose_folder_was_converted_at_another_size_since_resumes_on_its_own_conversion(folder, tmp_path,
                                                                                              capsys):
    """A run started without size flags takes the folder's conversion as it was; once the folder is converted at
    another size and resize (by another run), resuming it goes back to the run's conversion, kept from before,
    and other size flags given are refused, naming the run's."""
    base = ["--dataset", "shapes", "--data_dir", str(folder), "--dataset_dir", str(tmp_path / "datasets"),
            "--num_labeled", "15", *TINY_FLAGS]
    run = tmp_path / "run"
    trainer.main([*base, "--train_dir", str(run), "--max_steps", "5"])
    info = json.loads((run / "config.json").read_text())["dataset_info"]
    trainer.main([*base, "--input_height", "8", "--input_width", "8", "--resize", "stretch", "--train_dir",
                  str(tmp_path / "small"), "--max_steps", "5"])
    assert (f"note: {folder / 'shapes'} was converted at {info['height']}x{info['width']}x3 (--resize crop, "
            "--test_fraction 0.1, --seed 0); converting it at 8x8x3 (--resize stretch, --test_fraction 0.1, --seed 0) "
            "makes that the one later commands without these flags use (the earlier one is kept in kept/ for "
            "switching back)") in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        trainer.main([*base, "--input_height", "8", "--input_width", "8", "--train_dir", str(run), "--max_steps", "10"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "converting shapes" not in err  # refused before converting anything
    err = err.strip().splitlines()[-1]
    assert (f"{info['height']}x{info['width']}x3 images, not 8x8x3; pass --input_height {info['height']} "
            f"--input_width {info['width']} to resume it") in err, err
    trainer.main([*base, "--train_dir", str(run), "--max_steps", "7"])  # no flags: the run's conversion, kept
    err = capsys.readouterr().err
    assert "kept from before (in kept/, not decoded again)" in err and "converting shapes" not in err, err
    assert (run / "ckpt" / "ckpt-7.index").exists()


@pytest.mark.parametrize("given, message", [(["--resize", "stretch"], "--resize 'crop', not 'stretch'"),
                                            (["--test_fraction", "0.3"], "--test_fraction 0.1, not 0.3")])
def test_a_resume_with_another_resize_or_split_is_refused_before_converting(folder, tmp_path, capsys, given, message):
    """Else the refused command would have made its conversion the folder's current one for every later command."""
    common = [*flags(folder, tmp_path), "--num_labeled", "15", *TINY_FLAGS, "--train_dir", str(tmp_path / "run")]
    trainer.main([*common, "--max_steps", "0"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        trainer.main([*common, *given, "--max_steps", "5"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"was trained with {message}; pass the same flags" in err
    assert "converting shapes" not in err and "kept from before" not in err
    extra = fmt.read_info(tmp_path / "datasets" / "shapes" / "data.hdf5").extra
    assert (extra["resize"], extra["test_fraction"]) == ("crop", 0.1)


def test_a_run_resumes_and_is_evaluated_on_its_conversion_seed_after_another_seeds_conversion(folder, tmp_path,
                                                                                               capsys):
    """`download.py --folder --seed 5` gives the folder another test split and train order; a run of the seed-0
    conversion resumes on it (kept) with --train_dir and is evaluated on it, where before stop 44 it was refused as a
    changed folder; without --train_dir a new run starts, naming the seeds."""
    common = flags(folder, tmp_path)
    by_default = [*common, "--runs_dir", str(tmp_path / "runs"), "--num_labeled", "15", *TINY_FLAGS]
    trainer.main([*by_default, "--max_steps", "5"])
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "config.json").read_text())["conversion_seed"] == 0
    (before,) = evaler.main([*common, "--checkpoint", str(run), "--json"])
    (run / "result.json").unlink()  # as if it had been stopped: an unfinished run, which commands resume by default
    download.main(["--folder", str(folder / "shapes"), "--dataset_dir", str(tmp_path / "datasets"),
                   "--input_height", "12", "--input_width", "16", "--seed", "5"])
    capsys.readouterr()
    # the same command without --train_dir does not resume it on the other seed's rows, and says why
    trainer.main([*by_default, "--max_steps", "7"])
    assert (f"the unfinished run {run} was trained on its image folder converted with --seed 0, not the current "
            "conversion's --seed 5 (pass --train_dir") in capsys.readouterr().out
    assert trainer.main([*common, "--train_dir", str(run), "--num_labeled", "15", *TINY_FLAGS,
                         "--max_steps", "7"])["step"] == 7
    assert "kept from before (in kept/, not decoded again)" in capsys.readouterr().err
    download.main(["--folder", str(folder / "shapes"), "--dataset_dir", str(tmp_path / "datasets"),
                   "--input_height", "12", "--input_width", "16", "--seed", "5"])
    (after,) = evaler.main([*common, "--checkpoint", str(run / "ckpt" / "ckpt-5"), "--json"])
    assert "has changed" not in capsys.readouterr().err
    assert after["num_examples"] == before["num_examples"] and after["accuracy"] == before["accuracy"]


def test_prior_is_fitted_on_a_linked_folders_conversion_without_converting_it(folder, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "pics").symlink_to(folder / "shapes")  # converted as datasets/shapes, the folder's own name
    common = ["--data_dir", str(data), "--dataset_dir", str(tmp_path / "datasets")]
    run = tmp_path / "run"
    trainer.main(["--dataset", "pics", *common, "--input_height", "12", "--input_width", "16", "--train_dir", str(run),
                  "--num_labeled", "15", *TINY_FLAGS, "--max_steps", "5"])
    converted = tmp_path / "datasets" / "shapes" / "data.hdf5"
    saved = json.loads((run / "ckpt" / "ckpt-5.prior.json").read_text())["offsets"]
    (run / "ckpt" / "ckpt-5.prior.json").unlink()
    before = converted.stat().st_mtime_ns
    (report,) = evaler.main(["--dataset", "pics", *common, "--checkpoint", str(run), "--json", "--samples", "0"])
    assert list(report["prior_offsets"].values()) == pytest.approx(saved, abs=1e-4)  # its 54 labelled images
    evaler.main(["--checkpoint", str(run), *common, "--export", str(tmp_path / "model")])
    assert converted.stat().st_mtime_ns == before
    # Converted at another size since: the prior is fitted on the conversion at the run's size, kept from before.
    trainer.main(["--dataset", "pics", *common, "--input_height", "8", "--input_width", "8", "--train_dir",
                  str(tmp_path / "small"), "--num_labeled", "15", *TINY_FLAGS, "--max_steps", "1"])
    before = converted.stat().st_mtime_ns
    capsys.readouterr()
    evaler.main(["--checkpoint", str(run), *common, "--export", str(tmp_path / "model2")])
    assert converted.stat().st_mtime_ns == before and "Error" not in capsys.readouterr().err
    # Of two kept conversions at the run's size, the run's own (crop), not the newer one with other rows (stretch).
    from datasets import folder as own
    own.convert(folder / "shapes", tmp_path / "datasets", height=12, width=16, resize="stretch", workers=1)
    own.convert(folder / "shapes", tmp_path / "datasets", height=8, width=8, workers=1)
    args = argparse.Namespace(data_dir=str(data), dataset_dir=str(tmp_path / "datasets"), weights="ema",
                              in_memory="auto", memory_budget_gb=1.0)
    split = evaler.prior_split(args, json.loads((run / "config.json").read_text()), run)
    assert Path(split.path).name == "12x16x3-crop-test0.1-seed0.hdf5", split.path

"""What a user gets for a bad --dataset or size: one clear error and nothing written, or a path taken as its name."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import config
import datasets
import evaler
import trainer
from datasets import folder
from datasets.format import DatasetInfo, Writer
from errors import UserError
from tests.tiny import TINY_FLAGS, tiny_images


def make_folder(root: Path, size: tuple[int, int] = (16, 12), per_class: int = 10) -> Path:
    """root/{a,b}/ with `per_class` PNG images of (width, height) `size` each."""
    labels = np.repeat(np.arange(2), per_class)
    for i, (x, y) in enumerate(zip(tiny_images(labels, (size[1], size[0], 3), seed=1), labels)):
        (root / "ab"[y]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(root / "ab"[y] / f"{i}.png")
    return root


def error_line(capsys, main, argv: list[str]) -> str:
    """A CLI's one `error:` line (exit status 2, no traceback)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def data_args(tmp_path: Path, dataset: str, **kw) -> argparse.Namespace:
    """The shared data flags as trainer/evaler parse them."""
    p = argparse.ArgumentParser()
    config.add_data_flags(p)
    return p.parse_args(["--dataset", dataset, "--data_dir", str(tmp_path / "data"),
                         "--dataset_dir", str(tmp_path / "datasets"),
                         *(f for k, v in kw.items() for f in (f"--{k}", str(v)))])


# ---------------------------------------------------------------- sizes


def test_large_images_without_size_flags_are_refused_before_anything_is_written(tmp_path, capsys):
    make_folder(tmp_path / "data" / "bigset", size=(300, 200), per_class=2)
    argv = ["--dataset", "bigset", "--data_dir", str(tmp_path / "data"), "--dataset_dir", str(tmp_path / "datasets"),
            "--train_dir", str(tmp_path / "run")]
    err = error_line(capsys, trainer.main, argv)
    assert f"{tmp_path / 'data' / 'bigset'} are mostly 200x300" in err
    assert "pass --input_height and --input_width, e.g. --input_height 43 --input_width 64" in err
    assert not (tmp_path / "datasets").exists() and not (tmp_path / "run").exists()
    path = folder.convert(tmp_path / "data" / "bigset", tmp_path / "datasets", height=300, width=450, workers=1)
    assert path.exists()  # asked for explicitly, a large size is converted


def test_huge_explicit_size_is_a_user_error_and_leaves_no_temporary_file(tmp_path, capsys):
    src = make_folder(tmp_path / "data" / "tiny", per_class=2)
    with pytest.raises(UserError, match=r"^--input_height 100000 is more than the largest size converted \(2048\); "
                       r"pass a smaller one, such as --input_height 64$"):
        folder.convert(src, tmp_path / "datasets", height=100000, width=100000)
    with pytest.raises(UserError, match="makes the width 2133, more than 2048; pass --input_width too"):
        folder.convert(src, tmp_path / "datasets", height=1600)  # 12x16 images: the width keeps their aspect ratio
    assert not (tmp_path / "datasets").exists()
    out = tmp_path / "datasets" / "huge" / "data.hdf5"
    with pytest.raises(ValueError):  # h5py: a chunk of 4 GB or more
        with Writer(out, DatasetInfo("huge", 100000, 100000, 3, ["a", "b"])):
            pass
    assert list(out.parent.iterdir()) == []  # no .data.hdf5.<pid>.tmp left behind


# ---------------------------------------------------------------- names


def test_a_misspelled_name_suggests_the_closest_and_both_fixes(tmp_path, capsys):
    make_folder(tmp_path / "data" / "shapes", per_class=2)
    err = error_line(capsys, trainer.main, ["--dataset", "fashion-mnist", "--data_dir", str(tmp_path / "data"),
                                            "--dataset_dir", str(tmp_path / "datasets")])
    assert err == (f"error: dataset 'fashion-mnist' is neither a public dataset (mnist, fashion_mnist, cifar10, svhn) "
                   f"nor an image folder in {tmp_path / 'data'}/ (did you mean fashion_mnist?); download a public one "
                   f"with: python download.py NAME --dataset_dir {tmp_path / 'datasets'}, or put your images in "
                   f"{tmp_path / 'data' / 'fashion-mnist'}/<class>/")
    with pytest.raises(UserError, match=r"did you mean shapes\?"):
        config.resolve_dataset(data_args(tmp_path, "Shape"))
    with pytest.raises(UserError, match=r"^unknown dataset 'fashion-mnist' \(did you mean fashion_mnist\?\); known"):
        datasets.source("fashion-mnist")  # python download.py fashion-mnist


def test_a_known_name_not_downloaded_and_a_folder_not_converted_keep_the_create_command(tmp_path):
    make_folder(tmp_path / "data" / "shapes", per_class=2)
    with pytest.raises(UserError, match="not found at .*; create it with: python download.py mnist --dataset_dir"):
        config.resolve_dataset(data_args(tmp_path, "mnist"))
    with pytest.raises(UserError, match="create it with: python download.py --folder data/shapes"):
        datasets.require(tmp_path / "datasets", "shapes", tmp_path / "data")


# ---------------------------------------------------------------- a path as --dataset


def test_dataset_given_as_a_folder_path_is_its_name_in_its_parent(tmp_path, capsys):
    """The run dir, config.json and the evaler's file names see the folder's name, never the path."""
    data = tmp_path / "x" / "data"
    make_folder(data / "tiny")
    shutil.copytree(data / "tiny", data / "other")
    common = ["--dataset_dir", str(tmp_path / "datasets"), "--input_height", "8", "--input_width", "8"]
    result = trainer.main(["--dataset", str(data / "tiny"), *common, "--runs_dir", str(tmp_path / "runs"),
                           "--num_labeled", "4", *TINY_FLAGS, "--batch_size", "4", "--max_steps", "2",
                           "--supervised_only", "--prior", "none"])  # no G, no prior: a quick graph
    run = Path(result["run_dir"])
    assert run.parent == tmp_path / "runs" and run.name.startswith("tiny-")
    assert '"dataset": "tiny"' in (run / "config.json").read_text()
    evaler.main(["--dataset", f"{data / 'other'}/", *common, "--checkpoint", str(run), "--json", "--samples", "0"])
    assert (run / "confusion_ckpt-2_other.png").exists()


def test_dataset_path_forms_and_errors(tmp_path, monkeypatch):
    make_folder(tmp_path / "data" / "tiny", per_class=1)
    monkeypatch.chdir(tmp_path)
    p = argparse.ArgumentParser()
    config.add_data_flags(p)
    for argv in (["--dataset", "data/tiny"], ["--dataset", "./data/tiny/"], ["--data_dir", "data", "--dataset",
                                                                              str(tmp_path / "data" / "tiny")]):
        args = p.parse_args(argv)
        assert args.dataset == "tiny" and Path(args.data_dir).resolve() == tmp_path / "data", argv
    assert p.parse_args(["--dataset", "tiny"]).data_dir == "data"
    with pytest.raises(UserError, match=r"^--dataset takes a dataset name or the path of an image folder, but "
                       r"data/tny is not a folder; fix the path, or pass a name \(mnist, "):
        p.parse_args(["--dataset", "data/tny"])
    for argv in (["--dataset", "data/tiny", "--data_dir", "elsewhere"],
                 ["--data_dir", "elsewhere", "--dataset", "data/tiny"]):
        with pytest.raises(UserError, match="^--dataset names an image folder in data but --data_dir is elsewhere; "
                           "drop --data_dir, or pass --dataset as a name$"):
            p.parse_args(argv)
    (tmp_path / "imgs" / "tiny").mkdir(parents=True)
    for argv in (["--dataset", "imgs/tiny", "--data_dir", "data"], ["--data_dir", "data", "--dataset", "imgs/tiny"]):
        with pytest.raises(UserError, match="^--dataset names an image folder in imgs but --data_dir is data; "):
            p.parse_args(argv)  # --data_dir given as its default value is still checked, before or after
    (tmp_path / "datasets" / "fashion_mnist").mkdir(parents=True)
    (tmp_path / "datasets" / "fashion_mnist" / "data.hdf5").write_bytes(b"")
    with pytest.raises(UserError, match=r"^--dataset datasets/fashion_mnist is a converted dataset's folder, not an "
                       r"image folder; pass --dataset fashion_mnist --dataset_dir datasets$"):
        p.parse_args(["--dataset", "datasets/fashion_mnist"])
    (tmp_path / "imgs" / "mnist").mkdir(parents=True)
    with pytest.raises(UserError, match=r"^--dataset imgs/mnist: an image folder named like the public dataset mnist"):
        p.parse_args(["--dataset", "imgs/mnist"])
    args = p.parse_args(["--dataset", "data/tiny", "--data_dir", "./data"])  # the same folder: no conflict
    assert (args.dataset, Path(args.data_dir).resolve()) == ("tiny", tmp_path / "data")

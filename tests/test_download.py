"""download.py and the dataset sources: layout and exact values, resume, checksums, atomicity, CLI errors."""
from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import ROOT, make_idx_set

import datasets
import download
from datasets import fetch
from datasets.format import load, read_info
from errors import UserError

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """download.py in a subprocess (exit status and exact stderr as a user sees them)."""
    return subprocess.run([sys.executable, str(ROOT / "download.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def main_exit(capsys, *args: str) -> tuple[int, str, str]:
    """download.main in-process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        download.main(list(args))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def put_raw(tmp_path: Path, file_name: str, data: bytes) -> Path:
    """Leave `data` as tmp_path/mnist/raw/<file_name> (as an earlier run would have); return the raw folder."""
    raw_dir = tmp_path / "mnist" / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    (raw_dir / file_name).write_bytes(data)
    return raw_dir


def assert_dataset(path: Path, raw, name: str, shape: tuple[int, int, int], class_names: list[str]) -> None:
    """The file at `path` has the layout, attributes and exact arrays of the tiny raw set."""
    info = read_info(path)
    assert (info.name, info.shape, info.class_names) == (name, shape, class_names)
    assert info.sources == {f: d[0] for f, d in raw.digests().items()}
    for split, (images, labels) in raw.expected.items():
        got_images, got_labels = load(path, split)
        assert got_images.dtype == np.uint8 and got_labels.dtype == np.int64
        np.testing.assert_array_equal(got_images, images)
        np.testing.assert_array_equal(got_labels, labels)


# ---------------------------------------------------------------- each source: layout and values


def test_mnist_download_gives_exact_images_labels_and_attrs(served, raw_sets, tmp_path):
    out = download.prepare("mnist", tmp_path)
    assert out == tmp_path / "mnist" / "data.hdf5"
    assert_dataset(out, raw_sets["mnist"], "mnist", (28, 28, 1), [str(d) for d in range(10)])
    assert sorted(p.name for p in (tmp_path / "mnist" / "raw").iterdir()) == sorted(raw_sets["mnist"].files)
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["sources"]) == {k: v[0] for k, v in raw_sets["mnist"].digests().items()}


def test_fashion_mnist_download_has_its_class_names(served, raw_sets, tmp_path):
    out = download.prepare("fashion_mnist", tmp_path)
    assert_dataset(out, raw_sets["fashion_mnist"], "fashion_mnist", (28, 28, 1),
                   ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot"])


def test_cifar10_binary_records_become_hwc_in_batch_order(served, raw_sets, tmp_path):
    out = download.prepare("cifar10", tmp_path)
    assert_dataset(out, raw_sets["cifar10"], "cifar10", (32, 32, 3),
                   ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])
    images, _ = load(out, "train")
    assert images.shape == (10, 32, 32, 3)


def test_cifar10_record_planes_are_red_green_blue():
    from conftest import cifar_records

    from datasets.cifar10 import parse_records

    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30
    image[0, 0, 1] = (1, 2, 3)
    data = cifar_records(image, np.array([7]))
    assert data[0] == 7 and data[1:3] == bytes([10, 1]) and data[1 + 1024 + 1] == 2 and data[1 + 2048 + 1] == 3
    images, labels = parse_records(data, "test")
    assert labels.tolist() == [7]
    assert images[0, 0, 0].tolist() == [10, 20, 30] and images[0, 0, 1].tolist() == [1, 2, 3]


def test_svhn_label_10_becomes_digit_0(served, raw_sets, tmp_path):
    out = download.prepare("svhn", tmp_path)
    assert_dataset(out, raw_sets["svhn"], "svhn", (32, 32, 3), [str(d) for d in range(10)])
    _, labels = load(out, "train")
    assert labels.tolist() == [0, 1, 2, 3, 4, 5] and labels.min() >= 0


def test_several_datasets_at_once_from_the_cli(served, tmp_path, capsys):
    download.main(["mnist", "svhn", "cifar10", "--dataset_dir", str(tmp_path)])
    out = capsys.readouterr().out
    for name in ("mnist", "svhn", "cifar10"):
        assert read_info(tmp_path / name / "data.hdf5").name == name
        assert f"{name}: wrote" in out


# ---------------------------------------------------------------- download: resume, retries, mirrors, checksums


def test_cut_connection_is_resumed_with_range(served, raw_sets, tmp_path):
    _, state = served
    path = "/mnist/train-images-idx3-ubyte.gz"
    half = len(state.files[path]) // 2
    state.cut[path] = half
    out = download.prepare("mnist", tmp_path)
    assert [r for p, r in state.log if p == path] == [None, f"bytes={half}-"]
    assert_dataset(out, raw_sets["mnist"], "mnist", (28, 28, 1), [str(d) for d in range(10)])
    assert not list((tmp_path / "mnist" / "raw").glob("*.part"))


def test_partial_file_of_an_earlier_run_is_resumed(served, raw_sets, tmp_path):
    _, state = served
    data = raw_sets["mnist"].files["t10k-images-idx3-ubyte.gz"]
    raw_dir = put_raw(tmp_path, "t10k-images-idx3-ubyte.gz.part", data[:100])
    download.prepare("mnist", tmp_path)
    assert ("/mnist/t10k-images-idx3-ubyte.gz", "bytes=100-") in state.log
    assert (raw_dir / "t10k-images-idx3-ubyte.gz").read_bytes() == data


def test_server_ignoring_range_restarts_the_file(served, raw_sets, tmp_path):
    _, state = served
    state.ranges = False
    raw_dir = put_raw(tmp_path, "t10k-labels-idx1-ubyte.gz.part", b"stale bytes")
    download.prepare("mnist", tmp_path)
    assert (raw_dir / "t10k-labels-idx1-ubyte.gz").read_bytes() == raw_sets["mnist"].files["t10k-labels-idx1-ubyte.gz"]


def test_complete_partial_file_is_accepted_after_416(served, raw_sets, tmp_path):
    data = raw_sets["mnist"].files["t10k-labels-idx1-ubyte.gz"]
    raw_dir = put_raw(tmp_path, "t10k-labels-idx1-ubyte.gz.part", data)
    download.prepare("mnist", tmp_path)
    assert (raw_dir / "t10k-labels-idx1-ubyte.gz").read_bytes() == data


def test_corrupted_download_is_a_checksum_error_and_nothing_is_written(served, tmp_path, capsys):
    _, state = served
    state.corrupt.add("/mnist/train-labels-idx1-ubyte.gz")
    code, _, err = main_exit(capsys, "mnist", "--dataset_dir", str(tmp_path))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "checksum mismatch for train-labels-idx1-ubyte.gz" in err
    assert not (tmp_path / "mnist" / "data.hdf5").exists()
    assert not list((tmp_path / "mnist" / "raw").glob("train-labels*"))


def test_network_failure_names_the_url_and_suggests_source(served, tmp_path, capsys):
    base, state = served
    state.status["/svhn/train_32x32.mat"] = 503
    code, _, err = main_exit(capsys, "svhn", "--dataset_dir", str(tmp_path), "--retries", "1")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{base}/svhn/train_32x32.mat: HTTP 503 after 2 tries" in err and "--source" in err
    assert [p for p, _ in state.log].count("/svhn/train_32x32.mat") == 2
    assert not (tmp_path / "svhn" / "data.hdf5").exists()


def test_refused_connection_is_retried_then_reported(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    monkeypatch.setattr(datasets.SOURCES["mnist"], "MIRRORS", [f"http://127.0.0.1:{port}/"])
    with pytest.raises(UserError, match=rf"http://127.0.0.1:{port}/train-images-idx3-ubyte.gz: connection failed "
                                        r"after 3 tries.*--source DIR"):
        download.prepare("mnist", tmp_path)


def test_next_mirror_is_tried_when_the_first_lacks_the_file(served, raw_sets, tmp_path, monkeypatch):
    base, state = served
    monkeypatch.setattr(datasets.SOURCES["svhn"], "MIRRORS", [f"{base}/gone/", f"{base}/svhn/"])
    out = download.prepare("svhn", tmp_path)
    assert [p for p, _ in state.log].count("/gone/train_32x32.mat") == 1  # a 404 is not retried
    assert_dataset(out, raw_sets["svhn"], "svhn", (32, 32, 3), [str(d) for d in range(10)])


def test_only_https_is_accepted_off_this_machine():
    fetch.check_url("https://storage.googleapis.com/cvdf-datasets/mnist/x.gz")
    fetch.check_url("http://127.0.0.1:8000/x.gz")
    with pytest.raises(ValueError, match="HTTPS only"):
        fetch.check_url("http://ufldl.stanford.edu/housenumbers/train_32x32.mat")


def test_no_disk_space_is_a_clear_error(served, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch.shutil, "disk_usage", lambda _: type("U", (), {"free": 10})())
    with pytest.raises(UserError, match="not enough disk space"):
        download.prepare("mnist", tmp_path)


def test_disk_full_while_converting_is_a_clear_error(served, tmp_path, monkeypatch):
    def full(raw):
        raise OSError(errno.ENOSPC, "No space left on device")
        yield

    monkeypatch.setattr(datasets.SOURCES["mnist"], "load", full)
    with pytest.raises(UserError, match="no space left"):
        download.prepare("mnist", tmp_path)
    assert not (tmp_path / "mnist" / "data.hdf5").exists()


def test_every_pinned_digest_is_a_sha256_and_every_mirror_https():
    for name, module in datasets.SOURCES.items():
        assert module.FILES and module.MIRRORS, name
        assert all(m.startswith("https://") and m.endswith("/") for m in module.MIRRORS)
        for digests in module.FILES.values():
            assert digests and all(len(d) == 64 and int(d, 16) >= 0 for d in digests)


# ---------------------------------------------------------------- conversion: atomic, idempotent, --force


def test_interrupted_conversion_leaves_no_dataset_file(served, tmp_path, monkeypatch):
    module = datasets.SOURCES["mnist"]
    real_load = module.load

    def load_then_interrupt(raw):
        gen = real_load(raw)
        yield next(gen)
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "load", load_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        download.prepare("mnist", tmp_path)
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == ["raw"]


def test_stale_temporary_of_a_killed_run_is_removed(served, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    stale = folder / ".data.hdf5.999999999.tmp"
    stale.write_bytes(b"half a file")
    download.prepare("mnist", tmp_path)
    assert not stale.exists()


def test_rerun_is_a_noop_and_force_redoes(served, tmp_path, capsys):
    _, state = served
    out = download.prepare("mnist", tmp_path)
    mtime, requests_made = out.stat().st_mtime_ns, len(state.log)
    capsys.readouterr()
    download.main(["mnist", "--dataset_dir", str(tmp_path)])
    assert "is already there (7 train, 3 test images)" in capsys.readouterr().out
    assert out.stat().st_mtime_ns == mtime and len(state.log) == requests_made
    os.utime(out, ns=(mtime - 10**9, mtime - 10**9))
    download.main(["mnist", "--dataset_dir", str(tmp_path), "--force"])
    assert out.stat().st_mtime_ns > mtime - 10**9
    assert len(state.log) == requests_made  # raw files came from the verified cache


def test_invalid_existing_file_is_rebuilt(served, tmp_path, capsys):
    out = tmp_path / "mnist" / "data.hdf5"
    out.parent.mkdir()
    out.write_bytes(b"not hdf5")
    download.prepare("mnist", tmp_path)
    assert read_info(out).name == "mnist" and "rebuilding" in capsys.readouterr().out


def test_tampered_cached_raw_file_is_downloaded_again(served, raw_sets, tmp_path):
    raw_dir = put_raw(tmp_path, "t10k-labels-idx1-ubyte.gz", b"tampered")
    download.prepare("mnist", tmp_path)
    assert (raw_dir / "t10k-labels-idx1-ubyte.gz").read_bytes() == raw_sets["mnist"].files["t10k-labels-idx1-ubyte.gz"]


# ---------------------------------------------------------------- --source and local copies


def test_source_folder_converts_without_network(raw_sets, tmp_path, monkeypatch):
    raw = raw_sets["cifar10"]
    monkeypatch.setattr(datasets.SOURCES["cifar10"], "FILES", raw.digests())
    monkeypatch.setattr(datasets.SOURCES["cifar10"], "MIRRORS", ["https://unreachable.invalid/"])
    src = raw.write(tmp_path / "downloads")
    out = download.prepare("cifar10", tmp_path / "ds", source=src)
    assert_dataset(out, raw, "cifar10", (32, 32, 3), datasets.SOURCES["cifar10"].CLASS_NAMES)
    assert not (tmp_path / "ds" / "cifar10" / "raw").exists()


def test_source_folder_with_one_subfolder_per_dataset(raw_sets, tmp_path, monkeypatch, capsys):
    for name in ("mnist", "svhn"):
        monkeypatch.setattr(datasets.SOURCES[name], "FILES", raw_sets[name].digests())
        raw_sets[name].write(tmp_path / "src" / name)
    download.main(["mnist", "svhn", "--source", str(tmp_path / "src"), "--dataset_dir", str(tmp_path / "ds")])
    assert read_info(tmp_path / "ds" / "svhn" / "data.hdf5").name == "svhn"


def test_local_copy_is_used_by_itself(served, raw_sets, tmp_path, monkeypatch, capsys):
    _, state = served
    local = raw_sets["fashion_mnist"].write(tmp_path / "debian")
    monkeypatch.setattr(datasets.SOURCES["fashion_mnist"], "LOCAL_DIRS", [local])
    download.prepare("fashion_mnist", tmp_path / "ds")
    assert state.log == [] and f"using the local copy in {local}" in capsys.readouterr().out


def test_wrong_local_copy_falls_back_to_download(served, tmp_path, monkeypatch):
    _, state = served
    local = make_idx_set(99).write(tmp_path / "debian")
    monkeypatch.setattr(datasets.SOURCES["fashion_mnist"], "LOCAL_DIRS", [local])
    download.prepare("fashion_mnist", tmp_path / "ds")
    assert len(state.log) == 4


def test_interrupted_conversion_from_source_leaves_nothing(raw_sets, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.SOURCES["svhn"], "FILES", raw_sets["svhn"].digests())
    monkeypatch.setattr(datasets.SOURCES["svhn"], "CHUNK", 2)
    real_load = datasets.SOURCES["svhn"].load

    def load_then_fail(raw):
        for i, item in enumerate(real_load(raw)):
            if i == 2:
                raise RuntimeError("killed midway")
            yield item

    monkeypatch.setattr(datasets.SOURCES["svhn"], "load", load_then_fail)
    with pytest.raises(RuntimeError):
        download.prepare("svhn", tmp_path / "ds", source=raw_sets["svhn"].write(tmp_path / "src"))
    assert not (tmp_path / "ds" / "svhn").exists() or not list((tmp_path / "ds" / "svhn").iterdir())


# ---------------------------------------------------------------- CLI errors, as a user sees them (subprocess)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2, a single `error:` line on stderr, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_unknown_name_lists_the_known_ones(tmp_path):
    result = run_cli("mnist", "imagenet", "--dataset_dir", str(tmp_path))
    assert_one_line_error(result, "unknown dataset 'imagenet'", "mnist, fashion_mnist, cifar10, svhn")
    assert not (tmp_path / "mnist").exists()  # names are checked before anything is fetched


def test_source_missing_files_are_named(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train_32x32.mat").write_bytes(b"x")
    result = run_cli("svhn", "--source", str(tmp_path / "src"), "--dataset_dir", str(tmp_path / "ds"))
    assert_one_line_error(result, "is missing test_32x32.mat for svhn")


def test_source_that_is_not_a_folder(tmp_path):
    (tmp_path / "f.gz").write_bytes(b"")
    assert_one_line_error(run_cli("mnist", "--source", str(tmp_path / "f.gz"), "--dataset_dir", str(tmp_path)),
                          "is not a folder")


def test_source_with_unofficial_files_is_a_checksum_error(tmp_path):
    make_idx_set(5).write(tmp_path / "src")
    result = run_cli("mnist", "--source", str(tmp_path / "src"), "--dataset_dir", str(tmp_path / "ds"))
    assert_one_line_error(result, "checksum mismatch", "nothing was converted")
    assert not (tmp_path / "ds" / "mnist" / "data.hdf5").exists()


def test_help_shows_defaults_and_examples():
    text = download.build_parser().format_help()
    for fragment in ("(default: datasets)", "--source DIR", "--force", f"(default: {fetch.RETRIES})", "--folder DIR",
                     "--input_height", "--test_fraction", "else 0.1)", "examples:",
                     "python download.py mnist fashion_mnist cifar10 svhn"):
        assert fragment in text


def test_conversion_flags_are_the_trainers(tmp_path):
    """download.py --folder and the trainer/evaler take one definition of how a folder is converted."""
    import config  # imports TensorFlow: here, not at the top of this module

    trainer_like = argparse.ArgumentParser()
    config.add_data_flags(trainer_like)
    ours = {a.dest: a for a in download.build_parser()._actions}
    theirs = {a.dest: a for a in trainer_like._actions}
    for dest in ("input_height", "input_width", "channels", "resize", "test_fraction"):
        a, b = ours[dest], theirs[dest]
        assert (a.type, a.choices, a.default, a.help) == (b.type, b.choices, b.default, b.help), dest
    result = run_cli("--folder", str(tmp_path), "--input_height", "0")
    assert result.returncode == 2 and "must be a positive integer, got 0" in result.stderr
    result = run_cli("--folder", str(tmp_path), "--test_fraction", "1")
    assert result.returncode == 2 and "must be between 0 and 1 (exclusive), got 1" in result.stderr
    # for a public dataset they would be ignored: an error instead, before anything is fetched
    result = run_cli("mnist", "--input_height", "32", "--seed", "3", "--dataset_dir", str(tmp_path / "ds"))
    assert result.returncode == 2 and not (tmp_path / "ds").exists()
    assert result.stderr == ("error: --input_height, --seed set how an image folder is converted: add --folder DIR, "
                             "or drop them (a public dataset keeps its own size and test split)\n")


# ---------------------------------------------------------------- the shared API


def test_dataset_dir_flag_and_create_command_for_the_trainer(tmp_path):
    parser = argparse.ArgumentParser()
    datasets.add_dataset_dir_flag(parser)
    assert parser.parse_args([]).dataset_dir == "datasets"
    assert datasets.path("d", "mnist") == Path("d/mnist/data.hdf5")
    assert datasets.create_command("mnist") == "python download.py mnist"
    assert datasets.create_command("svhn", "/x") == "python download.py svhn --dataset_dir /x"
    assert datasets.create_command("my_set").startswith("python download.py --folder data/my_set")
    with pytest.raises(UserError, match="create it with: python download.py cifar10 --dataset_dir"):
        datasets.require(tmp_path, "cifar10")


# ---------------------------------------------------------------- the real Fashion-MNIST (Debian package)


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_from_the_debian_package(tmp_path):
    out = download.prepare("fashion_mnist", tmp_path, source=DEBIAN_FASHION)
    info = read_info(out)
    assert info.shape == (28, 28, 1) and info.num_class == 10
    assert info.class_names == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                "Sneaker", "Bag", "Ankle boot"]
    assert set(info.sources.values()) <= {d for ds in datasets.SOURCES["fashion_mnist"].FILES.values() for d in ds}
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = load(out, split)
        assert images.shape == (n, 28, 28, 1) and images.dtype == np.uint8
        assert np.bincount(labels).tolist() == [n // 10] * 10
        assert images.max() == 255 and images.min() == 0
    assert datasets.require(tmp_path, "fashion_mnist") == out

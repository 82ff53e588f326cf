"""Tests of datasets/folder.py: users' own image folders converted into the HDF5 format."""
from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets import folder  # noqa: E402
from datasets.format import Writer, load, read_info  # noqa: E402
from errors import UserError  # noqa: E402

# ---------------------------------------------------------------- generated folders


def save(path: Path, im: Image.Image, **kw) -> Path:
    """Save an image, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **kw)
    return path


def rgb(color: tuple[int, int, int], size: tuple[int, int] = (12, 10)) -> Image.Image:
    """A solid RGB image of (width, height) `size`."""
    return Image.new("RGB", size, color)


def make_set(root: Path, counts: dict[str, int], size: tuple[int, int] = (12, 10), ext: str = "png") -> Path:
    """A dataset folder with `counts[class]` solid images per class, each class its own colour."""
    for k, (name, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            save(root / name / f"{i:03d}.{ext}", rgb((40 * k, 10 * i % 256, 200), size))
    return root


def run(src: Path, tmp_path: Path, **kw) -> Path:
    """Convert `src` into tmp_path/datasets with small defaults."""
    kw.setdefault("workers", 1)
    return folder.convert(src, tmp_path / "datasets", **kw)


def mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


# ---------------------------------------------------------------- decoding of each format and mode


def _png16() -> Image.Image:
    return Image.fromarray(np.full((10, 12), 32896, np.uint16))


def _gif_transparent() -> Image.Image:
    im = rgb((0, 0, 255)).convert("P")
    im.info["transparency"] = im.getpixel((0, 0))
    return im


CASES = [
    ("l.png", lambda: Image.new("L", (12, 10), 90), {}, (90, 90, 90), 0),
    ("rgb.jpg", lambda: rgb((200, 30, 30)), {"quality": 95}, (200, 30, 30), 6),
    ("rgb.bmp", lambda: rgb((10, 200, 30)), {}, (10, 200, 30), 0),
    ("pal.gif", lambda: rgb((0, 0, 255)).convert("P"), {}, (0, 0, 255), 0),
    ("rgb.webp", lambda: rgb((30, 120, 220)), {"quality": 95}, (30, 120, 220), 8),
    ("rgb.tiff", lambda: rgb((77, 66, 55)), {}, (77, 66, 55), 0),
    ("clear.png", lambda: Image.new("RGBA", (12, 10), (255, 0, 0, 0)), {}, (255, 255, 255), 0),
    ("half.png", lambda: Image.new("RGBA", (12, 10), (0, 0, 0, 128)), {}, (127, 127, 127), 1),
    ("la.png", lambda: Image.new("LA", (12, 10), (0, 0)), {}, (255, 255, 255), 0),
    ("cmyk.jpg", lambda: Image.new("CMYK", (12, 10), (0, 255, 255, 0)), {"quality": 95}, (255, 0, 0), 6),
    ("gray16.png", _png16, {}, (128, 128, 128), 0),
    ("bits.bmp", lambda: Image.new("1", (12, 10), 1), {}, (255, 255, 255), 0),
    ("trans.gif", _gif_transparent, {}, (255, 255, 255), 0),
]


@pytest.mark.parametrize("name,make,kw,expect,tol", CASES, ids=[c[0] for c in CASES])
def test_every_format_and_mode_decodes_to_rgb(tmp_path, name, make, kw, expect, tol):
    p = save(tmp_path / name, make(), **kw)
    a = folder.load_image(p, 5, 6, 3)
    assert a.shape == (5, 6, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - np.array(expect)).max() <= tol, (name, a[2, 2])


def test_rgb_to_gray_and_gray_to_rgb(tmp_path):
    src = tmp_path / "data" / "colors"
    save(src / "a" / "x.png", rgb((200, 100, 50)))
    save(src / "b" / "y.png", Image.new("L", (12, 10), 77))
    gray = load(run(src, tmp_path, height=4, width=4, channels=1, test_fraction=0.5), "train")[0]
    assert gray.shape == (2, 4, 4, 1)
    assert sorted(int(v) for v in gray[:, 0, 0, 0]) == [77, 124]  # 0.299*200 + 0.587*100 + 0.114*50
    col = load(run(src, tmp_path, height=4, width=4, channels=3, test_fraction=0.5), "train")[0]
    assert col.shape == (2, 4, 4, 3)
    by_red = sorted(col[:, 0, 0].tolist())
    assert by_red == [[77, 77, 77], [200, 100, 50]]


def test_default_channels_and_size_from_a_sample(tmp_path):
    gray = tmp_path / "data" / "g"
    for i in range(3):
        save(gray / "a" / f"{i}.png", Image.new("L", (30, 20)))
        save(gray / "b" / f"{i}.png", Image.new("L", (30, 20)).convert("P"))
    save(gray / "b" / "odd.png", Image.new("L", (8, 8)))
    info = read_info(run(gray, tmp_path))
    assert info.shape == (20, 30, 1)
    save(gray / "unlabeled" / "c.jpg", rgb((1, 2, 3), (30, 20)))
    assert read_info(run(gray, tmp_path)).shape == (20, 30, 3)
    assert read_info(run(gray, tmp_path, height=10)).shape == (10, 15, 3)  # width keeps the common aspect


def test_non_square_size(tmp_path):
    src = make_set(tmp_path / "data" / "ns", {"a": 3, "b": 3}, size=(50, 50))
    path = run(src, tmp_path, height=24, width=40, channels=3)
    train, test = load(path, "train")[0], load(path, "test")[0]
    assert train.shape == (4, 24, 40, 3) and test.shape == (2, 24, 40, 3)
    with h5py.File(path) as f:
        assert f.attrs["height"] == 24 and f.attrs["width"] == 40


def test_crop_versus_stretch(tmp_path):
    im = rgb((0, 255, 0), (40, 20))
    im.paste((255, 0, 0), (0, 0, 10, 20))  # red left quarter: cut by a centre crop, kept by a stretch
    p = save(tmp_path / "wide.png", im)
    crop = folder.load_image(p, 10, 10, 3, "crop")
    stretch = folder.load_image(p, 10, 10, 3, "stretch")
    assert crop[5, 0, 0] < 30 and crop[5, 0, 1] > 220
    assert stretch[5, 0, 0] > 220 and stretch[5, 9, 1] > 220


def test_exif_rotation_is_applied(tmp_path):
    im = rgb((0, 0, 0), (40, 20))
    im.paste((255, 255, 255), (20, 0, 40, 20))  # stored: left black, right white
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: left goes to top
    p = save(tmp_path / "rot.jpg", im, exif=exif.tobytes(), quality=95)
    a = folder.load_image(p, 40, 20, 1, "stretch")
    assert a[2, 10, 0] < 30 and a[37, 10, 0] > 220
    src = tmp_path / "data" / "rot"
    for c in "ab":
        save(src / c / "r.jpg", im, exif=exif.tobytes())
    assert read_info(run(src, tmp_path)).shape[:2] == (40, 20)


def test_mixed_folder_with_nesting_corrupt_and_clutter(tmp_path, capsys):
    src = tmp_path / "data" / "mixed"
    for name, make, kw, _, _ in CASES:
        save(src / ("a" if len(name) % 2 else "b") / name, make(), **kw)
    save(src / "unlabeled" / "x" / "y" / "deep.png", rgb((1, 1, 1)))
    save(src / "unlabeled" / "top.jpg", rgb((1, 1, 1)))
    (src / "a" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "b" / "sub").mkdir()
    save(src / "b" / "sub" / "nested.png", rgb((5, 5, 5)))
    (src / "a" / "notes.txt").write_text("hello")
    (src / ".DS_Store").write_bytes(b"\0\1")
    (src / "a" / ".hidden.png").write_bytes(b"junk")
    (src / "README.md").write_text("my set")
    path = run(src, tmp_path, height=8, width=8, channels=3, test_fraction=0.25)
    err = capsys.readouterr().err
    assert "skipped 1 unreadable" in err and "a/corrupt.jpg" in err and "notes" not in err
    info = read_info(path)
    assert info.class_names == ["a", "b"] and info.extra["num_skipped"] == 1
    (_, ytr), (_, yte) = load(path, "train"), load(path, "test")
    assert (ytr == -1).sum() == 2 and len(ytr) + len(yte) == len(CASES) + 1 + 2
    assert set(yte.tolist()) == {0, 1}


@pytest.mark.parametrize("name, ignored", [
    ("README", True), ("README.md", True), ("readme.txt", True), ("LICENSE-MIT", True), ("licence.rst", True),
    ("COPYING", True), (".DS_Store", True), ("Thumbs.db", True), ("predictions.csv", True), ("notes.txt", True),
    ("readme_cover.png", False), ("license_plate_001.jpg", False), ("copying_machine.webp", False),
    ("cat.PNG", False)])
def test_clutter_is_ignored_but_images_named_like_it_are_not(name, ignored):
    assert folder._ignored(name) is ignored


def test_test_folder_is_honoured(tmp_path):
    src = make_set(tmp_path / "data" / "tf", {"a": 4, "b": 3})
    make_set(src / "test", {"a": 2, "b": 1})
    path = run(src, tmp_path, height=6, width=6)
    (_, ytr), (_, yte) = load(path, "train"), load(path, "test")
    assert np.bincount(ytr).tolist() == [4, 3] and yte.tolist() == [0, 0, 1]


def test_test_folder_with_unknown_class_is_an_error(tmp_path):
    src = make_set(tmp_path / "data" / "tf", {"a": 2, "b": 2})
    make_set(src / "test", {"zebra": 1})
    with pytest.raises(UserError, match="zebra.*training classes: a, b"):
        run(src, tmp_path)


def test_held_out_split_is_seeded_and_per_class():
    labelled = [(f"a/{i}", 0) for i in range(10)] + [(f"b/{i}", 1) for i in range(3)] + [("c/0", 2)]
    names = ["a", "b", "c"]
    train, test = folder.hold_out(labelled, names, 0.2, seed=0)
    assert np.bincount([lab for _, lab in test], minlength=3).tolist() == [2, 1, 0]
    assert sorted(train + test) == sorted(labelled)
    assert folder.hold_out(labelled, names, 0.2, seed=0) == (train, test)
    others = [folder.hold_out(labelled, names, 0.2, seed=s)[1] for s in range(1, 6)]
    assert any(o != test for o in others)
    # a class's held-out files do not depend on the other classes
    only_a = folder.hold_out(labelled[:10], ["a"], 0.2, seed=0)[1]
    assert only_a == [t for t in test if t[1] == 0]


def test_held_out_split_in_the_file(tmp_path):
    src = make_set(tmp_path / "data" / "ho", {"a": 10, "b": 2})
    path = run(src, tmp_path, height=4, width=4, test_fraction=0.3)
    (_, ytr), (_, yte) = load(path, "train"), load(path, "test")
    assert np.bincount(yte).tolist() == [3, 1] and np.bincount(ytr).tolist() == [7, 1]


def test_rerun_is_a_noop_and_changes_trigger_reconversion(tmp_path):
    src = make_set(tmp_path / "data" / "re", {"a": 3, "b": 3})
    path = run(src, tmp_path, height=6, width=6)
    before = mtime(path)
    assert run(src, tmp_path, height=6, width=6) == path and mtime(path) == before
    assert run(src, tmp_path) == path and mtime(path) == before  # unasked size: whatever is there
    folder.ensure("re", tmp_path / "data", tmp_path / "datasets", height=6, width=6, num_class=2, workers=1)
    assert mtime(path) == before
    run(src, tmp_path, height=6, width=8)
    assert read_info(path).shape == (6, 8, 3) and mtime(path) != before
    before = mtime(path)
    save(src / "a" / "000.png", rgb((9, 9, 9), (13, 10)))
    os.utime(src / "a" / "000.png", ns=(1, 1))
    run(src, tmp_path, height=6, width=8)
    assert mtime(path) != before
    before = mtime(path)
    run(src, tmp_path, height=6, width=8, force=True)
    assert mtime(path) != before
    before = mtime(path)
    run(src, tmp_path, height=6, width=8, resize="stretch")
    assert mtime(path) != before and read_info(path).extra["resize"] == "stretch"


def test_ensure_keeps_the_split_seed_of_an_earlier_conversion(tmp_path):
    src = make_set(tmp_path / "data" / "sd", {"a": 6, "b": 6})
    path = run(src, tmp_path, height=6, width=6, seed=5)
    before = mtime(path)
    folder.ensure("sd", tmp_path / "data", tmp_path / "datasets", height=6, width=6, num_class=2, workers=1)
    assert mtime(path) == before and read_info(path).extra["seed"] == 5  # the trainer does not redraw the split
    run(src, tmp_path, height=6, width=6, seed=0)  # an explicit other seed does
    assert mtime(path) != before and read_info(path).extra["seed"] == 0


def test_unset_resize_and_test_fraction_keep_an_earlier_conversions(tmp_path):
    """`download.py --folder X --resize stretch --test_fraction 0.25`, then the trainer (which passes neither):
    the conversion is kept, not redone with crop and 0.1."""
    src = make_set(tmp_path / "data" / "rs", {"a": 8, "b": 8})
    path = run(src, tmp_path, height=6, width=6, resize="stretch", test_fraction=0.25)
    before = mtime(path)
    folder.ensure("rs", tmp_path / "data", tmp_path / "datasets", height=6, width=6, num_class=2, workers=1)
    extra = read_info(path).extra
    assert mtime(path) == before and (extra["resize"], extra["test_fraction"]) == ("stretch", 0.25)
    run(src, tmp_path, height=6, width=6, resize="crop")  # an explicit other value does reconvert
    extra = read_info(path).extra
    assert mtime(path) != before and (extra["resize"], extra["test_fraction"]) == ("crop", 0.25)
    with pytest.raises(UserError, match=r"--seed must be a non-negative integer, got -1"):
        run(src, tmp_path, seed=-1)


def test_earlier_conversions_are_kept_and_switched_back_to_without_decoding(tmp_path, monkeypatch, capsys):
    src = make_set(tmp_path / "data" / "kp", {"a": 3, "b": 3})
    path = run(src, tmp_path, height=6, width=6)
    first = read_info(path).extra["layout"]
    kept = path.parent / folder.KEPT_DIR
    run(src, tmp_path, height=6, width=8)
    assert "the earlier one is kept in kept/" in capsys.readouterr().err
    assert read_info(path).shape == (6, 8, 3)
    assert sorted(p.name for p in kept.iterdir()) == ["6x6x3-crop-test0.1-seed0.hdf5"]

    def no_decoding(*a, **kw):
        raise AssertionError("decoded again")
    with monkeypatch.context() as m:
        m.setattr(folder, "_write", no_decoding)
        assert run(src, tmp_path, height=6, width=6) == path
        assert run(src, tmp_path, height=6, width=8) == path
        assert run(src, tmp_path, height=6, width=6) == path
    assert "kept from before" in capsys.readouterr().err
    assert read_info(path).shape == (6, 6, 3) and read_info(path).extra["layout"] == first
    assert load(path, "train")[0].shape[1:] == (6, 6, 3)
    assert sorted(p.name for p in kept.iterdir()) == ["6x8x3-crop-test0.1-seed0.hdf5"]

    for side in (5, 7, 8, 9):  # only the KEEP most recently used are kept
        run(src, tmp_path, height=side, width=side)
    assert sorted(p.name for p in kept.glob("*.hdf5")) == [f"{s}x{s}x3-crop-test0.1-seed0.hdf5" for s in (5, 7, 8)]
    assert len(list(kept.iterdir())) == folder.KEEP  # no temporary files left
    run(src, tmp_path, height=9, width=9, force=True)  # the same settings again: nothing more kept
    assert len(list(kept.iterdir())) == folder.KEEP

    def interrupted(*a, **kw):
        raise KeyboardInterrupt
    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):  # Ctrl-C while decoding: nothing lost
        m.setattr(folder, "_write", interrupted)
        run(src, tmp_path, height=4, width=4)
    assert read_info(path).shape == (9, 9, 3)
    run(src, tmp_path, height=4, width=4)
    run(src, tmp_path, height=3, width=3)
    assert sorted(p.name for p in kept.iterdir()) == [f"{s}x{s}x3-crop-test0.1-seed0.hdf5" for s in (4, 8, 9)]

    save(src / "b" / "new.png", rgb((1, 2, 3)))  # the folder changes: the kept conversions are of other files
    run(src, tmp_path, height=7, width=7)
    assert read_info(path).extra["num_train_labelled"] + read_info(path).extra["num_test"] == 7
    assert list(kept.iterdir()) == []


@pytest.mark.skipif(folder.fcntl is None, reason="no fcntl (Windows)")
def test_a_second_conversion_of_a_folder_waits_for_the_first(tmp_path, capsys):
    import threading
    src = make_set(tmp_path / "data" / "wt", {"a": 3, "b": 3})
    done = threading.Event()
    worker = threading.Thread(target=lambda: (run(src, tmp_path, height=6, width=6), done.set()))
    with folder._locked(tmp_path / "datasets" / "wt", src):  # another command converting it
        worker.start()
        assert not done.wait(1.0)
    assert done.wait(30) and read_info(tmp_path / "datasets" / "wt" / "data.hdf5").shape == (6, 6, 3)
    assert "note: waiting for another command converting" in capsys.readouterr().err


def _inode(fd: int) -> int | None:
    """The inode open at `fd` in this process (a pool worker), or None."""
    try:
        return os.fstat(fd).st_ino
    except OSError:
        return None


@pytest.mark.skipif(folder.fcntl is None, reason="no fcntl (Windows)")
def test_decoding_workers_do_not_hold_the_folder_lock(tmp_path):
    """A forked worker that outlives a killed conversion must not keep the folder locked for every later command."""
    where = tmp_path / "datasets" / "w"
    with folder._locked(where, tmp_path):
        (fd,) = folder._HELD_LOCKS
        pool = folder.process_pool(2, folder.SERIAL_BELOW)
        try:
            assert pool.submit(_inode, fd).result() != where.stat().st_ino
        finally:
            pool.shutdown()
    assert not folder._HELD_LOCKS and not (tmp_path / "datasets").exists()


def test_num_class_mismatch_names_the_folders(tmp_path):
    make_set(tmp_path / "data" / "nc", {"cat": 2, "dog": 2})
    for n in (1, 3):
        with pytest.raises(UserError, match=rf"--num_class is {n}.*2 class folder\(s\): cat, dog"):
            folder.ensure("nc", tmp_path / "data", tmp_path / "datasets", num_class=n)
    assert not (tmp_path / "datasets").exists()  # checked before any conversion
    path = folder.ensure("nc", tmp_path / "data", tmp_path / "datasets", height=4, width=4, num_class=2)
    assert read_info(path).class_names == ["cat", "dog"]


def test_empty_class_folder_is_an_error(tmp_path):
    src = make_set(tmp_path / "data" / "ec", {"a": 2, "b": 2})
    (src / "c").mkdir()
    (src / "c" / "README.txt").write_text("nothing here")
    with pytest.raises(UserError, match=r"class folder .*c has no images.*a, b, c"):
        run(src, tmp_path)


def test_missing_folder_no_classes_and_no_readable_images(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        run(tmp_path / "data" / "nope", tmp_path)
    bare = tmp_path / "data" / "bare"
    save(bare / "unlabeled" / "u.png", rgb((1, 2, 3)))
    with pytest.raises(UserError, match="no class folders.*unlabeled"):
        run(bare, tmp_path)
    junk = tmp_path / "data" / "junk"
    for c in "ab":
        (junk / c).mkdir(parents=True)
        (junk / c / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(UserError, match="readable"):
        run(junk, tmp_path, height=4, width=4, channels=3)
    assert not (tmp_path / "datasets" / "junk" / "data.hdf5").exists()


def test_bad_settings_are_user_errors(tmp_path):
    src = make_set(tmp_path / "data" / "bs", {"a": 2, "b": 2})
    for kw in ({"channels": 2}, {"height": 0}, {"test_fraction": 1.0}, {"resize": "pad"}):
        with pytest.raises(UserError):
            run(src, tmp_path, **kw)


def test_is_folder_dataset(tmp_path):
    make_set(tmp_path / "data" / "mine", {"a": 1})
    assert folder.is_folder_dataset("mine", tmp_path / "data")
    assert not folder.is_folder_dataset("mnist", tmp_path / "data")


def test_writes_in_bounded_chunks(tmp_path, monkeypatch):
    src = make_set(tmp_path / "data" / "mb", {"a": 9, "b": 8})
    save(src / "unlabeled" / "u.png", rgb((3, 3, 3)))
    sizes = []
    real = Writer.append

    def spy(self, split, images, labels):
        sizes.append(len(images))
        return real(self, split, images, labels)

    monkeypatch.setattr(folder, "CHUNK", 3)
    monkeypatch.setattr(Writer, "append", spy)
    path = run(src, tmp_path, height=4, width=4, workers=1)
    assert max(sizes) <= 3 and sum(sizes) == 18 and len(sizes) >= 6
    assert len(load(path, "train")[1]) + len(load(path, "test")[1]) == 18


def test_parallel_conversion_matches_serial(tmp_path, monkeypatch):
    src = make_set(tmp_path / "data" / "par", {"a": 12, "b": 12}, ext="jpg")
    (src / "a" / "bad.jpg").write_bytes(b"nope")
    serial = load(run(src, tmp_path, height=5, width=7, workers=1), "train")
    monkeypatch.setattr(folder, "SERIAL_BELOW", 0)
    monkeypatch.setattr(folder, "CHUNK", 4)
    par = load(run(src, tmp_path, height=5, width=7, workers=2, force=True), "train")
    assert np.array_equal(serial[0], par[0]) and np.array_equal(serial[1], par[1])


def test_output_is_readable_by_format_module(tmp_path):
    src = make_set(tmp_path / "data" / "ok", {"a": 3, "b": 3})
    path = run(src, tmp_path, height=4, width=5)
    buf = io.BytesIO(path.read_bytes())
    with h5py.File(buf) as f:
        assert f["train/images"].dtype == np.uint8 and f["train/images"].shape[1:] == (4, 5, 3)
    assert read_info(path).extra["source"] == folder.FORMAT_TAG


def test_file_and_class_names_that_are_not_utf8(tmp_path):
    """Names from, say, a Latin-1 archive (Python holds their undecodable bytes as surrogates) convert."""
    src = make_set(tmp_path / "data" / "latin", {"a": 3, "b": 3})
    rgb((9, 9, 9)).save(os.fsdecode(os.fsencode(src / "a") + b"/caf\xe9.png"), format="PNG")
    for i in range(3):
        save(Path(os.fsdecode(os.fsencode(src) + b"/\xe9t\xe9")) / f"{i}.png", rgb((90, 9, 9 * i)))
    path = run(src, tmp_path, height=8, width=8, channels=3, test_fraction=0.25)
    info = read_info(path)
    assert len(info.class_names) == 3 and os.fsencode(info.class_names[2]) == b"\xe9t\xe9"
    (_, ytr), (_, yte) = load(path, "train"), load(path, "test")
    assert len(ytr) + len(yte) == 10
    assert run(src, tmp_path, height=8, width=8, channels=3, test_fraction=0.25) == path  # its fingerprint is stable


def test_a_folder_named_like_a_public_dataset_or_a_non_folder_dataset_is_refused(tmp_path):
    """Its conversion would be taken for the public dataset, or would replace a dataset not made from a folder."""
    with pytest.raises(UserError, match=r"is named like the public dataset mnist, and its conversion would be taken "
                                        r"for that dataset; rename the folder$"):
        run(make_set(tmp_path / "data" / "mnist", {"a": 2, "b": 2}), tmp_path)
    (tmp_path / "data" / "digits").symlink_to(tmp_path / "data" / "mnist")  # a link's target names the dataset
    with pytest.raises(UserError, match=r"/mnist is named like the public dataset mnist"):
        folder.ensure("digits", tmp_path / "data", tmp_path / "datasets")
    assert not (tmp_path / "datasets" / "mnist").exists()
    from tests.tiny import make_tiny_dataset
    other = make_tiny_dataset(tmp_path / "datasets", name="mine")
    before = other.read_bytes()
    with pytest.raises(UserError, match=r"holds the dataset mine, which was not converted from an image folder; "
                                        r"converting .* would replace it: rename the folder"):
        run(make_set(tmp_path / "data" / "mine", {"a": 2, "b": 2}), tmp_path)
    assert other.read_bytes() == before and not (other.parent / folder.KEPT_DIR).exists()

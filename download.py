"""Fetch public datasets (or convert your own image folder) into `<dataset_dir>/<name>/data.hdf5`.

Raw files are checked against pinned SHA-256 digests and cached under `<dataset_dir>/<name>/raw/`;
the HDF5 file is written under a temporary name and renamed at the end, so an interrupted run
never leaves a file that a reader would accept. `prepare()` is the same thing for callers in Python.
"""
from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from pathlib import Path
from types import ModuleType

import datasets
from datasets import fetch, folder
from datasets.format import FILE_NAME, SPLITS, DatasetInfo, Writer, read_info, split_size
from errors import HelpFormatter, UserError, exits_cleanly, non_negative_int

EPILOG = """examples:
  python download.py mnist                      fetch MNIST into datasets/mnist/data.hdf5
  python download.py mnist fashion_mnist cifar10 svhn
  python download.py cifar10 --source ~/Downloads
                                                convert cifar-10-binary.tar.gz already on disk
  python download.py svhn --dataset_dir /data/ssgan --force
  python download.py --folder data/MY_SET --input_height 32 --input_width 32 --channels 3

Known datasets: {names}. Fashion-MNIST is taken from /usr/share/datasets/fashion-mnist
(Debian package dataset-fashion-mnist) without any download when it is there.
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags of download.py."""
    p = argparse.ArgumentParser(prog="download.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter, epilog=EPILOG.format(names=", ".join(datasets.SOURCES)))
    p.add_argument("names", nargs="*", metavar="NAME", help="public datasets to fetch and convert")
    datasets.add_dataset_dir_flag(p)
    p.add_argument("--source", metavar="DIR", default=None,
                   help="convert the raw files found in DIR (or DIR/<name>/) instead of downloading them")
    p.add_argument("--force", action="store_true", help="redo datasets whose data.hdf5 is already there")
    p.add_argument("--retries", type=non_negative_int, default=fetch.RETRIES,
                   help="further tries of each URL after a failure, with exponential back-off")
    g = p.add_argument_group("your own images (data/NAME/<class>/*.png ...)")
    g.add_argument("--folder", metavar="DIR", default=None,
                   help="convert an image folder into <dataset_dir>/<folder name>/data.hdf5")
    folder.add_conversion_flags(g)
    g.add_argument("--seed", type=non_negative_int, default=None,
                   help="seed of the held-out test split (default: the existing conversion's, else 0)")
    return p


def prepare(name: str, dataset_dir: str | os.PathLike = datasets.DEFAULT_DATASET_DIR,
            source: str | os.PathLike | None = None, force: bool = False, retries: int | None = None) -> Path:
    """Make `<dataset_dir>/<name>/data.hdf5` for a public dataset (a no-op if a valid one exists); return its path."""
    module = datasets.source(name)
    out = datasets.path(dataset_dir, name)
    if not force and _is_valid(out, name):
        print(f"{name}: {out} is already there ({_sizes(out)}); --force redoes it")
        return out
    if source is not None:
        raw = local_files(name, module, Path(source).expanduser())
    else:
        raw = _found_locally(name, module) or download_files(module, out.parent / "raw", retries)
    convert(name, module, raw, out)
    print(f"{name}: wrote {out} ({_sizes(out)})")
    return out


def _is_valid(out: Path, name: str) -> bool:
    """Whether `out` is a dataset file a reader accepts, made for `name`."""
    if not out.exists():
        return False
    try:
        return read_info(out).name == name
    except UserError as e:
        print(f"{name}: rebuilding: {e}")
        return False


def _sizes(out: Path) -> str:
    """'N train, M test images' of a dataset file."""
    return ", ".join(f"{split_size(out, s)} {s}" for s in SPLITS) + " images"


def local_files(name: str, module: ModuleType, folder: Path) -> dict[str, tuple[Path, str]]:
    """The verified raw files of `name` in `folder/<name>/` or `folder`; a missing or wrong one is a UserError."""
    candidates = [folder / name, folder]
    for d in candidates:
        if all((d / f).is_file() for f in module.FILES):
            return {f: (d / f, _verified(d / f, module.FILES[f])) for f in module.FILES}
    if not folder.is_dir():
        raise UserError(f"--source {folder} is not a folder")
    missing = [f for f in module.FILES if not (folder / f).is_file()]
    raise UserError(f"{folder} is missing {', '.join(missing)} for {name} "
                    f"(needs: {', '.join(module.FILES)}, from {module.MIRRORS[0]})")


def _verified(path: Path, digests: tuple[str, ...]) -> str:
    """SHA-256 of `path`, which must be one of the pinned `digests`."""
    digest = fetch.sha256_file(path)
    if digest not in digests:
        raise UserError(f"checksum mismatch for {path}: SHA-256 {digest}, expected {digests[0]}; "
                        "it is not the official file, nothing was converted")
    return digest


def _found_locally(name: str, module: ModuleType) -> dict[str, tuple[Path, str]] | None:
    """The raw files from the first of the module's LOCAL_DIRS holding all of them and verifying, else None."""
    for d in module.LOCAL_DIRS:
        if all((Path(d) / f).is_file() for f in module.FILES):
            try:
                raw = local_files(name, module, Path(d))
            except UserError as e:
                print(f"{name}: not using {d}: {e}", file=sys.stderr)
                continue
            print(f"{name}: using the local copy in {d}")
            return raw
    return None


def download_files(module: ModuleType, raw_dir: Path, retries: int | None = None) -> dict[str, tuple[Path, str]]:
    """Fetch (or reuse from `raw_dir`) every raw file of a source, verified."""
    return {f: fetch.fetch(f, module.MIRRORS, module.FILES[f], raw_dir, retries) for f in module.FILES}


def convert(name: str, module: ModuleType, raw: dict[str, tuple[Path, str]], out: Path) -> None:
    """Write the source's splits from its verified raw files into `out`, atomically."""
    info = DatasetInfo(name=name, height=module.HEIGHT, width=module.WIDTH, channels=module.CHANNELS,
                       class_names=list(module.CLASS_NAMES), sources={f: d for f, (_, d) in raw.items()},
                       extra={"homepage": module.HOMEPAGE})
    _remove_stale_temporaries(out)
    try:
        with Writer(out, info) as w:
            for split, images, labels in module.load({f: p for f, (p, _) in raw.items()}):
                _check_labels(name, labels, info.num_class)
                w.append(split, images, labels)
    except OSError as e:
        if e.errno == errno.ENOSPC or "No space left" in str(e):
            raise UserError(f"no space left on the device while writing {out}; free some space and re-run") from None
        raise


def _check_labels(name: str, labels, num_class: int) -> None:
    """Every label of a public dataset must be a class index."""
    if len(labels) and (labels.min() < 0 or labels.max() >= num_class):
        raise UserError(f"{name}: labels outside 0..{num_class - 1} in the raw files")


def _remove_stale_temporaries(out: Path) -> None:
    """Delete temporary dataset files left by killed runs (their process is gone)."""
    for tmp in out.parent.glob(f".{FILE_NAME}.*.tmp"):
        pid = tmp.name.split(".")[-2]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether a process with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def convert_folder(args: argparse.Namespace) -> None:
    """Convert the user's image folder with datasets.folder."""
    out = folder.convert(args.folder, args.dataset_dir, args.input_height, args.input_width, args.channels,
                         args.test_fraction, args.resize, args.seed, args.force)
    print(f"{Path(args.folder).name}: {out} is ready ({_sizes(out)})")


def _on_sigterm(signum: int, frame: object) -> None:
    """Turn SIGTERM into KeyboardInterrupt so temporary files are cleaned up on the way out."""
    raise KeyboardInterrupt


@exits_cleanly
def main(argv: list[str] | None = None) -> None:
    """Run download.py with `argv` (default: the command line)."""
    args = build_parser().parse_args(argv)
    if not args.names and not args.folder:
        raise UserError(f"name at least one dataset ({', '.join(datasets.SOURCES)}) or --folder DIR; see --help")
    given = [f"--{k}" for k in (*folder.CONVERSION_FLAGS, "seed") if getattr(args, k) is not None]
    if given and not args.folder:
        raise UserError(f"{', '.join(given)} set how an image folder is converted: add --folder DIR, or drop them "
                        "(a public dataset keeps its own size and test split)")
    for name in args.names:
        datasets.source(name)  # every name is checked before anything is fetched
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        for name in args.names:
            prepare(name, args.dataset_dir, args.source, args.force, args.retries)
        if args.folder:
            convert_folder(args)
    except KeyboardInterrupt:
        print("\ninterrupted: no dataset file was half-written; a partial download resumes next time",
              file=sys.stderr)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()

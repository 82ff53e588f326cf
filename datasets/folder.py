"""Users' own image folders (`data/<NAME>/<class>/...`) converted into the one HDF5 dataset format.

Layout (see data/README.md):
    data/NAME/<class>/...      labelled images; class names are the sorted folder names
    data/NAME/unlabeled/...    optional, any nesting: images with no label (train, label -1)
    data/NAME/test/<class>/... optional test split; otherwise a seeded fraction of each class

Decisions:
- Hidden files, README/LICENSE and text-like files (.txt, .md, .csv, ...) are ignored silently;
  any other file is given to Pillow and, if it cannot be read, skipped and counted.
- Images are converted to 1 or 3 channels (alpha composited on white, 16-bit scaled to 8-bit,
  EXIF rotation applied) and resized to height x width by centre crop or stretch.
- The train split is shuffled (seeded); the test split is in class order.
- `extra` records a fingerprint of the files (relative paths, sizes, mtimes) and the settings;
  a conversion is redone only when they differ (or `force=True`). It also records the layout: which
  file (and label) each row of each split holds, which a run's labelled indices and test split refer
  to (a copy of the folder, with other mtimes, has the same layout).
- A conversion replaced by one at other settings is kept (hard-linked, no copy) in `kept/` beside it, the
  KEEP most recently used ones, and swapped back in when those settings are asked again; a change to the
  files discards them. Readers keep an open file's contents, so a swap never changes a running job's data.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import multiprocessing
import os
import sys
import warnings
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:
    import fcntl
except ImportError:  # Windows: conversions of one folder are not serialised
    fcntl = None
from tqdm import tqdm

from datasets.format import DatasetInfo, Writer, dataset_path, read_info
from errors import UserError, open_fraction, positive_int

UNLABELED_NAMES = ("unlabeled", "unlabelled")
TEST_NAME = "test"
IGNORED_NAMES = {"__macosx", "thumbs.db", "desktop.ini"}
IGNORED_STEMS = ("readme", "license", "licence", "copying")  # README, README.md, LICENSE-MIT; not readme_cover.png
IGNORED_SUFFIXES = {".txt", ".md", ".rst", ".csv", ".tsv", ".json", ".yaml", ".yml", ".xml", ".html", ".htm",
                    ".pdf", ".doc", ".docx", ".py", ".ini", ".log", ".db", ".zip", ".tar", ".gz", ".h5", ".hdf5"}
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
RESIZE_MODES = ("crop", "stretch")
# What an unset --resize/--test_fraction means when there is no earlier conversion to keep.
DEFAULT_RESIZE, DEFAULT_TEST_FRACTION = "crop", 0.1
CHUNK = 1024  # most images per task and per Writer.append
MEMORY_BUDGET = 512 * 2**20  # bytes of decoded images in flight at once (all workers together)
SERIAL_BELOW = 256  # fewer files than this are decoded in this process, without a pool
SAMPLE = 256  # images opened (headers only) to choose default size and channels
AUTO_SIDE_LIMIT = 256  # largest side the size found in a folder is used at without --input_height/--input_width
MAX_SIDE = 2048  # largest --input_height/--input_width: an HDF5 chunk of 64 such RGB images is 800 MB already
SUGGESTED_SIDE = 64  # the longer side of the size an error suggests
SHOW_SKIPPED = 5
FORMAT_TAG = "folder-v1"
KEPT_DIR = "kept"  # beside a folder's conversion: its earlier conversions at other settings, for switching back
KEEP = 3  # earlier conversions kept per folder (the most recently used), besides the current one


@dataclass
class Scan:
    """What a folder holds: classes, labelled/unlabelled/test files (relative paths), file stats."""

    root: Path
    class_names: list[str]
    labelled: list[tuple[str, int]]
    unlabeled: list[str]
    test: list[tuple[str, int]] | None
    stats: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        """SHA-256 over sorted relative paths, sizes and mtimes of every image file."""
        h = hashlib.sha256()
        for rel, size, mtime in sorted(self.stats):
            h.update(f"{rel}\0{size}\0{mtime}\n".encode(errors="surrogateescape"))
        return h.hexdigest()

    def all_files(self) -> list[str]:
        """Every candidate image file, relative to root."""
        return [r for r, _ in self.labelled] + self.unlabeled + [r for r, _ in self.test or []]


# ---------------------------------------------------------------- public API


# The flags of how an own folder is converted (add_conversion_flags), as argparse names them.
CONVERSION_FLAGS = ("input_height", "input_width", "channels", "resize", "test_fraction")


def add_conversion_flags(group) -> None:
    """Define how an own image folder is converted (CONVERSION_FLAGS) on an argparse parser or group: the one
    definition for download.py --folder, the trainer and the evaler (which check a downloaded dataset's height and
    width against theirs)."""
    for side in ("height", "width"):
        group.add_argument(f"--input_{side}", type=positive_int, default=None,
                           help=f"image {side}: an own folder's images are resized to it (at most {MAX_SIDE}; "
                           f"default: the existing conversion's, else the most common {side} in the folder, if no "
                           f"side of it is over {AUTO_SIDE_LIMIT}); the trainer and evaler check a downloaded "
                           "dataset's against it")
    group.add_argument("--channels", type=int, choices=(1, 3), default=None,
                       help="own folders: 1 (grayscale) or 3 (RGB) (default: from the images)")
    group.add_argument("--resize", choices=RESIZE_MODES, default=None,
                       help="own folders: keep the aspect ratio by a centre crop, or stretch (default: the existing "
                       f"conversion's, else {DEFAULT_RESIZE})")
    group.add_argument("--test_fraction", type=open_fraction, default=None,
                       help="own folders without a test/ folder: share of each class held out as the test split "
                       f"(default: the existing conversion's, else {DEFAULT_TEST_FRACTION})")


def is_folder_dataset(name: str, data_dir: str | os.PathLike = "data") -> bool:
    """True when `data_dir/name/` is a folder (the user's own images)."""
    return bool(name) and (Path(data_dir) / name).is_dir()


def converted_path(name: str, data_dir: str | os.PathLike = "data", dataset_dir: str | os.PathLike = "datasets"
                   ) -> Path:
    """Where `convert` keeps `data_dir/name/` (named after the folder itself, a link followed), converted or not."""
    return dataset_path(dataset_dir, (Path(data_dir) / name).resolve().name)


def convert(folder: str | os.PathLike, dataset_dir: str | os.PathLike = "datasets", height: int | None = None,
            width: int | None = None, channels: int | None = None, test_fraction: float | None = None,
            resize: str | None = None, seed: int | None = None, force: bool = False, workers: int | None = None
            ) -> Path:
    """Convert `folder` into `<dataset_dir>/<basename>/data.hdf5` (no-op when up to date); return its path.

    `test_fraction`, `resize` and `seed` (of the held-out test split and the train order) None: the existing
    conversion's, else 0.1, crop and 0."""
    return _convert(scan(folder), dataset_dir, height, width, channels, test_fraction, resize, seed, force, workers)


def ensure(name: str, data_dir: str | os.PathLike = "data", dataset_dir: str | os.PathLike = "datasets",
           height: int | None = None, width: int | None = None, channels: int | None = None,
           num_class: int | None = None, **kw) -> Path:
    """Convert `data_dir/name/` if needed, check it has `num_class` classes, return the HDF5 path."""
    s = scan(Path(data_dir) / name)
    if num_class is not None and num_class != len(s.class_names):
        raise UserError(f"--num_class is {num_class} but {s.root} has {len(s.class_names)} class folder(s): "
                        f"{', '.join(s.class_names)} (unlabeled/ and test/ are not classes); "
                        f"pass --num_class {len(s.class_names)} or add/remove class folders")
    return _convert(s, dataset_dir, height, width, channels, **kw)


# ---------------------------------------------------------------- scanning


def _ignored(name: str) -> bool:
    """Files and folders skipped silently: hidden, OS clutter, README/LICENSE (but not an image so named, such as
    license.png), text-like files."""
    low = name.lower()
    stem, suffix = low.split(".")[0], os.path.splitext(low)[1]
    return (low.startswith(".") or low in IGNORED_NAMES or (stem in IGNORED_STEMS and suffix not in _image_suffixes())
            or ("." not in low and low.startswith(IGNORED_STEMS)) or suffix in IGNORED_SUFFIXES)


@functools.cache
def _image_suffixes() -> frozenset[str]:
    """The file name extensions of the image formats Pillow knows (.png, .jpg, ...)."""
    return frozenset(Image.registered_extensions())


def walk(top: Path, rel: str, seen: set[str] | None = None) -> Iterator[tuple[str, int, int]]:
    """Yield (relative path, size, mtime_ns) of every non-ignored file under `top`, following links once.

    Not images: hidden files, OS clutter, README/LICENSE and text-like files (also for `evaler.py --predict`)."""
    seen = set() if seen is None else seen
    real = os.path.realpath(top)
    if real in seen:
        return
    seen.add(real)
    try:
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as e:
        _warn(f"cannot read folder {top} ({e.strerror or e}); skipped")
        return
    for e in entries:
        if _ignored(e.name):
            continue
        r = f"{rel}/{e.name}"
        if e.is_dir():
            yield from walk(Path(e.path), r, seen)
        elif e.is_file():
            st = e.stat()
            yield r, st.st_size, st.st_mtime_ns


def subdirs(root: str | os.PathLike) -> list[str]:
    """Sorted names of the non-ignored sub-folders of `root` (none if it is not a folder)."""
    try:
        return sorted(e.name for e in os.scandir(root) if e.is_dir() and not _ignored(e.name))
    except OSError:
        return []


def _class_files(root: Path, classes: list[str], where: str) -> tuple[list[tuple[str, int]], list]:
    """Labelled files of each class folder under root, as (relpath, label); an empty class is an error."""
    items, stats = [], []
    for label, c in enumerate(classes):
        found = list(walk(root / c, f"{where}{c}"))
        if not found:
            raise UserError(f"class folder {root / c} has no images (class folders found in {root}: "
                            f"{', '.join(classes)}); add images to it or remove it")
        items += [(r, label) for r, _, _ in found]
        stats += found
    return items, stats


def _stray(root: Path, prefix: str = "") -> list[str]:
    """Non-ignored files lying directly in `root` (not in a class folder)."""
    return sorted(prefix + p.name for p in root.iterdir() if p.is_file() and not _ignored(p.name))


def scan(folder: str | os.PathLike) -> Scan:
    """List a dataset folder's classes and image files; a missing, empty or malformed folder is a UserError."""
    root = Path(folder).resolve()
    if not root.is_dir():
        raise UserError(f"image folder {folder} does not exist; make it with one sub-folder of images per class "
                        "(see data/README.md)")
    found_dirs = subdirs(root)
    classes = [d for d in found_dirs if d.lower() not in (*UNLABELED_NAMES, TEST_NAME)]
    if not classes:
        raise UserError(f"{folder} has no class folders (found: {', '.join(found_dirs) or 'nothing'}); "
                        "put labelled images in one sub-folder per class")
    labelled, stats = _class_files(root, classes, "")
    unlabeled: list[str] = []
    for d in found_dirs:
        if d.lower() in UNLABELED_NAMES:
            found = list(walk(root / d, d))
            unlabeled += [r for r, _, _ in found]
            stats += found
    stray = _stray(root)
    test = None
    for d in (d for d in found_dirs if d.lower() == TEST_NAME):
        if test is not None:
            raise UserError(f"{root} has more than one test folder ({', '.join(found_dirs)}); keep one")
        test, test_stats = _test_files(root / d, classes)
        stats += test_stats
        stray += _stray(root / d, f"{d}/")
    if stray:
        _warn(f"ignored {len(stray)} file(s) outside class folders in {root}: {_first(stray)}")
    return Scan(root, classes, labelled, unlabeled, test, stats)


def _test_files(test_root: Path, classes: list[str]) -> tuple[list[tuple[str, int]], list]:
    """Files of `test/<class>/`; a test class that is not a training class is an error."""
    test_classes = subdirs(test_root)
    unknown = [c for c in test_classes if c not in classes]
    if unknown:
        raise UserError(f"{test_root} has class folder(s) {', '.join(unknown)} that are not training classes "
                        f"(training classes: {', '.join(classes)}); rename or remove them")
    if not test_classes:
        raise UserError(f"{test_root} has no class folders; put test images in test/<class>/ or remove test/ "
                        "to hold out a fraction of each class")
    items, stats = _class_files(test_root, test_classes, f"{test_root.name}/")
    index = {c: classes.index(c) for c in test_classes}
    return [(r, index[test_classes[label]]) for r, label in items], stats


def _warn(msg: str) -> None:
    """Print a one-line warning to stderr."""
    print(f"warning: {msg}", file=sys.stderr)


def _first(names: list[str]) -> str:
    """The first few names, comma-separated, with '...' when there are more."""
    return ", ".join(names[:SHOW_SKIPPED]) + (", ..." if len(names) > SHOW_SKIPPED else "")


# ---------------------------------------------------------------- splits and settings


def hold_out(labelled: list[tuple[str, int]], class_names: list[str], fraction: float, seed: int
             ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Split labelled files into (train, test): per class, a seeded `fraction` (>=1 when a class has >=2)."""
    train, test = [], []
    for label, name in enumerate(class_names):
        files = sorted(r for r, lab in labelled if lab == label)
        n = len(files)
        k = 0 if n < 2 else min(n - 1, max(1, round(fraction * n)))
        rng = np.random.default_rng([seed, zlib.crc32(name.encode(errors="surrogateescape"))])
        chosen = set(rng.choice(n, size=k, replace=False).tolist()) if k else set()
        for i, r in enumerate(files):
            (test if i in chosen else train).append((r, label))
    return train, test


def _splits(s: Scan, fraction: float, seed: int) -> dict[str, list[tuple[str, int]]]:
    """Files of each split as (relpath, label): train shuffled (seeded) with unlabelled ones as -1."""
    if s.test is None:
        train, test = hold_out(s.labelled, s.class_names, fraction, seed)
    else:
        train, test = list(s.labelled), sorted(s.test, key=lambda t: (t[1], t[0]))
    train += [(r, -1) for r in s.unlabeled]
    order = np.random.default_rng([seed, 1]).permutation(len(train))
    return {"train": [train[i] for i in order], "test": test}


def _check_args(height: int | None, width: int | None, channels: int | None, fraction: float, resize: str,
                seed: int = 0) -> None:
    """Reject bad settings with a UserError."""
    for flag, v in (("height", height), ("width", width)):
        if v is not None and (int(v) != v or v < 1):
            raise UserError(f"--input_{flag} must be a positive integer, got {v}")
        if v is not None and v > MAX_SIDE:
            raise UserError(f"--input_{flag} {v} is more than the largest size converted ({MAX_SIDE}); "
                            f"pass a smaller one, such as --input_{flag} {SUGGESTED_SIDE}")
    if channels not in (None, 1, 3):
        raise UserError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    if not 0 < fraction < 1:
        raise UserError(f"--test_fraction must be between 0 and 1 (exclusive), got {fraction}")
    if resize not in RESIZE_MODES:
        raise UserError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    if int(seed) != seed or seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {seed}")


def _header(path: Path) -> tuple[tuple[int, int], bool] | None:
    """((height, width) after EXIF rotation, is-grayscale) from an image's header; None if unreadable."""
    try:
        with warnings.catch_warnings(), Image.open(path) as im:
            warnings.simplefilter("ignore")
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
            gray = im.mode in GRAY_MODES
            if im.mode in ("P", "PA"):
                pal = np.asarray(im.getpalette() or [], dtype=np.int32).reshape(-1, 3)
                gray = bool(np.all(pal == pal[:, :1]))
            return (h, w), gray
    except Exception:
        return None


def defaults(s: Scan, height: int | None, width: int | None, channels: int | None,
             seed: int = 0) -> tuple[int, int, int]:
    """Fill in unasked height/width (most common size in a sample) and channels (1 if all sampled are gray)."""
    if height is not None and width is not None and channels is not None:
        return height, width, channels
    files = s.all_files()
    pick = np.random.default_rng(seed).choice(len(files), size=min(SAMPLE, len(files)), replace=False)
    heads = [h for h in (_header(s.root / files[i]) for i in sorted(pick)) if h is not None]
    if not heads:
        raise UserError(f"none of {len(pick)} sampled files in {s.root} is a readable image")
    (h0, w0), _ = Counter(size for size, _ in heads).most_common(1)[0]
    if height is None and width is None:
        _check_found_size(s.root, h0, w0)
        height, width = h0, w0
    elif height is None:
        height = max(1, round(width * h0 / w0))
    elif width is None:
        width = max(1, round(height * w0 / h0))
    for flag, v in (("height", height), ("width", width)):
        if v > MAX_SIDE:  # only a side derived from the other side's flag and the images' aspect ratio can be
            raise UserError(f"the images in {s.root} are mostly {h0}x{w0} (height x width), so keeping their aspect "
                            f"ratio makes the {flag} {v}, more than {MAX_SIDE}; pass --input_{flag} too")
    if channels is None:
        channels = 1 if all(g for _, g in heads) else 3
    return int(height), int(width), int(channels)


def _check_found_size(root: Path, h0: int, w0: int) -> None:
    """The most common size in a folder, used when no size is given, must be small enough to train on."""
    if max(h0, w0) <= AUTO_SIDE_LIMIT:
        return
    scale = SUGGESTED_SIDE / max(h0, w0)
    h, w = max(1, round(h0 * scale)), max(1, round(w0 * scale))
    raise UserError(f"the images in {root} are mostly {h0}x{w0} (height x width), too large to train on at full "
                    f"size (more than {AUTO_SIDE_LIMIT} a side); pass --input_height and --input_width, e.g. "
                    f"--input_height {h} --input_width {w} (the same aspect ratio)")


# ---------------------------------------------------------------- decoding (runs in worker processes)


def _to_8bit_gray(im: Image.Image) -> Image.Image:
    """16/32-bit integer or float grayscale to 8-bit L (integers as 16-bit range, floats as 0..1 or 0..255)."""
    a = np.asarray(im)
    if im.mode == "F":
        a = a * 255.0 if np.nanmax(a, initial=0) <= 1.0 else a
        a = np.nan_to_num(a)
    else:
        a = a.astype(np.float64) / 257.0
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def _on_white(im: Image.Image) -> Image.Image:
    """Composite an image with transparency on a white background, as RGB."""
    rgba = im.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    bg.alpha_composite(rgba)
    return bg.convert("RGB")


def _to_channels(im: Image.Image, channels: int) -> Image.Image:
    """Any Pillow mode to 8-bit L (channels=1) or RGB (channels=3)."""
    if im.mode.startswith("I") or im.mode == "F":
        im = _to_8bit_gray(im)
    if im.mode in ALPHA_MODES or (im.mode in ("P", "L", "RGB") and "transparency" in im.info):
        im = _on_white(im)
    if im.mode not in ("L", "RGB"):
        im = im.convert("L" if channels == 1 and im.mode in ("1", "P") else "RGB")
    return im.convert("L" if channels == 1 else "RGB")


def load_image(path: str | os.PathLike, height: int, width: int, channels: int, resize: str = "crop") -> np.ndarray:
    """Decode one image file to uint8 [height, width, channels] (EXIF rotation, mode, size applied)."""
    with warnings.catch_warnings(), Image.open(path) as im:
        warnings.simplefilter("ignore")
        turned = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        im.draft(None, (height, width) if turned else (width, height))  # JPEG: decode at a reduced scale
        im = ImageOps.exif_transpose(im)
        im = _to_channels(im, channels)
        if resize == "crop":
            im = ImageOps.fit(im, (width, height), Image.Resampling.BICUBIC)
        else:
            im = im.resize((width, height), Image.Resampling.BICUBIC)
        a = np.asarray(im, dtype=np.uint8)
    return a[..., None] if a.ndim == 2 else a


def unreadable_reason(e: Exception, path: str) -> str:
    """A short reason why a file could not be read."""
    if isinstance(e, UnidentifiedImageError):
        return "not an image"
    text = str(e).replace(f"'{path}'", "").replace(path, "").strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip(": ")[:100]


def decode_chunk(root: str, files: list[str], shape: tuple[int, int, int], resize: str
                  ) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Decode files; return (images of the readable ones, their indices, [(file, reason)] of the others)."""
    h, w, c = shape
    out = np.empty((len(files), h, w, c), dtype=np.uint8)
    ok: list[int] = []
    bad: list[tuple[str, str]] = []
    for i, rel in enumerate(files):
        try:
            out[len(ok)] = load_image(os.path.join(root, rel), h, w, c, resize)
            ok.append(i)
        except Exception as e:  # any unreadable file is skipped, never a crash
            bad.append((rel, unreadable_reason(e, os.path.join(root, rel))))
    return out[:len(ok)], ok, bad


# ---------------------------------------------------------------- converting


def _existing_info(path: Path) -> DatasetInfo | None:
    """The conversion at `path`, or None when there is none or it is unreadable."""
    if not path.exists():
        return None
    try:
        return read_info(path)
    except UserError:
        return None


def _up_to_date(info: DatasetInfo | None, extra: dict, shape: tuple[int | None, int | None, int | None]) -> bool:
    """True when the existing conversion `info` is of the same files with the same settings and asked shape."""
    if info is None:
        return False
    keys = ("source", "fingerprint", "resize", "test_fraction", "seed")
    if any(info.extra.get(k) != extra[k] for k in keys):
        return False
    return all(a is None or a == b for a, b in zip(shape, info.shape, strict=True))


_HELD_LOCKS: set[int] = set()  # the descriptors of the conversion locks this process holds


@contextlib.contextmanager
def _locked(where: Path, root: Path) -> Iterator[None]:
    """Hold the conversion lock of folder `root`'s `where` (datasets/<name>/): a second command on this machine
    converting it, or swapping a kept conversion in, waits for the first. Without fcntl (Windows), a writable `where`
    or a file system that locks, no lock."""
    made = []  # the folders made here, deepest first: a first conversion that fails leaves none behind
    for p in (where, *where.parents):
        if p.exists():
            break
        made.append(p)
    fd = None
    try:
        fd = _lock(where, root)
        yield
    finally:
        if fd is not None:
            _HELD_LOCKS.discard(fd)
            os.close(fd)  # releases the lock
        for p in made:  # only empty ones go: after a conversion, where holds it
            with contextlib.suppress(OSError):
                p.rmdir()


def _lock(where: Path, root: Path) -> int | None:
    """Make `where` and take its lock (flock on the folder itself); its descriptor, or None when there is none."""
    waited = False
    while True:
        try:
            where.mkdir(parents=True, exist_ok=True)
            fd = os.open(where, os.O_RDONLY)
        except OSError:  # read-only: an up-to-date conversion is read as it is; a new one fails in Writer, clearly
            return None
        if fcntl is None:
            return fd
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not waited:
                    print(f"note: waiting for another command converting {root}", file=sys.stderr)
                    waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without flock (NFS directories, Lustre): no lock
            return fd
        _HELD_LOCKS.add(fd)
        try:  # not removed by the holder meanwhile (its first conversion failed): else lock the one there now
            if os.fstat(fd).st_ino == os.stat(where).st_ino:
                return fd
        except OSError:
            pass
        _HELD_LOCKS.discard(fd)
        os.close(fd)


def _close_held_locks(fds: tuple[int, ...]) -> None:
    """In a forked decoding worker: close the inherited lock descriptors, so that a worker outliving a killed
    parent does not hold the folder's lock."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _convert(s: Scan, dataset_dir: str | os.PathLike, height: int | None, width: int | None,
             channels: int | None, test_fraction: float | None = None, resize: str | None = None,
             seed: int | None = None, force: bool = False, workers: int | None = None) -> Path:
    """Convert a scanned folder unless its existing conversion is up to date (holding its conversion lock)."""
    from datasets import SOURCES  # the package imports this module's siblings, not this module
    if s.root.name in SOURCES:  # the name of the folder itself (a link's target, or '.')
        raise UserError(f"the image folder {s.root} is named like the public dataset {s.root.name}, and its "
                        "conversion would be taken for that dataset; rename the folder")
    path = dataset_path(dataset_dir, s.root.name)
    with _locked(path.parent, s.root):
        return _convert_locked(s, path, height, width, channels, test_fraction, resize, seed, force, workers)


def _convert_locked(s: Scan, path: Path, height: int | None, width: int | None, channels: int | None,
                    test_fraction: float | None, resize: str | None, seed: int | None, force: bool,
                    workers: int | None) -> Path:
    existing = _existing_info(path)
    if existing is not None and "fingerprint" not in existing.extra:
        raise UserError(f"{path} holds the dataset {existing.name}, which was not converted from an image folder; "
                        f"converting {s.root} would replace it: rename the folder (its name names the dataset)")
    # Unset: keep the settings of an earlier `download.py --folder --resize/--test_fraction/--seed` conversion.
    kept = existing.extra if existing else {}
    test_fraction = float(kept.get("test_fraction", DEFAULT_TEST_FRACTION)) if test_fraction is None else test_fraction
    resize = kept.get("resize", DEFAULT_RESIZE) if resize is None else resize
    seed = int(kept.get("seed", 0)) if seed is None else seed
    _check_args(height, width, channels, test_fraction, resize, seed)
    extra = {"source": FORMAT_TAG, "folder": str(s.root), "fingerprint": s.fingerprint, "resize": resize,
             "test_fraction": float(test_fraction), "seed": int(seed), "test_folder": s.test is not None}
    if not force and _up_to_date(existing, extra, (height, width, channels)):
        return path
    shape = defaults(s, height, width, channels, seed)
    earlier = None if force else next(((p, i) for p, i in kept_conversions(path) if _up_to_date(i, extra, shape)),
                                      None)
    if earlier is not None and _swap_in(*earlier, path, existing, s):
        return path
    info = DatasetInfo(name=s.root.name, height=shape[0], width=shape[1], channels=shape[2],
                       class_names=list(s.class_names), extra=extra)
    held = None if existing is None or _kept_name(existing) == _kept_name(info) \
        else _keep(path, existing, s.fingerprint)  # --force at the same settings replaces it
    _note_replaced(existing, info, s.root, held is not None)
    _write(path, info, s.root, _splits(s, test_fraction, seed), resize, workers)
    _kept_now(path, held, s.fingerprint, _kept_name(info))
    return path


def _settings(info: DatasetInfo) -> str:
    """A conversion's size and settings as a note shows them."""
    e = info.extra
    return (f"{info.height}x{info.width}x{info.channels} (--resize {e.get('resize')}, --test_fraction "
            f"{e.get('test_fraction'):g}, --seed {e.get('seed')})")


def _note_replaced(existing: DatasetInfo | None, new: DatasetInfo, root: Path, kept: bool) -> None:
    """Say when a conversion of the same files with other settings is replaced (and whether it is `kept`): the new
    one is the default of every later command that does not give them."""
    if existing is None or existing.extra.get("fingerprint") != new.extra["fingerprint"]:
        return
    old, now = _settings(existing), _settings(new)
    if old != now:
        where = f"kept in {KEPT_DIR}/ for switching back" if kept else "replaced"
        print(f"note: {root} was converted at {old}; converting it at {now} makes that the one later commands "
              f"without these flags use (the earlier one is {where})", file=sys.stderr)


# ---------------------------------------------------------------- earlier conversions kept


def _kept_name(info: DatasetInfo) -> str:
    """The file name of a kept conversion: its size and settings (one file per combination)."""
    e = info.extra
    return (f"{info.height}x{info.width}x{info.channels}-{e.get('resize')}-test{float(e.get('test_fraction'))!r}"
            f"-seed{e.get('seed')}.hdf5")


def kept_conversions(path: str | os.PathLike) -> list[tuple[Path, DatasetInfo]]:
    """The earlier conversions of a folder kept beside its current one at `path`, most recently used first
    (unreadable ones left out)."""
    found = []
    for p in (Path(path).parent / KEPT_DIR).glob("*.hdf5"):
        info = _existing_info(p)
        if info is not None:
            with contextlib.suppress(OSError):  # removed meanwhile
                found.append((p.stat().st_mtime_ns, p, info))
    return [(p, info) for _, p, info in sorted(found, key=lambda t: t[0], reverse=True)]


def _keep(path: Path, existing: DatasetInfo | None, fingerprint: str) -> Path | None:
    """Link the current conversion `existing` (at `path`) into kept/ before it is replaced, if it is of the same
    files; return the link (None: nothing kept, e.g. a file system without hard links)."""
    if existing is None or existing.extra.get("fingerprint") != fingerprint:
        return None
    target = path.parent / KEPT_DIR / _kept_name(existing)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        if target.exists() and os.path.samefile(path, target):  # left by a conversion that failed
            return target
        target.parent.mkdir(exist_ok=True)
        os.link(path, tmp)
        os.replace(tmp, target)
    except OSError:
        return None
    finally:  # also when tmp and target were one file already: rename then leaves both
        with contextlib.suppress(OSError):
            tmp.unlink()
    return target


def _kept_now(path: Path, held: Path | None, fingerprint: str, current: str) -> None:
    """Once the conversion at `path` (of kept name `current`) is replaced: mark `held` (its predecessor, now only in
    kept/) as just used, and remove the kept conversions of other files (the folder has changed since) or of the
    current settings, and all but the KEEP most recent."""
    if held is not None:
        with contextlib.suppress(OSError):
            os.utime(held)
    kept = 0
    for p, info in kept_conversions(path):
        if kept < KEEP and info.extra.get("fingerprint") == fingerprint and p.name != current:
            kept += 1
            continue
        with contextlib.suppress(OSError):
            p.unlink()
    for p in (path.parent / KEPT_DIR).glob(".*.tmp"):  # a link cut short (the lock is held: none is in progress)
        with contextlib.suppress(OSError):
            p.unlink()


def _swap_in(kept: Path, info: DatasetInfo, path: Path, existing: DatasetInfo | None, s: Scan) -> bool:
    """Make the kept conversion `kept` (of `info`) the current one at `path` (no decoding), keeping the current one;
    False if the file system refused."""
    held = _keep(path, existing, s.fingerprint)
    try:
        os.replace(kept, path)
    except OSError:
        return False
    print(f"note: using the conversion of {s.root} at {_settings(info)} kept from before (in "
          f"{KEPT_DIR}/, not decoded again); later commands without these flags use it", file=sys.stderr)
    _kept_now(path, held, s.fingerprint, kept.name)
    return True


def _plan(splits: dict[str, list[tuple[str, int]]], shape: tuple[int, int, int], workers: int
          ) -> list[tuple[str, list[tuple[str, int]]]]:
    """Cut each split into tasks of at most `chunk` files, sized so decoded images in flight fit the budget."""
    total = sum(len(v) for v in splits.values())
    per_image = math.prod(shape)
    chunk = max(1, min(CHUNK, MEMORY_BUDGET // (2 * workers * per_image), math.ceil(total / (4 * workers))))
    return [(split, items[i:i + chunk]) for split, items in splits.items() for i in range(0, len(items), chunk)]


def ordered(run: Callable, tasks: list, pool: Executor | None, window: int) -> Iterator:
    """Results of run(task) in task order, with at most `window` tasks in flight (bounded memory)."""
    if pool is None:
        yield from (run(t) for t in tasks)
        return
    pending: deque = deque()
    it = iter(tasks)
    for t in it:
        pending.append(pool.submit(run, t))
        if len(pending) >= window:
            break
    while pending:
        result = pending.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            pending.append(pool.submit(run, nxt))
        yield result


@dataclass
class _Task:
    """A picklable unit of work: decode these files of `root` to `shape`."""

    root: str
    shape: tuple[int, int, int]
    resize: str

    def __call__(self, task: tuple[str, list[tuple[str, int]]]) -> tuple[np.ndarray, list[int], list]:
        return decode_chunk(self.root, [r for r, _ in task[1]], self.shape, self.resize)


def cpus() -> int:
    """CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def process_pool(workers: int, n: int) -> ProcessPoolExecutor | None:
    """A process pool (fork where available: no re-import of the caller) or None for small jobs."""
    if workers < 2 or n < SERIAL_BELOW:
        return None
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_close_held_locks,
                               initargs=(tuple(_HELD_LOCKS),))
    pool.submit(int).result()  # start the workers now, before the output file is open (they must not inherit it)
    return pool


def _write(path: Path, info: DatasetInfo, root: Path, splits: dict[str, list[tuple[str, int]]], resize: str,
           workers: int | None) -> None:
    """Decode all files in parallel chunks and append them to a new dataset file; report skipped files."""
    workers = max(1, workers or cpus())
    tasks = _plan(splits, info.shape, workers)
    total = sum(len(v) for v in splits.values())
    counts = {"train": np.zeros(info.num_class + 1, np.int64), "test": np.zeros(info.num_class + 1, np.int64)}
    skipped: list[tuple[str, str]] = []
    layout = hashlib.sha256()  # which file (and label) each row of each split holds, in order
    pool = process_pool(workers, total)
    try:
        with Writer(path, info) as w, tqdm(total=total, unit="img", desc=f"converting {info.name}") as bar:
            results = ordered(_Task(str(root), info.shape, resize), tasks, pool, 2 * workers)
            for (split, items), (images, ok, bad) in zip(tasks, results, strict=True):
                labels = np.array([items[i][1] for i in ok], dtype=np.int64)
                rows = "".join(f"{split}\0{items[i][0]}\0{items[i][1]}\n" for i in ok)
                layout.update(rows.encode(errors="surrogateescape"))
                if len(ok):
                    w.append(split, images, labels)
                counts[split] += np.bincount(labels + 1, minlength=info.num_class + 1)
                skipped += bad
                bar.update(len(items))
            info.extra["layout"] = layout.hexdigest()
            _finish(info, root, counts, skipped)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _finish(info: DatasetInfo, root: Path, counts: dict[str, np.ndarray], skipped: list[tuple[str, str]]) -> None:
    """Check every class kept images, warn about skipped files and record counts in `info.extra`."""
    if skipped:
        _warn(f"skipped {len(skipped)} unreadable or non-image file(s) in {root}: "
              f"{_first([f'{r} ({why})' for r, why in skipped])}")
    empty = [c for c, n in zip(info.class_names, counts["train"][1:], strict=True) if n == 0]
    if empty:
        raise UserError(f"class folder(s) {', '.join(empty)} in {root} have no readable training images "
                        f"(classes: {', '.join(info.class_names)}); add images or remove the folder(s)")
    info.extra.update({
        "num_train_labelled": int(counts["train"][1:].sum()), "num_unlabeled": int(counts["train"][0]),
        "num_test": int(counts["test"].sum()), "num_skipped": len(skipped),
        "skipped_first": [r for r, _ in skipped[:SHOW_SKIPPED]],
    })


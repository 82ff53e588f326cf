"""Input pipelines: the labelled and unlabelled tf.data streams, the evaluation stream, and the labelled subset.

Images stay uint8 until the batch is formed; `scale` maps them to [-1, 1] once, in the pipeline.
Order is a pure function of (seed, step): each epoch is a stateless shuffle seeded by
(seed, epoch), so a resumed run skips to its step and sees exactly the batches it would have.
Datasets that fit the memory budget are held as one tensor (no Python per batch); larger ones
stream from the HDF5 file in sorted-index reads. The evaluation stream is plain slices in order (see eval_stream).
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import h5py
import numpy as np
import tensorflow as tf

from datasets import format as fmt
from errors import UserError


@dataclass
class Split:
    """One split of a dataset: images in memory (uint8 array) or left in the HDF5 file."""

    path: str
    name: str
    labels: np.ndarray
    images: np.ndarray | None  # None: stream from the file
    _cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    def cached(self, key: str, make):
        """Build an object once per split (its tensors, its open HDF5 dataset) for every stream made of it."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


def load_split(path: str | os.PathLike, split: str, in_memory: str = "auto", budget_gb: float = 4.0,
               info: fmt.DatasetInfo | None = None) -> Split:
    """Open a split; hold its images in memory unless they exceed the budget (`in_memory` auto|yes|no).

    `info`: the file's DatasetInfo if the caller has already validated it (else it is read here)."""
    info = info or fmt.read_info(path)
    # One handle for labels and images, kept open for a streamed split: a conversion swapped in at `path` later (an
    # own folder's, datasets/folder.py) does not change what this split reads.
    try:
        f = h5py.File(path, "r")
    except OSError as e:  # removed or swapped since it was checked
        raise UserError(f"cannot read {path} ({e}); run the command again") from None
    try:
        images, labels = f[f"{split}/images"], f[f"{split}/labels"][...]
        if images.shape[1:] != info.shape:
            raise UserError(f"{path} was replaced while it was being opened (now {images.shape[1:]} images, not "
                            f"{info.shape}); run the command again")
        nbytes = len(labels) * info.height * info.width * info.channels
        keep = in_memory == "yes" or (in_memory == "auto" and nbytes <= budget_gb * 2**30)
        out = Split(str(path), split, labels, images[...] if keep else None)
    except BaseException:
        f.close()
        raise
    if keep:
        f.close()
    else:
        out.cached("file", lambda: images)
    return out


def select_labeled(labels: np.ndarray, num_labeled: int | None, num_class: int, seed: int,
                   class_names: list[str] | None = None) -> np.ndarray:
    """A balanced, seeded labelled subset: num_labeled / num_class indices per class (None = all labelled).

    A count that is not a multiple of the classes, or more than the smallest class allows, is a UserError naming
    the largest count that works.
    """
    labelled = np.flatnonzero(labels >= 0)
    if num_labeled is None:
        return labelled
    counts = np.bincount(labels[labelled], minlength=num_class)[:num_class]
    smallest = int(np.argmin(counts))
    name = class_names[smallest] if class_names else f"class {smallest}"
    most = num_class * int(counts[smallest])
    if not most:
        raise UserError(f"{name} has no labelled training images, so no balanced labelled subset can be drawn; add "
                        "some, or remove the class")
    limit = f"at most {most} here ({name} has {counts[smallest]} labelled training images)"
    if num_labeled <= 0 or num_labeled % num_class:
        fits = min(most, num_class * max(1, num_labeled // num_class))
        raise UserError(f"--num_labeled {num_labeled} must be a positive multiple of the {num_class} classes, "
                        f"{limit}: e.g. {fits}")
    per_class = num_labeled // num_class
    if per_class > counts[smallest]:
        raise UserError(f"--num_labeled {num_labeled} needs {per_class} labelled images per class, but {name} has "
                        f"only {counts[smallest]}: pass --num_labeled {most} or fewer, a multiple of {num_class} "
                        "(or all)")
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(num_class)]
    return np.sort(np.concatenate(chosen))


def scale(images: tf.Tensor) -> tf.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return tf.cast(images, tf.float32) * (2.0 / 255.0) - 1.0


# --augment's random translations, in pixels: in the pipeline (augment) and, for `diff`, in the train step.
MAX_SHIFT = 2


def augment(images: tf.Tensor, seed: tf.Tensor, max_shift: int = MAX_SHIFT) -> tf.Tensor:
    """Random translation by up to max_shift pixels (reflect padding), per image; `seed` [2] makes it repeatable."""
    shape = tf.shape(images)
    padded = tf.pad(images, [[0, 0], [max_shift, max_shift], [max_shift, max_shift], [0, 0]], mode="REFLECT")
    offsets = tf.random.stateless_uniform([shape[0], 2], seed, 0, 2 * max_shift + 1, dtype=tf.int32)
    return tf.map_fn(lambda a: tf.slice(a[0], [a[1][0], a[1][1], 0], [shape[1], shape[2], shape[3]]),
                     (padded, offsets), fn_output_signature=images.dtype)


def _index_batches(indices: np.ndarray, batch: int, seed: int, start_step: int) -> tf.data.Dataset:
    """Endless batches of `indices`, reshuffled each epoch by a stateless (seed, epoch) shuffle."""
    idx = tf.constant(indices, tf.int64)

    def epoch(e):
        return tf.data.Dataset.from_tensor_slices(
            tf.random.experimental.stateless_shuffle(idx, seed=tf.stack([tf.cast(seed, tf.int64), e])))

    ds = tf.data.Dataset.range(2**62).flat_map(epoch).batch(batch, drop_remainder=True)
    return ds.enumerate().skip(start_step)  # (step, indices): the step seeds per-batch randomness


def _gather(split: Split, with_labels: bool):
    """A tf.data map fn: index batch -> uint8 images (and labels), from memory or the HDF5 file."""
    labels = split.cached("labels", lambda: tf.constant(split.labels))
    if split.images is not None:
        images = split.cached("images", lambda: tf.constant(split.images))

        def fetch(i):
            return tf.gather(images, i)
    else:
        shape = _file_images(split).shape[1:]

        def fetch(i):
            x = tf.numpy_function(lambda i: _read_rows(split, i), [i], tf.uint8)
            return tf.ensure_shape(x, [None, *shape])

    if with_labels:
        return lambda i: (fetch(i), tf.gather(labels, i))
    return fetch


def mirror(images: tf.Tensor, labels: tf.Tensor, flip_classes: Sequence[int], seed: tf.Tensor) -> tf.Tensor:
    """Mirror each image left-right with probability 1/2 if its label is one of `flip_classes`."""
    flipped = tf.image.stateless_random_flip_left_right(images, seed)
    in_flip = tf.reduce_any(tf.equal(labels[:, None], tf.constant(list(flip_classes), labels.dtype)), -1)
    return tf.where(in_flip[:, None, None, None], flipped, images)


def labeled_stream(split: Split, indices: np.ndarray, batch: int, seed: int, start_step: int = 0,
                   do_augment: bool = False, flip_classes: Sequence[int] = ()) -> tf.data.Dataset:
    """Endless (images [-1,1], labels) batches of the labelled subset, shuffled and repeated.

    Images of the classes in `flip_classes` are mirrored at random; `do_augment` shifts every image.
    """
    batch = min(batch, len(indices)) if len(indices) >= 1 else batch
    gather = _gather(split, True)

    def make(step, i):
        x, y = gather(i)
        s = tf.stack([tf.cast(seed + 1, tf.int64), step])
        if flip_classes:
            x = mirror(x, y, flip_classes, tf.random.experimental.stateless_fold_in(s, 1))
        return (augment(scale(x), s) if do_augment else scale(x)), y

    return _prefetched(_index_batches(indices, batch, seed + 1, start_step).map(make))


def unlabeled_stream(split: Split, batch: int, seed: int, start_step: int = 0,
                     do_augment: bool = False) -> tf.data.Dataset:
    """Endless batches of every train image (labels never read), shuffled each epoch."""
    if batch > len(split):
        raise UserError(f"--batch_size {batch} is larger than the {len(split)} training images; lower it")
    gather = _gather(split, False)

    def make(step, i):
        x = scale(gather(i))
        return augment(x, tf.stack([tf.cast(seed + 2, tf.int64), step])) if do_augment else x

    return _prefetched(_index_batches(np.arange(len(split)), batch, seed + 2, start_step).map(make))


# Batches a training stream keeps ready ahead of the train step.
PREFETCH = 2


def _prefetched(ds: tf.data.Dataset) -> tf.data.Dataset:
    """A training stream with PREFETCH batches made ahead, and tf.data's autotuning off.

    Autotuning has nothing to tune here (one sequential map over batches already in memory), and with it an
    iterator that a train step had read from took up to a minute to delete (TF 2.21, CPU; as if it waited out the
    sleep of autotuning's model thread, whose optimization period grows to 60 s). That stalled the end of a
    training run by 0-60 s, at random (and a --nan_policy restore, which makes new iterators, could stall too);
    without it the deletion takes 0.2 s.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(PREFETCH).with_options(options)


def eval_stream(split: Split, batch: int) -> Iterator[tuple[tf.Tensor, tf.Tensor]]:
    """One pass over a labelled split in order: (images [-1,1], labels) tensors.

    Plain slices, not tf.data: evaluating lenet on 28x28 images from a tf.data pipeline ran at either 26k or
    15k images/s (then on one of the two cores), from run to run; from slices at 22-28k every time.
    """
    keep = np.flatnonzero(split.labels >= 0)
    for start in range(0, len(keep), batch):
        i = keep[start:start + batch]
        yield scale(tf.constant(_rows(split, i))), tf.constant(split.labels[i])


def image_stream(split: Split, batch: int, limit: int, seed: int = 0) -> Iterator[tf.Tensor]:
    """Every image of a split, labelled or not, as [-1, 1] batches in order; a seeded sample of `limit` of them if
    the split holds more."""
    keep = np.arange(len(split))
    if len(keep) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(keep, limit, replace=False))
    for start in range(0, len(keep), batch):
        yield scale(tf.constant(_rows(split, keep[start:start + batch])))


def class_frequencies(labels: np.ndarray, num_class: int) -> np.ndarray:
    """The class frequencies of a split's labelled images (-1, unlabelled, not counted): for a downloaded dataset
    every training image's class; for an own folder its class folders' images."""
    counts = np.bincount(labels[labels >= 0], minlength=num_class)[:num_class].astype(np.float64)
    if not counts.sum():
        raise UserError("the training split has no labelled image, so its class frequencies are unknown; "
                        "pass --prior none")
    return counts / counts.sum()


def _rows(split: Split, i: np.ndarray) -> np.ndarray:
    return split.images[i] if split.images is not None else _read_rows(split, i)


def _file_images(split: Split):
    """The split's images in its HDF5 file, through the handle load_split opened and keeps: never re-opened by
    path, where another conversion may have been swapped in since."""
    return split._cache["file"]


def _read_rows(split: Split, i: np.ndarray) -> np.ndarray:
    """Images `i` (any order) of a split left in its HDF5 file (h5py reads rows in increasing order)."""
    f = _file_images(split)
    order = np.argsort(i)
    out = np.empty((len(i), *f.shape[1:]), np.uint8)
    out[order] = f[np.sort(i)]
    return out


def shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Let tf.distribute split each global batch across workers (our datasets are index streams, not files)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)

"""The tf.data pipelines: balanced seeded labelled subset, order as a function of (seed, step), streaming."""
from __future__ import annotations

import os

import numpy as np
import pytest

import input_ops
from errors import UserError
from tests.tiny import make_tiny_dataset


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("ds"))


def test_labeled_subset_is_balanced_seeded_and_all_means_every_label(path):
    split = input_ops.load_split(path, "train")
    a = input_ops.select_labeled(split.labels, 30, 3, seed=0)
    assert np.bincount(split.labels[a]).tolist() == [10, 10, 10]
    assert np.array_equal(a, input_ops.select_labeled(split.labels, 30, 3, seed=0))
    assert not np.array_equal(a, input_ops.select_labeled(split.labels, 30, 3, seed=1))
    assert len(input_ops.select_labeled(split.labels, None, 3, seed=0)) == 120
    with pytest.raises(UserError, match="multiple of the 3 classes"):
        input_ops.select_labeled(split.labels, 31, 3, seed=0)


def test_a_labelled_count_the_classes_cannot_give_names_the_largest_that_works(path):
    labels = input_ops.load_split(path, "train").labels  # 40 labelled images per class
    names = ["cat", "dog", "owl"]
    with pytest.raises(UserError, match=r"multiple of the 3 classes, at most 120 here \(cat has 40 labelled "
                                        r"training images\): e.g. 120$"):
        input_ops.select_labeled(labels, 500, 3, seed=0, class_names=names)
    with pytest.raises(UserError, match=r"needs 41 labelled images per class, but cat has only 40: pass "
                                        r"--num_labeled 120 or fewer"):
        input_ops.select_labeled(labels, 123, 3, seed=0, class_names=names)
    assert len(input_ops.select_labeled(labels, 120, 3, seed=0, class_names=names)) == 120
    with pytest.raises(UserError, match=r"^owl has no labelled training images"):
        input_ops.select_labeled(np.where(labels == 2, -1, labels), 30, 3, seed=0, class_names=names)


def test_unlabeled_stream_visits_every_image_once_per_epoch_scaled_to_minus_one_one(path):
    split = input_ops.load_split(path, "train")
    batches = list(input_ops.unlabeled_stream(split, 12, seed=0).take(10).as_numpy_iterator())
    x = np.concatenate(batches)
    assert x.shape == (120, 12, 12, 1) and x.min() >= -1.0 and x.max() <= 1.0
    expected = split.images.astype(np.float32) * (2 / 255) - 1
    seen = {row.tobytes() for row in x}
    assert seen == {row.tobytes() for row in expected}


def test_resumed_stream_continues_with_the_same_batches(path):
    split = input_ops.load_split(path, "train")
    idx = input_ops.select_labeled(split.labels, 30, 3, seed=0)
    full = list(input_ops.labeled_stream(split, idx, 12, seed=0).take(7).as_numpy_iterator())
    resumed = list(input_ops.labeled_stream(split, idx, 12, seed=0, start_step=4).take(3).as_numpy_iterator())
    for (xa, ya), (xb, yb) in zip(full[4:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_streaming_from_the_file_gives_the_same_batches_as_memory(path):
    mem = input_ops.load_split(path, "train", in_memory="yes")
    disk = input_ops.load_split(path, "train", in_memory="no")
    tiny_budget = input_ops.load_split(path, "train", in_memory="auto", budget_gb=1e-9)
    assert mem.images is not None and disk.images is None and tiny_budget.images is None
    a = list(input_ops.unlabeled_stream(mem, 12, seed=3).take(12).as_numpy_iterator())
    b = list(input_ops.unlabeled_stream(disk, 12, seed=3).take(12).as_numpy_iterator())
    for xa, xb in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
    ea = [(x.numpy(), y.numpy()) for x, y in input_ops.eval_stream(mem, 7)]
    eb = [(x.numpy(), y.numpy()) for x, y in input_ops.eval_stream(disk, 7)]
    assert sum(len(y) for _, y in eb) == 120
    for (xa, ya), (xb, yb) in zip(ea, eb):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_a_streamed_split_reads_the_file_it_opened_when_another_replaces_it(path, tmp_path):
    """An own folder's conversion can be swapped in at the same path (datasets/folder.py's kept/) while a run
    streams its split: the run goes on reading the images its labels came from."""
    import shutil
    ours = tmp_path / "data.hdf5"
    shutil.copy(path, ours)
    other = make_tiny_dataset(tmp_path / "other", shape=(6, 6, 1), test_per_class=4)
    expect = input_ops.load_split(ours, "test", in_memory="yes")
    disk = input_ops.load_split(ours, "test", in_memory="no")
    os.replace(other, ours)
    got = [(x.numpy(), y.numpy()) for x, y in input_ops.eval_stream(disk, 7)]
    want = [(x.numpy(), y.numpy()) for x, y in input_ops.eval_stream(expect, 7)]
    assert len(got) == len(want)
    for (xa, ya), (xb, yb) in zip(got, want):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_augment_shifts_but_keeps_shape_and_range():
    import tensorflow as tf
    x = tf.random.uniform([4, 10, 14, 3], -1, 1)
    y = input_ops.augment(x, tf.constant([1, 2], tf.int64)).numpy()
    assert y.shape == (4, 10, 14, 3) and y.min() >= -1 and y.max() <= 1
    np.testing.assert_array_equal(y, input_ops.augment(x, tf.constant([1, 2], tf.int64)).numpy())


def test_augmented_stream_resumes_with_the_same_shifted_batches(path):
    split = input_ops.load_split(path, "train")
    full = list(input_ops.unlabeled_stream(split, 12, 0, do_augment=True).take(5).as_numpy_iterator())
    resumed = list(input_ops.unlabeled_stream(split, 12, 0, start_step=3, do_augment=True).take(2).as_numpy_iterator())
    for a, b in zip(full[3:], resumed):
        np.testing.assert_array_equal(a, b)


def test_labeled_stream_mirrors_only_the_flip_classes_and_resumes_with_the_same_flips(path):
    split = input_ops.load_split(path, "train")
    idx = input_ops.select_labeled(split.labels, 30, 3, seed=0)
    plain = list(input_ops.labeled_stream(split, idx, 12, seed=0).take(10).as_numpy_iterator())
    flipped = list(input_ops.labeled_stream(split, idx, 12, seed=0, flip_classes=[1]).take(10).as_numpy_iterator())
    mirrored = []
    for (xa, ya), (xb, yb) in zip(plain, flipped):
        np.testing.assert_array_equal(ya, yb)  # the same images in the same order
        np.testing.assert_array_equal(xa[ya != 1], xb[yb != 1])
        for a, b in zip(xa[ya == 1], xb[yb == 1]):
            assert np.array_equal(a, b) or np.array_equal(a[:, ::-1], b)
            mirrored.append(not np.array_equal(a, b))
    assert len(mirrored) == 40 and 0.25 < np.mean(mirrored) < 0.75
    resumed = list(input_ops.labeled_stream(split, idx, 12, seed=0, start_step=6, flip_classes=[1])
                   .take(4).as_numpy_iterator())
    for (xa, _), (xb, _) in zip(flipped[6:], resumed):
        np.testing.assert_array_equal(xa, xb)


def test_image_stream_gives_every_image_labelled_or_not_or_a_seeded_sample(tmp_path):
    from datasets import format as fmt
    from tests.tiny import tiny_images
    labels = np.array([0, 1, 2, -1, -1, 0, -1, 1, 2, -1] * 6)  # an own folder's unlabeled/ images are -1
    info = fmt.DatasetInfo("mixed", 12, 12, 1, ["a", "b", "c"])
    file = fmt.write(fmt.dataset_path(tmp_path, "mixed"), info,
                     {"train": (tiny_images(np.maximum(labels, 0), (12, 12, 1), 0), labels),
                      "test": (tiny_images(np.arange(3), (12, 12, 1), 1), np.arange(3))})
    split = input_ops.load_split(file, "train")
    every = np.concatenate([x.numpy() for x in input_ops.image_stream(split, 25, limit=10_000)])
    np.testing.assert_allclose(every, split.images / 127.5 - 1, atol=1e-6)
    streamed = input_ops.load_split(file, "train", in_memory="no")
    sample = np.concatenate([x.numpy() for x in input_ops.image_stream(streamed, 7, limit=40, seed=3)])
    again = np.concatenate([x.numpy() for x in input_ops.image_stream(split, 40, limit=40, seed=3)])
    assert sample.shape == (40, 12, 12, 1) and np.array_equal(sample, again)
    rows = {r.tobytes(): i for i, r in enumerate(every)}
    picked = [rows[r.tobytes()] for r in sample]
    assert len(set(picked)) == 40 and picked == sorted(picked) and (labels[picked] < 0).any()


def test_class_frequencies_count_the_labelled_images_only():
    labels = np.array([0, 0, 0, 1, 2, 2, -1, -1])
    assert input_ops.class_frequencies(labels, 4).tolist() == pytest.approx([0.5, 1 / 6, 1 / 3, 0])
    with pytest.raises(UserError, match="no labelled image"):
        input_ops.class_frequencies(np.array([-1, -1]), 3)


def test_training_streams_run_without_autotuning_and_still_give_whole_batches(path):
    """With tf.data's autotuning on, deleting an iterator a train step had read from took up to a minute at the end
    of a run (the stall needs minutes of training to show, so it is checked by its cause: the streams' options)."""
    split = input_ops.load_split(path, "train")
    idx = input_ops.select_labeled(split.labels, 30, 3, seed=0)
    streams = [input_ops.labeled_stream(split, idx, 12, seed=0), input_ops.unlabeled_stream(split, 12, seed=0)]
    for ds in streams + [input_ops.shard_by_data(s) for s in streams]:
        assert ds.options().autotune.enabled is False
    assert [len(b) for b in streams[1].take(3).as_numpy_iterator()] == [12, 12, 12]

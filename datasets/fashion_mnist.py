"""Fashion-MNIST (Zalando): same idx layout and file names as MNIST, parsed by datasets.mnist."""
from __future__ import annotations

from pathlib import Path

from datasets.mnist import load  # noqa: F401  (identical idx files: the source's `load`)

HEIGHT, WIDTH, CHANNELS = 28, 28, 1
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# Classes whose mirror image is an image of the same class that the data could hold. The shoes all
# point left: mirrored, they are images the test set never shows (flipping them hurt; docs/experiments.md).
MIRROR_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Shirt", "Bag"]
HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"
# The official S3 site is HTTP only; GitHub serves the same files over HTTPS. The Keras mirror
# serves files of the same byte sizes; every file is checked against FILES whichever mirror sent it.
MIRRORS = [
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
]
# Two accepted digests per file: the official .gz (tensorflow/datasets url_checksums/fashion_mnist.txt,
# torchvision) and Debian's dataset-fashion-mnist, whose .gz headers omit the original file name
# (each file exactly len(name) + 1 bytes shorter, same compressed data).
FILES: dict[str, tuple[str, ...]] = {
    "train-images-idx3-ubyte.gz": ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                                   "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7"),
    "train-labels-idx1-ubyte.gz": ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                                   "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056"),
    "t10k-images-idx3-ubyte.gz": ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                                  "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa"),
    "t10k-labels-idx1-ubyte.gz": ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                                  "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"),
}
# Debian's package `dataset-fashion-mnist` puts the four files here: used without any download.
LOCAL_DIRS: list[Path] = [Path("/usr/share/datasets/fashion-mnist")]

"""The networks: an (n+1)-way discriminator (the classifier) and a generator, for any H x W x C.

Architectures are chosen by name (`--arch`):
- `mlp`:  the Salimans et al. (2016) MNIST pair. D: Gaussian input noise + weight-normalised dense
          1000-500-250-250-250 (ReLU), features = last hidden layer (FEATURES). G: z -> 500 -> 500
          (softplus + batch norm) -> H*W*C (tanh, weight norm). Cheap on a CPU.
- `lenet` (the default): a LeNet-sized conv D in the mlp's style: two stride-2 5x5 weight-normalised
          convolutions (leaky ReLU), then dense 16w-8w (ReLU), Gaussian noise on the input and after every
          layer, features = last hidden layer (as the mlp's); the conv G. About 3x the mlp D's FLOPs and 1/5
          of conv's; on Fashion-MNIST more accurate per CPU-second than either (docs/experiments.md).
- `conv`: a small conv D in the style of Salimans' CIFAR net (dropout after each downsampling, but none on
          the input pixels by default: see build_discriminator; leaky ReLU, weight norm,
          stride-2 downsampling, network-in-network 1x1 layers, global average pooling
          features) and the conv G.
Generators (`--g_arch`, default per arch: DEFAULT_GENERATOR): `mlp`, Salimans' MNIST G (above), and `conv`, a
DCGAN-style G (dense -> 2 stride-2 transposed 5x5 convs with batch norm and ReLU -> tanh).
Heads (`--head`): `implicit` (n logits, fake logit fixed at 0) or `nplus1` (an explicit,
learned fake logit: Odena 2016). Both models take and give images scaled to [-1, 1].

`build_discriminator` returns a keras.Model x -> (class_logits [B,n], fake_logit [B], features [B,F]).
"""
from __future__ import annotations

import contextlib
import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers

import ops

ARCHS = ("mlp", "lenet", "conv")
HEADS = ("implicit", "nplus1")
GENERATORS = ("mlp", "conv")
# Each arch's generator unless --g_arch says otherwise. lenet had the mlp G until stop 18 (config.LEGACY_DEFAULTS).
DEFAULT_GENERATOR = {"mlp": "mlp", "lenet": "conv", "conv": "conv"}


# Each D's width (mlp: units of its first hidden layer; lenet, conv: channels of its first convolution) unless set.
# lenet's was 32 until stop 39; 40 learns faster and, at 100 labels, ends ahead (docs/experiments.md, stop 39).
DISCRIMINATOR_WIDTH = {"mlp": 1000, "lenet": 40, "conv": 32}

# Each generator's width (mlp: hidden units; conv: channels before its last upsampling) unless set.
GENERATOR_WIDTH = {"mlp": 500, "conv": 64}


def generator_width(arch: str, g_arch: str) -> int:
    """The G width that --g_width 0 means: lenet's conv G has half the conv arch's channels (32 against 64)."""
    return 32 if (arch, g_arch) == ("lenet", "conv") else GENERATOR_WIDTH[g_arch]


# D's features, which feature matching compares: its last hidden layer after the Gaussian noise that follows it
# in training ("noisy", the default), or before it ("clean", as in Salimans et al.'s code; the class logits still
# see the noisy layer). Clean features train faster but end level or behind (docs/experiments.md, stop 19).
# The conv arch has no noise there, so both are the same for it.
FEATURES = ("noisy", "clean")

# The std of the Gaussian noise D adds to its input images in training, per arch (images in [-1, 1]).
INPUT_NOISE = {"mlp": 0.3, "lenet": 0.3, "conv": 0.0}
# The std of the Gaussian noise the mlp and lenet Ds add after each hidden layer in training (Salimans et al.'s
# MNIST D); the conv D has dropout instead.
HIDDEN_NOISE = 0.5


@contextlib.contextmanager
def mixed_precision(precision: str | None):
    """Build Keras layers that compute in `precision` ("float16", "bfloat16"; None: as the current policy) with
    float32 weights (Keras' mixed_<precision> policy); the global policy is restored."""
    old = keras.mixed_precision.global_policy()
    if precision:
        keras.mixed_precision.set_global_policy(f"mixed_{precision}")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(old)


def build_discriminator(arch: str, shape: tuple[int, int, int], num_class: int, head: str = "implicit",
                        width: int = 0, input_noise: float | None = None, input_dropout: float = 0.0,
                        features: str = "noisy", hidden_noise: float | None = None) -> keras.Model:
    """The classifier/discriminator for images of `shape`; width 0 (DISCRIMINATOR_WIDTH) and input/hidden_noise
    None mean the defaults.

    `input_dropout` drops input pixels in training. Salimans et al.'s CIFAR-10 net drops 20%, but on images
    with a constant background (MNIST, Fashion-MNIST) the net learns to rely on that noise: the conv D
    trained on all Fashion-MNIST labels scored 89% with dropout on and 59% in inference mode; without
    input dropout it reaches 91% (docs/experiments.md). So it is off unless asked for. `features`: one of FEATURES.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {ARCHS}")
    x = keras.Input(shape=shape, name="image")
    noise = INPUT_NOISE.get(arch, 0.0) if input_noise is None else input_noise
    h = ops.GaussianNoise(noise)(x) if noise else x
    h = ops.Dropout(input_dropout)(h) if input_dropout else h
    hidden = HIDDEN_NOISE if hidden_noise is None else hidden_noise
    width = width or DISCRIMINATOR_WIDTH[arch]
    if arch == "mlp":
        clean, top = _mlp_trunk(h, width, hidden)
    elif arch == "lenet":
        clean, top = _lenet_trunk(h, width, hidden)
    else:
        clean = top = _conv_trunk(h, width)
    if features not in FEATURES:
        raise ValueError(f"unknown features {features!r}; choose from {FEATURES}")
    if head == "implicit":
        class_logits = ops.WeightNormDense(num_class, name="class_logits")(top)
        fake_logit = ops.ZeroLogit(name="fake_logit")(class_logits)
    elif head == "nplus1":
        logits = ops.WeightNormDense(num_class + 1, name="logits")(top)
        class_logits = layers.Lambda(lambda t: t[:, :num_class], name="class_logits")(logits)
        fake_logit = layers.Lambda(lambda t: t[:, num_class], name="fake_logit")(logits)
    else:
        raise ValueError(f"unknown head {head!r}; choose from {HEADS}")
    return keras.Model(x, [class_logits, fake_logit, clean if features == "clean" else top], name="discriminator")


def _mlp_trunk(x, width: int, noise: float):
    return _noisy_dense(x, (width, width // 2, width // 4, width // 4, width // 4), noise)


def _lenet_trunk(h, width: int, noise: float):
    for filters in (width, 2 * width):
        h = _lrelu(ops.WeightNormConv2D(filters, 5, strides=2)(h))
        h = ops.GaussianNoise(noise)(h)
    return _noisy_dense(h, (16 * width, 8 * width), noise)


def _noisy_dense(h, widths: tuple[int, ...], noise: float):
    """Flatten, then weight-normalised dense + ReLU + Gaussian noise of std `noise` per width (Salimans' MNIST D).

    Returns the last layer's output before its noise and after it. The noise layers are there even at std 0,
    so the layer positions in a checkpoint do not depend on it.
    """
    h = layers.Flatten()(h)
    for units in widths:
        clean = layers.ReLU()(ops.WeightNormDense(units)(h))
        h = ops.GaussianNoise(noise)(clean)
    return clean, h


def _conv_trunk(h, width: int):
    for filters, drop in ((width, 0.5), (2 * width, 0.5)):
        h = _lrelu(ops.WeightNormConv2D(filters, 3)(h))
        h = _lrelu(ops.WeightNormConv2D(filters, 3)(h))
        h = _lrelu(ops.WeightNormConv2D(filters, 3, strides=2)(h))
        h = ops.Dropout(drop)(h)
    h = _lrelu(ops.WeightNormConv2D(2 * width, 3, padding="valid" if min(h.shape[1:3]) > 3 else "same")(h))
    h = _lrelu(ops.WeightNormConv2D(2 * width, 1)(h))
    h = _lrelu(ops.WeightNormConv2D(2 * width, 1)(h))
    return layers.GlobalAveragePooling2D()(h)


def _lrelu(h):
    return ops.LeakyReLU(0.2)(h)


def build_generator(g_arch: str, shape: tuple[int, int, int], z_dim: int = 100, width: int = 0) -> keras.Model:
    """The generator (`g_arch` in GENERATORS) z [B, z_dim] -> images [B, H, W, C] in [-1, 1].

    `width`: the mlp G's hidden units, or the conv G's channels before its last upsampling (twice that before
    the first); 0 means GENERATOR_WIDTH.
    """
    height, wid, channels = shape
    z = keras.Input(shape=(z_dim,), name="z")
    if g_arch == "mlp":
        h = z
        for _ in range(2):
            h = layers.Dense(width or GENERATOR_WIDTH["mlp"], use_bias=False)(h)
            h = layers.BatchNormalization()(h)
            h = layers.Activation("softplus")(h)
        h = ops.WeightNormDense(height * wid * channels)(h)
        out = layers.Reshape(shape)(layers.Activation("tanh")(h))
    elif g_arch == "conv":
        w = width or GENERATOR_WIDTH["conv"]
        h0, w0 = math.ceil(height / 4), math.ceil(wid / 4)
        h = layers.Dense(h0 * w0 * 2 * w, use_bias=False)(z)
        h = layers.ReLU()(layers.BatchNormalization()(h))
        h = layers.Reshape((h0, w0, 2 * w))(h)
        h = layers.Conv2DTranspose(w, 5, strides=2, padding="same", use_bias=False)(h)
        h = layers.ReLU()(layers.BatchNormalization()(h))
        h = layers.Conv2DTranspose(channels, 5, strides=2, padding="same", activation="tanh")(h)
        out = ops.CenterCrop2D(height, wid)(h) if (4 * h0, 4 * w0) != (height, wid) else h
    else:
        raise ValueError(f"unknown generator {g_arch!r}; choose from {GENERATORS}")
    return keras.Model(z, out, name="generator")


# --tta mirror: where D's prediction for an image is a mirror-symmetric class (--flip_classes) and D gives it
# less than this probability, D's class probabilities are averaged with those for the mirror image. On 18 finished
# Fashion-MNIST runs (100 and 1000 labels) that lifted test accuracy by 0.13 points on average (15 ahead, 3 behind)
# while mirroring 12% of the test images; mirroring every such image (70%) gained no more (docs/experiments.md).
MIRROR_GATE = 0.9


def class_probabilities(D: keras.Model, images: tf.Tensor, mirror_classes: tuple[int, ...] = (),
                        offsets: tf.Tensor | None = None) -> tf.Tensor:
    """D's class probabilities at test time for images in [-1, 1] [N,H,W,C]: softmax(class logits + `offsets`)
    (prior_offsets; none if None); with `mirror_classes`, averaged with the mirror image's where the prediction
    is one of them and its probability is below MIRROR_GATE."""
    def probabilities(x):
        logits = tf.cast(D(x, training=False)[0], tf.float32)  # --mixed_precision: its softmax in float32
        return tf.nn.softmax(logits if offsets is None else logits + tf.cast(offsets, tf.float32), axis=-1)

    probs = probabilities(images)
    if not mirror_classes:
        return probs
    guess = tf.argmax(probs, axis=-1, output_type=tf.int32)
    ask = tf.reduce_any(tf.equal(guess[:, None], tf.constant(mirror_classes, tf.int32)), axis=-1)
    where = tf.where(ask & (tf.reduce_max(probs, axis=-1) < MIRROR_GATE))

    def averaged():
        mirrored = probabilities(tf.reverse(tf.gather_nd(images, where), axis=[2]))
        return tf.tensor_scatter_nd_update(probs, where, (tf.gather_nd(probs, where) + mirrored) / 2)
    return tf.cond(tf.size(where) > 0, averaged, lambda: probs)  # oneDNN's convolutions fail on empty batches


# --prior labeled: D's class logits at test time get offsets b that make its mean class probabilities over the
# training images equal the class frequencies of the labelled ones (Saerens et al. 2002's adjustment to a known
# prior; ReMixMatch's distribution alignment, here once per checkpoint), before any --tta. D trained on few labels puts
# too few images in some classes (the shirts) and too many in others; on 24 finished 100-label Fashion-MNIST runs
# this lifted test accuracy by 0.5 points on average (22 ahead), on 11 1000-label runs by 0.14 (docs/experiments.md).
def prior_offsets(logits: np.ndarray, prior: np.ndarray, tol: float = 1e-6, max_iter: int = 100) -> np.ndarray:
    """The offsets b [n] (mean 0) such that softmax(logits + b), averaged over the images of `logits` [N, n], is
    `prior` [n]: the minimum of the convex mean(logsumexp(logits + b)) - prior . b. Newton steps (5-8 for 60,000
    Fashion-MNIST images) of at most MAX_OFFSET_STEP per class, each taken only if it lowers the objective (else
    Saerens et al.'s fixed-point step); images with a non-finite logit are left out; a class of prior 0 gets
    -MAX_OFFSET below the others."""
    logits = np.asarray(logits, np.float64)
    logits = logits[np.isfinite(logits).all(axis=1)]
    prior = np.maximum(np.asarray(prior, np.float64), 0.0)
    n = len(prior)
    if not len(logits) or not prior.sum():
        return np.zeros(n)
    prior = prior / prior.sum()
    present = prior > 0
    b = np.zeros(n)

    def logsumexp(b):
        z = logits[:, present] + b[present]
        top = z.max(axis=1, keepdims=True)
        return top[:, 0] + np.log(np.exp(z - top).sum(axis=1))

    def objective(b):
        return float(logsumexp(b).mean() - prior[present] @ b[present])

    for _ in range(max_iter):
        q = np.exp(logits[:, present] + b[present] - logsumexp(b)[:, None])
        mean = q.mean(axis=0)
        grad = mean - prior[present]
        if np.abs(grad).max() < tol:
            break
        hessian = np.diag(mean) - q.T @ q / len(q)  # singular along (1, ..., 1), which changes nothing; the ridge
        step = -np.linalg.solve(hessian + 1e-9 * np.eye(len(mean)), grad)  # lifts a class D all but rules out
        step = (step - step.mean()) * min(1.0, MAX_OFFSET_STEP / max(np.abs(step).max(), 1e-12))
        t, f0, slope = 1.0, objective(b), float(grad @ step)
        while t > 1e-6 and slope < 0:
            trial = b.copy()
            trial[present] += t * step
            if objective(trial) <= f0 + 1e-4 * t * slope:
                b = trial
                break
            t /= 2
        else:  # no Newton step lowers the objective: the fixed-point step, which moves towards the prior
            b[present] += np.clip(np.log(prior[present]) - np.log(np.maximum(mean, 1e-300)),
                                  -MAX_OFFSET_STEP, MAX_OFFSET_STEP)
    b[~present] = (b[present].min() if present.any() else 0.0) - MAX_OFFSET
    return b - b.mean()


# How far one step of prior_offsets moves an offset, and how far below the rest a class of prior 0 is put.
MAX_OFFSET_STEP = 8.0
MAX_OFFSET = 30.0


def grid_noise(seed: int, z_dim: int, n: int) -> tf.Tensor:
    """The fixed noise of a run's sample grids: the same images for the trainer and the evaler."""
    return tf.random.stateless_normal([n, z_dim], seed=[seed, 7])

"""Building blocks and losses shared by the networks and the trainer.

The discriminator gives, for each image, `class_logits` [B, n] over the real classes and a
`fake_logit` [B] (0 for the implicit head of Salimans et al., learned for Odena's explicit
n+1 head). Softmax over [class_logits, fake_logit] is the (n+1)-way posterior, so

    log D(real | x) - log D(fake | x) = logsumexp(class_logits) - fake_logit =: real_logit

and every real/fake loss below is a softplus of `real_logit`: numerically stable for any size.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

# ---------------------------------------------------------------- losses


def real_logit(class_logits: tf.Tensor, fake_logit: tf.Tensor) -> tf.Tensor:
    """Logit of P(real | x) from the (n+1)-way discriminator output."""
    return tf.reduce_logsumexp(class_logits, axis=-1) - fake_logit


def supervised_loss(class_logits: tf.Tensor, labels: tf.Tensor, smoothing: float = 0.0) -> tf.Tensor:
    """Cross-entropy of the n real classes on labelled images (mean over the batch).

    `smoothing` s aims at 1 - s + s/n on the true class and s/n on each other one (Szegedy et al. 2016's
    label smoothing): D memorises a few labelled images within a thousand steps, and the unsmoothed loss
    then gives them almost no gradient; smoothed, it keeps bounding their logits. It lifts the supervised-only
    baseline (+2.8 points at 100 labels) but not the SSGAN (-1.1), so --sup_smoothing defaults to 0
    (docs/experiments.md).
    """
    if not smoothing:
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=class_logits))
    n = class_logits.shape[-1]
    return soft_supervised_loss(class_logits, tf.one_hot(labels, n) * (1.0 - smoothing) + smoothing / n)


def mixup(x: tf.Tensor, labels: tf.Tensor, n: int, alpha: float, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Each labelled image blended with another of the batch (Zhang et al. 2018's mixup), with soft targets.

    The weight of the image's own is max(l, 1 - l), l ~ Beta(alpha, alpha) (as in MixMatch), so each blend
    stays nearer the image whose label its row holds. `seed` is a stateless seed pair. Returns the blends and
    their targets, the same blend of the two images' one-hot labels.
    """
    b = tf.shape(x)[0]
    s1, s2, s3 = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    g1 = tf.random.stateless_gamma([b], s1, alpha)
    g2 = tf.random.stateless_gamma([b], s2, alpha)
    lam = g1 / (g1 + g2)
    lam = tf.maximum(lam, 1.0 - lam)
    perm = tf.argsort(tf.random.stateless_uniform([b], s3))
    w = tf.reshape(tf.cast(lam, x.dtype), [-1] + [1] * (len(x.shape) - 1))
    target = tf.one_hot(labels, n)
    return (w * x + (1.0 - w) * tf.gather(x, perm),
            lam[:, None] * target + (1.0 - lam[:, None]) * tf.gather(target, perm))


def soft_supervised_loss(class_logits: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """Cross-entropy of the n real classes against soft targets (mean over the batch)."""
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=target, logits=class_logits))


def unsupervised_loss(real_logits_real: tf.Tensor, real_logits_fake: tf.Tensor,
                      label_smoothing: float = 0.0) -> tf.Tensor:
    """Discriminator GAN loss: -log D(real|x_real) - log D(fake|x_fake), one-sided smoothing on real.

    With smoothing s the target for real images is 1 - s: -(1-s) log D - s log(1 - D).
    """
    loss_real = (1.0 - label_smoothing) * tf.nn.softplus(-real_logits_real)
    if label_smoothing:
        loss_real += label_smoothing * tf.nn.softplus(real_logits_real)
    return tf.reduce_mean(loss_real) + tf.reduce_mean(tf.nn.softplus(real_logits_fake))


def generator_gan_loss(real_logits_fake: tf.Tensor) -> tf.Tensor:
    """Non-saturating generator loss: -log D(real | G(z))."""
    return tf.reduce_mean(tf.nn.softplus(-real_logits_fake))


def feature_matching_loss(features_real: tf.Tensor, features_fake: tf.Tensor) -> tf.Tensor:
    """Salimans et al.: squared distance between mean discriminator features of real and fake."""
    diff = tf.reduce_mean(features_real, axis=0) - tf.reduce_mean(features_fake, axis=0)
    return tf.reduce_mean(tf.square(diff))


def entropy_loss(class_logits: tf.Tensor) -> tf.Tensor:
    """Mean entropy of the class posterior (Dai et al.: minimised on unlabelled images)."""
    logp = tf.nn.log_softmax(class_logits, axis=-1)
    return -tf.reduce_mean(tf.reduce_sum(tf.exp(logp) * logp, axis=-1))


def balance_loss(class_logits: tf.Tensor) -> tf.Tensor:
    """KL(mean class posterior over the batch || uniform) = log n - H(mean posterior): 0 when the batch's
    predictions are spread evenly over the n classes (CatGAN's marginal-entropy term, Springenberg 2016)."""
    mean = tf.reduce_mean(tf.nn.softmax(class_logits, axis=-1), axis=0)
    n = tf.cast(tf.shape(class_logits)[-1], class_logits.dtype)
    return tf.math.log(n) + tf.reduce_sum(mean * tf.math.log(tf.maximum(mean, 1e-30)))


def uniform_kl(class_logits: tf.Tensor) -> tf.Tensor:
    """Mean KL(class posterior || uniform) = log n - H(posterior) over a batch: 0 when each is uniform. On generated
    images it is CatGAN's (Springenberg 2016) term that keeps D uncertain of their class."""
    logp = tf.nn.log_softmax(class_logits, axis=-1)
    n = tf.cast(tf.shape(class_logits)[-1], class_logits.dtype)
    return tf.math.log(n) + tf.reduce_mean(tf.reduce_sum(tf.exp(logp) * logp, axis=-1))


def consistency_loss(class_logits_a: tf.Tensor, class_logits_b: tf.Tensor) -> tf.Tensor:
    """Mean squared L2 distance between the class posteriors of two passes over the same images, each with
    its own noise: the Pi-model's consistency term (Laine & Aila 2017). CT-GAN (Wei et al. 2018) adds a
    term of this kind, on D's outputs and features and with a margin, to the SSGAN's losses."""
    diff = tf.nn.softmax(class_logits_a, axis=-1) - tf.nn.softmax(class_logits_b, axis=-1)
    return tf.reduce_mean(tf.reduce_sum(tf.square(diff), axis=-1))


def pull_away_loss(features: tf.Tensor) -> tf.Tensor:
    """Pull-away term (Zhao et al., used by Dai et al.): mean squared cosine between distinct samples."""
    n = tf.cast(tf.shape(features)[0], features.dtype)
    f = tf.math.l2_normalize(features, axis=-1)
    cos2 = tf.square(tf.matmul(f, f, transpose_b=True))
    return (tf.reduce_sum(cos2) - n) / (n * (n - 1.0))


def kl_divergence(p_logits: tf.Tensor, q_logits: tf.Tensor) -> tf.Tensor:
    """Mean KL(p || q) between the class posteriors of two sets of logits."""
    logp, logq = tf.nn.log_softmax(p_logits, axis=-1), tf.nn.log_softmax(q_logits, axis=-1)
    return tf.reduce_mean(tf.reduce_sum(tf.exp(logp) * (logp - logq), axis=-1))


def virtual_adversarial_direction(logits_fn, x: tf.Tensor, clean_logits: tf.Tensor, noise: tf.Tensor,
                                  eps: float, xi: float = 1e-6) -> tf.Tensor:
    """Miyato et al.'s virtual adversarial perturbation of `x` (one power iteration), L2 norm `eps` per image.

    The direction in which the class posterior of `logits_fn` moves fastest away from `clean_logits`,
    found from the gradient of the KL at the random direction `noise` scaled to `xi`. Returns a constant.
    """
    d = xi * _unit(noise)
    with tf.GradientTape() as tape:
        tape.watch(d)
        dist = kl_divergence(clean_logits, logits_fn(x + d))
    return tf.stop_gradient(eps * _unit(tape.gradient(dist, d)))


def _unit(t: tf.Tensor) -> tf.Tensor:
    """Each example of `t` scaled to L2 norm 1."""
    axes = list(range(1, len(t.shape)))
    t /= tf.reduce_max(tf.abs(t), axis=axes, keepdims=True) + 1e-12  # keeps the square below from underflowing
    return t / tf.sqrt(tf.reduce_sum(tf.square(t), axis=axes, keepdims=True) + 1e-12)


def accuracy(class_logits: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Fraction of argmax predictions equal to the labels."""
    pred = tf.argmax(class_logits, axis=-1, output_type=labels.dtype)
    return tf.reduce_mean(tf.cast(tf.equal(pred, labels), tf.float32))


def translate(images: tf.Tensor, shifts: tf.Tensor, fill: float = -1.0) -> tf.Tensor:
    """Move each image of [B,H,W,C] by shifts [B,2] (rows down, columns right) pixels; `fill` enters at the edges.

    Differentiable in the images (products with one-hot shift matrices), so a generator's gradient passes
    through it: DiffAugment's translation (Zhao et al. 2020). -1 is the background of images in [-1, 1].
    """
    h, w = tf.shape(images)[1], tf.shape(images)[2]
    rows = tf.one_hot(tf.range(h)[None, :] - shifts[:, :1], h, dtype=images.dtype)  # [B,H,H]; out of range: 0
    cols = tf.one_hot(tf.range(w)[None, :] - shifts[:, 1:], w, dtype=images.dtype)
    moved = tf.einsum("bij,bjwc->biwc", rows, images - fill)
    return tf.einsum("bkw,biwc->bikc", cols, moved) + fill


# ---------------------------------------------------------------- layers


class _WeightNorm(keras.layers.Layer):
    """Weight normalisation (Salimans & Kingma 2016): w = g * v / ||v|| per output unit, plus a bias.

    `data_dependent_init` sets g and b from one batch so every unit's pre-activation starts with
    mean 0 and standard deviation `init_scale`, as in Salimans et al.'s SSGAN code.
    """

    init_pass = False  # True only during data_dependent_init's one eager forward pass

    def __init__(self, init_scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.init_scale = init_scale

    def _add_weights(self, v_shape, units: int):
        self.v = self.add_weight(name="v", shape=v_shape, initializer=keras.initializers.RandomNormal(stddev=0.05))
        self.g = self.add_weight(name="g", shape=(units,), initializer=keras.initializers.Constant(self.init_scale))
        self.b = self.add_weight(name="b", shape=(units,), initializer="zeros")

    def _direction(self):
        return self.v / tf.norm(tf.reshape(self.v, [-1, self.v.shape[-1]]), axis=0)

    def call(self, x):
        if self.init_pass:
            t = self._project(x, self._direction())
            mean, var = tf.nn.moments(tf.cast(t, tf.float32), axes=list(range(len(t.shape) - 1)))
            g = self.init_scale / tf.sqrt(var + 1e-6)
            self.g.assign(tf.cast(g, self.g.dtype))
            self.b.assign(tf.cast(-mean * g, self.b.dtype))
        return self._project(x, self._direction() * self.g) + self.b

    def get_config(self):
        return {**super().get_config(), "init_scale": self.init_scale}


class WeightNormDense(_WeightNorm):
    """Dense layer with weight normalisation.

    It scales the outputs, x @ v * (g / ||v||), rather than the weights, as Salimans et al.'s code
    does: the same function, with fewer passes over the (larger) weight matrix. A step of the mlp
    pair takes ~10% less time. Conv layers keep scaling their (smaller) kernels.
    """

    def __init__(self, units: int, init_scale: float = 1.0, **kwargs):
        super().__init__(init_scale, **kwargs)
        self.units = units

    def build(self, input_shape):
        self._add_weights((input_shape[-1], self.units), self.units)

    def call(self, x):
        if self.init_pass:
            return super().call(x)
        return tf.matmul(x, self.v) * (self.g / tf.norm(self.v, axis=0)) + self.b

    def _project(self, x, w):
        return tf.matmul(x, w)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class WeightNormConv2D(_WeightNorm):
    """2-D convolution with weight normalisation over each output channel's kernel."""

    def __init__(self, filters: int, kernel_size: int = 3, strides: int = 1, padding: str = "same",
                 init_scale: float = 1.0, **kwargs):
        super().__init__(init_scale, **kwargs)
        self.filters, self.kernel_size, self.strides, self.padding = filters, kernel_size, strides, padding

    def build(self, input_shape):
        k = self.kernel_size
        self._add_weights((k, k, input_shape[-1], self.filters), self.filters)

    def _project(self, x, w):
        return tf.nn.conv2d(x, w, strides=self.strides, padding=self.padding.upper())

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding}


def data_dependent_init(net: keras.Model, x: tf.Tensor) -> None:
    """Salimans & Kingma's initialisation: one eager pass over `x` (layer by layer, in order) sets
    every weight-normalised layer's g and b so its pre-activations on `x` have mean 0, std init_scale."""
    wn = [layer for layer in net.layers if isinstance(layer, _WeightNorm)]
    for layer in wn:
        layer.init_pass = True
    try:
        net(x, training=True)
    finally:
        for layer in wn:
            layer.init_pass = False


def standard_normal(shape: tf.Tensor, seed) -> tf.Tensor:
    """float32 N(0, 1) samples by the Box-Muller transform of uniform draws; `seed` as keras.random takes it.

    TensorFlow's CPU normal kernel does the same transform one sample at a time; in vectorised ops it runs
    2.1x faster (131 against 58 M samples/s on one core), and lenet's Gaussian noise layers drew a third of
    its training step's time in normals.
    """
    n = tf.reduce_prod(shape)
    u = keras.random.uniform(tf.stack([2, (n + 1) // 2]), seed=seed)  # in [0, 1): 1 - u is never 0
    radius = tf.sqrt(-2.0 * tf.math.log(1.0 - u[0]))
    angle = (2.0 * math.pi) * u[1]
    return tf.reshape(tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], 0)[:n], shape)


class LeakyReLU(keras.layers.LeakyReLU):
    """keras.layers.LeakyReLU whose gradient reads its output, not its input (the same values: both have x's sign).

    With keras' own layer after a weight-normalised convolution, Grappler's remapper tries to fuse conv, bias and
    leaky ReLU while the gradient still reads the bias add's output; it then fails for the whole training step
    and logs an `E ... remapper failed` line at the start of every lenet and conv run.
    """

    def call(self, inputs):
        return leaky_relu(inputs, self.negative_slope)


def leaky_relu(x: tf.Tensor, alpha: float) -> tf.Tensor:
    """tf.nn.leaky_relu(x, alpha) (alpha > 0) with a gradient computed from its output."""

    @tf.custom_gradient
    def fn(x):
        y = tf.nn.leaky_relu(x, alpha)
        return y, lambda dy: tf.raw_ops.LeakyReluGrad(gradients=dy, features=y, alpha=alpha)

    return fn(x)


class GaussianNoise(keras.layers.GaussianNoise):
    """keras.layers.GaussianNoise (additive, training only, same weights and seeds) with `standard_normal`.

    Any std >= 0 (keras' own layer refuses one above 1).
    """

    def __init__(self, stddev: float, seed=None, **kwargs):
        if not stddev >= 0:
            raise ValueError(f"noise std must be >= 0, got {stddev}")
        super().__init__(min(stddev, 1.0), seed=seed, **kwargs)
        self.stddev = stddev

    def call(self, inputs, training=False):
        if training and self.stddev > 0:
            noise = self.stddev * standard_normal(tf.shape(inputs), self.seed_generator)
            return inputs + tf.cast(noise, inputs.dtype)
        return inputs


def keep_mask(shape: tf.Tensor, rate: float, seed) -> tf.Tensor:
    """Inverted dropout's float32 mask: 0 with probability `rate`, else 1 / (1 - rate); `seed` as keras.random takes it.

    Each element compares one random byte (two when `rate` is not a multiple of 1/256, so the rate is kept to
    within 2^-17) with a threshold: four elements per 32-bit random number, where TensorFlow's stateless dropout
    draws a float per element: on 1.88M elements (the conv D's first dropout on 300 images), forward and
    backward took 7.0 ms over the multiply's own cost that way and 2.4 ms this way, on two threads.
    """
    if not 0 <= rate < 1:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    bits = 8 if float(rate * 256).is_integer() else 16
    threshold = min(round(rate * 2 ** bits), 2 ** bits - 1)  # a rate within 2^-17 of 1 keeps 1 in 65,536
    per_word = 32 // bits
    n = tf.reduce_prod(shape)
    words = tf.reshape((n + per_word - 1) // per_word, [1])  # n * bits would overflow int32 from 2^27 elements
    tf_seed = keras.random.randint([2], -2 ** 31, 2 ** 31 - 1, dtype="int32", seed=seed)
    draws = tf.random.stateless_uniform(words, tf_seed, minval=None, maxval=None, dtype=tf.int32)  # all 32 bits
    units = tf.reshape(tf.bitcast(draws, tf.uint8 if bits == 8 else tf.uint16), [-1])[:n]
    keep = tf.cast(units >= tf.constant(threshold, units.dtype), tf.float32)
    return tf.reshape(keep * (2 ** bits / (2 ** bits - threshold)), shape)


class Dropout(keras.layers.Dropout):
    """keras.layers.Dropout (inverted, training only, same weights and seeds; any arguments but noise_shape) with
    `keep_mask`'s masks."""

    def __init__(self, rate: float, **kwargs):
        if kwargs.get("noise_shape") is not None:
            raise ValueError("ops.Dropout draws one mask value per element; it takes no noise_shape")
        super().__init__(rate, **kwargs)

    def call(self, inputs, training=False):
        if training and self.rate > 0:
            return inputs * tf.cast(keep_mask(tf.shape(inputs), self.rate, self.seed_generator), inputs.dtype)
        return inputs


class ZeroLogit(keras.layers.Layer):
    """The implicit head's fake logit: a constant 0 for every image."""

    def call(self, x):
        return tf.zeros_like(x[:, 0])


class CenterCrop2D(keras.layers.Layer):
    """Crop the spatial centre to (height, width): lets generators serve any image size."""

    def __init__(self, height: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width = height, width

    def call(self, x):
        top = (x.shape[1] - self.height) // 2
        left = (x.shape[2] - self.width) // 2
        return x[:, top:top + self.height, left:left + self.width, :]

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width}

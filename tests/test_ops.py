"""Losses against hand-computed values; custom layers' shapes and maths."""
import math

import numpy as np
import pytest
import tensorflow as tf

import ops


def softplus(x):
    return math.log1p(math.exp(x))


def test_real_logit_is_logsumexp_minus_fake_logit():
    logits = tf.constant([[0.0, math.log(3.0)]])
    assert ops.real_logit(logits, tf.constant([0.0])).numpy()[0] == pytest.approx(math.log(4.0), rel=1e-6)
    assert ops.real_logit(logits, tf.constant([math.log(4.0)])).numpy()[0] == pytest.approx(0.0, abs=1e-6)


def test_supervised_loss_is_cross_entropy():
    logits = tf.constant([[2.0, 0.0], [0.0, 0.0]])
    expected = (-math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(2)) / 2
    assert ops.supervised_loss(logits, tf.constant([0, 1])).numpy() == pytest.approx(expected, rel=1e-6)


def test_unsupervised_loss_matches_binary_cross_entropy():
    # D(real) = sigmoid(l): loss = -log sigmoid(l_real) - log(1 - sigmoid(l_fake))
    loss = ops.unsupervised_loss(tf.constant([1.0, 2.0]), tf.constant([-1.0, 0.5]))
    expected = (softplus(-1.0) + softplus(-2.0)) / 2 + (softplus(-1.0) + softplus(0.5)) / 2
    assert loss.numpy() == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_targets_one_minus_s_on_real_only():
    s = 0.1
    loss = ops.unsupervised_loss(tf.constant([1.0]), tf.constant([-1.0]), label_smoothing=s)
    expected = (1 - s) * softplus(-1.0) + s * softplus(1.0) + softplus(-1.0)
    assert loss.numpy() == pytest.approx(expected, rel=1e-6)


def test_supervised_smoothing_aims_at_one_minus_s_plus_s_over_n_on_the_true_class():
    logits, labels, s = tf.constant([[2.0, 0.0, -1.0]]), tf.constant([0]), 0.3
    logp = np.log(np.exp([2.0, 0.0, -1.0]) / np.exp([2.0, 0.0, -1.0]).sum())
    target = np.array([1 - s + s / 3, s / 3, s / 3])
    assert ops.supervised_loss(logits, labels, s).numpy() == pytest.approx(-(target * logp).sum(), rel=1e-6)
    assert ops.supervised_loss(logits, labels).numpy() == pytest.approx(-logp[0], rel=1e-6)


def test_losses_are_stable_for_huge_logits():
    big = tf.constant([1e4, -1e4])
    assert np.isfinite(ops.unsupervised_loss(big, big).numpy())
    assert np.isfinite(ops.generator_gan_loss(big).numpy())
    assert np.isfinite(ops.real_logit(tf.constant([[1e4, 1e4]]), tf.constant([0.0])).numpy()).all()


def test_generator_gan_loss_is_minus_log_d_real():
    assert ops.generator_gan_loss(tf.constant([0.0])).numpy() == pytest.approx(math.log(2.0), rel=1e-6)


def test_feature_matching_is_squared_distance_of_means():
    real = tf.constant([[1.0, 2.0], [3.0, 4.0]])   # mean [2, 3]
    fake = tf.constant([[0.0, 0.0], [2.0, 2.0]])   # mean [1, 1]
    assert ops.feature_matching_loss(real, fake).numpy() == pytest.approx((1 + 4) / 2)


def test_entropy_loss_is_log_n_for_uniform_and_zero_for_certain():
    assert ops.entropy_loss(tf.zeros([3, 4])).numpy() == pytest.approx(math.log(4), rel=1e-6)
    assert ops.entropy_loss(tf.constant([[100.0, 0.0]])).numpy() == pytest.approx(0.0, abs=1e-6)


def test_balance_loss_is_kl_of_the_mean_posterior_to_uniform():
    certain = tf.constant([[60.0, 0.0, 0.0], [0.0, 60.0, 0.0], [0.0, 0.0, 60.0]])
    assert ops.balance_loss(certain).numpy() == pytest.approx(0.0, abs=1e-6)  # confident, but evenly spread
    assert ops.balance_loss(tf.zeros([5, 4])).numpy() == pytest.approx(0.0, abs=1e-6)
    assert ops.balance_loss(certain[:1]).numpy() == pytest.approx(math.log(3), rel=1e-6)  # all one class
    mean = np.array([0.5, 0.25, 0.25])  # two rows whose posteriors average to this
    logits = tf.math.log(tf.constant([[0.75, 0.125, 0.125], [0.25, 0.375, 0.375]]))
    expected = float(np.sum(mean * np.log(mean * 3)))
    assert ops.balance_loss(logits).numpy() == pytest.approx(expected, rel=1e-5)


def test_uniform_kl_is_zero_for_uniform_posteriors_and_log_n_for_certain_ones():
    assert ops.uniform_kl(tf.fill([4, 5], 3.0)).numpy() == pytest.approx(0.0, abs=1e-6)
    certain = tf.constant([[60.0, 0.0, 0.0], [0.0, 0.0, 60.0]])
    assert ops.uniform_kl(certain).numpy() == pytest.approx(math.log(3), rel=1e-6)
    p = np.array([0.5, 0.25, 0.25])  # each row's own KL, then the mean (not the KL of the mean, as balance_loss)
    both = tf.math.log(tf.constant([p, p[[1, 0, 2]]], tf.float32))
    assert ops.uniform_kl(both).numpy() == pytest.approx(float(np.sum(p * np.log(3 * p))), rel=1e-5)


def test_consistency_loss_is_the_squared_distance_of_the_two_posteriors():
    a = tf.math.log(tf.constant([[0.5, 0.5, 1e-30], [1.0, 1e-30, 1e-30]]))
    b = tf.math.log(tf.constant([[0.5, 0.25, 0.25], [1.0, 1e-30, 1e-30]]))
    # row 1: (0, 0.25, -0.25) -> 0.125; row 2: identical -> 0; the mean over rows
    assert ops.consistency_loss(a, b).numpy() == pytest.approx(0.0625, rel=1e-5)
    assert ops.consistency_loss(b, a).numpy() == pytest.approx(0.0625, rel=1e-5)
    assert ops.consistency_loss(a + 3.0, a).numpy() == pytest.approx(0.0, abs=1e-7)  # logits' shift: same posterior


def test_pull_away_is_zero_for_orthogonal_and_one_for_parallel():
    assert ops.pull_away_loss(tf.eye(3)).numpy() == pytest.approx(0.0, abs=1e-6)
    assert ops.pull_away_loss(tf.constant([[1.0, 1.0], [2.0, 2.0]])).numpy() == pytest.approx(1.0, rel=1e-6)


def test_kl_divergence_is_zero_for_equal_and_matches_hand_value():
    p = tf.constant([[0.0, math.log(3.0)]])  # posterior [1/4, 3/4]
    assert ops.kl_divergence(p, p).numpy() == pytest.approx(0.0, abs=1e-7)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert ops.kl_divergence(p, tf.zeros([1, 2])).numpy() == pytest.approx(expected, rel=1e-5)


def test_virtual_adversarial_direction_has_norm_eps_and_beats_random_directions():
    tf.random.set_seed(0)
    w = tf.random.normal([20, 5])
    net = lambda x: tf.matmul(tf.tanh(x), w)  # noqa: E731
    x = tf.random.normal([64, 4, 5])  # any shape: the norm is over all but the batch axis
    flat = lambda t: net(tf.reshape(t, [64, 20]))  # noqa: E731
    clean = flat(x)
    r = ops.virtual_adversarial_direction(flat, x, clean, tf.random.normal(x.shape), eps=0.5)
    np.testing.assert_allclose(np.linalg.norm(r.numpy().reshape(64, -1), axis=1), 0.5, rtol=1e-5)
    random = 0.5 * tf.math.l2_normalize(tf.reshape(tf.random.normal(x.shape), [64, -1]), axis=1)
    kl_adv = ops.kl_divergence(clean, flat(x + r)).numpy()
    kl_random = ops.kl_divergence(clean, flat(x + tf.reshape(random, x.shape))).numpy()
    assert kl_adv > 5 * kl_random


def test_mixup_blends_each_image_with_one_other_nearer_itself_and_the_labels_alike():
    x = tf.constant(np.arange(8, dtype=np.float32)[:, None, None, None] * 10 + np.zeros((8, 2, 2, 1), np.float32))
    y = tf.range(8)  # one class per image, so each target names the two images blended
    mixed, target = ops.mixup(x, y, 8, 0.5, tf.constant([3, 4]))
    m, t = mixed.numpy()[:, 0, 0, 0], target.numpy()
    np.testing.assert_allclose(t.sum(1), 1, rtol=1e-6)
    partners = []
    for i in range(8):
        own = t[i, i]
        assert own >= 0.5 - 1e-6  # max(l, 1 - l)
        j = int(np.argmax(np.where(np.arange(8) == i, -1, t[i]))) if own < 1 - 1e-6 else i
        partners.append(j)
        # the image is the same blend of x_i and x_j as its target is of their labels
        assert m[i] == pytest.approx(10 * (own * i + (1 - own) * j), abs=1e-3)
    assert sorted(partners) == list(range(8))  # a permutation of the batch
    again, _ = ops.mixup(x, y, 8, 0.5, tf.constant([3, 4]))
    np.testing.assert_array_equal(again.numpy(), mixed.numpy())  # stateless: the seed decides
    other, _ = ops.mixup(x, y, 8, 0.5, tf.constant([5, 6]))
    assert not np.array_equal(other.numpy(), mixed.numpy())


def test_accuracy():
    logits = tf.constant([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert ops.accuracy(logits, tf.constant([0, 1, 1])).numpy() == pytest.approx(2 / 3)


def test_translate_moves_each_image_fills_the_edge_and_passes_gradients():
    x = tf.constant(np.random.default_rng(0).uniform(-1, 1, (3, 5, 4, 2)), tf.float32)
    shifts = tf.constant([[1, -2], [0, 0], [-5, 1]])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = ops.translate(x, shifts)
        loss = tf.reduce_sum(y * tf.reshape(tf.range(1.0, 121.0), y.shape) / 10.0)
    expected = np.full((3, 5, 4, 2), -1.0, np.float32)
    expected[0, 1:, :2] = x[0, :-1, 2:]  # one row down, two columns left
    expected[1] = x[1]
    expected[2, :, 1:] = -1.0  # moved up by the whole height: nothing left
    np.testing.assert_allclose(y.numpy(), expected, atol=1e-6)
    grad = tape.gradient(loss, x).numpy()
    assert grad[0, -1].tolist() == np.zeros((4, 2)).tolist()  # the bottom row left the picture
    assert (grad[0, :-1, 2:] != 0).all() and (grad[2] == 0).all() and (grad[1] != 0).all()


def test_weight_norm_dense_has_norm_g_columns():
    layer = ops.WeightNormDense(5, init_scale=2.0)
    layer.build((None, 7))
    w = (layer(tf.eye(7)) - layer.b).numpy()   # rows of identity give the effective weight matrix
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), 2.0, rtol=1e-5)


def test_weight_norm_conv_kernel_has_unit_norm_per_filter():
    layer = ops.WeightNormConv2D(4, 3, strides=2)
    y = layer(tf.zeros([2, 9, 10, 3]))
    assert y.shape == (2, 5, 5, 4)


@pytest.mark.parametrize("layer", [ops.WeightNormDense(6, init_scale=0.5), ops.WeightNormConv2D(6, 3)])
def test_data_dependent_init_standardises_pre_activations(layer):
    import keras
    x_in = keras.Input((5, 5, 2))
    h = keras.layers.Flatten()(x_in) if isinstance(layer, ops.WeightNormDense) else x_in
    net = keras.Model(x_in, layer(h))
    x = tf.random.stateless_normal([64, 5, 5, 2], seed=[1, 2], mean=3.0, stddev=4.0)
    before = net(x).numpy()
    ops.data_dependent_init(net, x)
    y = net(x).numpy().reshape(-1, 6)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.std(0), layer.init_scale, rtol=1e-3)
    assert not layer.init_pass and np.abs(before.reshape(-1, 6).mean(0)).max() > 0.1  # it changed something


def test_standard_normal_has_the_moments_and_tails_of_n01_for_odd_sizes():
    import keras
    z = ops.standard_normal(tf.constant([200_001]), keras.random.SeedGenerator(4)).numpy()
    assert z.shape == (200_001,) and np.isfinite(z).all()
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    assert abs(np.mean(z ** 4) - 3.0) < 0.1  # Gaussian kurtosis; a uniform's would be 1.8
    assert abs(np.mean(np.abs(z) > 1.96) - 0.05) < 0.003
    w = ops.standard_normal(tf.constant([100_000]), keras.random.SeedGenerator(4)).numpy()
    for f in (lambda t: t, np.square):  # the cos and sin halves share radii: independent only if Box-Muller is right
        assert abs(np.corrcoef(f(w[:50_000]), f(w[50_000:]))[0, 1]) < 0.02


@pytest.mark.parametrize("rate", [0.5, 0.2, 0.0])
def test_keep_mask_drops_rate_of_the_elements_and_scales_the_rest_for_odd_sizes(rate):
    import keras
    shape = tf.constant([3, 1001, 1333])  # 4.0M elements, not a multiple of the 2 or 4 per random word
    m = ops.keep_mask(shape, rate, keras.random.SeedGenerator(2)).numpy()
    assert m.shape == (3, 1001, 1333)
    kept = np.unique(m[m > 0])
    assert len(kept) == 1 and abs(kept[0] * (1 - rate) - 1) < 1e-5  # 16-bit thresholds keep rate within 2^-17
    # std of the dropped fraction: <= 0.00025; one unit of 256 off the threshold would move it by 0.0039
    assert abs(np.mean(m == 0) - rate) < 0.0015 and abs(m.mean() - 1.0) < 0.003
    flat = (m.reshape(-1) > 0).astype(np.float64)  # bytes of one random word must be independent
    if rate:
        assert abs(np.corrcoef(flat[:-1], flat[1:])[0, 1]) < 0.02
        assert abs(np.corrcoef(flat[:-4], flat[4:])[0, 1]) < 0.02


def test_keep_mask_takes_any_rate_below_one():
    import keras
    m = ops.keep_mask(tf.constant([1000]), 1 - 1e-7, keras.random.SeedGenerator(0)).numpy()
    assert np.isfinite(m).all() and np.mean(m == 0) > 0.99
    with pytest.raises(ValueError, match="rate"):
        ops.keep_mask(tf.constant([10]), 1.0, keras.random.SeedGenerator(0))


def test_dropout_is_keras_dropout_in_training_only_fresh_each_call_with_gradients_through_the_mask():
    layer = ops.Dropout(0.5, seed=3)
    x = tf.fill([64, 7, 7, 3], 2.0)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())
    with tf.GradientTape() as tape:
        tape.watch(x)
        a = layer(x, training=True)
    assert set(np.unique(a.numpy())) == {0.0, 4.0}
    np.testing.assert_array_equal(tape.gradient(a, x).numpy(), a.numpy() / 2.0)
    assert not np.array_equal(a.numpy(), layer(x, training=True).numpy())
    with pytest.raises(ValueError, match="noise_shape"):
        ops.Dropout(0.5, noise_shape=(1, 1, 1, 3))


@pytest.mark.parametrize("dtype", [tf.float32, tf.float16, tf.bfloat16])
def test_leaky_relu_is_keras_leaky_relu_with_the_same_gradient(dtype):
    x = tf.constant(np.concatenate([np.random.default_rng(0).normal(size=997), [0.0, -0.0, 1e-30]]), dtype)
    dy = tf.constant(np.random.default_rng(1).normal(size=1000), dtype)
    out, grads = [], []
    for layer in (ops.LeakyReLU(0.2, dtype=dtype), tf.keras.layers.LeakyReLU(0.2, dtype=dtype)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        out.append(y.numpy().astype(np.float32))
        grads.append(tape.gradient(y, x, output_gradients=dy).numpy().astype(np.float32))
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(grads[0], grads[1])
    assert isinstance(ops.LeakyReLU(0.2), tf.keras.layers.LeakyReLU)


def test_gaussian_noise_adds_stddev_noise_in_training_only_and_fresh_each_call():
    layer = ops.GaussianNoise(0.5, seed=1)
    x = tf.fill([64, 7, 7, 3], 2.0)
    a, b = layer(x, training=True).numpy(), layer(x, training=True).numpy()
    assert abs((a - 2.0).std() - 0.5) < 0.02 and abs((a - 2.0).mean()) < 0.02
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())

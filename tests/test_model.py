"""Every architecture, generator and head builds for odd sizes and gives the documented outputs."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import model


@pytest.mark.parametrize("arch", model.ARCHS)
@pytest.mark.parametrize("head", model.HEADS)
@pytest.mark.parametrize("shape", [(28, 28, 1), (24, 40, 3), (9, 13, 1)])
def test_discriminator_and_generator_shapes(arch, head, shape):
    keras.utils.set_random_seed(0)  # unseeded, the tiny mlp's ReLUs can all be dead for 3 images: features 0
    D = model.build_discriminator(arch, shape, 7, head, width=8 if arch == "conv" else 32)
    G = model.build_generator(model.DEFAULT_GENERATOR[arch], shape, z_dim=5, width=8)
    x = G(np.random.randn(3, 5).astype("float32"), training=False)
    assert x.shape == (3, *shape)
    assert np.abs(x.numpy()).max() <= 1.0
    logits, fake, feats = D(x, training=False)
    assert logits.shape == (3, 7) and fake.shape == (3,) and feats.shape[0] == 3
    if head == "implicit":
        assert np.all(fake.numpy() == 0)
    else:
        assert np.any(fake.numpy() != 0)


@pytest.mark.parametrize("g_arch", model.GENERATORS)
@pytest.mark.parametrize("shape", [(28, 28, 1), (9, 13, 3)])
def test_every_generator_fits_every_shape(g_arch, shape):
    G = model.build_generator(g_arch, shape, z_dim=5, width=8)
    x = G(np.random.randn(2, 5).astype("float32"), training=False)
    assert x.shape == (2, *shape) and np.abs(x.numpy()).max() <= 1.0


def test_unknown_arch_generator_and_head_are_errors():
    with pytest.raises(ValueError, match="unknown arch"):
        model.build_discriminator("resnet", (8, 8, 1), 2)
    with pytest.raises(ValueError, match="unknown generator"):
        model.build_generator("lenet", (8, 8, 1))
    with pytest.raises(ValueError, match="unknown head"):
        model.build_discriminator("mlp", (8, 8, 1), 2, head="binary")


@pytest.mark.parametrize("arch", model.ARCHS)
def test_input_dropout_is_noise_in_training_only(arch):
    keras.utils.set_random_seed(0)
    x = np.random.uniform(-1, 1, (4, 12, 12, 1)).astype("float32")
    clean = model.build_discriminator(arch, x.shape[1:], 3, width=8, input_noise=0)
    assert not any(isinstance(layer, keras.layers.Dropout) for layer in clean.layers[:2])  # none on the pixels
    D = model.build_discriminator(arch, x.shape[1:], 3, width=8, input_noise=0, input_dropout=0.5)
    for layer in D.layers:
        if isinstance(layer, keras.layers.Dropout) and layer.rate != 0.5:
            layer.rate = 0.0  # the conv trunk's own dropout: off, to see the input dropout alone
    np.testing.assert_array_equal(D(x, training=False)[0], D(x, training=False)[0])
    assert not np.allclose(D(x, training=True)[0], D(x, training=False)[0])


@pytest.mark.parametrize("arch", ["mlp", "lenet"])
def test_hidden_noise_sets_every_hidden_layers_noise_and_keeps_the_layout(arch):
    """--d_hidden_noise: the std after each hidden layer, in training only; at 0 the layers stay, so a
    checkpoint's layer positions do not depend on it."""
    keras.utils.set_random_seed(0)
    x = np.random.uniform(-1, 1, (8, 12, 12, 1)).astype("float32")
    default = model.build_discriminator(arch, x.shape[1:], 3, width=8, input_noise=0)
    quiet = model.build_discriminator(arch, x.shape[1:], 3, width=8, input_noise=0, hidden_noise=0)
    loud = model.build_discriminator(arch, x.shape[1:], 3, width=8, input_noise=0, hidden_noise=2.0)
    stds = lambda D: [layer.stddev for layer in D.layers if isinstance(layer, keras.layers.GaussianNoise)]  # noqa: E731
    hidden = 5 if arch == "mlp" else 4
    assert stds(default) == [model.HIDDEN_NOISE] * hidden and stds(quiet) == [0.0] * hidden
    assert [type(layer) for layer in quiet.layers] == [type(layer) for layer in default.layers]
    quiet.set_weights(default.get_weights())
    loud.set_weights(default.get_weights())
    inference = default(x, training=False)[0].numpy()
    for D in (quiet, loud):
        np.testing.assert_array_equal(D(x, training=False)[0], inference)
    np.testing.assert_array_equal(quiet(x, training=True)[0], inference)
    shift = lambda D: np.abs(D(x, training=True)[0].numpy() - inference).mean()  # noqa: E731
    assert 0 < shift(default) < shift(loud)


@pytest.mark.parametrize("arch", ["mlp", "lenet"])
def test_clean_features_are_the_last_hidden_layer_before_its_noise(arch):
    """--fm_features picks an output, not other layers: one checkpoint serves both, and in inference they
    agree; in training the clean features are ReLU outputs (>= 0) and the noisy ones carry the noise."""
    keras.utils.set_random_seed(0)
    x = np.random.uniform(-1, 1, (16, 12, 12, 1)).astype("float32")
    clean = model.build_discriminator(arch, x.shape[1:], 3, width=8, features="clean")
    noisy = model.build_discriminator(arch, x.shape[1:], 3, width=8, features="noisy")
    noisy.set_weights(clean.get_weights())
    for a, b in zip(clean(x, training=False), noisy(x, training=False)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert np.all(clean(x, training=True)[2].numpy() >= 0)
    assert np.any(noisy(x, training=True)[2].numpy() < 0)
    with pytest.raises(ValueError, match="unknown features"):
        model.build_discriminator(arch, x.shape[1:], 3, width=8, features="middle")


def test_tta_mirror_averages_with_the_mirror_image_where_a_mirror_class_is_predicted_unsurely(monkeypatch):
    keras.utils.set_random_seed(1)
    D = model.build_discriminator("lenet", (8, 8, 1), 3, width=4)
    x = np.random.uniform(-1, 1, (200, 8, 8, 1)).astype("float32")
    p = tf.nn.softmax(D(x, training=False)[0]).numpy()
    q = tf.nn.softmax(D(x[:, :, ::-1], training=False)[0]).numpy()
    np.testing.assert_allclose(model.class_probabilities(D, x), p, atol=1e-6)
    mirror = tuple(np.unique(p.argmax(1))[:-1].tolist())  # predicted classes, but one
    monkeypatch.setattr(model, "MIRROR_GATE", float(np.median(p.max(1))))
    ask = np.isin(p.argmax(1), mirror) & (p.max(1) < model.MIRROR_GATE)
    assert 0 < ask.sum() and np.any(np.isin(p.argmax(1), mirror) & ~ask)  # both sides of the gate
    want = np.where(ask[:, None], (p + q) / 2, p)
    np.testing.assert_allclose(model.class_probabilities(D, x, mirror), want, atol=1e-6)
    monkeypatch.setattr(model, "MIRROR_GATE", 0.0)  # nothing to mirror: one pass's probabilities
    np.testing.assert_allclose(model.class_probabilities(D, x, mirror), p, atol=1e-6)


def test_prior_offsets_shift_the_mean_prediction_to_the_prior_and_no_further():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 4, (5000, 4)) + np.array([3.0, 0, -2, 0])  # overconfident and biased to class 0
    logits[:10, 3] = -200  # a class D rules out for some images (float32 softmax: probability 0)
    prior = np.array([0.1, 0.2, 0.3, 0.4])
    b = model.prior_offsets(logits.astype(np.float32), prior)
    np.testing.assert_allclose(tf.nn.softmax(logits + b).numpy().mean(0), prior, atol=1e-5)
    assert abs(b.mean()) < 1e-9 and b[0] < b[1] < b[2]  # the favoured class is held back most
    same = np.tile(logits[20:21], (100, 1))  # one image: the offsets make it the prior exactly
    np.testing.assert_allclose(tf.nn.softmax(same + model.prior_offsets(same, prior)).numpy()[0], prior, atol=1e-6)
    np.testing.assert_allclose(model.prior_offsets(np.zeros((50, 4)), np.full(4, 0.25)), 0, atol=1e-12)
    shifted = logits + np.array([5.0, -1, 2, 0])  # offsets answer for a constant shift of the logits
    np.testing.assert_allclose(model.prior_offsets(shifted, prior) - b, -(np.array([5.0, -1, 2, 0]) - 1.5),
                               atol=1e-4)


@pytest.mark.parametrize("drop", [30, 50, 200])
def test_prior_offsets_lift_a_class_d_all_but_rules_out(drop):
    logits = np.random.default_rng(1).normal(0, 2, (5000, 5))
    logits[:, 3] -= drop  # mean probability e^-drop: a Newton step without bounds overshoots by orders of magnitude
    b = model.prior_offsets(logits, np.full(5, 0.2))
    np.testing.assert_allclose(tf.nn.softmax(logits + b).numpy().mean(0), 0.2, atol=1e-5)


def test_prior_offsets_leave_out_non_finite_logits_and_push_a_class_of_prior_zero_down():
    logits = np.random.default_rng(2).normal(0, 2, (1000, 4))
    logits[7, 1] = np.nan
    b = model.prior_offsets(logits, [0.5, 0.5, 0.0, 0.0])
    finite = logits[np.isfinite(logits).all(axis=1)]
    np.testing.assert_allclose(tf.nn.softmax(finite + b).numpy().mean(0), [0.5, 0.5, 0, 0], atol=1e-5)
    assert np.isfinite(b).all() and b[2] < b[0] - model.MAX_OFFSET + 1
    np.testing.assert_array_equal(model.prior_offsets(np.full((3, 4), np.nan), np.full(4, 0.25)), 0)


def test_class_probabilities_with_offsets_are_the_shifted_softmax(monkeypatch):
    keras.utils.set_random_seed(2)
    D = model.build_discriminator("mlp", (6, 6, 1), 3, width=16)
    x = np.random.uniform(-1, 1, (64, 6, 6, 1)).astype("float32")
    p = tf.nn.softmax(D(x, training=False)[0]).numpy()
    b = np.array([2.0, -1.0, -1.0], np.float32)
    want = p * np.exp(b) / (p * np.exp(b)).sum(1, keepdims=True)
    np.testing.assert_allclose(model.class_probabilities(D, x, (), tf.constant(b)), want, rtol=1e-5, atol=1e-7)
    assert (want.argmax(1) != p.argmax(1)).any()
    q = tf.nn.softmax(D(x[:, :, ::-1], training=False)[0]).numpy()
    mirrored = q * np.exp(b) / (q * np.exp(b)).sum(1, keepdims=True)  # the mirror image's, shifted alike
    monkeypatch.setattr(model, "MIRROR_GATE", float(np.median(want.max(1))))
    ask = (want.argmax(1) == 0) & (want.max(1) < model.MIRROR_GATE)  # the gate sees the shifted probabilities
    assert ask.any() and (~ask).any()
    np.testing.assert_allclose(model.class_probabilities(D, x, (0,), tf.constant(b)),
                               np.where(ask[:, None], (want + mirrored) / 2, want), rtol=1e-5, atol=1e-7)

"""Both architectures and heads build for odd sizes and give the documented outputs."""
import keras
import numpy as np
import pytest

import model


@pytest.mark.parametrize("arch", model.ARCHS)
@pytest.mark.parametrize("head", model.HEADS)
@pytest.mark.parametrize("shape", [(28, 28, 1), (24, 40, 3), (9, 13, 1)])
def test_discriminator_and_generator_shapes(arch, head, shape):
    keras.utils.set_random_seed(0)  # unseeded, the tiny mlp's ReLUs can all be dead for 3 images: features 0
    D = model.build_discriminator(arch, shape, 7, head, width=8 if arch == "conv" else 32)
    G = model.build_generator(arch, shape, z_dim=5, width=8)
    x = G(np.random.randn(3, 5).astype("float32"), training=False)
    assert x.shape == (3, *shape)
    assert np.abs(x.numpy()).max() <= 1.0
    logits, fake, feats = D(x, training=False)
    assert logits.shape == (3, 7) and fake.shape == (3,) and feats.shape[0] == 3
    if head == "implicit":
        assert np.all(fake.numpy() == 0)
    else:
        assert np.any(fake.numpy() != 0)


def test_unknown_arch_and_head_are_errors():
    with pytest.raises(ValueError, match="unknown arch"):
        model.build_discriminator("resnet", (8, 8, 1), 2)
    with pytest.raises(ValueError, match="unknown head"):
        model.build_discriminator("mlp", (8, 8, 1), 2, head="binary")

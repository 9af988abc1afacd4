"""Gradients through a channels_last net's Flatten: back in channels_last inside the block, the same values,
the hooks gone afterwards, and training and attacks running inside it."""

import torch

import gloro
import gloro.attack
import gloro.layout
import gloro.training
from gloro.layout import matching_gradients


def channels_last_2c2f():
    net = gloro.GloroNet(gloro.create_model("2C2F", (1, 12, 12), 10, seed=0), 0.3)
    net.model.to(memory_format=torch.channels_last)
    return net


def gradient_at_the_last_conv_block(model, x):
    """The gradient reaching the ReLU output that the Flatten reads, and every parameter's gradient."""
    seen = {}

    def keep(module, args, output):
        if output.dim() == 4:
            output.register_hook(lambda grad: seen.__setitem__("last", grad))

    layers = list(model)
    before_flatten = layers[next(i for i, layer in enumerate(layers) if isinstance(layer, torch.nn.Flatten)) - 1]
    handles = [before_flatten.register_forward_hook(keep)]
    try:
        out = model(x)
        grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    finally:
        for handle in handles:
            handle.remove()
    return seen["last"], grads


def test_the_gradient_comes_back_channels_last_with_the_same_values():
    net = channels_last_2c2f()
    net.model.double()  # float64: the parameters' gradients then agree up to sums' rounding, ~1e-15
    x = torch.rand(6, 1, 12, 12, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    before, expected = gradient_at_the_last_conv_block(net.model, x)
    assert not before.is_contiguous(memory_format=torch.channels_last)  # what makes ReLU's backward slow
    with matching_gradients(net.model) as hooked:
        assert hooked == 1
        inside, got = gradient_at_the_last_conv_block(net.model, x)
    assert inside.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(inside, before)
    for mine, theirs in zip(got, expected):  # sums of at most a few hundred float64 terms: γ_n ≈ 1e-13 of them
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    after, _ = gradient_at_the_last_conv_block(net.model, x)
    assert not after.is_contiguous(memory_format=torch.channels_last)  # the hook is gone


def test_a_contiguous_net_is_left_as_it_is():
    net = gloro.GloroNet(gloro.create_model("2C2F", (1, 12, 12), 10, seed=0), 0.3)
    x = torch.rand(4, 1, 12, 12)
    before, _ = gradient_at_the_last_conv_block(net.model, x)
    with matching_gradients(net.model):
        inside, _ = gradient_at_the_last_conv_block(net.model, x)
    assert torch.equal(inside, before) and inside.stride() == before.stride()


def test_training_and_attacks_run_inside_it(monkeypatch):
    entered = []
    original = gloro.layout.matching_gradients

    def counting(model):
        entered.append(model)
        return original(model)

    training = gloro.training
    monkeypatch.setattr(training, "matching_gradients", counting)
    monkeypatch.setattr(gloro.attack, "matching_gradients", counting)
    net = channels_last_2c2f()
    images, labels = torch.rand(32, 1, 12, 12), torch.randint(0, 10, (32,))
    gloro.train(net, images, labels, gloro.TrainingRecipe(epochs=2, batch_size=16), progress=False)
    assert entered == [net.model, net.model]  # once per epoch
    gloro.pgd_accuracy(net, images, labels, 0.3, steps=2, restarts=1, progress=False)
    assert entered[-1] is net.model and len(entered) == 3

"""Single-channel convs' input gradients by GEMM and col2im: the same gradients as autograd's, the same
outputs, the model restored afterwards, and attacks and the tightness search actually using them."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gloro
import gloro.input_gradient
from gloro.input_gradient import fold_input_gradient, fold_input_gradients, folds, inputs_only
from gloro.tightness import global_tightness

SHAPES = [  # (in_channels, out_channels, size, kernel, stride, padding)
    (1, 16, 28, 4, 2, 1),  # the 2C2F's first conv
    (1, 32, 28, 3, 1, 1),  # the 4C3F's
    (1, 16, 27, 4, 2, 0),  # the last input row and column reach no output
    (2, 5, 11, 5, 3, 2),
    (3, 8, 9, 3, 1, 1),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_the_folded_input_gradient_is_autograds(shape):
    cin, cout, size, kernel, stride, padding = shape
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(5, cin, size, size, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(cout, cin, kernel, kernel, dtype=torch.float64, generator=generator)
    out = F.conv2d(x, weight, stride=stride, padding=padding)
    grad = torch.randn(out.shape, dtype=torch.float64, generator=generator)
    (expected,) = torch.autograd.grad(out, x, grad)
    folded = fold_input_gradient(grad, weight, (size, size), (stride, stride), (padding, padding))
    assert folded.shape == x.shape
    torch.testing.assert_close(folded, expected, rtol=1e-12, atol=1e-12)


def two_convs() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 4, 2, 1), nn.ReLU(), nn.Conv2d(8, 4, 3, 1, 1), nn.Flatten(), nn.Linear(196, 3))


def test_inside_the_block_outputs_are_the_same_and_every_gradient_agrees():
    model = two_convs().double()  # float64: the two gradients are then equal up to sums' rounding, ~1e-15
    x = torch.rand(6, 1, 14, 14, dtype=torch.float64, requires_grad=True)
    out = model(x)
    expected = torch.autograd.grad(out.square().sum(), [x, *model.parameters()])
    with fold_input_gradients(model) as taken:
        assert taken == 1  # the first conv; the second has 8 input channels
        assert "forward" in vars(model[0]) and "forward" not in vars(model[2])
        folded_out = model(x)
        got = torch.autograd.grad(folded_out.square().sum(), [x, *model.parameters()])
    assert torch.equal(folded_out, out)  # the same forward call
    for mine, theirs in zip(got, expected):  # sums of at most a few hundred float64 terms: γ_n ≈ 1e-13 of them
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
    assert "forward" not in vars(model[0])


def test_the_model_is_restored_after_an_error_and_the_parameters_require_grad_again():
    model = two_convs()
    model[2].weight.requires_grad_(False)
    with pytest.raises(RuntimeError, match="inside"), inputs_only(model), fold_input_gradients(model):
        assert not any(p.requires_grad for p in model.parameters())
        raise RuntimeError("inside")
    assert "forward" not in vars(model[0])
    assert [p.requires_grad for p in model.parameters()] == [True, True, False, True, True, True]


def test_only_plain_single_channel_convs_fold():
    assert folds(nn.Conv2d(1, 4, 3))
    assert not folds(nn.Conv2d(3, 4, 3))
    assert not folds(nn.Conv2d(1, 4, 3, dilation=2))
    assert not folds(nn.Conv2d(1, 4, 3, padding="same"))
    assert not folds(nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect"))
    assert not folds(nn.Linear(4, 4))
    assert not folds(nn.Conv2d(1, 4, 3, device="meta"))  # off the CPU, the device's own backward stays


@pytest.fixture
def counted(monkeypatch):
    calls = []
    original = gloro.input_gradient.fold_input_gradient

    def counting(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(gloro.input_gradient, "fold_input_gradient", counting)
    return calls


def test_attacks_and_the_tightness_search_take_the_folded_gradient(counted):
    net = gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, seed=0), 0.3)
    images = torch.rand(12, 1, 8, 8)
    labels = net.model(images).argmax(1)  # all classified right: every point is attacked
    gloro.pgd_accuracy(net, images, labels, 0.3, steps=3, restarts=1, progress=False)
    assert len(counted) >= 3  # one per step
    before = len(counted)
    global_tightness(net, inputs=images, steps=2, max_pairs=2)
    assert len(counted) > before
    assert all(p.requires_grad for p in net.parameters())  # both left the model as they found it

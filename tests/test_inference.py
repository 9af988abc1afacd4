"""The forward pass without autograd (ReLUs in place) gives model(x)'s bits and nothing outside sees a change."""

import pytest
import torch
from torch import nn

import gloro
from gloro.inference import forward_in_place
from gloro.layers import MinMax


def nets() -> dict[str, nn.Sequential]:
    torch.manual_seed(0)
    return {
        "2C2F": gloro.create_model("2C2F", (1, 28, 28), 10),
        "nested, ReLU first, MinMax and pooling": nn.Sequential(
            nn.ReLU(inplace=True),  # model(x) would overwrite x here
            nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.ReLU()),
            nn.Flatten(),
            nn.ReLU(),
            nn.Linear(4 * 14 * 14, 12),
            MinMax(),
            nn.ReLU(),
            nn.Linear(12, 10),
        ),
    }


@pytest.mark.parametrize("name", list(nets()))
def test_the_same_bits_as_the_module_and_the_input_is_left_alone(name):
    model = nets()[name].eval()
    x = torch.rand(8, 1, 28, 28) - 0.5  # negative entries: an in-place ReLU on x would show
    original = x.clone()
    with torch.no_grad():
        fast = forward_in_place(model, x)
        assert torch.equal(x, original)
        reference = model(x.clone())
    assert torch.equal(fast, reference)


def test_a_hook_sees_the_pre_activation_it_would_see_in_the_module():
    model = nets()["2C2F"].eval()
    seen = {}
    model[0].register_forward_hook(lambda module, inputs, output: seen.setdefault("conv", output))
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        forward_in_place(model, x)
        expected = model[0](x)
    assert torch.equal(seen["conv"], expected)
    assert (seen["conv"] < 0).any()  # a ReLU applied in place to the hooked output would have removed these


def test_with_autograd_on_it_is_the_module_itself():
    model = nets()["2C2F"]
    out = forward_in_place(model, torch.rand(2, 1, 28, 28))
    assert out.requires_grad and out.grad_fn is not None


def test_a_layer_replaced_in_the_model_is_the_one_that_runs():
    model = nets()["2C2F"].eval()
    x = torch.rand(3, 1, 28, 28)
    model[7] = nn.Linear(100, 10)
    with torch.no_grad():
        assert torch.equal(forward_in_place(model, x), model(x))


def test_gloro_net_certifies_with_it_and_gets_the_modules_logits():
    torch.manual_seed(1)
    net = gloro.GloroNet(gloro.create_model("2C2F", (1, 28, 28), 10), 0.3).freeze()
    x = torch.rand(16, 1, 28, 28)
    with torch.no_grad():
        logits = net.model(x)
    certificate = net.certify(x)
    reference = gloro.margin.certify_logits(logits, net.lipschitz_constant(), 0.3, offsets=net.margin_offsets())
    assert torch.equal(certificate.radius, reference.radius)
    assert torch.equal(certificate.predictions, logits.argmax(dim=1))

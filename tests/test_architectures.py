"""The architecture registry against the layer-by-layer layouts of the facts file (§2.5). No training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gloro
from gloro.architectures import ArchitectureSpec
from gloro.layer_rules import layer_type
from gloro.layers import MinMax

SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]
ACTIVATIONS = {"relu": nn.ReLU, "minmax": MinMax}

# (in, out, kernel, stride, padding) per conv and (in, out) per dense, written out from the facts file.
EXPECTED = {
    ("2C2F", (1, 28, 28), 10): (
        [(1, 16, 4, 2, 1), (16, 32, 4, 2, 1)],
        [(1568, 100), (100, 10)],
    ),
    ("4C3F", (1, 28, 28), 10): (
        [(1, 32, 3, 1, 1), (32, 32, 4, 2, 1), (32, 64, 3, 1, 1), (64, 64, 4, 2, 1)],
        [(3136, 512), (512, 512), (512, 10)],
    ),
    ("6C2F", (3, 32, 32), 10): (
        [
            (3, 32, 3, 1, 1),
            (32, 32, 3, 1, 1),
            (32, 32, 4, 2, 1),
            (32, 64, 3, 1, 1),
            (64, 64, 3, 1, 1),
            (64, 64, 4, 2, 1),
        ],
        [(4096, 512), (512, 10)],
    ),
    ("8C2F", (3, 64, 64), 200): (
        [
            (3, 64, 3, 1, 1),
            (64, 64, 3, 1, 1),
            (64, 64, 4, 2, 1),
            (64, 128, 3, 1, 1),
            (128, 128, 3, 1, 1),
            (128, 128, 4, 2, 1),
            (128, 256, 3, 1, 1),
            (256, 256, 4, 2, 1),
        ],
        [(16384, 256), (256, 200)],
    ),
    ("7C1F", (3, 64, 64), 200): (
        [
            (3, 64, 3, 1, 1),
            (64, 64, 3, 1, 1),
            (64, 64, 4, 2, 1),
            (64, 128, 3, 1, 1),
            (128, 128, 4, 2, 1),
            (128, 256, 3, 1, 1),
            (256, 256, 4, 2, 1),
        ],
        [(16384, 200)],
    ),
}


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def kernel_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


PAPER = {"2C2F", "4C3F", "6C2F", "8C2F", "7C1F"}


def test_registry_holds_the_papers_names():
    assert set(gloro.list_architectures()) >= PAPER


def test_every_paper_name_has_an_expected_layout():
    assert {name for name, _, _ in EXPECTED} == PAPER


@pytest.mark.parametrize("name", gloro.list_architectures())
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_output_shape_and_layer_order(name, activation, shape):
    """Every registered architecture: its spec recorded, logits of the right shape from a logit layer that is
    an nn.Linear (a parametrized one included); the paper's: each conv and dense layer followed by the
    activation, one Flatten."""
    num_classes = 7
    model = gloro.create_model(name, shape, num_classes, activation=activation)
    assert isinstance(model, nn.Sequential)
    assert model.architecture == ArchitectureSpec(name, shape, num_classes, activation, "glorot_uniform")
    # Shapes propagate through every layer on the meta device (no arithmetic: the grid stays fast).
    out = model.to("meta")(torch.empty(2, *shape, device="meta"))
    assert out.shape == (2, num_classes)
    layers = list(model)
    assert layer_type(layers[-1]) is nn.Linear and layers[-1].out_features == num_classes
    if name not in PAPER:
        return
    # Every conv and dense layer but the last is followed by the activation; the logit layer comes last.
    for index, layer in enumerate(layers[:-1]):
        if isinstance(layer, nn.Conv2d | nn.Linear):
            assert type(layers[index + 1]) is ACTIVATIONS[activation]
    assert sum(type(layer) is ACTIVATIONS[activation] for layer in layers) == len(kernel_layers(model)) - 1
    assert sum(type(layer) is nn.Flatten for layer in layers) == 1


@pytest.mark.parametrize(
    ("name", "shape", "num_classes", "activation"),
    [(*key, "minmax") for key in EXPECTED] + [("6C2F", (3, 32, 32), 10, "relu")],
)
def test_real_forward_at_the_papers_input_sizes(name, shape, num_classes, activation):
    model = gloro.create_model(name, shape, num_classes, activation=activation)
    x = torch.rand(2, *shape)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, num_classes)
        assert torch.isfinite(out).all()
        assert not torch.equal(out[0], out[1])  # depends on the input


@pytest.mark.parametrize(
    ("key", "layout"), EXPECTED.items(), ids=[f"{n}-{'x'.join(map(str, s))}" for n, s, _ in EXPECTED]
)
def test_layers_match_the_facts_layout(key, layout):
    name, shape, num_classes = key
    expected_convs, expected_linears = layout
    model = gloro.create_model(name, shape, num_classes)
    found_convs = [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs(model)]
    assert found_convs == expected_convs
    for conv in convs(model):
        assert conv.kernel_size[0] == conv.kernel_size[1] and conv.stride[0] == conv.stride[1]
        assert conv.padding[0] == conv.padding[1] and conv.bias is not None
    assert [(lin.in_features, lin.out_features) for lin in linears(model)] == expected_linears
    assert len(kernel_layers(model)) == len(expected_convs) + len(expected_linears)
    # The flattened width is what the first dense layer sees.
    flat = model[: [type(m) for m in model].index(nn.Flatten) + 1]
    with torch.no_grad():
        assert flat(torch.zeros(1, *shape)).shape == (1, expected_linears[0][0])


def test_7c1f_has_seven_convs_and_one_dense():
    model = gloro.create_model("7C1F", (3, 64, 64), 200)
    assert len(convs(model)) == 7
    assert len(linears(model)) == 1


def test_architecture_spec_is_kept():
    model = gloro.create_model("2c2f", [3, 32, 32], 10, activation="MinMax", init="Orthogonal")
    spec = model.architecture
    assert spec == ArchitectureSpec("2C2F", (3, 32, 32), 10, "minmax", "orthogonal")
    assert spec.to_dict() == {
        "name": "2C2F",
        "input_shape": (3, 32, 32),
        "num_classes": 10,
        "activation": "minmax",
        "init": "orthogonal",
    }


@pytest.mark.parametrize("init", ["glorot_uniform", "orthogonal", "pytorch"])
def test_seed_determines_the_weights(init):
    def parameters(seed):
        return list(gloro.create_model("2C2F", (1, 28, 28), 10, init=init, seed=seed).parameters())

    first, again, other = parameters(3), parameters(3), parameters(4)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    weights = zip(first[::2], other[::2])
    assert all(not torch.equal(a, b) for a, b in weights)


def test_seed_does_not_depend_on_the_global_rng():
    torch.manual_seed(0)
    a = gloro.create_model("2C2F", (1, 28, 28), 10, seed=5)
    torch.manual_seed(1)
    b = gloro.create_model("2C2F", (1, 28, 28), 10, seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def assert_orthogonal(matrix: torch.Tensor) -> None:
    w = matrix.double()
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    assert torch.allclose(gram, torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-4)


@pytest.mark.parametrize(("name", "shape"), [("2C2F", (1, 28, 28)), ("6C2F", (3, 32, 32))])
def test_orthogonal_init(name, shape):
    model = gloro.create_model(name, shape, 10, init="orthogonal")
    for linear in linears(model):
        assert_orthogonal(linear.weight.detach())
        assert torch.all(linear.bias == 0)
    for conv in convs(model):
        assert_orthogonal(conv.weight.detach().reshape(conv.out_channels, -1))
        assert torch.all(conv.bias == 0)
    # Not orthogonal under the default init (a check that the check can fail).
    glorot = gloro.create_model(name, shape, 10)
    with pytest.raises(AssertionError):
        assert_orthogonal(linears(glorot)[0].weight.detach())


def test_glorot_init_zero_biases_and_bounded_weights():
    model = gloro.create_model("4C3F", (1, 28, 28), 10, init="glorot_uniform")
    for layer in kernel_layers(model):
        assert torch.all(layer.bias == 0)
        receptive = layer.weight[0, 0].numel() if layer.weight.dim() > 2 else 1
        fan_in, fan_out = layer.weight.shape[1] * receptive, layer.weight.shape[0] * receptive
        limit = (6 / (fan_in + fan_out)) ** 0.5
        assert layer.weight.abs().max() <= limit
        assert layer.weight.abs().max() > 0.8 * limit  # uniform over the whole range, not a narrower one


def test_pytorch_init_has_nonzero_biases():
    model = gloro.create_model("2C2F", (1, 28, 28), 10, init="pytorch")
    assert all(layer.bias.abs().sum() > 0 for layer in kernel_layers(model))


def test_unknown_name_lists_the_known_names():
    with pytest.raises(ValueError, match="9C9F") as error:
        gloro.create_model("9C9F", (1, 28, 28), 10)
    for name in gloro.list_architectures():
        assert name in str(error.value)


@pytest.mark.parametrize("spelling", ["2c2f", "2C2f", "2C2F"])
def test_names_are_case_insensitive(spelling):
    assert gloro.create_model(spelling, (1, 28, 28), 10).architecture.name == "2C2F"


def test_unknown_activation_raises():
    with pytest.raises(ValueError, match="tanh"):
        gloro.create_model("2C2F", (1, 28, 28), 10, activation="tanh")


def test_unknown_init_raises():
    with pytest.raises(ValueError, match="he_normal"):
        gloro.create_model("2C2F", (1, 28, 28), 10, init="he_normal")


@pytest.mark.parametrize(("name", "shape"), [("2C2F", (1, 1, 1)), ("8C2F", (3, 2, 2)), ("7C1F", (3, 4, 1))])
def test_input_too_small_raises(name, shape):
    with pytest.raises(ValueError, match="too small"):
        gloro.create_model(name, shape, 10)


@pytest.mark.parametrize("shape", [(28, 28), (1, 1, 28, 28)])
def test_input_shape_must_be_chw(shape):
    with pytest.raises(ValueError, match="input_shape"):
        gloro.create_model("2C2F", shape, 10)


def test_num_classes_must_be_at_least_two():
    with pytest.raises(ValueError, match="num_classes"):
        gloro.create_model("2C2F", (1, 28, 28), 1)


@pytest.fixture
def registry(monkeypatch):
    """The architecture registry, restored after the test."""
    module = gloro.architectures
    monkeypatch.setattr(module, "_ARCHITECTURES", dict(module._ARCHITECTURES))
    return module


def test_an_architecture_registered_from_outside_is_built_wrapped_and_named_by_a_config(registry):
    from gloro.architectures import activation, register_architecture
    from gloro.bench.experiment import Experiment

    @register_architecture("tiny-mlp")
    def tiny_mlp(spec: ArchitectureSpec) -> list[nn.Module]:
        channels, height, width = spec.input_shape
        return [
            nn.Flatten(),
            nn.Linear(channels * height * width, 32),
            activation(spec),
            nn.Linear(32, spec.num_classes),
        ]

    assert "tiny-mlp" in gloro.list_architectures()
    model = gloro.create_model("Tiny-MLP", (1, 8, 8), 10, activation="minmax", seed=3)
    assert model.architecture == ArchitectureSpec("tiny-mlp", (1, 8, 8), 10, "minmax", "glorot_uniform")
    assert isinstance(model[2], MinMax) and model[3].bias.abs().max() == 0  # the registry's init still applies
    torch.testing.assert_close(model[1].weight, gloro.create_model("tiny-mlp", (1, 8, 8), 10, seed=3)[1].weight)
    net = gloro.GloroNet(model, 0.3)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 11)  # ten classes and ⊥
    settings = {"dataset": "digits", "architecture": "tiny-MLP", "train_epsilon": 0.3, "eval_epsilon": 0.3, "epochs": 1}
    assert Experiment.from_config("t", settings).architecture == "tiny-mlp"
    with pytest.raises(ValueError, match="an architecture named 'tiny-mlp' is already registered"):
        register_architecture("TINY-MLP")(lambda spec: [])


def test_an_experiment_naming_an_unknown_architecture_is_refused_with_the_known_ones():
    from gloro.bench.experiment import Experiment

    settings = {"dataset": "digits", "architecture": "9C9F", "train_epsilon": 0.3, "eval_epsilon": 0.3, "epochs": 1}
    with pytest.raises(ValueError, match="experiment 'bad': unknown architecture '9C9F'; known architectures: 2C2F"):
        Experiment.from_config("bad", settings)

"""Layer rules: a block lowered to primitive layers is bounded, rounded and certified exactly as the same net
written in those primitives; a wrong lowering, a layer without a rule and a bad registration are refused; and
every primitive's rule carries rounding errors soundly."""

import copy
import sys

import pytest
import torch
from torch import nn

from gloro import GloroNet, architectures, create_model
from gloro.certify.local import certify_local
from gloro.certify.masked_operator import explicit_matrix
from gloro.layer_bounds import bound_for
from gloro.layer_rules import affine_map, layer_rules, primitives, register_layer_rule, rule_for
from gloro.layers import ChannelPad, FirstChannels, UnsupportedLayerError
from gloro.plugins import load_plugins


@pytest.fixture(scope="module", autouse=True)
def plugin():
    """The pipeline test's plugin of a block and an architecture, registered for this module's tests only."""
    saved = dict(architectures._ARCHITECTURES)
    (module,) = load_plugins(["tests/plugins/conv_block.py"])
    yield module
    architectures._ARCHITECTURES = saved
    sys.modules.pop(module.__name__)  # a later load registers its architecture again


def twin_nets(activation: str = "relu") -> tuple[GloroNet, GloroNet]:
    """The plugin's 2B2F and the paper's 2C2F with the same weights: one net, written two ways."""
    blocks = create_model("2B2F", (1, 8, 8), 10, activation=activation, seed=3)
    plain = create_model("2C2F", (1, 8, 8), 10, activation=activation, seed=4)
    with torch.no_grad():
        for block_weight, plain_weight in zip(blocks.parameters(), plain.parameters(), strict=True):
            plain_weight.copy_(block_weight)
    return GloroNet(blocks, 0.3, seed=1), GloroNet(plain, 0.3, seed=1)


@pytest.mark.parametrize("activation", ["relu", "minmax"])
def test_a_net_of_blocks_is_certified_exactly_as_its_primitives_are(activation):
    blocks, plain = twin_nets(activation)
    assert [type(layer) for layer in blocks.primitive_layers()] == [type(layer) for layer in plain.layers]
    ours, theirs = blocks.sound_constants(), plain.sound_constants()
    assert float(ours.sub_lipschitz) == float(theirs.sub_lipschitz)
    assert torch.equal(ours.offsets, theirs.offsets)  # the same rounding model, layer by layer
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(blocks.certify(x).radius, plain.certify(x).radius)
    assert torch.equal(certify_local(blocks, x).radius, certify_local(plain, x).radius)
    # training estimates start from the same iterates: a block's check draws from a generator of its own
    blocks.train(), plain.train()
    assert torch.equal(blocks.sub_lipschitz(), plain.sub_lipschitz())


def test_a_blocks_estimate_trains_its_own_weights():
    blocks, _ = twin_nets()
    blocks.train()
    blocks(torch.rand(8, 1, 8, 8)).sum().backward()
    conv = blocks.layers[0].conv
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert {name for name, _ in blocks.bounds.named_buffers()} >= {"0.parts.0.iterate", "1.parts.0.iterate"}


def test_a_change_inside_a_block_is_noticed_frozen_or_not():
    blocks, _ = twin_nets()
    blocks.freeze()
    x = torch.rand(4, 1, 8, 8)
    blocks.certify(x)
    with torch.no_grad():
        blocks.layers[0].conv.weight[0, 0, 0, 0] += 1.0
    with pytest.raises(RuntimeError, match="freeze"):
        blocks.certify(x)
    blocks.freeze()
    blocks.layers[1].conv = nn.Conv2d(16, 32, 4, 2, padding=1)  # a block's layer replaced
    with pytest.raises(RuntimeError, match="freeze"):
        blocks.certify(x)
    blocks.unfreeze()
    blocks.certify(x)  # the same configuration: bounded afresh from its weights
    blocks.layers[1].conv = nn.Conv2d(16, 32, 3, 2, padding=1)  # outputs of the same shape, from a 3×3 kernel:
    with pytest.raises(RuntimeError, match="replaced by one configured otherwise"):  # a 4×4 kernel's bound
        blocks.certify(x)


class Shifted(nn.Module):
    """A block whose rule lies: it adds a constant that its lowering leaves out."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, x):
        return self.linear(x) + 1e-3


register_layer_rule(Shifted, lower=lambda block: (block.linear,))


def test_a_lowering_that_computes_something_else_is_refused():
    model = nn.Sequential(Shifted(), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError, match="Shifted .*computes? something else"):
        GloroNet(model, 0.1, input_shape=(4,))


def test_a_layer_without_a_rule_names_how_to_add_one():
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(UnsupportedLayerError, match="Tanh.*register_layer_rule"):
        GloroNet(model, 0.1, input_shape=(4,))


class Unregistered(nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize(
    ("role", "given", "message"),
    [
        ("block", {}, "needs lower"),
        ("activation", {"bound": bound_for}, "needs carry_error"),
        ("affine", {"bound": bound_for}, "needs affine_map"),
        ("residual", {}, "needs branch"),
        ("skip", {}, "unknown layer role 'skip'"),
    ],
)
def test_an_incomplete_rule_is_refused(role, given, message):
    with pytest.raises(ValueError, match=message):
        register_layer_rule(Unregistered, role, **given)
    with pytest.raises(UnsupportedLayerError):
        rule_for(Unregistered())  # nothing half-registered


def test_a_second_rule_for_a_type_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_layer_rule(nn.ReLU, lower=lambda layer: (layer,))
    assert rule_for(nn.ReLU()).role == "activation"


AFFINE_SAMPLES = {  # one layer per affine rule, with its input shape: a new affine rule needs one here
    nn.Linear: (nn.Linear(6, 5), (6,)),
    nn.Conv2d: (nn.Conv2d(2, 3, 3, 2, 1), (2, 5, 5)),
    nn.AvgPool2d: (nn.AvgPool2d(2), (2, 4, 4)),
}


def test_every_affine_rule_has_a_sample_here():
    assert {rule.layer_type for rule in layer_rules() if rule.role == "affine"} == set(AFFINE_SAMPLES)


@pytest.mark.parametrize("kind", list(AFFINE_SAMPLES), ids=lambda kind: kind.__name__)
def test_an_affine_map_computes_its_layer_and_bounds_its_norms_from_above(kind):
    layer, shape = AFFINE_SAMPLES[kind]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    operator = affine_map(layer)
    x = torch.randn((7, *shape), generator=generator, dtype=torch.float64)
    reference = copy.deepcopy(layer).double()
    assert torch.allclose(operator.affine(x), reference(x), rtol=1e-12, atol=1e-12)
    matrix = explicit_matrix(operator.linear, shape)  # A, exactly: every entry a weight, or a pool's 1/k²
    flat = x.flatten(1)
    assert torch.allclose(operator.absolute(x.abs()).flatten(1), flat.abs() @ matrix.abs().T, rtol=1e-12)
    assert torch.allclose(operator.squared(x).flatten(1), flat @ matrix.square().T, rtol=1e-12)
    norm = float(torch.linalg.matrix_norm(matrix, ord=2))
    assert operator.abs_norm(norm) >= float(torch.linalg.matrix_norm(matrix.abs(), ord=2))
    rows = operator.row_norms(norm).expand(1, *operator.affine(x[:1]).shape[1:]).flatten()
    assert (rows >= torch.linalg.vector_norm(matrix, dim=1)).all()  # ‖A_v‖ per output, from above
    terms = operator.nonzero_terms(torch.ones((1, *shape)))
    if terms is not None:  # every product of an interior output can be nonzero; a border one has fewer
        assert terms.max() == operator.fan_in and (terms.flatten() >= (matrix != 0).sum(1)).all()


class Wrapped(nn.Module):
    """A block of a block: the plugin's conv block, behind one more layer."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


register_layer_rule(Wrapped, lower=lambda block: (block.inner,))


def test_nested_blocks_lower_to_primitives_and_bound_each(plugin):
    block, flatten = Wrapped(plugin.ConvBlock(1, 2, 4, 2, nn.ReLU())), nn.Flatten()
    assert primitives([block, flatten]) == [block.inner.conv, block.inner.activation, flatten]
    parts = bound_for(block, (1, 8, 8)).sound_parts(block)
    conv = bound_for(block.inner.conv, (1, 8, 8)).sound(block.inner.conv)
    assert [float(part) for part in parts] == [float(conv), 1.0]


CARRYING = [rule for rule in layer_rules() if rule.role in ("activation", "reshape")]
CONFIGURED = {  # layers whose constructor needs arguments, as the test builds them
    nn.PixelUnshuffle: lambda: nn.PixelUnshuffle(3),
    nn.ZeroPad2d: lambda: nn.ZeroPad2d((1, 0, 2, 1)),
    ChannelPad: lambda: ChannelPad(9),
    FirstChannels: lambda: FirstChannels(4),
}


@pytest.mark.parametrize("rule", CARRYING, ids=lambda rule: rule.layer_type.__name__)
def test_a_carried_error_bounds_the_change_of_the_output(rule):
    """For inputs x and x̂ = x + δ with |δ| ≤ e per unit and x ≤ upper, |f(x̂) − f(x)| ≤ carry_error(e, upper)."""
    layer = CONFIGURED.get(rule.layer_type, rule.layer_type)()
    generator = torch.Generator().manual_seed(0)

    def draw(*shape):
        return torch.rand(shape, generator=generator, dtype=torch.float64)

    x = 4 * draw(64, 6, 3, 3) - 2
    units = draw(64, 6, 3, 3) * draw(64, 1, 1, 1)  # some rows with errors far below the values, some not
    delta = (2 * draw(*x.shape) - 1) * units
    upper = x + 0.1 * draw(*x.shape)
    carried = rule.carry_error(layer, units, upper)
    change = (layer(x + delta) - layer(x)).abs()
    assert carried.shape == change.shape
    assert (change <= carried).all()

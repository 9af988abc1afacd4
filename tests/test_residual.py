"""Residual layers x + f(x): their sound bound is never below the layer's real Lipschitz constant, the rounding
model covers both paths and the sum, a residual rule that computes something else is refused, and the
certifiers that follow one chain of layers say so instead of certifying."""

import copy

import pytest
import torch
from test_floating_point import box_points
from torch import nn

import gloro
from gloro.certify import create_certifier
from gloro.certify.compare import compare_supported
from gloro.certify.masked_operator import explicit_matrix
from gloro.layer_bounds import bound_for
from gloro.layer_rules import affine_map, register_layer_rule
from gloro.layers import Residual, UnsupportedLayerError
from gloro.lipschitz import ConstantBound


def residual_net(activation: str = "relu", seed: int = 0) -> gloro.GloroNet:
    """A conv stem, a residual layer whose branch holds another residual layer, and a dense head: 8×8 inputs."""
    torch.manual_seed(seed)
    act = nn.ReLU if activation == "relu" else gloro.layers.MinMax
    model = nn.Sequential(
        nn.Conv2d(1, 8, 4, 2, 1),
        act(),
        Residual(nn.Conv2d(8, 8, 3, padding=1), act(), Residual(nn.Conv2d(8, 8, 3, padding=1), act())),
        act(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 32),
        act(),
        nn.Linear(32, 10),
    )
    return gloro.GloroNet(model, 0.3, input_shape=(1, 8, 8), seed=seed)


def test_a_residual_bound_is_never_below_the_norm_of_the_layers_jacobian():
    """‖I + J_f(x)‖₂ at random points (float64 autograd) never exceeds the sound bound; with a linear branch,
    the bound is at least the exact ‖I + A‖₂ of the explicit matrix, which exceeds 1: a bound that forgot
    the branch would fail."""
    generator = torch.Generator().manual_seed(1)
    layer = Residual(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 3, 3, padding=1)).double()
    sound = float(bound_for(layer, (3, 5, 5)).sound(layer))
    for _ in range(8):
        x = torch.randn(3, 5, 5, generator=generator, dtype=torch.float64)
        jacobian = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0], x).reshape(75, 75)
        assert float(torch.linalg.matrix_norm(jacobian, 2)) <= sound
    linear = Residual(nn.Conv2d(3, 3, 3, padding=1)).double()
    with torch.no_grad():
        linear.branch[0].weight.mul_(4)
    with torch.no_grad():
        matrix = explicit_matrix(affine_map(linear.branch[0]).linear, (3, 5, 5))  # A, without the bias
        exact = float(torch.linalg.matrix_norm(torch.eye(75, dtype=torch.float64) + matrix, 2))
    assert 1 < exact <= float(bound_for(linear, (3, 5, 5)).sound(linear))


class Tempered(nn.Module):
    """x + branch(x), with a bound of its rule's own (here a constant, standing in for one proven from the
    weights, as SLL's would be)."""

    OWN = 1.25

    def __init__(self) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.Linear(6, 6))

    def forward(self, x):
        return x + self.branch(x)


register_layer_rule(
    Tempered,
    "residual",
    branch=lambda layer: tuple(layer.branch),
    bound=lambda layer, shape, generator: ConstantBound(Tempered.OWN),
)


@pytest.mark.parametrize("scale", [0.01, 10.0])
def test_a_rules_own_bound_is_taken_where_it_is_the_smaller(scale):
    layer = Tempered()
    with torch.no_grad():
        layer.branch[0].weight.mul_(scale)
    bound = bound_for(layer, (6,))
    generic = 1 + float(bound_for(layer.branch[0], (6,)).sound(layer.branch[0]))
    assert float(bound.sound(layer)) == pytest.approx(min(generic, Tempered.OWN), rel=1e-12)
    assert float(bound.sound(layer)) >= min(generic, Tempered.OWN)
    assert float(bound.estimate(layer, 0)) == Tempered.OWN  # training trusts the rule's estimate


class Subtracted(nn.Module):
    """x − f(x) under a rule that says x + f(x): the rounding model would describe other operations."""

    def __init__(self) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.Linear(6, 6))

    def forward(self, x):
        return x - self.branch(x)


register_layer_rule(Subtracted, "residual", branch=lambda layer: tuple(layer.branch))


def test_a_residual_rule_that_computes_something_else_is_refused():
    model = nn.Sequential(Subtracted(), nn.Linear(6, 3))
    with pytest.raises(UnsupportedLayerError, match="x \\+ its branch's output"):
        gloro.GloroNet(model, 0.1, input_shape=(6,))


def sampled_errors(net: gloro.GloroNet, x: torch.Tensor, dtype: torch.dtype):
    """The float net's logits and its body's output, less the float64 net's: (logit errors, body errors)."""
    body = nn.Sequential(*list(net.model)[:-1])
    with torch.no_grad():
        exact = copy.deepcopy(body).double()(x.double())
        computed = body.to(dtype)(x.to(dtype)).double()
        logits = net.model.to(dtype)(x.to(dtype)).double() - net.model[-1].double()(exact)
        net.model.to(dtype)
    return logits, computed - exact


def assert_box_offsets_cover_the_rounding(net: gloro.GloroNet, x: torch.Tensor, dtype: torch.dtype) -> None:
    """|(ŷ_j − ŷ_i) − (y_j − y_i)| ≤ O_ij / 2 and ‖ĥ − h‖ at the head ≤ E at the points x, against float64, for
    the net evaluated in `dtype`; and the net really rounds there."""
    net = net.to(dtype)
    constants = net.sound_constants()
    logits, body = sampled_errors(net, x, dtype)
    pairwise = (logits[:, :, None] - logits[:, None, :]).abs()
    assert torch.isfinite(constants.offsets).all()
    assert (pairwise <= constants.offsets[None] / 2).all()
    assert (body.flatten(1).norm(dim=1) <= constants.forward_error.feature_error).all()
    assert pairwise.max() > 0


def assert_trained_certificates_survive_pgd(
    net: gloro.GloroNet, loss: str, epochs: int, certified: int, learning_rate: float = 1e-3
) -> None:
    """Train `net` with `loss` on digits for a few epochs at ε = 0.3 (Adam at `learning_rate`): it certifies
    more than `certified` of 200 test points, and PGD at ε changes the prediction of none of them
    (`audit_soundness` raises if it does)."""
    from gloro.audit import audit_soundness
    from gloro.data import load_dataset

    train, test = (load_dataset("digits", split, progress=False) for split in ("train", "test"))
    net.epsilon = net.eval_epsilon = 0.3
    recipe = gloro.TrainingRecipe(
        epochs=epochs, batch_size=64, seed=0, loss=loss, learning_rate=gloro.schedules.Constant(learning_rate)
    )
    gloro.train(net, train.images.float() / 16.0, train.labels, recipe, progress=False)
    net.freeze()
    report = audit_soundness(net, test.images.float()[:200] / 16.0, 0.3, progress=False, steps=20)
    assert report["certified"] > certified and report["violations"] == 0


@pytest.mark.parametrize("activation", ["relu", "minmax"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_box_offsets_cover_a_residual_nets_rounding(activation, dtype):
    """At random points and corners of the box (see `assert_box_offsets_cover_the_rounding`)."""
    assert_box_offsets_cover_the_rounding(
        residual_net(activation), box_points(200, 200, torch.Generator().manual_seed(4)), dtype
    )


def test_the_rounding_of_the_sum_itself_is_counted():
    """A branch of tiny weights rounds far less than the sum x + f(x) does: the bound on ‖ĥ − h‖ after the
    layer must still cover the sum's own rounding, which is about u·|x| per unit."""
    layer = Residual(nn.Linear(64, 64))
    with torch.no_grad():
        layer.branch[0].weight.mul_(1e-4)
        layer.branch[0].bias.zero_()
    net = gloro.GloroNet(nn.Sequential(layer, nn.Linear(64, 10)), 0.1, input_shape=(64,))
    x = box_points(400, 100, torch.Generator().manual_seed(5)).flatten(1)
    _, body = sampled_errors(net, x, torch.float32)
    error = net.sound_constants().forward_error.feature_error
    assert body.norm(dim=1).max() > 10 * 64 * 2.0**-24 * 1e-4 * 8  # the sum, not the branch, rounds here
    assert (body.norm(dim=1) <= error).all()


def test_an_error_that_enters_a_residual_layer_is_carried_through_it():
    """A wide layer whose terms cancel rounds far more than its small output, and so than the sum x + f(x) of the
    residual layer after it (a branch of tiny weights): the bound on ‖ĥ − h‖ after the residual layer, over
    each point's own region, must still carry the error that came in, through the layer's own bound."""
    generator = torch.Generator().manual_seed(6)
    wide = nn.Linear(1024, 64)
    layer = Residual(nn.Linear(64, 64))
    with torch.no_grad():
        weight = torch.randn(64, 1024, generator=generator)
        wide.weight.copy_(weight - weight.mean(1, keepdim=True))  # rows summing to 0: large terms, small sums
        wide.bias.zero_()
        layer.branch[0].weight.mul_(1e-4)
    model = nn.Sequential(wide, layer, nn.Linear(64, 10))
    net = gloro.GloroNet(model, 0.1, input_shape=(1024,))
    x = 0.5 + 0.01 * torch.rand(100, 1024, generator=generator)
    logits, body = sampled_errors(net, x, torch.float32)
    with torch.no_grad():
        first = wide(x).double()
        incoming = (first - copy.deepcopy(wide).double()(x.double())).norm(dim=1)
        predictions = net.predict_clean(x).argmax(1)
    assert (incoming > 10 * 2.0**-24 * first.norm(dim=1)).all()  # far more than the sum x + f(x) rounds
    rounding = net.sound_constants().rounding
    region = rounding.region(x, x, x, torch.zeros(len(x)))  # each point alone
    assert (body.norm(dim=1) <= region.feature_error).all()
    ball = rounding.ball_pairs(x, torch.zeros(len(x)), predictions)  # and as certification asks for it
    pairwise = (logits.gather(1, predictions[:, None]) - logits).abs()
    assert (pairwise <= ball * (1 - 1e-6)).all()


def test_each_points_ball_bound_covers_a_residual_nets_rounding():
    """b_i(x, r) ≥ |(ŷ_j − ŷ_i) − (y_j − y_i)| at sampled points of B(x, r) ∩ box (see test_point_allowance)."""
    from test_point_allowance import points_in_balls

    net = residual_net().eval()
    generator = torch.Generator().manual_seed(7)
    centres = box_points(10, 4, generator)
    radii = torch.tensor([0.0, 0.05, 0.5], dtype=torch.float64)
    x, r = centres.repeat_interleave(len(radii), 0), radii.repeat(len(centres))
    rounding = net.sound_constants().rounding
    with torch.no_grad():
        predictions = net.predict_clean(x).argmax(1)
        bound = rounding.ball_pairs(x, r, predictions)
        samples = points_in_balls(x, r, 16, generator).flatten(0, 1)
    logits, _ = sampled_errors(net, samples, torch.float32)
    error = logits.view(len(x), 16, -1)
    top = predictions[:, None, None].expand(-1, 16, 1)
    pairwise = (error.gather(2, top) - error).abs()
    assert torch.isfinite(bound).all()
    assert (pairwise <= bound[:, None, :] * (1 - 1e-6)).all()  # float64's own error is ~1e-13 of the logits
    assert pairwise.max() > 0


def test_the_global_certificate_holds_on_a_residual_net_and_chain_certifiers_say_why_not():
    """The global certifier certifies; local, CROWN, KW and BCP refuse the residual layer by name, and a
    comparison leaves them out with their reasons."""
    net = residual_net().freeze()
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    certificate = create_certifier("global")(net, x, 0.01)
    assert certificate.certified.any()
    for name in ("local", "crown", "kw", "bcp"):
        with pytest.raises(UnsupportedLayerError, match="Residual"):
            create_certifier(name)(net, x, 0.01)
    labels = net.predict_clean(x).argmax(1)
    rows, unsupported = compare_supported(net, x, labels, 0.01, ["global", "local", "bcp"])
    assert [row["certifier"] for row in rows] == ["global"] and sorted(unsupported) == ["bcp", "local"]
    assert all("Residual" in reason for reason in unsupported.values())
    with pytest.raises(UnsupportedLayerError, match="local: .*Residual"):  # asked for by name: never dropped
        gloro.compare_certifiers(net, x, labels, 0.01, ["global", "local"])


def test_a_trained_residual_nets_certificates_survive_the_attack():
    """A GloRo net with a residual layer, trained briefly on digits: every point it certifies keeps its
    prediction under PGD at ε."""
    assert_trained_certificates_survive_pgd(residual_net(seed=2), "gloro", epochs=4, certified=0)

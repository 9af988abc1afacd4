"""Each point's own rounding allowance: never below the rounding the net actually does on the point's ball, and
what certification gains from it stays sound."""

import copy
import math
from fractions import Fraction

import pytest
import torch
from test_floating_point import box_points, dense_net, exact_logits

import gloro
from gloro.data import load_dataset


def points_in_balls(x: torch.Tensor, radii: torch.Tensor, samples: int, generator: torch.Generator) -> torch.Tensor:
    """`samples` points of B(x_b, r_b) ∩ [0, 1]^d per row: half inside the ball, half on its sphere, then clamped
    to the box (clamping moves a point no further from x_b, which lies in the box)."""
    rows, shape = len(x), x.shape[1:]
    directions = torch.randn(rows, samples, *shape, generator=generator, dtype=torch.float64)
    directions /= directions.flatten(2).norm(dim=2).view(rows, samples, *([1] * len(shape)))
    depth = torch.rand(rows, samples, generator=generator, dtype=torch.float64) ** (1 / x[0].numel())
    depth[:, samples // 2 :] = 1.0
    scale = (radii.double()[:, None] * depth * (1 - 1e-9)).view(rows, samples, *([1] * len(shape)))
    moved = (x.double()[:, None] + scale * directions).clamp(0.0, 1.0)
    return moved.float().clamp(0.0, 1.0)  # float32 inputs, as the net receives them


def trained_digits_net() -> gloro.GloroNet:
    train = load_dataset("digits", "train", progress=False)
    net = gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, seed=0), epsilon=0.45, seed=0)
    x = train.images.float() / 16.0
    gloro.train(net, x, train.labels, gloro.TrainingRecipe(epochs=3, batch_size=64, seed=0), progress=False)
    return net


NETS = {
    "relu": lambda: gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, seed=2), epsilon=0.3),
    "minmax": lambda: gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, activation="minmax", seed=3), 0.3),
    "trained": trained_digits_net,
}


@pytest.mark.parametrize("kind", sorted(NETS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_ball_bound_is_never_below_the_rounding_anywhere_on_the_ball(kind, dtype):
    """b_i(x, r) ≥ |(ŷ_j − ŷ_i) − (y_j − y_i)| at sampled x′ of B(x, r) ∩ box, for points inside the box, at its
    corners and on its faces, and radii from 0 to past the box; y from float64, whose own bound is taken off b."""
    net = NETS[kind]().to(dtype).eval()
    generator = torch.Generator().manual_seed(7)
    centres = box_points(10, 4, generator)
    radii = torch.tensor([0.0, 0.02, 0.3, 3.0], dtype=torch.float64)
    x = centres.repeat_interleave(len(radii), 0)
    r = radii.repeat(len(centres))
    rounding = net.sound_constants().rounding
    with torch.no_grad():
        predictions = net.predict_clean(x.to(dtype)).argmax(1)
        bound = rounding.ball_pairs(x, r, predictions)
        assert torch.isfinite(bound).all()
        samples = points_in_balls(x, r, 16, generator)
        flat = samples.flatten(0, 1)
        computed = net.predict_clean(flat.to(dtype)).double()
        exact = copy.deepcopy(net.model).double()(flat.double())
    error = (computed - exact).view(len(x), 16, -1)
    top = predictions[:, None, None].expand(-1, 16, 1)
    pairwise = (error.gather(2, top) - error).abs()  # |(ŷ_j − ŷ_i) − (y_j − y_i)| at each sample
    # how far the float64 evaluation itself may be from the exact net at each sample (about 10⁻¹³ of its scale)
    reference = rounding.in_precision(torch.float64).region(flat, flat, flat, torch.zeros(len(flat)))
    own = reference.logit_rounding.view(len(x), 16, -1)
    top_own = own.gather(2, top)
    distances = rounding.distances[predictions][:, None, :]
    slack = top_own + own + distances * reference.feature_error.view(len(x), 16, 1)
    assert (pairwise + slack <= bound[:, None, :]).all()
    assert pairwise.max() > 0  # the net really rounds there


def test_the_measured_and_ball_bounds_cover_the_exact_error_in_rational_arithmetic():
    """At x itself, a_i (the computed logits against float64, plus float64's bound) and b_i(x, 0) are each at
    least the exact |(ŷ_j − ŷ_i) − (y_j − y_i)|, the exact net evaluated in rationals: no tolerance."""
    torch.manual_seed(11)
    net = dense_net(
        [torch.randn(16, 6), torch.randn(12, 16), torch.randn(4, 12)],
        [torch.randn(16), torch.randn(12), torch.randn(4)],
    )
    x = torch.rand(30, 6)
    rounding = net.sound_constants().rounding
    with torch.no_grad():
        logits = net.predict_clean(x)
    top = logits.argmax(1)
    measured = rounding.measured_pairs(x, logits)
    ball = rounding.ball_pairs(x, torch.zeros(len(x)), top)
    largest = Fraction(0)
    for row, exact, j, a, b in zip(logits.double().tolist(), exact_logits(net, x), top.tolist(), measured, ball):
        error = [Fraction(v) - e for v, e in zip(row, exact)]
        for i in range(len(row)):
            pair = abs(error[j] - error[i])
            largest = max(largest, pair)
            assert Fraction(float(a[i])) >= pair and Fraction(float(b[i])) >= pair
    assert largest > 0


def test_each_points_allowance_only_adds_certificates_and_never_past_ignoring_rounding():
    """The refined certificate: radius ≥ the box-wide one, ≤ the one ignoring rounding, and the VRA between."""
    net = trained_digits_net().freeze()
    test = load_dataset("digits", "test", progress=False)
    x, labels = test.images.float() / 16.0, test.labels
    constants = net.sound_constants()
    with torch.no_grad():
        logits = net.predict_clean(x)
    box = constants.certifier(logits, 0.3)
    naive = constants.unrounded(logits, 0.3)
    refined = net.certify(x, 0.3)
    assert (refined.radius >= box.radius).all() and (refined.radius <= naive.radius).all()
    assert (box.certified <= refined.certified).all() and (refined.certified <= naive.certified).all()
    assert math.isclose(refined.vra(labels), gloro.evaluate(net, x, labels, epsilon=0.3)["vra"])

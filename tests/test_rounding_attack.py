"""The attack on the rounding allowance: summation orders that a float32 net may legally use, chosen to push
its rounding one way. The allowance must cover what they reach; an allowance for this machine's order only
does not, and no certificate may claim a point that such an order flips."""

import copy
import math

import pytest
import torch

import gloro
from gloro.rounding_attack import adversarial_sums, attack_margins

U32 = 2.0**-24


def exact_sums(terms: torch.Tensor) -> torch.Tensor:
    return torch.tensor([math.fsum(row.double().tolist()) for row in terms], dtype=torch.float64)


def test_an_adversarial_order_rounds_the_way_it_is_told_and_stays_within_the_bound():
    """Each row's error has the sign asked for, is at least a hundredth of the any-order bound
    (1 + γ_n)·u·(S + (n − 1)·M) (far beyond a random order's √n-sized drift), and never exceeds that bound."""
    generator = torch.Generator().manual_seed(0)
    terms = torch.randn(8, 1000, generator=generator)
    terms[4:] = terms[4:].abs()  # sums of one sign too, where every partial sum grows
    direction = torch.tensor([1.0, -1.0] * 4)
    error = adversarial_sums(terms, direction).double() - exact_sums(terms)
    n = terms.shape[1]
    magnitude = terms.double().abs().sum(1)
    partial = (magnitude + exact_sums(terms).abs()) / 2  # the largest |partial sum| any order can reach
    bound = (1 + n * U32 / (1 - n * U32)) * U32 * (magnitude + (n - 1) * partial)
    assert (error.sign() == direction).all()
    assert (error.abs() >= bound / 100).all()
    assert (error.abs() <= bound).all()


NETS = {
    "relu": lambda: gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, seed=2), epsilon=0.3),
    "minmax": lambda: gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, activation="minmax", seed=3), 0.3),
}


@pytest.mark.parametrize("kind", sorted(NETS))
def test_the_ball_bound_covers_what_an_adversarial_order_reaches_and_the_measured_error_does_not(kind):
    """b_i(x, 0) ≥ the margin error of the attacked order, and the attack reaches past the error of PyTorch's
    own order, which an allowance measured on this machine covers: such an allowance would not be sound."""
    net = NETS[kind]().eval()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    rounding = net.sound_constants().rounding
    top = net.predict_clean(x).argmax(1)
    bound = rounding.ball_pairs(x, torch.zeros(len(x), dtype=torch.float64), top)
    reference = rounding.in_precision(torch.float64).region(x.double(), x.double(), x.double(), torch.zeros(len(x)))
    for row, attack in enumerate(attack_margins(net, x)):
        runner = attack.runner_up
        # the float64 evaluation's own bound, about 1e-13 of the logits, taken off b
        slack = float(reference.logit_rounding[row, top[row]] + reference.logit_rounding[row, runner])
        slack += float(rounding.distances[top[row], runner] * reference.feature_error[row])
        assert attack.attacked_error + slack <= float(bound[row, runner])
        assert attack.attacked_error > 10 * attack.computed_error


def near_tie(net: gloro.GloroNet, gap: float, generator: torch.Generator) -> torch.Tensor:
    """A float32 point in the box whose float64 margin to its runner-up is about `gap`: bisected on the segment
    between two points that the exact net labels differently."""
    exact = copy.deepcopy(net.model).double()
    with torch.no_grad():
        while True:
            ends = torch.rand(2, *net.input_shape, generator=generator)
            a, b = (int(exact(end[None].double()).argmax()) for end in ends)
            if a == b:
                continue
            low, high = 0.0, 1.0
            for _ in range(50):
                middle = (low + high) / 2
                y = exact(((1 - middle) * ends[0] + middle * ends[1])[None].double())[0]
                low, high = (middle, high) if y[a] - y[b] > gap else (low, middle)
            point = ((1 - low) * ends[0] + low * ends[1]).float()
            y = exact(point[None].double())[0]
            if int(y.argmax()) == a and float(y[a] - y.topk(2).values[1]) > gap / 2:
                return point


def test_a_minmax_6c2f_point_with_a_clear_float64_margin_flips_under_a_legal_order_and_is_not_certified():
    """Issue 28 asked that a CIFAR-shaped MinMax 6C2F at its initialisation certify at ε = 0 every point whose
    float64 margin exceeds 1e-4. No sound certificate can: here is a point with margin ≈ 5e-4 (PyTorch's own
    order off by ~1e-7) that the float32 net predicts differently when its 4097-term layer is summed in another
    order, which the certificate's promise covers; and `certify` refuses it."""
    net = gloro.GloroNet(gloro.create_model("6C2F", (3, 32, 32), 10, activation="minmax", seed=0), 36 / 255)
    net.eval()
    point = near_tie(net, 5e-4, torch.Generator().manual_seed(1))
    [attack] = attack_margins(net, point[None])
    assert attack.exact > 1e-4 and attack.computed_error < 1e-5
    assert attack.attacked < 0  # another class on top: a legal float32 evaluation of the same net at that point
    assert not bool(net.certify(point[None], 0.0).certified[0])

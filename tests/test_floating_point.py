"""Certificates hold for the net as it computes: each published exploit family, built as an adversarial net,
must certify nothing false; bounds are checked against exact (rational or 40-digit) references."""

import copy
import io
import math
from fractions import Fraction

import mpmath
import pytest
import torch
from torch import nn

import gloro
from gloro.certify import create_certifier
from gloro.conv_norms import explicit_conv_matrix
from gloro.outward import spectral_norm_upper

TINY32 = torch.finfo(torch.float32).tiny  # float32's smallest normal number, 2^-126


def box_points(interior: int, corners: int, generator: torch.Generator) -> torch.Tensor:
    """8×8 test inputs: random points inside [0, 1]^64, random corners of the box, and all zeros and all ones."""
    return torch.cat(
        [
            torch.rand(interior, 1, 8, 8, generator=generator),
            (torch.rand(corners, 1, 8, 8, generator=generator) > 0.5).float(),
            torch.zeros(1, 1, 8, 8),
            torch.ones(1, 1, 8, 8),
        ]
    )


def dense_net(weights, biases, input_range=(0.0, 1.0)) -> gloro.GloroNet:
    """A ReLU MLP with the given float32 weights and biases (the last pair is the head)."""
    layers = []
    for index, (w, b) in enumerate(zip(weights, biases)):
        layer = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
            layer.bias.copy_(torch.as_tensor(b, dtype=torch.float32))
        layers += [layer] if index == len(weights) - 1 else [layer, nn.ReLU()]
    return gloro.GloroNet(nn.Sequential(*layers), epsilon=0.1, input_range=input_range)


def exact_logits(net: gloro.GloroNet, x: torch.Tensor) -> list[list[Fraction]]:
    """The real-valued net's logits in rational arithmetic (every float32 weight and input is a rational)."""
    rows = []
    for point in x.double().tolist():
        h = [Fraction(v) for v in point]
        for layer in net.layers:
            if isinstance(layer, nn.Linear):
                w, b = layer.weight.double().tolist(), layer.bias.double().tolist()
                h = [sum((Fraction(a) * v for a, v in zip(row, h)), Fraction(c)) for row, c in zip(w, b)]
            elif isinstance(layer, nn.ReLU):
                h = [max(v, Fraction(0)) for v in h]
        rows.append(h)
    return rows


def exact_violations(net: gloro.GloroNet, x: torch.Tensor, epsilon: float) -> tuple[int, int]:
    """(certified points, certified points whose exact net, in rationals, does not predict the same class with
    margin > K_ij·ε against every class), K_ij the reported constants, themselves checked elsewhere."""
    certificate = net.certify(x, epsilon)
    k = net.lipschitz_constant().tolist()
    violations = 0
    for logits, j, certified in zip(exact_logits(net, x), certificate.predictions.tolist(), certificate.certified):
        if certified:
            violations += any(
                logits[j] - value <= Fraction(k[j][i]) * Fraction(epsilon) for i, value in enumerate(logits) if i != j
            )
    return int(certificate.certified.sum()), violations


def assert_certified_points_hold_exactly(net: gloro.GloroNet, x: torch.Tensor, epsilon: float) -> int:
    """Every certified point holds in exact arithmetic (`exact_violations`); returns how many were certified."""
    certified, violations = exact_violations(net, x, epsilon)
    assert violations == 0
    return certified


def test_ties_at_the_top_are_never_certified():
    """klasleino/gloro#9: a ⊥ logit that masks every class tied with the top one certifies a point on a
    decision boundary. Two identical head rows tie everywhere; nothing may be certified, even at ε = 0."""
    torch.manual_seed(0)
    hidden, head = torch.randn(6, 4), torch.randn(3, 6)
    head[1] = head[0]
    net = dense_net([hidden, head], [torch.zeros(6), torch.tensor([0.5, 0.5, -9.0])])
    x = torch.rand(200, 4)
    for epsilon in (0.0, 1e-6, 0.1):
        certificate = net.certify(x, epsilon)
        tied = certificate.predictions <= 1
        assert tied.any() and not certificate.certified[tied].any()
    frozen = copy.deepcopy(net).freeze()
    assert (frozen(x)[:, :3].argmax(1) <= 1).any()
    assert (frozen(x).argmax(1)[frozen(x)[:, :3].argmax(1) <= 1] == 3).all()  # ⊥ wins on every tied point


def test_tiny_weights_and_underflow_certify_nothing_false():
    """The CAV 2025 artifact's nets: weights at float32's smallest normal number, so products underflow (or
    flush to zero) and the float logits need not order the classes as the exact ones do."""
    generator = torch.Generator().manual_seed(1)
    for scale in (TINY32, 2 * TINY32, 1e-30):
        hidden = torch.randn(5, 3, generator=generator) * scale
        head = torch.randn(4, 5, generator=generator)
        head_bias = torch.randn(4, generator=generator) * scale
        net = dense_net([hidden, head], [torch.zeros(5), head_bias])
        x = torch.rand(100, 3, generator=generator)
        for epsilon in (0.0, 1e-3):
            assert_certified_points_hold_exactly(net, x, epsilon)
        # the logits are of the order of the underflow threshold: the rounding offsets are at least as large
        assert float(net.margin_offsets().max()) > 10 * TINY32


def test_small_weight_normalization_never_bounds_below_the_true_norm():
    """klasleino/gloro#8: normalising inside power iteration under-estimates ‖W‖ for very small weights.
    The sound bound must lie above a 40-digit SVD at every scale, without tolerance."""
    mpmath.mp.dps = 40
    generator = torch.Generator().manual_seed(2)
    for scale in (TINY32, 1e-30, 1e-20, 1.0, 1e20):
        w = (torch.randn(7, 5, generator=generator) * scale).float()
        if not torch.isfinite(w).all() or (w == 0).all():
            continue
        exact = max(mpmath.svd_r(mpmath.matrix(w.double().tolist()), compute_uv=False))
        layer = nn.Linear(5, 7)
        with torch.no_grad():
            layer.weight.copy_(w)
        net = gloro.GloroNet(nn.Sequential(layer, nn.ReLU(), nn.Linear(7, 2)), epsilon=0.1)
        assert mpmath.mpf(float(net.layer_bounds(sound=True)[0])) >= exact


@pytest.mark.parametrize("case", ["linear", "conv", "strided conv"])
def test_sound_bounds_are_never_below_a_40_digit_reference(case):
    """218 of 694 conv bounds and 57 of 100 Linear bounds sat below the true norm by up to 5.9e-16 relative
    before outward rounding; now none may, over many random layers."""
    mpmath.mp.dps = 40
    generator = torch.Generator().manual_seed(3)
    for _ in range(12):
        if case == "linear":
            matrix = torch.randn(9, 6, generator=generator).double()
            bound = spectral_norm_upper(matrix.float())
        else:
            stride = 2 if case == "strided conv" else 1
            weight = torch.randn(3, 2, 3, 3, generator=generator)
            matrix = explicit_conv_matrix(weight, (2, 4, 4), (stride, stride), (1, 1))
            bound = float(gloro.conv_norms.conv2d_sound_norm(weight, (2, 4, 4), (stride, stride), (1, 1)))
        exact = max(mpmath.svd_r(mpmath.matrix(matrix.tolist()), compute_uv=False))
        assert mpmath.mpf(bound) >= exact
        assert mpmath.mpf(bound) <= exact * (1 + mpmath.mpf(1e-9))  # and it stays tight


def test_overflow_to_inf_is_never_certified():
    """A logit that overflows float32 to +inf has an infinite gap: it must not get an infinite radius."""
    hidden, head = torch.eye(2) * 1e30, torch.tensor([[1e30, 0.0], [0.0, 0.0]])
    net = dense_net([hidden, head], [torch.zeros(2), torch.zeros(2)])
    x = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    logits = net.predict_clean(x)
    assert torch.isinf(logits).any()
    certificate = net.certify(x, 0.0)
    assert not certificate.certified.any()
    assert (certificate.radius == -math.inf).all()  # a box on which the net can overflow certifies nothing


def test_a_net_that_may_overflow_somewhere_on_its_box_certifies_nothing():
    """Finite logits at these points, but some input in [0, 1]^d overflows a hidden unit: no certificate."""
    hidden = torch.tensor([[3e38, -3e38], [1.0, 0.0]])
    net = dense_net([hidden, torch.tensor([[0.0, 1.0], [0.0, -1.0]])], [torch.zeros(2), torch.zeros(2)])
    x = torch.tensor([[0.5, 0.5], [0.9, 0.9]])
    assert torch.isfinite(net.predict_clean(x)).all()
    assert not net.certify(x, 0.0).certified.any()


@pytest.mark.parametrize("edit", ["in place", "optimizer step", "through numpy", "new tensor", "new layer"])
def test_stale_frozen_constants_are_refused(edit):
    """After freeze(), any change of a weight leaves K_ij stale: certify and the frozen forward must refuse."""
    model = gloro.create_model("2C2F", (1, 8, 8), 10, seed=0)
    net = gloro.GloroNet(model, epsilon=0.3).freeze()
    x = torch.rand(8, 1, 8, 8)
    net.certify(x)
    first = net.layers[0]
    with torch.no_grad():
        if edit == "in place":
            first.weight.mul_(3.0)
        elif edit == "optimizer step":
            first.weight.grad = torch.ones_like(first.weight)
            torch.optim.SGD([first.weight], lr=1.0).step()
        elif edit == "through numpy":
            first.weight.detach().numpy()[0, 0, 0, 0] += 1.0  # bypasses PyTorch's version counter
        elif edit == "new tensor":
            first.weight.data = first.weight.data * 3.0
        else:  # an equal layer with other weights, put in the first one's place
            replacement = copy.deepcopy(first)
            replacement.weight.mul_(3.0)
            net.model[0] = replacement
    with pytest.raises(RuntimeError, match="changed after freeze"):
        net.certify(x)
    with pytest.raises(RuntimeError, match="changed after freeze"):
        net(x)
    if edit == "new layer":  # the bounds were built for the layers the GloroNet was given
        with pytest.raises(RuntimeError, match="replaced"):
            net.freeze()
        return
    net.freeze()
    assert net.certify(x).radius.shape == (8,)


def test_low_precision_settings_do_not_reach_certification():
    """Autocast (bfloat16) and reduced float32 matmul precision moved radii by up to 4.2e-3: certification
    must give the same bits whatever the caller has switched on."""
    model = gloro.create_model("2C2F", (1, 8, 8), 10, seed=1)
    net = gloro.GloroNet(model, epsilon=0.3).freeze()
    x = torch.rand(64, 1, 8, 8)
    reference = net.certify(x)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")  # bf16 products on the CPU (oneDNN), TF32 on GPUs
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert net.predict_clean(x).dtype == torch.bfloat16  # the fast path is still fast
            low = net.certify(x)
            audited = create_certifier("global")(net, x)
    finally:
        torch.set_float32_matmul_precision(before)
    assert torch.equal(low.radius, reference.radius) and torch.equal(audited.radius, reference.radius)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_the_rounding_offsets_cover_the_actual_forward_error(dtype):
    """|(ŷ_j − ŷ_i) − (y_j − y_i)| ≤ O_ij / 2 for the net evaluated in `dtype`, against float64 (whose own
    error is ~1e-13, far below the offsets), at random points, box corners and the data's extremes."""
    model = gloro.create_model("2C2F", (1, 8, 8), 10, seed=2)
    net = gloro.GloroNet(model, epsilon=0.3).to(dtype)
    x = box_points(300, 300, torch.Generator().manual_seed(4))
    offsets = net.margin_offsets()
    assert torch.isfinite(offsets).all()
    computed = net.predict_clean(x.to(dtype)).double()
    exact = copy.deepcopy(net.model).double()(x.double())
    error = (computed - exact).detach()
    pairwise = (error[:, :, None] - error[:, None, :]).abs()
    assert (pairwise <= offsets[None] / 2).all()
    assert pairwise.max() > 0  # the float net really rounds


def test_a_bfloat16_net_whose_sums_have_no_error_bound_certifies_nothing():
    """With u = 2^-8, a 257-term inner product has no worst-case bound (n·u > 1/2): nothing may be certified."""
    net = gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, seed=2), epsilon=0.3).to(torch.bfloat16)
    assert torch.isinf(net.margin_offsets()).any()
    assert not net.certify(torch.rand(50, 1, 8, 8).to(torch.bfloat16), 0.0).certified.any()


def near_threshold_counts(net: gloro.GloroNet, x: torch.Tensor) -> tuple[int, int]:
    """(certified, violations) over points whose margin sits within rounding of the threshold: ε set to each
    point's float32 radius without offsets, and just around it."""
    k = net.lipschitz_constant()
    naive = gloro.margin.certify_logits(net.predict_clean(x), k, 0.0, offsets=torch.zeros_like(k)).radius
    certified = violations = 0
    for point, radius in zip(x, naive.tolist()):
        if radius > 0:
            for epsilon in (radius * (1 - 1e-5), radius * (1 - 1e-6), radius, radius * (1 + 1e-7)):
                counts = exact_violations(net, point[None], epsilon)
                certified, violations = certified + counts[0], violations + counts[1]
    return certified, violations


def near_threshold_case() -> tuple[gloro.GloroNet, torch.Tensor]:
    torch.manual_seed(5)
    net = dense_net([torch.randn(8, 4), torch.randn(3, 8)], [torch.randn(8) * 0.1, torch.randn(3) * 0.1])
    return net, torch.rand(40, 4)


def test_certificates_near_the_threshold_agree_with_an_exact_evaluation():
    """A certified point's exact rational margins clear K_ij·ε, for ε within rounding of its radius; each
    point's own allowance (`SoundConstants.refine`) does certify some of them."""
    net, x = near_threshold_case()
    certified, violations = near_threshold_counts(net, x)
    assert violations == 0 and certified > 0
    k = net.lipschitz_constant()
    naive = gloro.margin.certify_logits(net.predict_clean(x), k, 0.0, offsets=torch.zeros_like(k)).radius
    assert (net.certify(x, 0.0).radius <= naive).all()  # never more generous than ignoring rounding


def test_a_planted_allowance_below_the_rounding_is_caught(monkeypatch):
    """The exact check above can fail: with each point's allowance planted at zero, below what the points'
    rounding actually is, it finds certified points whose exact margin does not clear K_ij·ε."""
    net, x = near_threshold_case()
    zeros = lambda self, x, *rest: torch.zeros(len(x), self.num_classes, dtype=torch.float64)  # noqa: E731
    monkeypatch.setattr(gloro.forward_error.RoundingModel, "ball_pairs", zeros)
    monkeypatch.setattr(gloro.forward_error.RoundingModel, "measured_pairs", zeros)
    assert near_threshold_counts(net, x)[1] > 0


def test_certify_rejects_points_outside_the_input_box():
    net = gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, seed=0), epsilon=0.3)
    with pytest.raises(ValueError, match=r"must lie in \[0.0, 1.0\]"):
        net.certify(torch.full((2, 1, 8, 8), 1.5))
    with pytest.raises(ValueError, match="input_range"):
        gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10), epsilon=0.3, input_range=(1, 0))


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_a_head_without_classes_is_rejected():
    with pytest.raises(ValueError, match="at least one class"):
        gloro.GloroNet(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 0)), epsilon=0.1)


def test_a_frozen_net_copied_or_pickled_checks_its_own_weights():
    """The weight check's addresses belong to one net: a deep copy or a pickled net checks its own."""
    net = gloro.GloroNet(gloro.create_model("2C2F", (1, 8, 8), 10, seed=3), epsilon=0.3).freeze()
    x = torch.rand(4, 1, 8, 8)
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    for twin in (copy.deepcopy(net), torch.load(buffer, weights_only=False)):
        assert torch.equal(twin.certify(x).radius, net.certify(x).radius)
        with torch.no_grad():
            twin.layers[0].weight.mul_(2.0)
        with pytest.raises(RuntimeError, match="changed after freeze"):
            twin.certify(x)
        net.certify(x)  # the original's weights did not change


@pytest.mark.parametrize("complex_", [False, True])
def test_the_batched_norm_bound_is_never_below_any_slices_exact_norm(complex_):
    generator = torch.Generator().manual_seed(3)
    shape = (6, 5, 7)
    stack = torch.randn(*shape, generator=generator, dtype=torch.float64)
    if complex_:
        stack = torch.complex(stack, torch.randn(*shape, generator=generator, dtype=torch.float64))
    scales = torch.tensor([1.0, 1e-300, 3e-310, 1e150, 7.0, 2.0**-1060], dtype=torch.float64)
    stack = stack * scales.view(-1, 1, 1)  # mixed scales, subnormal ones included
    bound = Fraction(gloro.outward.largest_norm_up(stack))
    for matrix in stack:
        values = matrix.flatten().tolist()
        exact = sum(Fraction(v.real) ** 2 + Fraction(v.imag) ** 2 if complex_ else Fraction(v) ** 2 for v in values)
        assert bound**2 >= exact  # exact squared norm, in rational arithmetic: no tolerance

"""Per-layer bounds against exact spectral norms of the explicit operators."""

import pytest
import torch
import torch.nn.functional as F
from conftest import conv_case_strategy, float32_estimate_slack, gamma32
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import gloro
from gloro.conv_norms import conv2d_circulant_bound
from gloro.layer_bounds import bound_for
from gloro.layers import UnsupportedLayerError
from gloro.lipschitz import Conv2dBound, LinearBound


def exact_norm(layer: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Largest singular value of the layer's Jacobian (the bias-free linear map) at one input, in float64."""
    layer = layer.double()
    x = torch.rand(input_shape, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda v: layer(v[None])[0], x)
    matrix = jacobian.reshape(jacobian[(0,) * (jacobian.dim() - x.dim())].numel() and -1, x.numel())
    return float(torch.linalg.svdvals(matrix)[0])


def converged(bound, layer: nn.Module, max_iterations: int = 3000, tol: float = 1e-7) -> float:
    """Power iteration until the estimate moves by less than `tol` (relative) over 25 steps."""
    previous = 0.0
    with torch.no_grad():
        for _ in range(0, max_iterations, 25):
            current = float(bound.estimate(layer, 25))
            if abs(current - previous) <= tol * current:
                break
            previous = current
    return current


conv_cases = conv_case_strategy(3, 4, 5, 9)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_cases, seed=st.integers(0, 2**16))
def test_conv_power_iteration_and_sound_bound_match_exact_norm(case, seed):
    c_in, c_out, kernel, stride, padding, height, width = case
    torch.manual_seed(seed)
    layer = nn.Conv2d(c_in, c_out, kernel, stride, padding)
    shape = (c_in, height, width)
    exact = exact_norm(layer, shape)
    layer = layer.float()
    for as_matrix in (True, False):  # im2col products and conv2d / conv_transpose2d: the same operator
        bound = Conv2dBound(layer, shape, torch.Generator().manual_seed(seed))
        bound.as_matrix = as_matrix
        assert converged(bound, layer) == pytest.approx(exact, rel=1e-3)
    assert float(bound.sound(layer)) >= exact  # no tolerance: a bound below the norm is no bound
    circulant = float(conv2d_circulant_bound(layer.weight, shape[1:], (stride, stride), (padding, padding)))
    assert circulant >= exact


@settings(max_examples=40, deadline=None)
@given(case=conv_cases, seed=st.integers(0, 2**16), path=st.sampled_from(["columns", "convolutions"]))
def test_gathered_columns_are_the_conv_and_its_adjoint(case, seed, path):
    """The im2col operator is conv2d, and one step of either PyTorch path is AᵀAx / ‖AᵀAx‖ with
    Aᵀ = conv_transpose2d."""
    c_in, c_out, kernel, stride, padding, height, width = case
    torch.manual_seed(seed)
    layer = nn.Conv2d(c_in, c_out, kernel, stride, padding).double().to(memory_format=torch.channels_last)
    bound = Conv2dBound(layer, (c_in, height, width), None).double()
    assert bound.as_matrix
    x = bound.iterate.clone()
    y = F.conv2d(x, layer.weight, None, stride, padding)
    assert torch.allclose(bound.operator(x, layer.weight).view_as(y), y)
    back = F.conv_transpose2d(y, layer.weight, None, stride, padding, bound.output_padding)
    bound.advance(layer.weight.detach(), 1, path)
    assert torch.allclose(bound.iterate, back / back.norm())


@pytest.mark.parametrize(
    ("c_in", "c_out", "kernel", "stride", "size"), [(3, 32, 3, 1, 32), (32, 32, 4, 2, 32), (16, 32, 4, 2, 14)]
)
def test_circulant_bound_is_sound_and_tight_on_paper_layers(c_in, c_out, kernel, stride, size):
    torch.manual_seed(0)
    layer = nn.Conv2d(c_in, c_out, kernel, stride, 1)
    bound = Conv2dBound(layer, (c_in, size, size), torch.Generator().manual_seed(0))
    estimate = converged(bound, layer, 1000, tol=1e-6)
    circulant = float(conv2d_circulant_bound(layer.weight, (size, size), (stride, stride), (1, 1)))
    assert estimate <= circulant * (1 + float32_estimate_slack(layer, bound))
    assert circulant <= 1.25 * estimate  # sound, yet close enough to certify with


def test_strided_bound_is_much_tighter_than_the_stride_one_operator():
    torch.manual_seed(1)
    layer = nn.Conv2d(8, 8, 4, 2, 1)
    strided = float(conv2d_circulant_bound(layer.weight, (16, 16), (2, 2), (1, 1)))
    unstrided = float(conv2d_circulant_bound(layer.weight, (16, 16), (1, 1), (1, 1)))
    exact = exact_norm(layer, (8, 16, 16))
    assert exact <= strided < 0.8 * unstrided


@pytest.mark.parametrize(("n_in", "n_out"), [(7, 3), (30, 50), (128, 10)])
def test_linear_bounds_equal_the_largest_singular_value(n_in, n_out):
    torch.manual_seed(n_in)
    layer = nn.Linear(n_in, n_out)
    exact = float(torch.linalg.svdvals(layer.weight.detach().double())[0])
    bound = LinearBound(layer, torch.Generator().manual_seed(0))
    assert float(bound.sound(layer)) == pytest.approx(exact, rel=1e-12)
    assert converged(bound, layer) == pytest.approx(exact, rel=1e-4)


@pytest.mark.parametrize(
    ("kernel", "stride", "padding", "size"), [(2, 2, 0, 8), (3, 1, 1, 7), (3, 2, 1, 9), (4, 4, 0, 16)]
)
def test_avg_pool_bound_is_its_exact_norm(kernel, stride, padding, size):
    layer = nn.AvgPool2d(kernel, stride, padding)
    bound = bound_for(layer, (2, size, size))
    assert float(bound.sound(layer)) == pytest.approx(exact_norm(layer, (2, size, size)), rel=1e-9)
    if stride == kernel and padding == 0:
        assert float(bound.sound(layer)) == pytest.approx(1 / kernel)


@pytest.mark.parametrize("layer", [nn.ReLU(), gloro.MinMax(), nn.Flatten(), nn.Identity()])
def test_unit_layers_are_one_lipschitz(layer):
    bound = bound_for(layer, (4, 3, 3))
    assert float(bound.sound(layer)) == 1.0
    x1, x2 = torch.randn(256, 4, 3, 3), torch.randn(256, 4, 3, 3)
    ratio = (layer(x1) - layer(x2)).flatten(1).norm(dim=1) / (x1 - x2).flatten(1).norm(dim=1)
    # float32 rounds each difference, each 36-term norm and the division: 1 + 2γ₃₉ at most
    assert float(ratio.max()) <= 1 + 2 * gamma32(39)


def test_minmax_sorts_adjacent_channel_pairs():
    x = torch.tensor([[3.0, 1.0, -2.0, 5.0]])
    assert gloro.MinMax()(x).tolist() == [[1.0, 3.0, -2.0, 5.0]]
    with pytest.raises(ValueError, match="even number of channels"):
        gloro.MinMax()(torch.ones(1, 3))


class ScaledLinear(nn.Linear):
    def forward(self, x):
        return 3 * super().forward(x)


@pytest.mark.parametrize(
    "layer",
    [
        nn.Tanh(),
        nn.BatchNorm2d(3),
        nn.MaxPool2d(2),
        ScaledLinear(4, 4),
        nn.Conv2d(4, 4, 3, groups=2),
        nn.Conv2d(3, 3, 3, dilation=2),
        nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular"),
    ],
)
def test_layers_without_a_known_bound_raise_and_name_themselves(layer):
    with pytest.raises(UnsupportedLayerError, match=type(layer).__name__):
        bound_for(layer, (4, 8, 8))


def test_iterates_are_buffers_that_training_advances():
    layer = nn.Conv2d(2, 4, 3, 1, 1)
    bound = Conv2dBound(layer, (2, 6, 6), torch.Generator().manual_seed(0))
    assert "iterate" in bound.state_dict()
    start = bound.iterate.clone()
    bound.estimate(layer, 0)
    assert torch.equal(bound.iterate, start)
    bound.estimate(layer, 5)
    assert not torch.equal(bound.iterate, start)
    assert float(bound.iterate.norm()) == pytest.approx(1.0, rel=1e-5)


def test_estimate_is_differentiable_in_the_weights():
    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    bound = LinearBound(layer, torch.Generator().manual_seed(0))
    bound.estimate(layer, 500).backward()
    u, sigma, vh = torch.linalg.svd(layer.weight.detach().double())
    expected = torch.outer(u[:, 0], vh[0])  # gradient of σ_max
    # 500 steps leave (σ₂/σ₁)^1000 of the start; float32 steps (10 roundings deep) perturb WᵀW by at most
    # γ₁₀·‖|W|‖², which turns its top eigenvector by at most that over the gap σ₁² − σ₂² (Davis–Kahan); u vᵀ
    # moves by at most the distances of u and of v, each at most twice that angle
    vector_error = float((sigma[1] / sigma[0]) ** 1000) + gamma32(10) * float(
        torch.linalg.matrix_norm(layer.weight.detach().double().abs(), 2) ** 2 / (sigma[0] ** 2 - sigma[1] ** 2)
    )
    difference = (layer.weight.grad.double().abs() - expected.abs()).norm()
    assert float(difference) <= 4 * vector_error


def test_a_zero_operator_keeps_the_previous_iterate(power_loop):
    layer = nn.Linear(5, 3)
    bound = LinearBound(layer, torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.weight.zero_()
    start = bound.iterate.clone()
    assert float(bound.estimate(layer, 10).detach()) == 0.0
    assert torch.equal(bound.iterate, start)


def reference_iterate(matrix: torch.Tensor, start: torch.Tensor, steps: int) -> torch.Tensor:
    """Textbook power iteration on AᵀA (normalised every step), in float64."""
    x = start.flatten().double()
    for _ in range(steps):
        x = matrix.T @ (matrix @ x)
        x = x / x.norm()
    return x


def explicit_matrix(bound, layer: nn.Module) -> torch.Tensor:
    """The operator A of a power-iteration bound as a float64 matrix, column by column."""
    n = bound.iterate.numel()
    basis = torch.eye(n, dtype=torch.float64).view(n, *bound.iterate.shape[1:])
    weight = layer.weight.detach().double()
    return torch.stack([bound.operator(e[None], weight).flatten() for e in basis], dim=1)


@pytest.mark.parametrize("scale", [1.0, 1e12, 1e-12])
@pytest.mark.parametrize("steps", [1, 4, 5, 7, 10, 13])
@pytest.mark.parametrize("case", ["linear", "conv_gram", "conv_columns", "conv_convolutions"])
def test_rarely_rescaled_iteration_matches_the_textbook_iteration(case, steps, scale, power_loop):
    """Scaling A and rescaling the iterate only now and then must leave every iterate's direction unchanged,
    even for weights far from unit size (no overflow or underflow in float32)."""
    torch.manual_seed(steps)
    if case == "linear":
        layer = nn.Linear(40, 12)
        bound = LinearBound(layer, torch.Generator().manual_seed(1))
    else:
        layer = nn.Conv2d(1, 9, 3, 2, 1) if case == "conv_gram" else nn.Conv2d(3, 4, 3, 2, 1)
        bound = Conv2dBound(layer, (layer.in_channels, 9, 9), torch.Generator().manual_seed(1))
        bound.as_matrix = case != "conv_convolutions"
        assert bound.through_gram == (case == "conv_gram")
    with torch.no_grad():
        layer.weight.mul_(scale)
    matrix = explicit_matrix(bound, layer)
    expected = reference_iterate(matrix, bound.iterate, steps)
    bound.advance(layer.weight.detach(), steps)
    assert torch.isfinite(bound.iterate).all()
    assert torch.allclose(bound.iterate.flatten().double(), expected, atol=1e-5)


def test_sound_bound_is_reused_only_while_the_weight_is_unchanged(monkeypatch):
    """Every way of changing a weight in place (an optimiser step, `.data` edits that bypass the version
    counter, load_state_dict, a new Parameter) gives a fresh bound equal to the exact norm; an unchanged weight
    reuses the stored one."""
    layer = nn.Conv2d(2, 3, 3, 2, 1)
    bound = Conv2dBound(layer, (2, 7, 7), None)
    computed = []
    original = Conv2dBound.sound_bound
    monkeypatch.setattr(Conv2dBound, "sound_bound", lambda self, w, fast=False: computed.append(1) or original(self, w))

    def exact_norm_of_layer() -> float:
        return exact_norm(
            nn.Conv2d(2, 3, 3, 2, 1, bias=False).requires_grad_(False).double().apply(copy_weight), (2, 7, 7)
        )

    def copy_weight(module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            module.weight.copy_(layer.weight.detach())

    def assert_fresh() -> None:
        count = len(computed)
        assert float(bound.sound(layer)) == pytest.approx(exact_norm_of_layer(), rel=1e-9)
        assert len(computed) == count + 1

    assert_fresh()
    first = bound.sound(layer)
    first.mul_(0)  # a caller's in-place edit must not reach the stored bound
    assert float(bound.sound(layer)) == pytest.approx(exact_norm_of_layer(), rel=1e-9)
    assert len(computed) == 1

    optimizer = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(torch.randn(4, 2, 7, 7)).square().sum().backward()
    optimizer.step()
    assert_fresh()
    layer.weight.data.copy_(torch.randn_like(layer.weight))
    assert_fresh()
    layer.load_state_dict({"weight": 3 * layer.weight.detach(), "bias": layer.bias.detach()})
    assert_fresh()
    layer.weight = nn.Parameter(torch.randn_like(layer.weight))
    assert_fresh()
    with torch.no_grad():
        layer.weight[0, 0, 0, 0] += 1e-3
    assert_fresh()

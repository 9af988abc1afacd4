"""The compiled power iteration against the PyTorch loops it replaces on the CPU, and how it is built."""

import math
import os

import pytest
import torch
from conftest import conv_case_strategy, gamma32
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from gloro import native
from gloro.conv_norms import explicit_conv_matrix
from gloro.lipschitz import Conv2dBound, LinearBound
from gloro.margin import certify_logits

needs_library = pytest.mark.skipif(native.library() is None, reason="no C compiler: the library is not built")


def both_paths(bound, weight: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The iterate after `steps` steps through the compiled loop, and through the PyTorch loop on the same
    operator (matrix products on gathered columns for a conv)."""
    start = bound.iterate.clone()
    bound.advance(weight, steps, "compiled")
    compiled = bound.iterate.clone()
    bound.iterate.copy_(start)
    bound.advance(weight, steps, "matmul" if isinstance(bound, LinearBound) else "columns")
    return compiled, bound.iterate.clone()


def iterate_tolerance(matrix: torch.Tensor, start: torch.Tensor, steps: int, terms: int) -> float:
    """How far apart (ℓ2) two float32 computations of `steps` steps x ← AᵀAx/‖AᵀAx‖ from `start` can end, to
    first order, in any summation order: a step's products, at most `terms` roundings deep, are off by at
    most γ_terms·|A|ᵀ|A||x| (Higham, Thm 3.5), which turns the direction by at most twice that over ‖AᵀAx‖; an
    error made at step k reaches step s scaled by at most 2σ₁^{2(s−k)}/‖(AᵀA)^{s−k}x_k‖; the last normalization
    adds γ_{d+3}. Evaluated along the exact trajectory, in float64."""
    a = matrix.detach().double()
    gram, magnitude = a.T @ a, a.abs()
    top = float(torch.linalg.matrix_norm(a, 2)) ** 2
    x = start.detach().double().flatten()
    x = x / x.norm()
    turns, growth = [], []  # each step's rounding, as a turn of the unit direction, and ‖AᵀAx_k‖
    for _ in range(steps):
        y = gram @ x
        growth.append(float(y.norm()))
        turns.append(2 * gamma32(terms) * float((magnitude.T @ (magnitude @ x.abs())).norm()) / growth[-1])
        x = y / growth[-1]
    carried = [2 * top ** (steps - k) / math.prod(growth[k:]) if k < steps else 1.0 for k in range(1, steps + 1)]
    return 2 * (sum(c * t for c, t in zip(carried, turns)) + gamma32(len(x) + 3))


def conv_terms(matrix: torch.Tensor, out_channels: int) -> int:
    """The deepest sum in a step through a conv's matrix A, whichever way it is associated: a patch (a row of
    A), the transposed product and fold (a column of A), and a Gram entry over the output channels."""
    nonzero = matrix != 0
    return int(nonzero.sum(1).max()) + int(nonzero.sum(0).max()) + out_channels


conv_cases = conv_case_strategy(6, 40, 4, 12)  # out channels: vector blocks of 32, 16 and an edge


@needs_library
@settings(max_examples=60, deadline=None)
@given(case=conv_cases, steps=st.integers(1, 13), seed=st.integers(0, 2**16), channels_last=st.booleans())
def test_compiled_conv_iterates_match_the_pytorch_loops(case, steps, seed, channels_last):
    c_in, c_out, kernel, stride, padding, height, width = case
    torch.manual_seed(seed)
    layer = nn.Conv2d(c_in, c_out, kernel, stride, padding)
    bound = Conv2dBound(layer, (c_in, height, width), torch.Generator().manual_seed(seed))
    assert bound.as_matrix
    if channels_last:  # the layout gloro.train uses, for the weight and, through .to(), the iterate too
        layer.to(memory_format=torch.channels_last)
        bound.to(memory_format=torch.channels_last)
    start = bound.iterate.clone()
    compiled, reference = both_paths(bound, layer.weight.detach(), steps)
    matrix = explicit_conv_matrix(layer.weight, (c_in, height, width), bound.stride, bound.padding)
    tolerance = iterate_tolerance(matrix, start, steps, conv_terms(matrix, c_out))
    assert float((compiled - reference).norm()) <= tolerance
    assert abs(float(compiled.double().norm()) - 1) <= torch.finfo(torch.float32).eps * (compiled.numel() + 3)


@needs_library
@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (3, 15), (4, 16), (7, 17), (100, 1568), (10, 512)])
@pytest.mark.parametrize("steps", [1, 5, 10, 13])
def test_compiled_linear_iterates_match_the_pytorch_loops(rows, cols, steps):
    torch.manual_seed(rows * cols + steps)
    layer = nn.Linear(cols, rows)
    bound = LinearBound(layer, torch.Generator().manual_seed(steps))
    start = bound.iterate.clone()
    compiled, reference = both_paths(bound, layer.weight.detach(), steps)
    assert float((compiled - reference).norm()) <= iterate_tolerance(layer.weight, start, steps, rows + cols)


@needs_library
@pytest.mark.parametrize("fill", [0.0, float("nan"), float("inf")])
@pytest.mark.parametrize("kind", ["linear", "conv_gram", "conv_columns"])
def test_an_operator_without_a_direction_keeps_the_iterate_on_both_paths(kind, fill):
    layer = nn.Linear(9, 4) if kind == "linear" else nn.Conv2d(1 if kind == "conv_gram" else 3, 9, 3, 2, 1)
    bound = LinearBound(layer, None) if kind == "linear" else Conv2dBound(layer, (layer.in_channels, 8, 8), None)
    with torch.no_grad():
        layer.weight.fill_(fill)
    start = bound.iterate.clone()
    compiled, reference = both_paths(bound, layer.weight.detach(), 7)
    assert torch.equal(compiled, start) and torch.equal(reference, start)


@needs_library
def test_only_float32_cpu_weights_take_the_compiled_loop():
    weight = torch.ones(3, 4)
    assert native.runs(weight, torch.ones(1, 4))
    assert not native.runs(weight.double(), torch.ones(1, 4).double())
    assert not native.runs(weight.bfloat16(), torch.ones(1, 4))


@needs_library
def test_a_build_is_kept_per_processor_and_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(native, "cache_dir", lambda: tmp_path)
    first = native.build()
    built = first.stat().st_mtime_ns
    assert native.build() == first and first.stat().st_mtime_ns == built  # not compiled again
    monkeypatch.setattr(native, "processor", lambda: "another processor")
    other = native.build()
    assert other != first and other.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([first.name, other.name])  # no partial files


@pytest.fixture
def fresh_library():
    """native.library() looked up afresh inside the test, and again (normally) after it."""
    native.library.cache_clear()
    yield
    native.library.cache_clear()


def test_without_a_compiler_the_pytorch_loops_run_and_a_warning_says_so(tmp_path, monkeypatch, fresh_library):
    monkeypatch.setattr(native, "cache_dir", lambda: tmp_path)
    monkeypatch.setenv("CC", os.fspath(tmp_path / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match="could not build the compiled power iteration"):
        assert native.library() is None
    layer = nn.Linear(6, 4)
    bound = LinearBound(layer, torch.Generator().manual_seed(0))
    estimate = float(bound.estimate(layer, 500).detach())
    assert estimate == pytest.approx(float(torch.linalg.svdvals(layer.weight.detach())[0]), rel=1e-4)


def test_gloro_native_0_turns_it_off_without_a_warning(monkeypatch, fresh_library, recwarn):
    monkeypatch.setenv("GLORO_NATIVE", "0")
    assert native.library() is None
    assert not recwarn.list


@needs_library
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=conv_cases, seed=st.integers(0, 2**16), channels_last=st.booleans())
def test_compiled_conv_estimates_have_the_pytorch_value_and_gradient(case, seed, channels_last, monkeypatch):
    """The compiled loop's estimate Σ W ⊙ u xᵀ equals ‖Ax‖ and its weight gradient that of the norm."""
    c_in, c_out, kernel, stride, padding, height, width = case
    torch.manual_seed(seed)
    layer = nn.Conv2d(c_in, c_out, kernel, stride, padding)
    if channels_last:
        layer.to(memory_format=torch.channels_last)
    bound = Conv2dBound(layer, (c_in, height, width), torch.Generator().manual_seed(seed))
    start = bound.iterate.clone()
    monkeypatch.setenv("GLORO_POWER_PATH", "compiled")
    compiled = bound.estimate(layer, 3)
    compiled.backward()
    compiled_gradient, layer.weight.grad = layer.weight.grad, None
    bound.iterate.copy_(start)
    with monkeypatch.context() as patch:
        patch.setattr(native, "library", lambda: None)
        reference = bound.estimate(layer, 3)
    reference.backward()
    # Both sides take ‖Ax‖ and its gradient u xᵀ (u = Ax/‖Ax‖, summed over the output positions) at iterates
    # at most `moved` apart: the value moves by σ₁ times that, u by 2σ₁/‖Ax‖ times it, and each is rounded
    # (a patch-deep product, the norm over the m outputs, the gradient summed over the positions).
    matrix = explicit_conv_matrix(layer.weight, (c_in, height, width), bound.stride, bound.padding)
    moved = iterate_tolerance(matrix, start, 3, conv_terms(matrix, c_out))
    x = bound.iterate.detach().double().flatten()
    top, image, rows = float(torch.linalg.matrix_norm(matrix, 2)), float((matrix @ x).norm()), len(matrix)
    structure = explicit_conv_matrix(torch.ones_like(layer.weight), (c_in, height, width), bound.stride, bound.padding)
    patch, reads = int(structure.sum(1).max()), int(structure.sum(0).max()) // c_out  # patches reading one input
    rounding = gamma32(patch) * float((matrix.abs() @ x.abs()).norm()) + gamma32(rows + 2) * image
    assert abs(float(compiled.detach()) - float(reference.detach())) <= top * moved + 2 * rounding
    turned = 2 * top * moved / image + 2 * (2 * rounding / image + gamma32(rows + 3))
    positions = rows // c_out
    allowed = math.sqrt(reads) * (turned + moved + 2 * gamma32(positions))
    assert float((compiled_gradient - layer.weight.grad).double().norm()) <= allowed


def torch_certificate(logits, lipschitz, offsets, epsilon, monkeypatch):
    """margin.certify_logits with the compiled margin switched off."""
    with monkeypatch.context() as patch:
        patch.setattr(native, "library", lambda: None)
        return certify_logits(logits, lipschitz, epsilon, offsets=offsets)


@needs_library
@pytest.mark.parametrize("classes", [1, 2, 10, 200])
@pytest.mark.parametrize("logits_kind", ["normal", "ties", "non_finite"])
def test_compiled_certificates_are_the_pytorch_certificates_bit_for_bit(classes, logits_kind, monkeypatch):
    torch.manual_seed(classes)
    logits = torch.randn(500, classes) * 3
    if logits_kind == "ties":  # several classes share the top logit: the first one is the prediction
        logits = torch.randint(0, 3, (500, classes)).float()
    elif logits_kind == "non_finite":  # NaN first, NaN later, +inf and −inf: each row is the compiled path's own
        logits[::7, 0], logits[3::7, -1], logits[5::7, 0] = float("nan"), float("inf"), float("-inf")
        logits[6::7, classes // 2] = float("nan")
    weights = torch.randn(classes, 6, dtype=torch.float64)
    weights[classes // 2] = weights[0]  # two identical head rows: K_ij = 0, an infinite radius between them
    lipschitz = 1.7 * torch.cdist(weights, weights)
    offsets = torch.rand(classes, classes, dtype=torch.float64) * 1e-3
    outcomes = set()
    for epsilon in (0.0, 0.3, 2.0):
        assert native.certify(logits, lipschitz, offsets, epsilon) is not None  # the compiled path ran
        compiled = certify_logits(logits, lipschitz, epsilon, offsets=offsets)
        outcomes.update(compiled.certified.tolist())
        reference = torch_certificate(logits, lipschitz, offsets, epsilon, monkeypatch)
        assert torch.equal(compiled.predictions, reference.predictions)
        assert torch.equal(compiled.predictions, logits.argmax(1))
        assert torch.equal(compiled.certified, reference.certified)
        assert torch.equal(compiled.radius.isnan(), reference.radius.isnan())
        assert torch.equal(compiled.radius.nan_to_num(), reference.radius.nan_to_num())
        assert not compiled.radius.isnan().any()  # a zero K_ij gives ±inf, never NaN
        finite = torch.isfinite(logits).all(1)
        assert not compiled.certified[~finite].any() and (compiled.radius[~finite] == -math.inf).all()
    # certified and rejected points both compared (a tie at the top is never certified, even at ε = 0)
    assert outcomes == {True, False} or classes <= 2 or (logits_kind == "ties" and classes > 10)


@needs_library
def test_the_compiled_margin_takes_only_float32_logits_and_matching_float64_k_and_offsets():
    k = o = torch.ones(3, 3, dtype=torch.float64)
    assert native.certify(torch.zeros(4, 3), k, o, 0.1) is not None
    assert native.certify(torch.zeros(4, 3).double(), k, o, 0.1) is None
    assert native.certify(torch.zeros(4, 3), k.float(), o, 0.1) is None
    assert native.certify(torch.zeros(4, 3), k, o.float(), 0.1) is None
    assert native.certify(torch.zeros(4, 2), k, o, 0.1) is None  # the PyTorch path then reports the mismatch


@pytest.mark.parametrize("compiled", [True, False])
def test_a_head_without_classes_is_rejected_by_both_paths(compiled, monkeypatch):
    if not compiled:
        monkeypatch.setattr(native, "library", lambda: None)
    empty = torch.zeros(0, 0, dtype=torch.float64)
    with pytest.raises(ValueError, match="at least one class"):
        certify_logits(torch.zeros(4, 0), empty, 0.1, offsets=empty)
    if compiled and native.library() is not None:
        with pytest.raises(ValueError, match="at least one class"):
            native.certify(torch.zeros(4, 0), empty, empty, 0.1)

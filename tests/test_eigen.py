"""The top-eigenvalue solver and the one-triangle Gram that local certification uses (gloro/eigen.py)."""

from __future__ import annotations

import pytest
import torch

from gloro import eigen
from gloro.eigen import SUBSET_MIN_SIZE, gram_lower, largest_eigenvalues
from gloro.outward import spectral_norm_upper

U64 = 2.0**-53


def symmetric_with_spectrum(eigenvalues: torch.Tensor, generator: torch.Generator, complex_: bool) -> torch.Tensor:
    """Q diag(λ) Qᴴ for a random unitary Q: a Hermitian matrix whose eigenvalues are known."""
    n = len(eigenvalues)
    dtype = torch.complex128 if complex_ else torch.float64
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=dtype))
    matrix = (q * eigenvalues.to(dtype)) @ q.mH
    return (matrix + matrix.mH) / 2


@pytest.mark.parametrize("complex_", [False, True])
@pytest.mark.parametrize("n", [5, SUBSET_MIN_SIZE, 300])
def test_the_top_eigenvalue_is_found_to_backward_stable_accuracy(n, complex_):
    """Both routes (LAPACK's index range for one large CPU matrix, the whole spectrum otherwise) land within
    a backward-stable solver's error of the known top eigenvalue, a close second eigenvalue included."""
    generator = torch.Generator().manual_seed(n)
    eigenvalues = torch.rand(n, generator=generator, dtype=torch.float64) * 3
    eigenvalues[0], eigenvalues[1] = 4.0, 4.0 - 1e-7  # a cluster at the top, as GloRo-trained layers have
    matrix = symmetric_with_spectrum(eigenvalues, generator, complex_)
    tolerance = 16 * n * U64 * 4.0  # forming Q diag(λ) Qᴴ and solving each err by a few n·u·‖A‖₂
    top = largest_eigenvalues(matrix)
    assert top.dtype == torch.float64 and top.shape == ()
    assert abs(float(top) - 4.0) <= tolerance
    stacked = largest_eigenvalues(torch.stack([matrix, matrix / 2]))  # a stack goes through torch
    assert stacked.shape == (2,)
    assert abs(float(stacked[0]) - float(top)) <= tolerance and abs(float(stacked[1]) - 2.0) <= tolerance


@pytest.mark.parametrize("n", [10, 200])
def test_only_the_lower_triangle_is_read(n):
    generator = torch.Generator().manual_seed(1)
    matrix = symmetric_with_spectrum(torch.linspace(0, 2, n, dtype=torch.float64), generator, complex_=False)
    scrambled = matrix.tril() + torch.randn(n, n, generator=generator, dtype=torch.float64).triu(1) * 1e3
    assert float(largest_eigenvalues(scrambled)) == pytest.approx(float(largest_eigenvalues(matrix)), rel=1e-12)


def test_a_matrix_with_a_nan_never_gets_a_finite_top_eigenvalue():
    matrix = torch.eye(SUBSET_MIN_SIZE * 2, dtype=torch.float64)
    matrix[3, 1] = float("nan")
    try:
        top = largest_eigenvalues(matrix)
    except RuntimeError:  # torch's solver may refuse it instead
        return
    assert not torch.isfinite(top)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(70, 130), (130, 70), (5, 0)])
def test_gram_lower_holds_every_inner_product_of_the_lower_triangle(shape, dtype):
    """A·Aᵀ and G − A·Aᵀ agree with a full product in the lower triangle, within the products' rounding:
    γ_k·(|A||A|ᵀ)_ij per entry (Higham Thm 3.5), k the inner length, here with a factor 2 to spare."""
    generator = torch.Generator().manual_seed(2)
    part = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
    base = torch.randn(shape[0], shape[0], generator=generator, dtype=torch.float64).to(dtype)
    base = base + base.T
    exact = part.double() @ part.double().T
    u = torch.finfo(dtype).eps / 2
    k = shape[1]
    allowance = 2 * (k * u / (1 - k * u)) * (part.double().abs() @ part.double().abs().T) + 4 * u * base.double().abs()
    lower = torch.ones(shape[0], shape[0], dtype=torch.bool).tril()
    product = gram_lower(part)
    assert product.dtype == dtype and product.shape == (shape[0], shape[0])
    assert ((product.double() - exact).abs() <= allowance)[lower].all()
    update = gram_lower(part, minus_from=base)
    assert ((update.double() - (base.double() - exact)).abs() <= allowance)[lower].all()
    assert torch.equal(base, base.T)  # `minus_from` itself is left alone


def test_gram_lower_takes_a_strided_view():
    generator = torch.Generator().manual_seed(3)
    part = torch.randn(140, 90, generator=generator, dtype=torch.float64).T  # (90, 140), not contiguous
    lower = torch.ones(90, 90, dtype=torch.bool).tril()
    assert torch.allclose(gram_lower(part)[lower], (part @ part.T)[lower], rtol=1e-13, atol=1e-12)


def test_a_large_single_matrix_keeps_its_spectral_norm_bound_tight():
    """`spectral_norm_upper` proves its bound by Cholesky whatever the estimate; the estimate from LAPACK's
    top-only route must still be good enough to keep it within 1e-9 of the norm, and never below it."""
    generator = torch.Generator().manual_seed(4)
    matrix = torch.randn(120, 90, generator=generator, dtype=torch.float64)
    exact = float(torch.linalg.svdvals(matrix)[0])
    bound = spectral_norm_upper(matrix)
    assert exact <= bound <= exact * (1 + 1e-9)


def test_small_blas_calls_stay_on_the_calling_thread_and_large_ones_take_torchs_threads(monkeypatch):
    # OpenBLAS's workers spin after a call and take cores from PyTorch's threads: only large work gains from them
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert eigen.blas_threads(4 / 3 * 100**3) == 1  # a 2C2F's dense layer
    assert eigen.blas_threads(eigen.PARALLEL_MIN_FLOPS) == 4
    seen = []
    controller = eigen._blas_threads()
    original = controller.limit

    def limit(*, limits, user_api):
        seen.append(limits)
        return original(limits=limits, user_api=user_api)

    monkeypatch.setattr(controller, "limit", limit)
    eigen.largest_eigenvalues(torch.eye(100, dtype=torch.float64))
    eigen.gram_lower(torch.ones(100, 128))
    assert seen == [1, 1]

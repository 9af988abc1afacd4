"""The largest eigenvalue of Hermitian matrices, without the rest of the spectrum where LAPACK allows it,
and the one triangle of a Gram that the solver reads.

`torch.linalg.eigvalsh` computes every eigenvalue. For one large matrix on the CPU, LAPACK's ?syevr/?heevr
asked for the top index only (through SciPy) skip the rest after the same reduction to tridiagonal form,
and SciPy's LAPACK is the faster of the two here. Both are backward stable: the value is within a small
multiple of n·u·‖A‖₂ of the exact one, on either side, so a caller that needs a bound adds a slack or
proves one (`gloro.outward`). Stacks, small matrices and GPU tensors go to `torch.linalg.eigvalsh`.
`gram_lower` forms A·Aᵀ by BLAS ?syrk on the CPU: the same inner products as a full product, half of them.
"""

from __future__ import annotations

import functools
import math

import torch

SUBSET_MIN_SIZE = 64  # below this, the whole spectrum costs no more than the call itself
# Below this many flops SciPy's BLAS runs on the calling thread alone: OpenBLAS's idle workers spin for about
# 0.1 s after a call (OPENBLAS_THREAD_TIMEOUT), taking a core from PyTorch's threads, which costs more than a
# second thread saves on a small product (a digits epoch after the per-epoch certificate: 0.05 s became 0.11 s).
PARALLEL_MIN_FLOPS = 1e9


def blas_threads(flops: float) -> int:
    """How many BLAS threads a SciPy call of `flops` floating-point operations gets: torch's count or one."""
    return torch.get_num_threads() if flops >= PARALLEL_MIN_FLOPS else 1


@functools.cache
def _blas_threads():
    """threadpoolctl's controller over the BLAS libraries loaded once SciPy's LAPACK is imported."""
    import scipy.linalg  # noqa: F401 - loads SciPy's BLAS, so that the controller sees it
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def largest_eigenvalues(stack: torch.Tensor) -> torch.Tensor:
    """λ_max of each Hermitian matrix in a (..., n, n) stack (its lower triangle is read), in its real dtype,
    on its device. One CPU matrix of n ≥ `SUBSET_MIN_SIZE` is solved for its top eigenvalue alone, with as
    many BLAS threads as torch uses where it is large enough to gain from them (`blas_threads`)."""
    n = stack.shape[-1]
    one_large = stack.device.type == "cpu" and stack.numel() == n * n and n >= SUBSET_MIN_SIZE
    # a finite sum has no NaN or infinite term: LAPACK is never asked about those (torch then raises or says NaN)
    if not one_large or not math.isfinite(float(stack.sum().abs())):
        return torch.linalg.eigvalsh(stack)[..., -1]
    import scipy.linalg

    matrix = stack.detach().reshape(n, n).resolve_conj().numpy()
    with _blas_threads().limit(limits=blas_threads(4 / 3 * n**3), user_api="blas"):  # tridiagonal reduction
        (top,) = scipy.linalg.eigh(
            matrix, lower=True, eigvals_only=True, subset_by_index=(n - 1, n - 1), driver="evr", check_finite=False
        )
    return torch.tensor(top, dtype=stack.real.dtype).reshape(stack.shape[:-2])


def gram_lower(part: torch.Tensor, minus_from: torch.Tensor | None = None) -> torch.Tensor:
    """part·partᵀ, or minus_from − part·partᵀ, correct in its lower triangle (the upper one is left
    unspecified), for `largest_eigenvalues`: one triangle's inner products by BLAS ?syrk for real CPU matrices."""
    if part.shape[-1] == 0:  # an empty product
        return torch.zeros(len(part), len(part), dtype=part.dtype) if minus_from is None else minus_from.clone()
    if part.device.type != "cpu" or part.is_complex() or part.dtype not in (torch.float32, torch.float64):
        product = part @ part.mT
        return product if minus_from is None else minus_from - product
    import scipy.linalg.blas as blas

    syrk = blas.dsyrk if part.dtype == torch.float64 else blas.ssyrk
    rows = part.detach().numpy().T  # Fortran-ordered columns, as BLAS takes them: no copy when `part` is contiguous
    with _blas_threads().limit(limits=blas_threads(len(part) ** 2 * part.shape[-1]), user_api="blas"):
        if minus_from is None:
            lower = syrk(1.0, rows, trans=1, lower=1)
        else:
            base = minus_from.detach().numpy().copy(order="F")
            lower = syrk(-1.0, rows, beta=1.0, c=base, trans=1, lower=1, overwrite_c=1)
    return torch.from_numpy(lower)

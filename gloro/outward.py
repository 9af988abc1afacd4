"""Rounding that never errs on the unsafe side: γ_n, upward rounding, and spectral norms proven from above.

A float64 SVD or eigen-decomposition returns a number within rounding of ‖A‖₂, on either side. A bound
must not sit below, so `spectral_norm_upper` turns the computed value into a proof: it checks that
t·I − AᴴA is positive definite with a Cholesky factorization, and adds the rounding the factorization
and the Gram product can have made (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed.,
Thms 3.5 and 10.3). Everything here assumes IEEE arithmetic with round-to-nearest and kernels that
evaluate each inner product in some order (no Strassen or FFT products), as PyTorch's CPU kernels do.
"""

from __future__ import annotations

import math

import torch

from gloro.eigen import largest_eigenvalues

U64 = 2.0**-53  # float64 unit roundoff
U32 = 2.0**-24  # float32 unit roundoff
TINY32 = 2.0**-126  # smallest normal float32
TINY64 = 2.0**-1022  # smallest normal float64: with flush-to-zero, the absolute error of one operation
CHOLESKY_ATTEMPTS = 6


def unit_roundoff(dtype: torch.dtype) -> float:
    """u: the largest relative error of one rounded operation in `dtype` (half its machine epsilon)."""
    return torch.finfo(dtype).eps / 2


def up(x: float) -> float:
    """The next float64 above x: a value computed by one rounded operation, pushed past the exact result."""
    return math.nextafter(x, math.inf)


def gamma(n: int, u: float) -> float:
    """γ_n = n·u / (1 − n·u), rounded up: the relative error bound of an n-term inner product."""
    if n * u >= 0.5:
        return math.inf
    return up(up(n * u) / (1 - n * u) * (1 + 4 * U64))


def product_up(values) -> float:
    """An upper bound on the product of non-negative numbers (each multiplication rounded up)."""
    result = 1.0
    for value in values:
        result = up(result * float(value))
    return result


def norm_up(x: torch.Tensor) -> float:
    """An upper bound on ‖x‖₂ (x exactly known, real or complex), computed in float64."""
    return largest_norm_up(x.reshape(1, -1))


def row_norms_up(x: torch.Tensor) -> torch.Tensor:
    """Upper bounds on ‖x_b‖₂ for each row of a (B, ...) float64 tensor held exactly, in one batched pass:
    squares summed in any order (γ_{n+1}, and two more roundings here), flushed squares counted as TINY64
    each, the root rounded up."""
    rows = x.detach().to(torch.float64).flatten(1)
    length = rows.shape[1]
    squares = (rows * rows).sum(dim=1)
    bounded = squares * (1 + gamma(length + 3, U64)) + length * TINY64  # + this line's two roundings
    return torch.sqrt(bounded) * (1 + 4 * U64)


def real_entries(stack: torch.Tensor) -> torch.Tensor:
    """`stack` in float64 with each complex entry as its two real parts: |z|² = re² + im², with no square root."""
    x = stack.detach()
    return torch.view_as_real(x.to(torch.complex128).resolve_conj()) if x.is_complex() else x.to(torch.float64)


def largest_norm_up(stack: torch.Tensor) -> float:
    """An upper bound on max_b ‖x_b‖₂ over the first dimension of `stack` (each x_b exactly known), in one
    batched pass: one power-of-two scale for all, and γ of one slice's length for any summation order."""
    x = real_entries(stack).flatten(1)
    if x.numel() == 0:
        return 0.0
    scale = float(x.abs().max())
    if not math.isfinite(scale):
        return math.inf
    if scale == 0:
        return 0.0
    scale = 2.0 ** math.frexp(scale)[1]  # a power of two, so dividing by it is exact (or underflows, see below)
    squares = float(((x / scale) ** 2).sum(dim=1).max())
    length = x.shape[1]
    rounding = squares * gamma(length + 1, U64) + length * TINY64  # a rounded square each, then any-order sum
    return up(up(math.sqrt(up(squares + rounding))) * (1 + 2 * U64) * scale)


def spectral_norm_upper(matrices: torch.Tensor, entry_error: float = 0.0) -> float:
    """An upper bound on max_b ‖A_b‖₂ over a (B, m, n) or (m, n) stack, real or complex, held exactly.

    `entry_error` bounds ‖Â_b − A_b‖_F when the stack is itself a rounded image of the matrices meant;
    it is added at the end. Falls back to the Frobenius norm (always an upper bound) if no attempt at
    the Cholesky proof succeeds, which only a non-finite matrix causes in practice.
    """
    complex_ = matrices.is_complex()
    a = matrices.detach().to(torch.complex128 if complex_ else torch.float64)
    if a.dim() == 2:
        a = a[None]
    if a.numel() == 0:
        return entry_error
    largest = float(real_entries(a).abs().max())  # for complex A, the largest real or imaginary part: |a| ≤ √2 of it
    if not math.isfinite(largest):
        return math.inf
    if largest == 0:
        return up(entry_error)
    scale = 2.0 ** (math.frexp(largest)[1] + complex_)  # every |a| / scale < 1
    a = (a / scale).contiguous()  # batched products of a strided stack copy each matrix apart
    rows, cols = a.shape[-2:]
    if rows < cols:  # the Gram of the smaller side: AAᴴ and AᴴA have the same largest eigenvalue
        a = a.mT.conj() if complex_ else a.mT
        rows, cols = cols, rows
    inner, size = rows, cols
    gram = a.mH @ a if complex_ else a.mT @ a
    # complex products carry up to √2·γ_2 per term (Higham Lemma 3.5): a doubled γ_{2k+4} covers it
    gram_gamma = 2 * gamma(2 * inner + 4, U64) if complex_ else gamma(inner, U64)
    cholesky_gamma = 2 * gamma(2 * size + 6, U64) if complex_ else gamma(size + 1, U64)
    frobenius = largest_norm_up(a)  # the largest ‖A_b‖_F: each Gram's error is γ·‖A_b‖_F²
    gram_error = up(gram_gamma * up(frobenius**2)) + inner * size * TINY64
    estimate = float(largest_eigenvalues(gram).max())
    margin = max(abs(estimate), float(gram.diagonal(dim1=-2, dim2=-1).real.sum(-1).max()) / size) * 2.0**-40
    eye = torch.eye(size, dtype=gram.dtype)
    for _ in range(CHOLESKY_ATTEMPTS):
        t = up(estimate + margin + gram_error)
        shifted = t * eye - gram
        factor, info = torch.linalg.cholesky_ex(shifted)
        if not bool((info != 0).any()) and bool(torch.isfinite(factor).all()):
            factor_norm = largest_norm_up(factor)
            diagonal = float(shifted.diagonal(dim1=-2, dim2=-1).abs().max())
            error = up(cholesky_gamma * up(factor_norm**2)) + up(U64 * diagonal) + gram_error + size * size * TINY64
            value = up(math.sqrt(up(t + error)))
            return up(up(value * (1 + 2 * U64) * scale) + entry_error)
        margin *= 2.0**8
    return up(largest_norm_up(a) * scale + entry_error)

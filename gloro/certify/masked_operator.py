"""Sound spectral norms of an affine layer with some input and output units masked out, point by point.

The local Lipschitz bound (`gloro.certify.local`) removes the units proven constant on a ball; what remains of
each affine layer is a masked operator diag(r) A diag(c), bounded here exactly (float64 eigenvalues of a Gram
matrix of the explicit masked matrix) when small, else by the least of the unmasked sound bound, the
Frobenius norm and the Schur bound sqrt(‖M‖₁‖M‖_∞), each an upper bound on the spectral norm.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from gloro.eigen import gram_lower, largest_eigenvalues
from gloro.layer_rules import affine_map

# Masked operators whose explicit matrix has at most this many entries get an exact SVD; larger ones a fallback.
LOCAL_EXPLICIT_MAX_ENTRIES = 1 << 23


class AffineOperator:
    """One affine layer in float64: the map, its linear part, |A|, A∘A (entrywise), and its explicit matrix."""

    def __init__(self, layer: nn.Module, input_shape: Sequence[int], global_bound: torch.Tensor, max_entries: int):
        self.layer = layer
        self.input_shape = tuple(input_shape)
        self.global_bound = global_bound.double()
        operator = affine_map(layer, torch.float64)  # on the layer's device
        self.affine, self.linear = operator.affine, operator.linear
        self.absolute, self.squared = operator.absolute, operator.squared
        self.device = self.global_bound.device
        probe = torch.zeros((1, *self.input_shape), dtype=torch.float64, device=self.device)
        self.output_shape = tuple(self.linear(probe).shape[1:])
        self.matrix = self.gram = None
        if math.prod(self.input_shape) * math.prod(self.output_shape) <= max_entries:
            self.matrix = explicit_matrix(self.linear, self.input_shape, self.device)
            self.gram = side_gram(self.matrix)

    def column_sums(self, weights: torch.Tensor) -> torch.Tensor:
        """|A|ᵀ weights, the adjoint of `absolute` (via autograd, so convolutions need no output padding)."""
        with torch.enable_grad():
            probe = torch.zeros(
                (len(weights), *self.input_shape), dtype=torch.float64, device=self.device, requires_grad=True
            )
            (result,) = torch.autograd.grad(self.absolute(probe), probe, weights)
        return result

    def masked_norms(self, keep_in: torch.Tensor, keep_out: torch.Tensor) -> torch.Tensor:
        """Sound upper bounds on ‖diag(keep_out) A diag(keep_in)‖₂ for each point (never above the global bound)."""
        n = len(keep_in)
        rows, cols = keep_out.flatten(1).double(), keep_in.flatten(1).double()
        if self.matrix is not None:
            exact = masked_spectral_norms(self.matrix, self.gram, rows, cols)
            return torch.minimum(exact, self.global_bound.expand(n))
        # Fallback: Frobenius norm and the Schur test, both upper bounds on the spectral norm of the masked matrix
        row_squares = self.squared(keep_in.double()).flatten(1) * rows
        frobenius = row_squares.sum(1).sqrt()
        row_sums = (self.absolute(keep_in.double()).flatten(1) * rows).amax(1)
        col_sums = (self.column_sums(keep_out.double()).flatten(1) * cols).amax(1)
        schur = (row_sums * col_sums).sqrt()
        return torch.minimum(torch.minimum(frobenius, schur), self.global_bound.expand(n))


def side_gram(matrix: torch.Tensor) -> torch.Tensor:
    """A Aᵀ or AᵀA, whichever is smaller: the Gram whose largest eigenvalue is ‖A‖₂²."""
    return matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix


def masked_spectral_norms(
    matrix: torch.Tensor, gram: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """‖diag(r) A diag(c)‖₂ for each 0/1 row r and column c (float64); `gram` is `side_gram(matrix)`.

    The masked matrix's smaller Gram, restricted to its kept rows (or columns), has the same top eigenvalue.
    When fewer inner units are masked out than kept (most ReLUs on), it is `gram` minus their products, a
    low-rank update instead of a full product. Either way n·ε·‖gram‖_F is added to the top eigenvalue, far
    above its rounding (on the Fashion-MNIST 2C2F, about 1000× the largest difference between the two forms),
    so no norm is reported below the exact one.
    """
    by_rows = matrix.shape[0] <= matrix.shape[1]
    factor = matrix if by_rows else matrix.T  # the masked Gram is factor · diag(inner) · factorᵀ
    rounding = len(gram) * torch.finfo(gram.dtype).eps * torch.linalg.matrix_norm(gram)
    norms = []
    for outer, inner in zip(rows, cols) if by_rows else zip(cols, rows):
        dropped, kept, keep = (inner == 0).nonzero()[:, 0], inner.nonzero()[:, 0], outer.nonzero()[:, 0]
        if not len(keep) or not len(kept):
            norms.append(gram.new_zeros(()))  # the masked matrix is zero
            continue
        rows_kept = factor.index_select(0, keep)
        if len(dropped) < len(kept):
            base = gram.index_select(0, keep).index_select(1, keep)
            masked = gram_lower(rows_kept.index_select(1, dropped), minus_from=base)
        else:
            masked = gram_lower(rows_kept.index_select(1, kept))
        norms.append((largest_eigenvalues(masked) + rounding).clamp_min(0).sqrt())
    return torch.stack(norms)


def explicit_matrix(
    linear: Callable[[torch.Tensor], torch.Tensor], input_shape: Sequence[int], device: torch.device | None = None
) -> torch.Tensor:
    """The (out × in) float64 matrix of a linear map on inputs of `input_shape`."""
    n_in = math.prod(input_shape)
    basis = torch.eye(n_in, dtype=torch.float64, device=device).view(n_in, *input_shape)
    return linear(basis).flatten(1).T.contiguous()

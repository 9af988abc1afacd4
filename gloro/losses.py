"""GloRo losses on the m+1 logits [y, y_⊥]: cross-entropy, and the TRADES-style GloRo-T."""

from __future__ import annotations

import torch
import torch.nn.functional as F

ROBUST_TERMS = ("ce", "kl")
KL_CLIP = 1e-7  # Keras' KLDivergence clips both distributions to [1e-7, 1]; the paper's Tiny runs used it


def gloro_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the m+1 logits with the label's one-hot padded by 0 for ⊥ (the paper's GloRo loss)."""
    return F.cross_entropy(logits, labels)


def gloro_trades(logits: torch.Tensor, labels: torch.Tensor, lam: float, robust_term: str = "ce") -> torch.Tensor:
    """GloRo-T: CE(y, label) + λ·D(p, q), p = [softmax(y), 0], q = softmax([y, y_⊥]).

    D is cross-entropy ('ce') or Keras-style clipped KL ('kl'); as in the paper's code the target p is not
    detached, so the robust term also pulls the clean prediction.
    """
    if robust_term not in ROBUST_TERMS:
        raise ValueError(f"robust_term must be one of {ROBUST_TERMS}, got {robust_term!r}")
    clean = logits[:, :-1]
    natural = F.cross_entropy(clean, labels)
    target = F.pad(clean.softmax(dim=1), (0, 1))
    if robust_term == "ce":
        robust = -(target * logits.log_softmax(dim=1)).sum(dim=1)
    else:
        p = target.clamp(KL_CLIP, 1.0)
        q = logits.softmax(dim=1).clamp(KL_CLIP, 1.0)
        robust = (p * (p.log() - q.log())).sum(dim=1)
    return natural + lam * robust.mean()

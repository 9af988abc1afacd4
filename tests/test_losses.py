"""GloRo losses against cross-entropies and KL divergences computed by hand (facts §2.4, "Losses")."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gloro.losses import KL_CLIP, gloro_cross_entropy, gloro_trades


def make_logits(
    batch: int = 6, classes: int = 5, seed: int = 0, scale: float = 3.0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes + 1, generator=generator, dtype=torch.float64) * scale
    labels = torch.randint(0, classes, (batch,), generator=generator)
    return logits, labels


def log_softmax_by_hand(row: list[float]) -> list[float]:
    top = max(row)
    log_total = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - log_total for v in row]


def softmax_by_hand(row: list[float]) -> list[float]:
    return [math.exp(v) for v in log_softmax_by_hand(row)]


def trades_by_hand(logits: torch.Tensor, labels: torch.Tensor, lam: float, robust_term: str) -> float:
    """CE(clean) + λ·mean D(p, q) with p = [softmax(clean), 0], q = softmax(all m+1), in plain Python floats."""
    natural, robust = 0.0, 0.0
    for row, label in zip(logits.tolist(), labels.tolist()):
        clean = row[:-1]
        natural -= log_softmax_by_hand(clean)[label]
        p = [*softmax_by_hand(clean), 0.0]
        if robust_term == "ce":
            log_q = log_softmax_by_hand(row)
            robust -= sum(pi * lq for pi, lq in zip(p, log_q))
        else:
            q = softmax_by_hand(row)
            clip = lambda v: min(max(v, KL_CLIP), 1.0)  # noqa: E731
            robust += sum(clip(pi) * (math.log(clip(pi)) - math.log(clip(qi))) for pi, qi in zip(p, q))
    n = len(labels)
    return natural / n + lam * robust / n


def test_kl_clip_is_keras_value():
    assert KL_CLIP == 1e-7


def test_gloro_cross_entropy_is_ce_over_m_plus_one_logits_with_zero_target_on_bottom():
    logits, labels = make_logits()
    expected = -sum(log_softmax_by_hand(row)[label] for row, label in zip(logits.tolist(), labels.tolist()))
    expected /= len(labels)
    assert gloro_cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-12)
    # Same thing with an explicit one-hot padded by a 0 for ⊥.
    target = torch.nn.functional.one_hot(labels, logits.shape[1] - 1).double()
    target = torch.nn.functional.pad(target, (0, 1))
    by_target = -(target * logits.log_softmax(1)).sum(1).mean()
    assert gloro_cross_entropy(logits, labels).item() == pytest.approx(by_target.item(), rel=1e-12)


def test_gloro_cross_entropy_grows_with_the_bottom_logit():
    logits, labels = make_logits()
    higher = logits.clone()
    higher[:, -1] += 2.0
    assert gloro_cross_entropy(higher, labels) > gloro_cross_entropy(logits, labels)


@pytest.mark.parametrize("robust_term", ["ce", "kl"])
@pytest.mark.parametrize("lam", [0.0, 0.5, 2.0, 20.0])
def test_gloro_trades_matches_hand_computation(robust_term, lam):
    logits, labels = make_logits(seed=int(lam * 10) + len(robust_term))
    loss = gloro_trades(logits, labels, lam, robust_term=robust_term)
    assert loss.item() == pytest.approx(trades_by_hand(logits, labels, lam, robust_term), rel=1e-10, abs=1e-12)


def test_gloro_trades_default_robust_term_is_ce():
    logits, labels = make_logits(seed=3)
    assert gloro_trades(logits, labels, 1.2).item() == pytest.approx(trades_by_hand(logits, labels, 1.2, "ce"))


def test_gloro_trades_kl_is_clipped():
    # A clean softmax with one probability far below 1e-7: the unclipped KL would differ from the clipped one.
    logits = torch.tensor([[30.0, 0.0, -1.0, 29.0]], dtype=torch.float64)
    labels = torch.tensor([0])
    loss = gloro_trades(logits, labels, 1.0, robust_term="kl")
    assert loss.item() == pytest.approx(trades_by_hand(logits, labels, 1.0, "kl"), rel=1e-10)
    assert torch.isfinite(loss)
    # Unclipped, the ⊥ entry (p = 0) contributes nothing; clipped it contributes 1e-7·ln(1e-7 / q_⊥) < 0.
    p = torch.nn.functional.pad(logits[:, :-1].softmax(1), (0, 1))
    q = logits.softmax(1)
    unclipped = torch.where(p > 0, p * (p.log() - q.log()), torch.zeros_like(p)).sum()
    natural = torch.nn.functional.cross_entropy(logits[:, :-1], labels)
    assert abs(loss.item() - (natural + unclipped).item()) > 1e-7


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), lam=st.floats(0.0, 10.0), scale=st.floats(0.1, 8.0))
def test_gloro_trades_matches_hand_computation_for_random_logits(seed, lam, scale):
    logits, labels = make_logits(batch=3, classes=4, seed=seed, scale=scale)
    for robust_term in ("ce", "kl"):
        loss = gloro_trades(logits, labels, lam, robust_term=robust_term)
        assert loss.item() == pytest.approx(trades_by_hand(logits, labels, lam, robust_term), rel=1e-9, abs=1e-12)


def test_gloro_trades_robust_term_vanishes_when_bottom_is_very_negative():
    logits, labels = make_logits()
    logits[:, -1] = -1e4
    natural = torch.nn.functional.cross_entropy(logits[:, :-1], labels)
    kl = gloro_trades(logits, labels, 5.0, robust_term="kl")
    assert kl.item() == pytest.approx(natural.item(), abs=1e-9)
    # The 'ce' robust term is then the entropy of the clean softmax, not 0.
    clean = logits[:, :-1].softmax(1)
    entropy = -(clean * clean.log()).sum(1).mean()
    ce = gloro_trades(logits, labels, 5.0, robust_term="ce")
    assert ce.item() == pytest.approx(natural.item() + 5.0 * entropy.item(), rel=1e-9)


def test_gloro_trades_robust_term_is_positive_when_bottom_competes():
    logits, labels = make_logits()
    logits[:, -1] = logits[:, :-1].max(1).values + 1.0
    natural = torch.nn.functional.cross_entropy(logits[:, :-1], labels)
    assert gloro_trades(logits, labels, 1.0, robust_term="kl") > natural + 0.1


@pytest.mark.parametrize("robust_term", ["ce", "kl"])
def test_gloro_trades_target_is_not_detached(robust_term):
    """Gradients reach the clean logits through the target p = [softmax(y), 0] of the robust term.

    For unclipped KL the target's gradient is exactly 0 (log p_j − log q_j is the same for every clean j),
    so the 'kl' case lets ⊥ dominate: every clean q_j is then clipped to 1e-7 and only the target carries
    a gradient to the clean logits.
    """
    logits, labels = make_logits(seed=11)
    if robust_term == "kl":
        logits[:, -1] = logits[:, :-1].max(1).values + 20.0
    lam = 1.5

    def gradient(function):
        x = logits.clone().requires_grad_(True)
        function(x).backward()
        return x.grad

    without_robust = gradient(lambda x: gloro_trades(x, labels, 0.0, robust_term=robust_term))
    with_robust = gradient(lambda x: gloro_trades(x, labels, lam, robust_term=robust_term))
    # The CE part alone only touches the clean logits; with λ > 0 the clean-logit gradients change.
    assert torch.all(without_robust[:, -1] == 0)
    assert not torch.allclose(with_robust[:, :-1], without_robust[:, :-1])

    def reference(x: torch.Tensor, detach: bool) -> torch.Tensor:
        clean = x[:, :-1]
        target = torch.nn.functional.pad(clean.softmax(1), (0, 1))
        target = target.detach() if detach else target
        if robust_term == "ce":
            robust = -(target * x.log_softmax(1)).sum(1)
        else:
            p, q = target.clamp(KL_CLIP, 1.0), x.softmax(1).clamp(KL_CLIP, 1.0)
            robust = (p * (p.log() - q.log())).sum(1)
        return torch.nn.functional.cross_entropy(clean, labels) + lam * robust.mean()

    attached = gradient(lambda x: reference(x, detach=False))
    detached = gradient(lambda x: reference(x, detach=True))
    assert torch.allclose(with_robust, attached, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(with_robust[:, :-1], detached[:, :-1], rtol=1e-4, atol=1e-8)


def test_gloro_trades_rejects_an_unknown_robust_term():
    logits, labels = make_logits()
    with pytest.raises(ValueError, match="kld"):
        gloro_trades(logits, labels, 1.0, robust_term="kld")

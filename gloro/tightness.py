"""How tight are the certificates' Lipschitz bounds? Empirical lower bounds from optimised pairs of inputs.

For the margin g_ij(x) = y_j(x) − y_i(x), any pair gives |g_ij(x1) − g_ij(x2)| / ‖x1 − x2‖₂ ≤ Lip(g_ij) ≤ K_ij, so
the best ratio found is a lower bound on the true margin Lipschitz constant and sound / lower bounds the
looseness of K_ij. As in the official tools' `lower_bounds`, Adam maximises the ratio over pairs (x1, x2); here
every restart is a pair optimised alongside the others (in memory-bounded batches), the best pair seen is kept,
and its ratio is recomputed in float64 so that float32 rounding cannot inflate the reported bound.

Inputs are unconstrained by default (`box=None`). The global K_ij bounds the Lipschitz constant on all of ℝⁿ
(and a certificate's ε-ball around a point near the edge of [0,1]ⁿ leaves the cube), so searching ℝⁿ measures the
bound's own looseness; `box=(0, 1)` instead measures it on the data cube, a smaller constant. The local search
keeps both points in the ε-ball B(x0, ε), the set the local bound K^local_ij is valid on.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from gloro.certify.local import local_lipschitz
from gloro.gloro_net import GloroNet, check_epsilon
from gloro.input_gradient import fold_input_gradients, inputs_only


def _check_search(steps: int, restarts: int, learning_rate: float, box: tuple[float, float] | None) -> None:
    if steps < 0 or restarts < 1:
        raise ValueError(f"steps must be >= 0 and restarts >= 1, got {steps} and {restarts}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if box is not None and not box[0] < box[1]:
        raise ValueError(f"box must be (low, high) with low < high, got {box}")


def _margin_gaps(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """|g(x1) − g(x2)| / ‖x1 − x2‖ per row, for the margin g = y_j − y_i of that row's pair (i, j)."""
    d1 = model(x1).gather(1, pairs).diff(dim=1)[:, 0]
    d2 = model(x2).gather(1, pairs).diff(dim=1)[:, 0]
    distance = torch.linalg.vector_norm((x1 - x2).flatten(1), dim=1)
    return (d1 - d2).abs() / distance.clamp_min(torch.finfo(distance.dtype).tiny)


def _optimise_pairs(
    model: nn.Module,
    x1: torch.Tensor,
    x2: torch.Tensor,
    pairs: torch.Tensor,
    steps: int,
    learning_rate: float,
    project,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam ascent on every row's ratio; returns the best pair each row reached (projected after every step).

    Rows are independent (Adam acts elementwise), so they run in chunks of `batch_size` to bound memory.
    `project` takes the rows' tensor and the row indices it holds.
    """
    chunks = [
        _optimise_chunk(model, x1[rows], x2[rows], pairs[rows], steps, learning_rate, lambda x, r=rows: project(x, r))
        for rows in torch.arange(len(pairs), device=pairs.device).split(batch_size)
    ]
    return torch.cat([best1 for best1, _ in chunks]), torch.cat([best2 for _, best2 in chunks])


def _optimise_chunk(model, x1, x2, pairs, steps, learning_rate, project) -> tuple[torch.Tensor, torch.Tensor]:
    """Each step's ratio, computed for its gradient, also scores the pair it was computed at: every iterate is
    scored once (the last one after the loop), and the best pair seen is kept."""
    x1, x2 = project(x1.clone()), project(x2.clone())
    best1, best2 = x1.clone(), x2.clone()
    best = torch.full((len(pairs),), -math.inf, dtype=x1.dtype, device=x1.device)
    x1.requires_grad_(True)
    x2.requires_grad_(True)
    optimizer = torch.optim.Adam([x1, x2], lr=learning_rate)

    def keep_better(ratio: torch.Tensor) -> None:
        nonlocal best
        better = ratio > best
        best = torch.where(better, ratio, best)
        best1[better], best2[better] = x1.detach()[better], x2.detach()[better]

    # gradients for the inputs only: the model's parameters and their .grad stay untouched
    with inputs_only(model), fold_input_gradients(model):
        for _ in range(steps):
            ratio = _margin_gaps(model, x1, x2, pairs)
            keep_better(ratio.detach())
            x1.grad, x2.grad = torch.autograd.grad(-ratio.sum(), (x1, x2))
            optimizer.step()
            with torch.no_grad():
                x1.copy_(project(x1))
                x2.copy_(project(x2))
        with torch.no_grad():
            keep_better(_margin_gaps(model, x1, x2, pairs))
    return best1, best2


def _exact_gaps(net: GloroNet, x1: torch.Tensor, x2: torch.Tensor, pairs: torch.Tensor, batch_size: int):
    """`_margin_gaps` recomputed in float64 (a float64 copy of the model), `batch_size` rows at a time."""
    model = copy.deepcopy(net.model).double().eval()
    with torch.no_grad():
        return torch.cat(
            [
                _margin_gaps(model, x1[rows].double(), x2[rows].double(), pairs[rows])
                for rows in torch.arange(len(pairs), device=pairs.device).split(batch_size)
            ]
        )


def margin_lipschitz_lower_bound(
    net: GloroNet,
    *,
    inputs: torch.Tensor | None = None,
    steps: int = 1000,
    restarts: int = 8,
    learning_rate: float = 1e-2,
    box: tuple[float, float] | None = None,
    seed: int = 0,
    max_pairs: int | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Global empirical lower bound on Lip(y_j − y_i) for every class pair: an m×m float64 matrix (diagonal 0).

    Each pair (i, j) gets `restarts` starting pairs: x1 from `inputs` (random rows) or uniform in [0,1]ⁿ, and
    x2 = x1 + small Gaussian noise; each is optimised for `steps` Adam steps at `learning_rate`, `batch_size`
    rows at a time. With `max_pairs`, only a seeded random sample of that many class pairs is searched (200
    classes have 19,900 pairs); the others are NaN in the result.
    """
    _check_search(steps, restarts, learning_rate, box)
    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1 (or None for every pair), got {max_pairs}")
    m = net.num_classes
    first, second = torch.triu_indices(m, m, offset=1)
    generator = torch.Generator().manual_seed(seed)
    if max_pairs is not None and len(first) > max_pairs:
        chosen = torch.randperm(len(first), generator=generator)[:max_pairs].sort().values
        first, second = first[chosen], second[chosen]
    device, dtype = net.head.weight.device, net.head.weight.dtype
    pairs = torch.stack((first, second), 1).repeat_interleave(restarts, 0).to(device)
    rows = len(pairs)
    if inputs is None:
        x1 = torch.rand((rows, *net.input_shape), generator=generator)
    else:
        net.check_input(inputs)
        x1 = inputs.detach().cpu()[torch.randint(len(inputs), (rows,), generator=generator)]
    x1 = x1.to(device, dtype)
    x2 = x1 + 1e-2 * torch.randn(x1.shape, generator=generator).to(device, dtype)

    def project(x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        return x if box is None else x.clamp(*box)

    was_training = net.training
    net.eval()
    try:
        best1, best2 = _optimise_pairs(net.model, x1, x2, pairs, steps, learning_rate, project, batch_size)
    finally:
        net.train(was_training)
    ratios = _exact_gaps(net, best1, best2, pairs, batch_size).view(-1, restarts).amax(1)
    lower = torch.full((m, m), math.nan, dtype=torch.float64, device=device)
    lower.fill_diagonal_(0)
    lower[first, second] = ratios
    lower[second, first] = ratios
    return lower.cpu()


def _ball_projection(center: torch.Tensor, epsilon: float, box: tuple[float, float] | None):
    """Into B(x0, ε) (and the box): clamping first, then scaling towards x0 ∈ box, stays inside both."""

    def project(x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        if box is not None:
            x = x.clamp(*box)
        base = center if rows is None else center[rows]
        offset = x - base
        norm = torch.linalg.vector_norm(offset.flatten(1), dim=1).view(-1, *[1] * (x.dim() - 1))
        return base + offset * (epsilon / norm.clamp_min(epsilon)).clamp_max(1)

    return project


def local_margin_lipschitz_lower_bound(
    net: GloroNet,
    x: torch.Tensor,
    epsilon: float,
    *,
    steps: int = 200,
    restarts: int = 4,
    learning_rate: float | None = None,
    box: tuple[float, float] | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Empirical lower bound on Lip(y_j − y_i) on B(x0, ε), for each point x0 of `x`, j its predicted class.

    Returns (predictions (N,), lower bounds (N, m) float64 with 0 at the predicted class). Both points of every
    pair start uniformly in the ball and stay in it (projected after every step); `learning_rate` defaults to ε/20.
    """
    epsilon = check_epsilon(epsilon)
    if epsilon == 0:
        raise ValueError("epsilon must be > 0: a ball of radius 0 holds no pair of distinct points")
    learning_rate = epsilon / 20 if learning_rate is None else learning_rate
    _check_search(steps, restarts, learning_rate, box)
    net.check_input(x)
    if box is not None and (x.min() < box[0] or x.max() > box[1]):
        raise ValueError(f"every point must lie in the box {box} to search the ball intersected with it")
    m = net.num_classes
    device, dtype = net.head.weight.device, net.head.weight.dtype
    x = x.detach().to(device, dtype)
    with torch.no_grad():
        predictions = net.predict_clean(x).argmax(1)
    others = torch.arange(m, device=device).expand(len(x), m)[others_mask(predictions, m)].view(len(x), m - 1)
    point = torch.arange(len(x), device=device)[:, None].expand(len(x), m - 1).reshape(-1)
    point = point.repeat_interleave(restarts)
    pairs = torch.stack((others.reshape(-1), predictions[:, None].expand(-1, m - 1).reshape(-1)), 1)
    pairs = pairs.repeat_interleave(restarts, 0)
    center = x[point]
    generator = torch.Generator().manual_seed(seed)

    def uniform_in_ball() -> torch.Tensor:
        direction = torch.randn(center.shape, generator=generator).to(device, dtype)
        direction = direction / torch.linalg.vector_norm(direction.flatten(1), dim=1).view(-1, *[1] * (x.dim() - 1))
        radius = torch.rand(len(center), generator=generator).pow(1 / center[0].numel()).to(device, dtype)
        return center + epsilon * radius.view(-1, *[1] * (x.dim() - 1)) * direction

    project = _ball_projection(center, epsilon, box)
    was_training = net.training
    net.eval()
    try:
        best1, best2 = _optimise_pairs(
            net.model, uniform_in_ball(), uniform_in_ball(), pairs, steps, learning_rate, project, batch_size
        )
    finally:
        net.train(was_training)
    # re-project in float64 to just inside the ball, so the reported pairs provably lie in it
    inside = _ball_projection(center.double(), epsilon * (1 - 1e-9), box)
    ratios = _exact_gaps(net, inside(best1.double()), inside(best2.double()), pairs, batch_size)
    ratios = ratios.view(len(x), m - 1, restarts).amax(2)
    lower = torch.zeros((len(x), m), dtype=torch.float64, device=device)
    lower[others_mask(predictions, m)] = ratios.reshape(-1)
    return predictions.cpu(), lower.cpu()


def others_mask(predictions: torch.Tensor, m: int) -> torch.Tensor:
    """(N, m) boolean: True at every class but the predicted one."""
    return torch.arange(m, device=predictions.device)[None, :] != predictions[:, None]


def global_tightness(
    net: GloroNet,
    *,
    inputs: torch.Tensor | None = None,
    steps: int = 1000,
    restarts: int = 8,
    learning_rate: float = 1e-2,
    box: tuple[float, float] | None = None,
    seed: int = 0,
    max_pairs: int | None = None,
    batch_size: int = 256,
) -> dict:
    """Sound K_ij against the empirical lower bound for every class pair, as a JSON-serialisable report.

    The search settings are those of `margin_lipschitz_lower_bound` and are stored in the report; with
    `max_pairs`, every figure is over the searched pairs. `sound_over_lower` (≥ 1) is how far each bound may
    be loose; null where the search found no slope.
    """
    search = {
        "steps": steps,
        "restarts": restarts,
        "learning_rate": learning_rate,
        "box": box,
        "seed": seed,
        "max_pairs": max_pairs,
    }
    with torch.no_grad():
        sound = net.lipschitz_constant(sound=True).double().cpu()
    lower = margin_lipschitz_lower_bound(net, inputs=inputs, batch_size=batch_size, **search)
    first, second = torch.triu_indices(len(sound), len(sound), offset=1)
    total = len(first)
    searched = ~lower[first, second].isnan()
    first, second = first[searched], second[searched]
    per_pair = [
        {
            "i": int(i),
            "j": int(j),
            "sound": float(sound[i, j]),
            "lower_bound": float(lower[i, j]),
            "sound_over_lower": _ratio(float(sound[i, j]), float(lower[i, j])),
        }
        for i, j in zip(first.tolist(), second.tolist())
    ]
    worst = max(per_pair, key=lambda row: row["lower_bound"] / row["sound"] if row["sound"] > 0 else 0.0)
    ratios = torch.tensor(
        [math.inf if row["sound_over_lower"] is None else row["sound_over_lower"] for row in per_pair]
    )
    return {
        "sub_lipschitz": float(net.sub_lipschitz(sound=True)),
        "max_sound": float(sound[first, second].max()),
        "max_lower_bound": float(lower[first, second].max()),
        "max_sound_over_max_lower": _ratio(float(sound[first, second].max()), float(lower[first, second].max())),
        "min_sound_over_lower": worst["sound_over_lower"],
        "median_sound_over_lower": _finite(float(ratios.median())),
        "tightest_pair": [worst["i"], worst["j"]],
        "pairs_searched": len(per_pair),
        "pairs_total": total,
        "search": search | {"starts": "uniform in [0,1]^n" if inputs is None else f"{len(inputs)} given inputs"},
        "pairs": per_pair,
    }


def local_tightness(
    net: GloroNet,
    x: torch.Tensor,
    epsilon: float | None = None,
    *,
    steps: int = 200,
    restarts: int = 4,
    learning_rate: float | None = None,
    box: tuple[float, float] | None = None,
    seed: int = 0,
) -> dict:
    """Per point: local sound K^local_ij, global K_ij and the ball's empirical lower bound (pairs (j, i), j predicted).

    Reports, per point and over points, the max over i of the lower bound divided by each sound bound (≤ 1).
    The search settings are those of `local_margin_lipschitz_lower_bound` and are stored in the report.
    """
    epsilon = net.eval_epsilon if epsilon is None else check_epsilon(epsilon)
    learning_rate = epsilon / 20 if learning_rate is None else learning_rate
    search = {"steps": steps, "restarts": restarts, "learning_rate": learning_rate, "box": box, "seed": seed}
    predictions, lower = local_margin_lipschitz_lower_bound(net, x, epsilon, **search)
    local = local_lipschitz(net, x, epsilon).margin_lipschitz.cpu()
    with torch.no_grad():
        global_k = net.lipschitz_constant(sound=True).double().cpu()
    rows = torch.arange(len(x))
    local_row, global_row = local[rows, predictions], global_k[predictions]
    mask = others_mask(predictions, net.num_classes)
    points = []
    for n in range(len(x)):
        keep = mask[n]
        lower_n, local_n, global_n = lower[n, keep], local_row[n, keep], global_row[n, keep]
        points.append(
            {
                "index": n,
                "prediction": int(predictions[n]),
                "max_lower_bound": float(lower_n.max()),
                "max_local_sound": float(local_n.max()),
                "max_global_sound": float(global_n.max()),
                "max_lower_over_local": float((lower_n / local_n).nan_to_num(0.0).max()),
                "max_lower_over_global": float((lower_n / global_n).max()),
            }
        )
    return {
        "epsilon": epsilon,
        "num_points": len(x),
        "mean_max_lower_over_local": sum(p["max_lower_over_local"] for p in points) / max(len(points), 1),
        "mean_max_lower_over_global": sum(p["max_lower_over_global"] for p in points) / max(len(points), 1),
        "max_lower_over_local": max((p["max_lower_over_local"] for p in points), default=0.0),
        "search": search,
        "points": points,
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _ratio(sound: float, lower: float) -> float | None:
    """sound / lower; None (JSON null) when the search found no positive lower bound."""
    return sound / lower if lower > 0 else None

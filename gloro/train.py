"""Training a GloroNet: one recipe (epochs, batch size, schedules, loss), seeded shuffles, per-epoch history."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from gloro.gloro_net import GloroNet
from gloro.losses import gloro_cross_entropy, gloro_trades
from gloro.schedules import Constant, Schedule

LOSSES = ("gloro", "trades")


@dataclass(frozen=True)
class TrainingRecipe:
    """What the paper's scripts vary between runs. `epsilon=None` keeps the net's current ε throughout."""

    epochs: int
    batch_size: int = 256
    learning_rate: Schedule = field(default_factory=lambda: Constant(1e-3))
    epsilon: Schedule | None = None
    loss: str = "gloro"
    trades_lambda: Schedule = field(default_factory=lambda: Constant(1.0))
    trades_robust_term: str = "ce"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")


def train(
    net: GloroNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: TrainingRecipe,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train `net` in place with Adam (Keras' defaults, as the paper); returns one history row per epoch.

    Each row: epoch, loss, clean_accuracy and vra on the training batches (at the training ε, with the
    power-iteration K), epsilon, lambda, lr, seconds, images_per_second. `on_epoch` sees each row.
    """
    net.to(device).train()
    memory_format = preferred_memory_format(net)
    net.model.to(memory_format=memory_format)
    optimizer = torch.optim.Adam(net.parameters(), lr=recipe.learning_rate(0), eps=1e-7)
    generator = torch.Generator().manual_seed(recipe.seed)
    history = []
    epochs = tqdm(range(recipe.epochs), desc="training", unit="epoch", disable=not progress)
    for epoch in epochs:
        lr, lam = recipe.learning_rate(epoch), recipe.trades_lambda(epoch)
        if recipe.epsilon is not None:
            net.epsilon = recipe.epsilon(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        totals = train_epoch(net, images, labels, optimizer, recipe, lam, generator, device, memory_format)
        seconds = time.perf_counter() - start
        row = {
            "epoch": epoch,
            **totals,
            "epsilon": net.epsilon,
            "lambda": lam if recipe.loss == "trades" else None,
            "lr": lr,
            "seconds": seconds,
            "images_per_second": len(labels) / seconds,
        }
        history.append(row)
        epochs.set_postfix(loss=f"{row['loss']:.3f}", vra=f"{row['vra']:.3f}")
        if on_epoch is not None:
            on_epoch(row)
    return history


def train_epoch(
    net: GloroNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    recipe: TrainingRecipe,
    lam: float,
    generator: torch.Generator,
    device: str | torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> dict:
    """One pass over a seeded shuffle; returns the mean loss, clean accuracy and VRA over the batches."""
    order = torch.randperm(len(labels), generator=generator)
    loss_sum = correct = robust = 0.0
    for batch in order.split(recipe.batch_size):
        x = images[batch].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        y = labels[batch].to(device, non_blocking=True)
        logits = net(x)
        if recipe.loss == "gloro":
            loss = gloro_cross_entropy(logits, y)
        else:
            loss = gloro_trades(logits, y, lam, recipe.trades_robust_term)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            loss_sum += float(loss) * len(y)
            correct += float((logits[:, :-1].argmax(1) == y).sum())
            robust += float((logits.argmax(1) == y).sum())
    n = len(labels)
    return {"loss": loss_sum / n, "clean_accuracy": correct / n, "vra": robust / n}


def preferred_memory_format(net: GloroNet) -> torch.memory_format:
    """channels_last for convolutional nets (oneDNN and cuDNN run their convs faster in NHWC), else contiguous."""
    has_conv = any(isinstance(layer, torch.nn.Conv2d) for layer in net.layers)
    return torch.channels_last if has_conv and len(net.input_shape) == 3 else torch.contiguous_format

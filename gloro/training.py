"""Training a GloroNet: one recipe (epochs, batch size, schedules, loss, augmentation), seeded shuffles and
augmentations, and a per-epoch history with the cost of training and optional best-eval-VRA model selection.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gloro.certify import create_certifier
from gloro.data.augment import Augmentation, augmentation, augmentations, no_augmentation
from gloro.gloro_net import GloroNet
from gloro.history import BestModel, TrainingHistory, resume, save_scratch
from gloro.layout import matching_gradients
from gloro.methods import get_method, list_methods, method_for_loss, training_losses
from gloro.methods.options import NoOptions
from gloro.schedules import Constant, Schedule
from gloro.training_cost import peak_memory_mb, reset_peak_memory, synchronize

WARMUP_LOSS = "clean"  # plain cross-entropy on the wrapped model's logits: the CIFAR recipe's warm-up


OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class TrainingRecipe:
    """What the paper's scripts vary between runs. `epsilon=None` keeps the net's current ε throughout;
    `augmentation` names a `gloro.data.augmentation`, applied to training batches only. `options` are the
    loss's method's own settings (its `options_class`; None: its defaults); `adam_epsilon` is Adam's ε
    (Keras' 1e-7 for GloRo, PyTorch's 1e-8 for the baselines' PyTorch code). `optimizer` is 'adam' or 'sgd'
    (with `momentum`); `weight_decay` is PyTorch's (L2 added to the gradient), and
    `clip_grad_norm` clips the gradient's global norm before each step (KW's CIFAR recipe: SGD, 0.9, 5e-4, 1).
    """

    epochs: int
    batch_size: int = 256
    learning_rate: Schedule = field(default_factory=lambda: Constant(1e-3))
    epsilon: Schedule | None = None
    loss: str = "gloro"
    options: Any = None
    seed: int = 0
    augmentation: str = "none"
    adam_epsilon: float = 1e-7
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip_grad_norm: float | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.momentum and self.optimizer != "sgd":
            raise ValueError(f"momentum is an SGD setting; the optimizer is {self.optimizer!r}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"clip_grad_norm must be > 0 (or None), got {self.clip_grad_norm}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if self.loss != WARMUP_LOSS and self.loss not in training_losses():
            raise ValueError(f"loss must be one of {(*training_losses(), WARMUP_LOSS)}, got {self.loss!r}")
        expected = NoOptions if self.loss == WARMUP_LOSS else method_for_loss(self.loss).options_class
        if self.options is None:
            object.__setattr__(self, "options", expected())
        elif not isinstance(self.options, expected):
            raise TypeError(f"loss {self.loss!r} takes options {expected.__name__}, got {type(self.options).__name__}")
        if self.augmentation not in augmentations():
            raise ValueError(f"unknown augmentation {self.augmentation!r}; known: {', '.join(augmentations())}")


def train(
    net: GloroNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: TrainingRecipe,
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    eval_images: torch.Tensor | None = None,
    eval_labels: torch.Tensor | None = None,
    eval_epsilon: float | None = None,
    eval_batch_size: int | None = None,
    eval_certifier: str = "global",
    eval_every: int = 1,
    scratch: str | os.PathLike | None = None,
) -> TrainingHistory:
    """Train `net` in place with Adam (Keras' defaults, as the paper); returns one history row per epoch.

    Each row: epoch, loss, clean_accuracy and vra on the training batches (at the training ε, with the
    power-iteration K), epsilon, lambda, lr, and the cost of the epoch: seconds (training only; the first
    epoch includes warm-up, see `training_cost`), images_per_second, peak_mem_mb and peak_mem_source
    ('cuda_max_allocated', reset every epoch, or 'cpu_process_max_rss', the process's peak resident memory
    since it started, which never goes down). With an eval set, the net is certified on it after every
    epoch (sound K, at `eval_epsilon`, default the net's eval ε): rows gain eval_points, eval_epsilon, eval_vra,
    eval_clean_accuracy, eval_rejection_rate, eval_seconds and eval_bounds (the global certificate's per-epoch
    K takes convs' circulant bounds: sound, slightly looser than the final certification's), and the returned
    history's `best` holds the weights of the best-eval-VRA epoch. `eval_certifier` names the certifier of that
    evaluation (`gloro.certify.list_certifiers()`: a KW or BCP run is evaluated with its own), run in batches of
    `eval_batch_size` (default: the certifier's own). `eval_every`: certify after every k-th epoch and the
    last one only (the others' eval columns are empty and their eval_bounds says so; `best` is then chosen
    among the epochs evaluated). `on_epoch` sees each row.

    `scratch`: a file rewritten atomically after every epoch with everything needed to continue (weights,
    iterates, optimizer and RNG state, history); when it exists at the start and was written for the same
    recipe, training resumes after its last epoch, so a killed job loses at most one epoch.
    """
    if (eval_images is None) != (eval_labels is None):
        raise ValueError("give eval_images and eval_labels together, or neither")
    if not (isinstance(eval_every, int) and eval_every >= 1):
        raise ValueError(f"eval_every must be a whole number of epochs >= 1, got {eval_every!r}")
    if recipe.augmentation != "none" and images.dim() != 4:
        raise ValueError(
            f"augmentation {recipe.augmentation!r} needs image batches (N, C, H, W), got shape {tuple(images.shape)}"
        )
    device = torch.device(device)
    net.to(device).train()
    memory_format = training_memory_format(net, recipe)
    net.model.to(memory_format=memory_format)
    optimizer = make_optimizer(net, recipe)
    generator = torch.Generator().manual_seed(recipe.seed)
    augment = augmentation(recipe.augmentation)
    history = TrainingHistory()
    first = resume(scratch, recipe, net, optimizer, generator, history) if scratch is not None else 0
    epochs = tqdm(range(first, recipe.epochs), desc="training", unit="epoch", disable=not progress)
    for epoch in epochs:
        lr, values = recipe.learning_rate(epoch), epoch_values(recipe, epoch)
        if recipe.epsilon is not None:
            net.epsilon = recipe.epsilon(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        reset_peak_memory(device)
        synchronize(device)
        start = time.perf_counter()
        totals = train_epoch(
            net, images, labels, optimizer, recipe, values, generator, device, memory_format, augment=augment
        )
        synchronize(device)
        seconds = time.perf_counter() - start
        peak_mb, peak_source = peak_memory_mb(device)
        row = {
            "epoch": epoch,
            **totals,
            "epsilon": net.epsilon,
            **dict.fromkeys(schedule_columns()),
            **values,
            "lr": lr,
            "seconds": seconds,
            "images_per_second": len(labels) / seconds,
            "peak_mem_mb": peak_mb,
            "peak_mem_source": peak_source,
        }
        if eval_images is not None and not ((epoch + 1) % eval_every == 0 or epoch == recipe.epochs - 1):
            row.update(dict.fromkeys(EVAL_COLUMNS), eval_bounds=f"not evaluated (every {eval_every} epochs)")
        elif eval_images is not None:
            start = time.perf_counter()
            # the global certificate's per-epoch K uses convs' circulant bounds: sound, a little looser than
            # the explicit operators that certification of the final model uses, and much faster on a 2C2F
            options = {"fast_bounds": True} if eval_certifier == "global" else {}
            certifier = create_certifier(eval_certifier, batch_size=eval_batch_size, **options)
            result = certified_metrics(certifier, net, eval_images, eval_labels, eval_epsilon)
            row.update(
                eval_points=len(eval_labels),
                eval_epsilon=result["epsilon"],
                eval_vra=result["vra"],
                eval_clean_accuracy=result["clean_accuracy"],
                eval_rejection_rate=result["rejection_rate"],
                eval_seconds=time.perf_counter() - start,
                eval_bounds="circulant conv bounds" if options else "the certifier's own",
            )
            if history.best is None or result["vra"] > history.best.vra:
                history.best = BestModel(
                    epoch=epoch,
                    vra=result["vra"],
                    clean_accuracy=result["clean_accuracy"],
                    epsilon=result["epsilon"],
                    state_dict={key: value.detach().to("cpu", copy=True) for key, value in net.state_dict().items()},
                )
        history.append(row)
        epochs.set_postfix(loss=f"{row['loss']:.3f}", vra=f"{row['vra']:.3f}")
        if scratch is not None:
            save_scratch(scratch, recipe, net, optimizer, generator, history)
        if on_epoch is not None:
            on_epoch(row)
    return history


EVAL_COLUMNS = (
    "eval_points",
    "eval_epsilon",
    "eval_vra",
    "eval_clean_accuracy",
    "eval_rejection_rate",
    "eval_seconds",
    "eval_bounds",
)


def make_optimizer(net: GloroNet, recipe: TrainingRecipe) -> torch.optim.Optimizer:
    """The recipe's optimizer over the net's parameters, at the first epoch's learning rate."""
    lr = recipe.learning_rate(0)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    return torch.optim.Adam(net.parameters(), lr=lr, eps=recipe.adam_epsilon, weight_decay=recipe.weight_decay)


def certified_metrics(certifier, net: GloroNet, images, labels, epsilon: float | None) -> dict:
    """`evaluate`'s numbers (clean accuracy, VRA, rejection rate, ε) from any registered certifier."""
    row = certifier(net, images, epsilon).to_row(labels)
    keys = ("clean_accuracy", "vra", "epsilon")
    return {**{key: row[key] for key in keys}, "rejection_rate": 1 - row["certified_rate"]}


def batch_objective(
    net: GloroNet, x: torch.Tensor, y: torch.Tensor, recipe: TrainingRecipe, values: Mapping[str, float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The recipe's loss on one batch, the clean logits, and which points are robust by the training bound:
    its method's objective (`gloro.methods`), or plain cross-entropy for the warm-up."""
    if recipe.loss == WARMUP_LOSS:
        logits = net(x)
        return F.cross_entropy(logits[:, :-1], y), logits[:, :-1], logits.argmax(1) == y
    return method_for_loss(recipe.loss).objective(net, x, y, recipe, values)


def epoch_values(recipe: TrainingRecipe, epoch: int) -> dict[str, float]:
    """The recipe's method's schedules at `epoch` (none for the warm-up)."""
    return {} if recipe.loss == WARMUP_LOSS else method_for_loss(recipe.loss).epoch_values(recipe, epoch)


def schedule_columns() -> list[str]:
    """Every registered method's schedule columns: each history row has them all, None where not its own."""
    return list(dict.fromkeys(column for name in list_methods() for column in get_method(name).schedule_columns))


def train_epoch(
    net: GloroNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    recipe: TrainingRecipe,
    values: Mapping[str, float],
    generator: torch.Generator,
    device: str | torch.device,
    memory_format: torch.memory_format = torch.contiguous_format,
    *,
    augment: Augmentation = no_augmentation,
) -> dict:
    """One pass over a seeded shuffle, each batch augmented on `device` with the same generator; returns
    the mean loss, clean accuracy and VRA over the (augmented) batches.
    """
    order = torch.randperm(len(labels), generator=generator)
    loss_sum = correct = robust = 0.0
    with matching_gradients(net.model):  # channels_last gradients stay channels_last through the Flatten
        for batch in order.split(recipe.batch_size):
            x = images[batch].to(device, non_blocking=True)
            x = augment(x, generator).contiguous(memory_format=memory_format)
            y = labels[batch].to(device, non_blocking=True)
            batch_loss, batch_correct, batch_robust = train_batch(net, x, y, optimizer, recipe, values)
            loss_sum += batch_loss
            correct += batch_correct
            robust += batch_robust
    n = len(labels)
    return {"loss": loss_sum / n, "clean_accuracy": correct / n, "vra": robust / n}


def train_batch(
    net: GloroNet,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    recipe: TrainingRecipe,
    values: Mapping[str, float],
) -> tuple[float, float, float]:
    """One optimizer step on one batch; returns the batch's summed loss, and its counts of correct and robust
    points (by the training bound)."""
    loss, clean, robust_points = batch_objective(net, x, y, recipe, values)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if recipe.clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), recipe.clip_grad_norm)
    optimizer.step()
    with torch.no_grad():
        return float(loss) * len(y), float((clean.argmax(1) == y).sum()), float(robust_points.sum())


def training_memory_format(net: GloroNet, recipe: TrainingRecipe) -> torch.memory_format:
    """The layout `net` trains in under `recipe`: the one its method needs (KW: contiguous, since
    convex-adversarial views activations flat), else `preferred_memory_format`."""
    needed = None if recipe.loss == WARMUP_LOSS else method_for_loss(recipe.loss).memory_format(net)
    return preferred_memory_format(net) if needed is None else needed


def preferred_memory_format(net: GloroNet) -> torch.memory_format:
    """channels_last for convolutional nets (oneDNN and cuDNN run their convs faster in NHWC), else contiguous."""
    has_conv = any(isinstance(layer, torch.nn.Conv2d) for layer in net.layers)
    return torch.channels_last if has_conv and len(net.input_shape) == 3 else torch.contiguous_format

"""Command line: `gloro demo` trains, certifies and attacks a GloRo Net on scikit-learn's digits; `gloro methods`
lists the training methods a config can name, with their options."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch

from gloro.architectures import create_model
from gloro.attack import pgd_l2
from gloro.checkpoint import save
from gloro.cpu_memory import keep_freed_memory
from gloro.data import DIGITS_DIVISOR, load_digits
from gloro.evaluation import evaluate
from gloro.gloro_net import GloroNet
from gloro.methods import get_method, list_methods
from gloro.methods.options import describe_options
from gloro.plugins import load_plugins
from gloro.schedules import DecayAfterHalf
from gloro.training import TrainingRecipe, train


def demo(args: argparse.Namespace) -> int:
    """Train 2C2F on digits at the training ε, freeze, certify at the eval ε, and audit with PGD."""
    torch.manual_seed(args.seed)
    keep_freed_memory()
    x_train, y_train = load_digits("train")
    x_test, y_test = load_digits("test")
    model = create_model(args.architecture, (1, 8, 8), 10, activation=args.activation, seed=args.seed)
    net = GloroNet(model, args.train_epsilon, eval_epsilon=args.epsilon, power_iterations=10, seed=args.seed)
    recipe = TrainingRecipe(
        epochs=args.epochs, batch_size=64, seed=args.seed, learning_rate=DecayAfterHalf(1e-3, 1e-5, args.epochs)
    )
    print(
        f"training {args.architecture} on digits ({len(y_train)} images), "
        f"train eps={args.train_epsilon}, eval eps={args.epsilon}"
    )
    history = train(net, x_train, y_train, recipe, progress=not args.quiet)
    start = time.perf_counter()
    net.freeze()
    report = evaluate(net, x_test, y_test)
    seconds = time.perf_counter() - start
    certificate = net.certify(x_test)
    mask = certificate.certified & (certificate.predictions == y_test)
    adversarial = pgd_l2(net.model, x_test[mask], y_test[mask], args.epsilon, steps=50, restarts=3)
    with torch.no_grad():
        broken = int((net.predict_clean(adversarial).argmax(1) != y_test[mask]).sum())
    bounds = net.bound_report()
    estimate = float(torch.tensor([row["estimate"] for row in bounds]).prod())
    sound = float(torch.tensor([row["sound"] for row in bounds]).prod())
    print(f"\n  epochs                {len(history)} ({sum(r['seconds'] for r in history):.1f} s)")
    print(f"  test clean accuracy   {report['clean_accuracy']:.3f}")
    print(f"  test VRA at eps={args.epsilon:<5}  {report['vra']:.3f}")
    print(f"  rejection rate        {report['rejection_rate']:.3f}")
    print(f"  K (power iteration)   {estimate:.4f}   K (sound) {sound:.4f}   ratio {sound / estimate:.4f}")
    print(f"  certification         {seconds:.2f} s for {len(y_test)} points (incl. freeze)")
    print(f"  PGD-L2 audit          {broken} of {int(mask.sum())} certified points broken (must be 0)")
    if args.checkpoint:
        print(f"  checkpoint            {save(net, args.checkpoint, input_divisor=DIGITS_DIVISOR)}")
    return 1 if broken else 0


def describe_methods(args: argparse.Namespace) -> int:
    """Each registered method (the built-in ones and those of `--plugin` modules): losses and their table
    labels, certifier, reference and options."""
    load_plugins(args.plugin)
    for name in list_methods():
        method = get_method(name)
        losses = ", ".join(f"{loss} ({label})" for loss, label in zip(method.losses, method.labels, strict=True))
        reference = f"; {method.reference}" if method.reference else ""
        print(f"{name}: losses {losses}; certified by {method.certifier}{reference}")
        print("  options: " + describe_options(method.options_class).replace("\n", "\n           "))
    return 0


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(prog="gloro", description=__doc__)
    commands = main_parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("demo", help="train, certify and attack a GloRo Net on digits (about a minute)")
    run.add_argument("--architecture", default="2C2F")
    run.add_argument("--activation", default="relu", choices=("relu", "minmax"))
    run.add_argument("--epochs", type=int, default=60)
    run.add_argument("--train-epsilon", type=float, default=0.45)
    run.add_argument("--epsilon", type=float, default=0.3, help="evaluation radius (l2, on [0, 1] pixels)")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--checkpoint", default="results/demo/digits_2c2f.pt")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=demo)
    listing = commands.add_parser("methods", help="the training methods a config can name, with their options")
    listing.add_argument("--plugin", action="append", default=[], help="a module or .py file to import first")
    listing.set_defaults(handler=describe_methods)
    return main_parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.handler(args)

"""Families of Lipschitz-constrained layers beyond the paper's nets, each one module: its layers, their layer
rules (with bounds proven from the trained weights, never the construction's claim) and its architectures.
Importing this package registers them; their training methods are in `gloro.methods`."""

from gloro.families import aol, cpl, liresnet, sll

__all__ = ["aol", "cpl", "liresnet", "sll"]

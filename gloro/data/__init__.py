"""Data sets, scaled to [0, 1] without mean/std normalisation (ε is defined on that scale)."""

from gloro.data.digits import DIGITS_DIVISOR, load_digits

__all__ = ["DIGITS_DIVISOR", "load_digits"]

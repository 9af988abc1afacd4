"""How the tables a user reads are rounded: percent to one decimal, two significant digits, no raw floats."""

import pytest

from gloro.evaluate import radius_label
from gloro.report import significant


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0042, "0.0042"), (1.34, "1.3"), (57.5, "58"), (689, "690"), (1369, "1400"), (0.999, "1.0"), (0, "0")],
)
def test_two_significant_digits_without_exponents(value, text):
    assert significant(value) == text


def test_radii_are_named_as_papers_name_them():
    assert [radius_label(e) for e in (0.3, 1.58, 36 / 255, 0.1411764705882353)] == ["0.3", "1.58", "36/255", "36/255"]

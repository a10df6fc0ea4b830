"""The people-style measurement's arithmetic (scripts/people_style.py): the gap between the
digits as MNIST gives them and as people's images, with its 95% interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from people_style import paired_gap_points


def test_the_gap_counts_the_digits_only_people_style_loses_less_those_it_gains() -> None:
    plain = np.array([True] * 90 + [False] * 10)
    people = plain.copy()
    people[:6] = False  # six digits lost to the people-style drawing
    people[95] = True  # one that only the drawing gets right
    gap, half_width = paired_gap_points(plain, people)
    assert gap == pytest.approx(5.0)
    # Differences +1 six times, -1 once, 0 otherwise: variance 7/100 - (5/100)^2.
    assert half_width == pytest.approx(100 * 1.96 * math.sqrt((0.07 - 0.05**2) / 100))


def test_digits_read_alike_leave_no_doubt_and_more_digits_narrow_the_interval() -> None:
    same = np.array([True, False, True, True])
    assert paired_gap_points(same, same) == (0.0, 0.0)
    plain = np.ones(300, bool)
    people = plain.copy()
    people[::30] = False
    _, narrow = paired_gap_points(np.tile(plain, 10), np.tile(people, 10))
    gap, wide = paired_gap_points(plain, people)
    assert gap == pytest.approx(100 / 30)
    assert narrow == pytest.approx(wide / math.sqrt(10))

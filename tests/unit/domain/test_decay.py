"""Decayed scores: the same total whatever order their contributions arrive in."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pitlane.domain.decay import DecayedScore, add, merge, value_at

HALF_LIFE = 14 * 86_400.0

scores = st.lists(
    st.floats(min_value=0, max_value=1_000, allow_nan=False),
    min_size=2,
    max_size=2,
).map(lambda pair: [pair[0], float(int(pair[1] * 50_000))])
"""[value, reference time] with times spread over about 18 months."""


def same(a: DecayedScore, b: DecayedScore) -> bool:
    """Equal up to float rounding: same reference time, values within 1e-9 relative."""
    return a[1] == b[1] and a[0] == pytest.approx(b[0], rel=1e-9, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(scores, scores)
def test_merge_is_commutative(a: DecayedScore, b: DecayedScore) -> None:
    assert same(merge(a, b, HALF_LIFE), merge(b, a, HALF_LIFE))


@settings(max_examples=200, deadline=None)
@given(scores, scores, scores)
def test_merge_is_associative(a: DecayedScore, b: DecayedScore, c: DecayedScore) -> None:
    left = merge(merge(a, b, HALF_LIFE), c, HALF_LIFE)
    right = merge(a, merge(b, c, HALF_LIFE), HALF_LIFE)

    assert same(left, right)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0.1, 10), st.integers(0, 60 * 86_400)), min_size=1, max_size=6))
def test_adding_contributions_in_any_order_gives_the_same_score(
    parts: list[tuple[float, int]],
) -> None:
    results = []
    for order in itertools.islice(itertools.permutations(parts), 24):
        score = None
        for weight, at in order:
            score = add(score, weight, float(at), HALF_LIFE)
        results.append(score)

    assert all(same(results[0], other) for other in results)


def test_value_halves_after_one_half_life() -> None:
    score = add(None, 8.0, 1_000.0, HALF_LIFE)

    assert value_at(score, 1_000.0, HALF_LIFE) == 8.0
    assert value_at(score, 1_000.0 + HALF_LIFE, HALF_LIFE) == pytest.approx(4.0)
    assert value_at(score, 1_000.0 + 2 * HALF_LIFE, HALF_LIFE) == pytest.approx(2.0)


def test_value_never_grows_into_the_past() -> None:
    score = add(None, 8.0, 1_000.0, HALF_LIFE)

    assert value_at(score, 0.0, HALF_LIFE) == 8.0


def test_merge_expresses_the_sum_at_the_later_time() -> None:
    older = [4.0, 0.0]
    newer = [1.0, HALF_LIFE]

    assert merge(older, newer, HALF_LIFE) == [pytest.approx(3.0), HALF_LIFE]
    assert merge(newer, older, HALF_LIFE) == [pytest.approx(3.0), HALF_LIFE]


def test_merge_with_nothing_is_a_copy() -> None:
    score = [2.0, 10.0]

    assert merge(score, None, HALF_LIFE) == score
    assert merge(None, score, HALF_LIFE) == score
    assert merge(score, None, HALF_LIFE) is not score
    assert add(None, 2.0, 10.0, HALF_LIFE) == score

"""Time-decayed scores that add up the same whatever order their parts arrive in.

A score is stored as `[value, reference_time]`: the value as it stood at the reference
time. Adding a contribution at time t decays whichever side is older to the younger
one's time, so the result depends on the set of contributions, not on their order,
which keeps a profile the same when events arrive late or out of order.
"""

from __future__ import annotations

DecayedScore = list[float]  # [value, reference_time_epoch_s]


def _factor(age_s: float, half_life_s: float) -> float:
    return float(0.5 ** (age_s / half_life_s))


def add(score: DecayedScore | None, weight: float, at: float, half_life_s: float) -> DecayedScore:
    """The score with `weight` added at epoch time `at`."""
    return merge(score, [weight, at], half_life_s)


def merge(a: DecayedScore | None, b: DecayedScore | None, half_life_s: float) -> DecayedScore:
    """Both scores combined, expressed at the later of their reference times."""
    if a is None:
        return list(b) if b is not None else [0.0, 0.0]
    if b is None:
        return list(a)
    (va, ta), (vb, tb) = a, b
    if ta >= tb:
        return [va + vb * _factor(ta - tb, half_life_s), ta]
    return [vb + va * _factor(tb - ta, half_life_s), tb]


def value_at(score: DecayedScore, at: float, half_life_s: float) -> float:
    """The score's value seen from epoch time `at` (never grows into the future)."""
    value, ref = score
    return value * _factor(max(0.0, at - ref), half_life_s)

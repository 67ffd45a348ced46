"""The one-run privacy audit's statistics (Steinke, Nasr, Jagielski, "Privacy Auditing with One (1)
Training Run", NeurIPS 2023): an empirical lower bound on epsilon from guesses about canaries.

Setting: ``m`` canaries, each included in the training data independently with probability 1/2.
After training, the auditor scores every canary, guesses "included" for the ``k+`` highest scores
and "excluded" for the ``k-`` lowest, and abstains on the rest: ``r = k+ + k-`` guesses, ``v`` of
them correct.

The test (the paper's Corollary 5.4, computed as in its Appendix D). Under (eps, delta)-DP the
number of correct guesses is stochastically dominated, up to a delta term, by the correct guesses of
eps-randomized response, ``Binomial(r, q)`` with ``q = e^eps / (1 + e^eps)``. Its p-value is

    p(eps, delta) = P[Binomial(r, q) >= v]
                    + 2 m delta * max_{i = 1..v} P[v - i <= Binomial(r, q) < v] / i ,

and the lower bound at confidence ``1 - beta`` is the largest eps whose p-value is below ``beta``
(0 when even eps = 0 is not rejected). ``p`` grows with eps, so the bound is found by bisection and
the low end of the last bracket is returned (never above the exact root).

The bound holds for (k+, k-) fixed before the scores are seen. Taking the best of a grid of ``G``
choices after seeing them is a multiple comparison; it is corrected here by a union bound
(Bonferroni): every grid point is tested at ``beta / G``, so the maximum over the grid holds at
confidence ``1 - beta``.

Pure numpy/scipy, no torch: the report and the tests use it without a model stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy.stats import binom

# k+ and k- are each 0 or one of these shares of the canaries (both 0 is not a guess).
DEFAULT_GUESS_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
BISECTION_STEPS = 40


def p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Probability of ``v`` or more correct guesses out of ``r`` (``m`` canaries) under
    (``eps``, ``delta``)-DP: the formula in the module docstring, capped at 1."""
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m})")
    if eps < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need eps >= 0 and 0 <= delta <= 1, got eps={eps}, delta={delta}")
    q = 1.0 / (1.0 + math.exp(-eps))
    tail = float(binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    i = np.arange(1, v + 1)
    below = binom.sf(v - i - 1, r, q) - tail  # P[v - i <= Binomial(r, q) < v]
    return min(tail + 2 * m * delta * float(np.max(below / i)), 1.0)


@lru_cache(maxsize=65536)  # a pure function of its counts: repeated audits ask the same ones
def epsilon_lower_bound(m: int, r: int, v: int, delta: float, beta: float) -> float:
    """The largest eps that ``v`` correct guesses out of ``r`` (``m`` canaries) reject at level
    ``beta`` for the given ``delta``: ``sup {eps : p_value(m, r, v, eps, delta) < beta}``, or 0."""
    if not 0 < beta < 1:
        raise ValueError(f"need 0 < beta < 1, got {beta}")
    if p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) < beta:
        lo, hi = hi, 2 * hi
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        if p_value(m, r, v, mid, delta) < beta:
            lo = mid
        else:
            hi = mid
    return lo


def guess_grid(m: int, fractions: Sequence[float] = DEFAULT_GUESS_FRACTIONS) -> list[tuple[int, int]]:
    """Every (k+, k-) with each 0 or ``round(f * m)`` for ``f`` in ``fractions``, at least one guess
    and at most ``m`` guesses in all (the grid the correction counts)."""
    counts = sorted({0} | {int(round(f * m)) for f in fractions})
    return [(kp, km) for kp in counts for km in counts if 0 < kp + km <= m]


@dataclass(frozen=True)
class AuditResult:
    """The best grid point: its bound, its guesses and correct guesses, and the grid's size."""

    epsilon_lower_bound: float
    k_plus: int
    k_minus: int
    guesses: int
    correct_guesses: int
    tests: int  # grid points; each was tested at beta / tests


def guesses_correct(order: np.ndarray, included: np.ndarray, k_plus: int, k_minus: int) -> int:
    """Correct guesses when the ``k_plus`` last of ``order`` (ascending scores) are guessed
    included and the ``k_minus`` first excluded."""
    top = order[len(order) - k_plus :] if k_plus else order[:0]
    return int(included[top].sum() + (~included[order[:k_minus]]).sum())


def grid_guesses(
    scores: np.ndarray, included: np.ndarray, fractions: Sequence[float], seed: int
) -> tuple[int, list[tuple[int, int, int]]]:
    """``m`` and, for every (k+, k-) of :func:`guess_grid`, ``(k+, k-, correct guesses)`` from
    per-canary ``scores`` (higher: more likely included) and the true inclusion mask. Equal scores
    are ordered at random (a generator seeded by ``seed``), so ties never line up with the canaries'
    order. Shared by this bound and the f-DP one (:mod:`mldoctor_bench.audit_fdp`): same guesses."""
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included, dtype=bool)
    m = len(scores)
    if m == 0 or len(included) != m:
        raise ValueError(
            f"need one inclusion flag per score and at least one canary; got {m} scores, {len(included)} flags"
        )
    order = np.lexsort((np.random.default_rng(seed).random(m), scores))
    return m, [(kp, km, guesses_correct(order, included, kp, km)) for kp, km in guess_grid(m, fractions)]


def audit(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    beta: float = 0.05,
    fractions: Sequence[float] = DEFAULT_GUESS_FRACTIONS,
    seed: int = 0,
) -> AuditResult:
    """The audited lower bound from per-canary ``scores`` and the true inclusion mask, maximised over
    :func:`guess_grid` with the Bonferroni correction (the guesses: :func:`grid_guesses`)."""
    m, grid = grid_guesses(scores, included, fractions, seed)
    level = beta / len(grid)
    best, best_key = None, None
    for kp, km, v in grid:
        eps = epsilon_lower_bound(m, kp + km, v, delta, level)
        # where no point rejects eps = 0, report the most significant one's guesses
        key = (eps, -p_value(m, kp + km, v, 0.0, delta))
        if best_key is None or key > best_key:
            best, best_key = AuditResult(eps, kp, km, kp + km, v, len(grid)), key
    return best

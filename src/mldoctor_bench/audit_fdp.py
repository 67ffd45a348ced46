"""The one-run audit's f-DP analysis (Mahloujifar, Melis and Chaudhuri, "Auditing f-Differential
Privacy in One Run", ICML 2025), beside Steinke et al.'s (epsilon, delta) bound
(:mod:`mldoctor_bench.audit_bound`), on the same game and the same guesses.

The game is the same: ``m`` canaries each included with probability 1/2, ``c'`` guesses (the rest
abstained on), ``c`` of them correct. The hypothesis is Gaussian DP with parameter ``mu`` (the
trade-off curve of DP-SGD), ``f(x) = Phi(Phi^-1(1 - x) - mu)``, whose "blow-up" ``fbar(x) = 1 - f(x)``
has the inverse ``fbar^-1(y) = Phi(Phi^-1(y) - mu)``. The paper's Theorem 3.2 (its Algorithm 3)
decides whether ``P[c or more correct] <= tau`` under that curve by a recursion from ``i = c`` down to
0 (alphabet size 2, membership):

    r_c = tau c / m,   h_c = tau (c' - c) / m,
    h_i = max(h_{i+1}, fbar^-1(r_{i+1})),   r_i = r_{i+1} + i / (c' - i) (h_i - h_{i+1}),

and rejects ``mu`` when ``r_0 + h_0 > c' / m``. ``r`` is clamped at 1 (past it ``Phi^-1`` is undefined,
and an unclamped NaN would silently never reject), and the recursion stops once ``h`` stops growing
(nothing changes after). A smaller ``mu`` is easier to reject, so the rejected values are an interval
``(0, mu_hat)``; ``mu_hat`` is found by bisection and turned into epsilon at the run's delta by the
Gaussian-DP conversion ``delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)`` (Dong, Roth and
Su 2022). As for Steinke's bound, taking the best of a grid of guess counts is corrected by testing
every grid point at ``beta / G`` (Bonferroni): the paper reports the best count uncorrected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy.special import ndtr, ndtri

from mldoctor_bench.audit_bound import DEFAULT_GUESS_FRACTIONS, grid_guesses

MU_MAX = 50.0  # the largest mu tested: epsilon far beyond any audit's reach
BISECTION_STEPS = 40


def gdp_rejected(m: int, guesses: int, correct: int, mu: float, tau: float) -> bool:
    """Whether ``correct`` right out of ``guesses`` (``m`` canaries) is less likely than ``tau``
    under ``mu``-GDP: the recursion of the module docstring."""
    if not 0 <= correct <= guesses <= m:
        raise ValueError(f"need 0 <= correct ({correct}) <= guesses ({guesses}) <= canaries ({m})")
    if correct == 0 or guesses == 0:
        return False
    r, h = tau * correct / m, tau * (guesses - correct) / m
    bound = guesses / m
    for i in range(correct - 1, -1, -1):
        grown = max(h, float(ndtr(ndtri(min(r, 1.0)) - mu)))
        if grown == h:
            break  # h and r stay as they are down to i = 0
        r += i / (guesses - i) * (grown - h)
        h = grown
        if r + h > bound:
            return True  # r and h never shrink as i goes down
    return r + h > bound


@lru_cache(maxsize=65536)  # a pure function of its counts: repeated audits ask the same ones
def mu_lower_bound(m: int, guesses: int, correct: int, beta: float) -> float:
    """The supremum of the ``mu`` that the counts reject at level ``beta`` (0 if none, :data:`MU_MAX`
    if all up to it)."""
    if not 0 < beta < 1:
        raise ValueError(f"need 0 < beta < 1, got {beta}")
    if not gdp_rejected(m, guesses, correct, 1e-9, beta):
        return 0.0
    if gdp_rejected(m, guesses, correct, MU_MAX, beta):
        return MU_MAX
    lo, hi = 1e-9, MU_MAX
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if gdp_rejected(m, guesses, correct, mid, beta) else (lo, mid)
    return lo


def gdp_delta(mu: float, eps: float) -> float:
    """The delta of ``mu``-GDP at ``eps`` (Dong, Roth and Su 2022, Corollary 2.13)."""
    return float(ndtr(-eps / mu + mu / 2) - math.exp(eps) * ndtr(-eps / mu - mu / 2))


def gdp_epsilon(mu: float, delta: float) -> float:
    """The smallest epsilon at which ``mu``-GDP is (epsilon, ``delta``)-DP (0 for ``mu = 0``)."""
    if mu <= 0 or gdp_delta(mu, 0.0) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while gdp_delta(mu, hi) > delta:
        lo, hi = hi, 2 * hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if gdp_delta(mu, mid) > delta else (lo, mid)
    return hi


@dataclass(frozen=True)
class FdpAuditResult:
    """The best grid point: its Gaussian-DP lower bound, the epsilon it implies at the run's delta,
    its guesses and correct guesses, and the grid's size."""

    mu_lower_bound: float
    epsilon_lower_bound: float
    k_plus: int
    k_minus: int
    guesses: int
    correct_guesses: int
    tests: int  # grid points; each was tested at beta / tests


def audit_fdp(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    beta: float = 0.05,
    fractions: Sequence[float] = DEFAULT_GUESS_FRACTIONS,
    seed: int = 0,
) -> FdpAuditResult:
    """The f-DP lower bound from per-canary ``scores`` and the true inclusion mask, on the guesses of
    :func:`mldoctor_bench.audit_bound.audit` (:func:`~mldoctor_bench.audit_bound.grid_guesses`: same
    grid, same tie-break), maximised over the grid with the Bonferroni correction."""
    m, grid = grid_guesses(scores, included, fractions, seed)
    best = None
    for kp, km, v in grid:
        mu = mu_lower_bound(m, kp + km, v, beta / len(grid))
        if best is None or mu > best.mu_lower_bound:
            best = FdpAuditResult(mu, gdp_epsilon(mu, delta), kp, km, kp + km, v, len(grid))
    return best

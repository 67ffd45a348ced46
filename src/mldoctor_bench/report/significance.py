"""Tests of "no leakage" behind the verdicts: one p-value per statistic of an attack series, exact
where the statistic allows it, and Holm's correction over every statistic a family judges.

Every test here needs only numbers the results table holds (counts and rates, per seed), so a
verdict can be recomputed from the table alone, and several seeds are pooled into one test of the
pooled statistic:

- TPR at a fixed FPR ``x`` on ``N`` non-members and ``M`` members: the estimator admits
  ``f = floor(x N)`` false positives, so it counts the members ranked above the ``(f+1)``-th
  highest non-member. With no leakage members and non-members are exchangeable, and that count
  follows the negative hypergeometric law ``NHG(M + N, M, f + 1)`` (mean ``M (f+1) / (N+1)``: the
  null floor of about 0.012 at ``N = 500``). Tied scores can only lower the estimate, so the exact
  tail stays valid (conservative). Seeds: the counts add, their laws convolve.
- AUC: the Mann-Whitney U statistic ``AUC M N`` against its null mean ``M N / 2`` and variance
  ``M N (M + N + 1) / 12`` (without the tie correction, which would only shrink it: conservative);
  seeds add means and variances.
- An accuracy against a baseline measured on the same examples (attribute inference, stealing,
  inversion against a search without the target): McNemar's exact test on the discordant examples
  (``b`` the attack right and the baseline wrong, ``c`` the reverse): with no advantage ``b`` is
  ``Binomial(b + c, 1/2)``; seeds add ``b`` and ``c``. Its interval for the difference ``(b - c) / n``
  is the Clopper-Pearson interval of ``b / (b + c)`` carried over, so it excludes 0 exactly when the
  two-sided exact test rejects.
- An accuracy against a known chance level: the exact binomial tail.
- Inversion against the same search guided by a model that never saw the training data: a class is
  the unit, since the reconstructions of one class start alike and are judged by one evaluator (they
  are not independent trials). Per class (and seed) the difference of the two searches' hit rates;
  with no leakage the two models are exchangeable within a class, so its sign is a fair coin: the
  exact sign-flip permutation test of the mean difference over classes, and a t interval over them.
- Attribute inference on members against non-members, beyond an imputation model (Jayaraman and
  Evans, USENIX Security 2022): per example ``d = [attack right] - [imputation right]``; the mean
  ``d`` on members minus that on non-members, two independent samples, by a normal test.

Pure functions of numbers: nothing reads files or draws.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist
from typing import Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05  # the verdicts' level, before the correction for the number of statistics judged


def tpr_floor(nonmembers: int, fpr: float) -> float:
    """The mean TPR at FPR ``fpr`` of an attack that knows nothing: ``(floor(fpr N) + 1) / (N + 1)``."""
    return (math.floor(fpr * nonmembers + 1e-9) + 1) / (nonmembers + 1)


@lru_cache(maxsize=256)
def null_counts(members: int, nonmembers: int, fpr: float) -> np.ndarray:
    """The law of the number of members a no-leakage attack flags at FPR ``fpr``: the negative
    hypergeometric pmf over ``0..members`` (members drawn before the ``floor(fpr N) + 1``-th non-member)."""
    r = math.floor(fpr * nonmembers + 1e-9) + 1
    return stats.nhypergeom(members + nonmembers, members, r).pmf(np.arange(members + 1))


def tpr_pvalue(tprs: Sequence[float], members: Sequence[int], nonmembers: Sequence[int], fpr: float) -> float:
    """One-sided p-value of TPRs at ``fpr`` (one per seed) against no leakage: ``P(sum T >= observed)``
    under independent negative hypergeometric counts (see the module's docstring)."""
    pmf = np.ones(1)
    observed = 0
    for tpr, m, n in zip(tprs, members, nonmembers):
        pmf = np.convolve(pmf, null_counts(int(m), int(n), float(fpr)))
        observed += int(round(tpr * int(m)))
    return float(min(1.0, pmf[observed:].sum()))


def auc_pvalue(aucs: Sequence[float], members: Sequence[int], nonmembers: Sequence[int]) -> float:
    """One-sided p-value of AUCs (one per seed) against 0.5: the pooled Mann-Whitney U, normal."""
    m, n = np.asarray(members, dtype=float), np.asarray(nonmembers, dtype=float)
    u = np.asarray(aucs, dtype=float) * m * n
    z = (u.sum() - (m * n / 2).sum()) / math.sqrt((m * n * (m + n + 1) / 12).sum())
    return 0.5 * math.erfc(z / math.sqrt(2))  # the normal upper tail, exact far out


def auc_interval(auc: float, members: int, nonmembers: int, level: float = 0.95) -> tuple[float, float]:
    """Hanley and McNeil's (1982) normal interval of one AUC, cut to [0, 1]."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (members - 1) * (q1 - auc * auc) + (nonmembers - 1) * (q2 - auc * auc)) / (
        members * nonmembers
    )
    half = NormalDist().inv_cdf((1 + level) / 2) * math.sqrt(max(var, 0.0))
    return max(0.0, auc - half), min(1.0, auc + half)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a proportion ``k / n``."""
    if n <= 0:
        return math.nan, math.nan
    tail = (1 - level) / 2
    low = 0.0 if k <= 0 else float(stats.beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k >= n else float(stats.beta.ppf(1 - tail, k + 1, n - k))
    return low, high


def mcnemar_pvalue(attack_only: int, baseline_only: int) -> float:
    """One-sided exact McNemar p-value that the attack beats the baseline on paired examples:
    ``P(Binomial(b + c, 1/2) >= b)``."""
    b, c = int(attack_only), int(baseline_only)
    if b + c == 0:
        return 1.0
    return float(stats.binom.sf(b - 1, b + c, 0.5))


def paired_difference_interval(
    attack_only: int, baseline_only: int, n: int, level: float = 0.95
) -> tuple[float, float]:
    """Interval of the difference of two accuracies on the same ``n`` examples, ``(b - c) / n``,
    from the Clopper-Pearson interval of ``b / (b + c)`` (conditional on the discordant count)."""
    b, c = int(attack_only), int(baseline_only)
    if n <= 0:
        return math.nan, math.nan
    if b + c == 0:
        return 0.0, 0.0
    low, high = clopper_pearson(b, b + c, level)
    share = (b + c) / n
    return share * (2 * low - 1), share * (2 * high - 1)


def binomial_pvalue(hits: int, n: int, chance: float) -> float:
    """One-sided exact p-value of ``hits`` successes in ``n`` trials against a success rate ``chance``."""
    if n <= 0:
        return 1.0
    return float(stats.binom.sf(int(hits) - 1, int(n), chance))


def holm(pvalues: Sequence[float], alpha: float = ALPHA) -> np.ndarray:
    """Holm's step-down rejections (family-wise error at most ``alpha`` under any dependence): sorted
    ascending, the ``i``-th smallest p-value is rejected while it is at most ``alpha / (m - i)``."""
    p = np.asarray(pvalues, dtype=float)
    rejected = np.zeros(len(p), dtype=bool)
    for i, j in enumerate(np.argsort(p, kind="stable")):
        if not p[j] <= alpha / (len(p) - i):
            break
        rejected[j] = True
    return rejected


MAX_EXACT_FLIPS = 16  # up to 2^16 sign patterns are enumerated; more are sampled


def sign_flip_pvalue(differences: Sequence[float], samples: int = 100_000, seed: int = 0) -> float:
    """One-sided p-value that the mean of ``differences`` (one per cluster) exceeds 0, by flipping the
    signs of the clusters: exact over every pattern for up to :data:`MAX_EXACT_FLIPS` clusters, else
    ``samples`` random patterns (seeded; the observed one counted, so never 0)."""
    d = np.asarray(differences, dtype=float)
    if len(d) == 0 or not np.any(d):
        return 1.0
    observed = d.sum() - 1e-12
    if len(d) <= MAX_EXACT_FLIPS:
        patterns = ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1) * 2 - 1
        return float(np.mean(patterns @ d >= observed))
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(samples, len(d)))
    return float((np.sum(signs @ d >= observed) + 1) / (samples + 1))


def cluster_interval(differences: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student's t interval of the mean of per-cluster ``differences`` (clusters independent)."""
    d = np.asarray(differences, dtype=float)
    if len(d) < 2:
        return math.nan, math.nan
    half = float(stats.t.ppf((1 + level) / 2, len(d) - 1)) * float(d.std(ddof=1)) / math.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def difference_in_differences(
    members: tuple[int, int, int], nonmembers: tuple[int, int, int]
) -> tuple[float, float, tuple[float, float]]:
    """Mean of ``d = [attack right] - [baseline right]`` on members minus on non-members, each given as
    ``(only attack right, only baseline right, examples)``: the difference, its one-sided p-value
    (normal, two independent samples) and its 95% interval."""

    def mean_var(only_attack: int, only_baseline: int, n: int) -> tuple[float, float]:
        mean = (only_attack - only_baseline) / n
        return mean, ((only_attack + only_baseline) / n - mean**2) / n

    (mm, vm), (mn, vn) = mean_var(*members), mean_var(*nonmembers)
    diff, se = mm - mn, math.sqrt(max(vm + vn, 0.0))
    if se == 0:
        return diff, (0.0 if diff > 0 else 1.0), (diff, diff)
    z = NormalDist().inv_cdf(0.975)
    return diff, 0.5 * math.erfc(diff / se / math.sqrt(2)), (diff - z * se, diff + z * se)


def holm_adjusted(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's adjusted p-values: the smallest family-wise level at which each would be rejected,
    ``max_{j <= i} min(1, (m - j) p_(j))`` in ascending order."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    out = np.empty(len(p))
    out[order] = adjusted
    return out

"""What a family judged low could have detected: the smallest effects that the first step of Holm's
correction (level ``alpha / tests``, the easiest any statistic of the family gets) would reject with
the examples this run had. "Low" means that the attacks that ran found nothing distinguishable from
chance at this power, not that the model is safe; these numbers say how much leakage could hide.

- membership: on its most examined series (most non-members), the smallest TPR at 1% FPR whose exact
  negative hypergeometric tail, and the smallest AUC whose Mann-Whitney tail, reach that level;
- attribute: the smallest member-minus-non-member difference beyond imputation at the run's
  standard error;
- stealing: the smallest agreement over the no-query model at the run's number of examples on which
  the two disagree;
- inversion: whether the sign-flip test over ``K`` classes can reach that level at all (its smallest
  p-value is ``2^-K``).

Pure functions of numbers.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from scipy import stats

from mldoctor_bench.metrics import measurable
from mldoctor_bench.report import significance as sig

FPR = 0.01


def smallest_tpr(members: list[int], nonmembers: list[int], level: float, fpr: float = FPR) -> float:
    """The smallest pooled TPR at ``fpr`` that the exact test rejects at ``level`` (NaN: none)."""
    pmf = np.ones(1)
    for m, n in zip(members, nonmembers):
        pmf = np.convolve(pmf, sig.null_counts(int(m), int(n), float(fpr)))
    tails = pmf[::-1].cumsum()[::-1]
    reaching = np.flatnonzero(tails <= level)
    return float(reaching[0] / sum(members)) if len(reaching) else math.nan


def smallest_auc(members: list[int], nonmembers: list[int], level: float) -> float:
    """The smallest pooled AUC whose one-sided Mann-Whitney (normal) p-value is at most ``level``."""
    m, n = np.asarray(members, dtype=float), np.asarray(nonmembers, dtype=float)
    sd = math.sqrt((m * n * (m + n + 1) / 12).sum()) / (m * n).sum()
    return 0.5 + NormalDist().inv_cdf(1 - level) * sd


def smallest_mcnemar_margin(discordant: int, examples: int, level: float) -> float:
    """The smallest ``(b - c) / n`` with ``b + c = discordant`` that McNemar's exact test rejects."""
    for b in range(discordant + 1):
        if stats.binom.sf(b - 1, discordant, 0.5) <= level:
            return (2 * b - discordant) / examples
    return math.nan


def smallest_detectable(fam: str, evidence: list, level: float) -> dict:
    """The smallest effects the family's statistics would reject at ``level`` (see the module)."""
    sized = [e for e in evidence if e.sizes]
    if not sized:
        return {}
    out: dict = {"level": level}
    if fam == "membership":
        largest = max(sized, key=lambda e: sum(e.sizes["nonmembers"]))
        members, nonmembers = largest.sizes["members"], largest.sizes["nonmembers"]
        out.update(
            series=largest.series,
            members=sum(members),
            nonmembers=sum(nonmembers),
            auc=smallest_auc(members, nonmembers, level),
        )
        if all(measurable(n, FPR) for n in nonmembers):
            out["tpr_at_fpr_0.01"] = smallest_tpr(members, nonmembers, level)
    elif fam == "attribute":
        e = min(sized, key=lambda e: e.sizes["standard_error"])
        out.update(series=e.series, training_leakage=NormalDist().inv_cdf(1 - level) * e.sizes["standard_error"])
    elif fam == "stealing":
        e = max(sized, key=lambda e: e.sizes["examples"])
        margin = smallest_mcnemar_margin(e.sizes["discordant"], e.sizes["examples"], level)
        out.update(series=e.series, agreement_over_baseline=margin)
    elif fam == "inversion":
        e = max(sized, key=lambda e: e.sizes["clusters"])
        k = e.sizes["clusters"]
        out.update(series=e.series, classes=k, smallest_p=2.0**-k, can_reject=2.0**-k <= level)
    return out


def detectable_words(fam: str, d: dict, tests: int) -> str:
    """The sentence a report gives a low family: what the first Holm step over ``tests`` statistics
    would have rejected with these examples."""
    if not d:
        return ""
    head = f"with these examples and Holm over {tests} statistics, the first step rejects only from "
    if fam == "membership":
        tpr = (
            f"TPR {d['tpr_at_fpr_0.01']:.3f} at 1% FPR or "
            if not math.isnan(d.get("tpr_at_fpr_0.01", math.nan))
            else ""
        )
        return f"{head}{tpr}AUC {d['auc']:.3f} on {d['series']}, its largest series ({d['members']} members)"
    if fam == "attribute":
        return f"{head}a member-minus-non-member difference of {d['training_leakage']:.3f} beyond imputation"
    if fam == "stealing":
        return f"{head}an agreement {d['agreement_over_baseline']:.3f} above the no-query model's"
    if fam == "inversion":
        if not d["can_reject"]:
            return f"with {d['classes']} classes the test over classes cannot reach the first step's level at all"
        return f"{head}the target's search beating the control's in nearly every one of the {d['classes']} classes"
    return ""

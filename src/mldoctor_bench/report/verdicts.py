"""Plain-language verdicts: per attack family, low / moderate / high risk, each a statistical test.

A family is "moderate" or "high" only when the evidence rejects "no leakage" at level
:data:`~mldoctor_bench.report.significance.ALPHA` (5%) after Holm's correction over every statistic
the family judges (each series' AUC and TPR at low FPR, or its accuracy against its baseline), and
the rejected statistic is large enough: the effect-size rule (:data:`RULES`) says moderate or high.
A series whose non-member count is below 1/FPR is not judged at that FPR. What each statistic is
compared with is what an attacker gets without the model's leakage:

- membership: the TPR at 1% (and 0.1%) FPR against its null floor (what a guess reaches at that
  many non-members), as a multiple of the FPR, and the AUC against 0.5;
- inversion: the evaluator's accuracy on the reconstructions against the same search guided by a
  model that never saw the training data, a class being the unit of the test;
- attribute: the attack's accuracy on members minus on non-members, beyond the same difference for
  an imputation model that needs no target (Jayaraman and Evans);
- stealing: the surrogate's agreement with the target against a model trained on the attacker's
  own images with their true labels and no query.

The tests (:mod:`~mldoctor_bench.report.significance`) need only the table's counts, so seeds pool
into one test. Everything here takes the tidy results table and returns plain data; nothing draws.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Optional

import pandas as pd

from mldoctor_bench.report import significance as sig
from mldoctor_bench.report.detectable import detectable_words, smallest_detectable
from mldoctor_bench.report.evidence import (
    HIGH,
    LOW,
    MODERATE,
    Evidence,
    Intervals,
    Values,
    attribute_evidence,
    inversion_evidence,
    membership_evidence,
    stealing_evidence,
)
from mldoctor_bench.report.stats import CELL, SERIES, families, ok_rows, series_label
from mldoctor_bench.results import TARGET, not_run

ORDER = {LOW: 0, MODERATE: 1, HIGH: 2}
NOT_JUDGED = "not judged"  # membership, where the members and non-members differ without the model
FPR = 0.01
CORRECTION = "Holm"

RULES = {
    "membership": (
        f"moderate or high only if a statistic rejects no leakage at {sig.ALPHA:.0%} after Holm's "
        "correction over every membership statistic judged (exact negative hypergeometric test of TPR at "
        "1% and 0.1% FPR against the floor a guess reaches with as many non-members, judged only where "
        "there are at least 1/FPR; Mann-Whitney test of the AUC); then high if that TPR is at least 10 "
        "times its FPR or the AUC at least 0.80, moderate if at least 3 times or 0.60, else low. At 10 "
        "times, one in ten members is exposed while one non-member in a hundred is wrongly accused"
    ),
    "inversion": (
        f"moderate or high only if the evaluator's accuracy rejects the baseline at {sig.ALPHA:.0%} after "
        "Holm's correction, the baseline being the same search from the same starts guided by a model of "
        "the target's architecture and recipe that never saw its training data, judged by the same "
        "evaluator (exact sign-flip permutation test over classes: a class, not a reconstruction, is the "
        "unit); then high if it recovers at least 40% of what the baseline misses, (accuracy - baseline) / "
        "(1 - baseline), moderate if 10%, else low. A model that generalises beats chance whether or not "
        "it saw the images: chance is shown, not tested"
    ),
    "attribute": (
        f"moderate or high only if the attack's accuracy on the target's training members minus its "
        "accuracy on non-members exceeds the same difference for an imputation model that needs no target "
        "(the attack on the attacker's own model), as Jayaraman and Evans measure training-data leakage "
        f"(two-sample normal test of the per-example differences, {sig.ALPHA:.0%} after Holm's correction); "
        "then high by 0.10 or more, moderate by 0.02 or more, else low. Accuracy on non-members above what "
        "needs no target is what the model reveals about the distribution, reported, not judged"
    ),
    "stealing": (
        f"moderate or high only if the surrogate agrees with the target more often than a model trained "
        "on the attacker's images with their true labels and no query (exact McNemar test on the same "
        f"examples, {sig.ALPHA:.0%} after Holm's correction); then high by 0.10 or more, moderate by "
        "0.02 or more, else low (what querying the target adds)"
    ),
}


@dataclass(frozen=True)
class Verdict:
    """One family's verdict: its level, the statistic it rests on, and how it was tested."""

    family: str
    level: str
    series: str
    evidence: str
    rule: str
    statistic: str = ""
    value: float = math.nan
    interval: tuple[float, float] = (math.nan, math.nan)
    baseline_name: str = ""
    baseline: float = math.nan
    p_value: float = math.nan
    test: str = ""
    significant: bool = False
    alpha: float = sig.ALPHA
    correction: str = CORRECTION
    tests: int = 0  # statistics judged in the family (the correction's count)
    judged: list = field(default_factory=list)  # every Evidence of the family, with its rejection
    not_run: list = field(default_factory=list)  # (series, reason) of its selected attacks that did not run
    p_adjusted: float = math.nan  # the chosen statistic's Holm-adjusted p-value
    adjusted: list = field(default_factory=list)  # every judged statistic's Holm-adjusted p-value (NaN: untested)
    detectable: dict = field(default_factory=dict)  # where low: the smallest effects the first Holm step rejects

    @property
    def detected_small(self) -> bool:
        """A statistic rejects no leakage, but the effect is below the moderate bar."""
        return self.significant and self.level == LOW

    @property
    def label(self) -> str:
        """The level in words: ``low``, ``low (detected, small)``, ``moderate`` ..., ``not judged``, and
        where some of the family's attacks did not run, ``, incomplete: <series> not run``."""
        text = f"{self.level} (detected, small)" if self.detected_small else self.level
        if self.not_run:
            text += f", incomplete: {', '.join(series for series, _ in self.not_run)} not run"
        return text

    def as_dict(self) -> dict:
        """Plain data for ``verdicts.json``."""
        out = {k: v for k, v in asdict(self).items() if k not in ("judged", "not_run", "adjusted")}
        out["label"] = self.label
        out["detected"] = self.significant
        out["incomplete"] = bool(self.not_run)
        out["not_run"] = [{"series": series, "reason": reason} for series, reason in self.not_run]
        out["interval"] = list(self.interval)
        adjusted = self.adjusted or [math.nan] * len(self.judged)
        out["judged"] = [
            {
                **{k: v for k, v in asdict(e).items() if k not in ("strength", "family")},
                "series": e.series,
                "interval": list(e.interval),
                "rejected": bool(r),
                "p_adjusted": a,
            }
            for (e, r), a in zip(self.judged, adjusted)
        ]
        return out


JUDGES: dict[str, Callable[[tuple, Values, Optional[Intervals]], list[Evidence]]] = {
    "membership": membership_evidence,
    "inversion": inversion_evidence,
    "attribute": attribute_evidence,
    "stealing": stealing_evidence,
}
# What each family's verdict compares its number with, beside the number in a report's tables.
COMPARED = {
    "inversion": ("chance_accuracy", "no_target_eval_accuracy"),
    "attribute": ("member_accuracy", "nonmember_accuracy", "training_leakage", "advantage_over_baseline"),
    "stealing": ("baseline_agreement", "agreement_over_baseline"),
}


def largest_budgets(rows: pd.DataFrame) -> pd.DataFrame:
    """Stealing rows without those of a budget curve's smaller budgets: the verdict reads every strategy
    at the largest budget its attack ran under the threat model (``queries``; budget curves name their
    variants ``<strategy>@<budget>``, :mod:`mldoctor_bench.attacks.stealing_budget`)."""
    curve = rows["variant"].str.contains("@", regex=False)
    budget = rows["variant"].str.rsplit("@", n=1).str[-1].where(curve, "0").astype(int)
    largest = budget.groupby([rows["attack"], rows["threat_model"]]).transform("max")
    return rows[~curve | (budget == largest)]


def family_evidence(frame: pd.DataFrame, fam: str, intervals: Optional[Intervals] = None) -> list[Evidence]:
    """Every statistic ``fam`` judges in ``frame`` (one model: its seeds are pooled)."""
    rows = ok_rows(frame)
    rows = rows[families(rows) == fam]
    if fam == "stealing":
        rows = largest_budgets(rows)
    out = []
    for key, group in rows.groupby(SERIES, sort=True):
        wide = group.pivot_table(index="seed", columns="metric", values="value", aggfunc="mean")
        out += JUDGES[fam](tuple(key), {m: wide[m].tolist() for m in wide.columns}, intervals)
    return out


def decide(fam: str, evidence: list[Evidence], alpha: float = sig.ALPHA) -> Optional[Verdict]:
    """The family's verdict from its statistics: Holm over the testable ones, then the strongest
    rejected statistic's effect level; low when nothing is rejected, with what the first Holm step
    could have detected (:mod:`.detectable`)."""
    if not evidence:
        return None
    testable = [i for i, e in enumerate(evidence) if not math.isnan(e.p_value)]
    rejected, adjusted = [False] * len(evidence), [math.nan] * len(evidence)
    pvalues = [evidence[i].p_value for i in testable]
    for i, r, a in zip(testable, sig.holm(pvalues, alpha), sig.holm_adjusted(pvalues)):
        rejected[i], adjusted[i] = bool(r), float(a)
    judged = list(zip(evidence, rejected))
    hits = [e for e, r in judged if r]
    if hits:
        chosen = max(hits, key=lambda e: (ORDER[e.effect], e.strength))
        level = chosen.effect
    else:  # nothing rejects no leakage: the statistic closest to doing so
        chosen = min(evidence, key=lambda e: (math.isnan(e.p_value), e.p_value if not math.isnan(e.p_value) else 0))
        level = LOW
    p_adjusted = adjusted[evidence.index(chosen)]
    return Verdict(
        fam,
        level,
        chosen.series,
        _words(chosen, bool(hits), len(testable), alpha, p_adjusted),
        RULES[fam],
        chosen.statistic,
        chosen.value,
        chosen.interval,
        chosen.baseline_name,
        chosen.baseline,
        chosen.p_value,
        chosen.test,
        bool(hits),
        alpha,
        CORRECTION,
        len(testable),
        judged,
        p_adjusted=p_adjusted,
        adjusted=adjusted,
        detectable=smallest_detectable(fam, evidence, alpha / max(1, len(testable))) if level == LOW else {},
    )


def _words(e: Evidence, significant: bool, tests: int, alpha: float, p_adjusted: float = math.nan) -> str:
    if math.isnan(e.p_value):
        return f"{e.text}; not tested: {e.test}"
    if not math.isnan(e.interval[0]):
        e = replace(e, text=f"{e.text} (95% interval {e.interval[0]:.3f} to {e.interval[1]:.3f})")
    p = f"Holm-adjusted p = {p_adjusted:.2g}" if p_adjusted >= 1e-4 else "Holm-adjusted p < 0.0001"
    verdict = (
        f"rejects no leakage ({p} over {tests} statistics, {e.test}; level {alpha:.0%})"
        if significant
        else f"no statistic rejects no leakage at {alpha:.0%} after {CORRECTION} over {tests}; the closest: {p}"
    )
    if significant and e.effect == LOW:
        verdict += ": leakage detected, but below the bar for moderate"
    seeds = f", {e.seeds} seeds pooled" if e.seeds > 1 else ""
    return f"{e.text}{seeds}; {verdict}"


def _low_means(v: Verdict) -> str:
    """For a low family: what it could have detected (low is not "safe")."""
    words = detectable_words(v.family, v.detectable, v.tests) if v.level == LOW else ""
    return f". Low means nothing distinguishable from chance was found: {words}" if words else ""


def not_run_series(frame: pd.DataFrame, fam: str) -> list[tuple[str, str]]:
    """``(series, reason)`` of each attack of ``fam`` that was selected under a threat model it
    supports and did not run (:func:`~mldoctor_bench.results.not_run`), in name order."""
    rows = frame[not_run(frame) & (families(frame) == fam)]
    return [
        (series_label(attack, tm), str(group["reason"].iloc[0]))
        for (attack, tm), group in rows.groupby(["attack", "threat_model"], sort=True)
    ]


def verdicts(frame: pd.DataFrame, intervals: Optional[Intervals] = None, alpha: float = sig.ALPHA) -> list[Verdict]:
    """One verdict per attack family with a usable row in ``frame`` (one model), in the families' order,
    each with the family's attacks that did not run. ``intervals`` gives the 95% interval of a statistic
    where the table alone cannot (e.g. bootstrap intervals over saved membership scores)."""
    out = []
    for fam in JUDGES:
        found = decide(fam, family_evidence(frame, fam, intervals), alpha)
        if found is not None:
            found = replace(found, not_run=not_run_series(frame, fam))
            out.append(not_judged(found, blind_split(frame), alpha))
    return out


def blind_split(frame: pd.DataFrame) -> Optional[dict[str, float]]:
    """The blind check of a given split (:mod:`mldoctor_bench.blind_check`) from the target's rows:
    ``blind_auc``, its interval and ``blind_p_value``; None where none ran (members drawn at random)."""
    rows = frame[(frame["attack"] == TARGET) & frame["metric"].str.startswith("blind_")]
    found = dict(zip(rows["metric"], rows["value"]))
    return found if "blind_p_value" in found else None


SPLIT_JUDGED = ("membership", "attribute")  # families whose test compares members with non-members


def not_judged(verdict: Verdict, blind: Optional[dict[str, float]], alpha: float) -> Verdict:
    """The verdict of a family whose test compares members with non-members (membership; attribute
    inference on members against non-members), unless the blind check rejects that the two are
    exchangeable: then the attacks may have detected the split, not the model, and it is not judged."""
    if verdict.family not in SPLIT_JUDGED or blind is None or not blind["blind_p_value"] <= alpha:
        return verdict
    text = (
        "the listed members and the non-members differ without the model: a classifier of the images alone, "
        f"which never queried it, tells them apart (AUC {blind['blind_auc']:.3f}, 95% interval "
        f"{blind['blind_auc_low']:.3f} to {blind['blind_auc_high']:.3f}; permutation "
        f"p = {blind['blind_p_value']:.3f}), so an attack comparing the two may measure the split, not the "
        f"model; offer non-members from the same collection as the members to judge {verdict.family}"
    )
    return replace(verdict, level=NOT_JUDGED, series="blind check of the split", evidence=text, significant=False)


def name(key: tuple) -> str:
    """A model's name in the verdicts: dataset/arch/defense, then any swept settings."""
    return "/".join(str(part) for part in key if str(part))


def verdict_lines(frame: pd.DataFrame, intervals: Optional[Intervals] = None) -> list[str]:
    """The report's first section: per model (dataset, architecture, defense) one line per family,
    or with several models one row each, then the rules."""
    by = [c for c in CELL if c in frame]  # and the swept settings, where the report has read them
    cells = {key: rows for key, rows in frame.groupby(by, sort=True)} if not frame.empty else {}
    judged = {key: verdicts(rows, intervals) for key, rows in cells.items()}
    judged = {key: found for key, found in judged.items() if found}
    if not judged:
        return ["## Verdicts", "", "No attack family has a usable row in these results.", ""]
    lines = ["## Verdicts", ""]
    if len(judged) == 1:
        [(key, found)] = judged.items()
        lines += [f"{name(key)}:", ""]
        lines += [f"- **{v.family}: {v.label}** ({v.series}: {v.evidence}){_low_means(v)}." for v in found]
    else:
        families = [f for f in JUDGES if any(v.family == f for found in judged.values() for v in found)]
        lines += ["| model | " + " | ".join(families) + " |", "| --- |" + " --- |" * len(families)]
        for key, found in judged.items():
            by_family = {v.family: v.level for v in found}
            lines.append(f"| {name(key)} | " + " | ".join(by_family.get(f, "") for f in families) + " |")
    used = [f for f in JUDGES if any(v.family == f for found in judged.values() for v in found)]
    lines += ["", "How each verdict is reached (seeds pooled into one test per statistic):", ""]
    lines += [f"- {f}: {RULES[f]}." for f in used]
    return lines + [""]

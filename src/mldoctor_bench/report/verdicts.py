"""Plain-language verdicts: per attack family, low / moderate / high risk, each a statistical test.

A family is "moderate" or "high" only when the evidence rejects "no leakage" at level
:data:`~mldoctor_bench.report.significance.ALPHA` (5%) after Holm's correction over every statistic
the family judges (each series' AUC and TPR at low FPR, or its accuracy against its baseline), and
the rejected statistic is large enough: the effect-size rule (:data:`RULES`) says moderate or high.
A series whose non-member count is below 1/FPR is not judged at that FPR. What each statistic is
compared with is what an attacker gets without the model's leakage:

- membership: the TPR at 1% (and 0.1%) FPR against its null floor (what a guess reaches at that
  many non-members), as a multiple of the FPR, and the AUC against 0.5;
- inversion: the evaluator's accuracy on the reconstructions against chance (1/classes) and, for
  GMI, against the same search guided by the attacker's own shadow classifier (no target);
- attribute: accuracy against the strongest of the majority attribute, the attribute guessed from
  the task label, and the same attack on the attacker's own shadow model (no target);
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
from mldoctor_bench.results import not_run

ORDER = {LOW: 0, MODERATE: 1, HIGH: 2}
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
        "Holm's correction (exact binomial test against chance, 1/classes; exact McNemar test against the "
        "same search guided by the attacker's own shadow classifier instead of the target); then high if "
        "it recovers at least 40% of what the stronger baseline misses, (accuracy - baseline) / "
        "(1 - baseline), moderate if 10%, else low"
    ),
    "attribute": (
        f"moderate or high only if accuracy beats the strongest baseline (majority attribute, attribute "
        "from the task label, the same attack on the attacker's own shadow model) on the same examples "
        f"(exact McNemar test, {sig.ALPHA:.0%} after Holm's correction); then high by 0.10 or more, "
        "moderate by 0.02 or more, else low (what the target's embedding adds to what needs no target)"
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

    @property
    def detected_small(self) -> bool:
        """A statistic rejects no leakage, but the effect is below the moderate bar."""
        return self.significant and self.level == LOW

    @property
    def label(self) -> str:
        """The level in words: ``low``, ``low (detected, small)``, ``moderate`` ..., and where some of
        the family's attacks did not run, ``, incomplete: <series> not run``."""
        text = f"{self.level} (detected, small)" if self.detected_small else self.level
        if self.not_run:
            text += f", incomplete: {', '.join(series for series, _ in self.not_run)} not run"
        return text

    def as_dict(self) -> dict:
        """Plain data for ``verdicts.json``."""
        out = {k: v for k, v in asdict(self).items() if k not in ("judged", "not_run")}
        out["label"] = self.label
        out["detected"] = self.significant
        out["incomplete"] = bool(self.not_run)
        out["not_run"] = [{"series": series, "reason": reason} for series, reason in self.not_run]
        out["interval"] = list(self.interval)
        out["judged"] = [
            {
                **{k: v for k, v in asdict(e).items() if k not in ("strength", "family")},
                "series": e.series,
                "interval": list(e.interval),
                "rejected": bool(r),
            }
            for e, r in self.judged
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
    "attribute": ("best_baseline_accuracy", "no_target_accuracy", "advantage_over_baseline"),
    "stealing": ("baseline_agreement", "agreement_over_baseline"),
}


def family_evidence(frame: pd.DataFrame, fam: str, intervals: Optional[Intervals] = None) -> list[Evidence]:
    """Every statistic ``fam`` judges in ``frame`` (one model: its seeds are pooled)."""
    rows = ok_rows(frame)
    rows = rows[families(rows) == fam]
    out = []
    for key, group in rows.groupby(SERIES, sort=True):
        wide = group.pivot_table(index="seed", columns="metric", values="value", aggfunc="mean")
        out += JUDGES[fam](tuple(key), {m: wide[m].tolist() for m in wide.columns}, intervals)
    return out


def decide(fam: str, evidence: list[Evidence], alpha: float = sig.ALPHA) -> Optional[Verdict]:
    """The family's verdict from its statistics: Holm over the testable ones, then the strongest
    rejected statistic's effect level; low when nothing is rejected."""
    if not evidence:
        return None
    testable = [i for i, e in enumerate(evidence) if not math.isnan(e.p_value)]
    rejected = [False] * len(evidence)
    for i, r in zip(testable, sig.holm([evidence[i].p_value for i in testable], alpha)):
        rejected[i] = bool(r)
    judged = list(zip(evidence, rejected))
    hits = [e for e, r in judged if r]
    if hits:
        chosen = max(hits, key=lambda e: (ORDER[e.effect], e.strength))
        level = chosen.effect
    else:  # nothing rejects no leakage: the statistic closest to doing so
        chosen = min(evidence, key=lambda e: (math.isnan(e.p_value), e.p_value if not math.isnan(e.p_value) else 0))
        level = LOW
    return Verdict(
        fam,
        level,
        chosen.series,
        _words(chosen, bool(hits), len(testable), alpha),
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
    )


def _words(e: Evidence, significant: bool, tests: int, alpha: float) -> str:
    if math.isnan(e.p_value):
        return f"{e.text}; not tested: {e.test}"
    if not math.isnan(e.interval[0]):
        e = replace(e, text=f"{e.text} (95% interval {e.interval[0]:.3f} to {e.interval[1]:.3f})")
    p = f"p = {e.p_value:.2g}" if e.p_value >= 1e-4 else "p < 0.0001"
    verdict = (
        f"rejects no leakage ({p}, {e.test}; {CORRECTION} over {tests} statistics at {alpha:.0%})"
        if significant
        else f"no statistic rejects no leakage at {alpha:.0%} after {CORRECTION} over {tests}; the closest: {p}"
    )
    if significant and e.effect == LOW:
        verdict += ": leakage detected, but below the bar for moderate"
    seeds = f", {e.seeds} seeds pooled" if e.seeds > 1 else ""
    return f"{e.text}{seeds}; {verdict}"


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
            out.append(replace(found, not_run=not_run_series(frame, fam)))
    return out


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
        lines += [f"- **{v.family}: {v.label}** ({v.series}: {v.evidence})." for v in found]
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

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
from typing import Callable, Mapping, Optional

import pandas as pd

from mldoctor_bench.metrics import LOW_FPRS
from mldoctor_bench.report import significance as sig
from mldoctor_bench.report.stats import CELL, SERIES, families, ok_rows, series_label

LOW, MODERATE, HIGH = "low", "moderate", "high"
ORDER = {LOW: 0, MODERATE: 1, HIGH: 2}
FPR = 0.01
CORRECTION = "Holm"
Intervals = Mapping[tuple[str, str, str, str], tuple[float, float]]  # (attack, tm, variant, metric) -> interval

RULES = {
    "membership": (f"moderate or high only if a statistic rejects no leakage at {sig.ALPHA:.0%} after Holm's "
                   "correction over every membership statistic judged (exact negative hypergeometric test of TPR at "
                   "1% and 0.1% FPR against the floor a guess reaches with as many non-members, judged only where "
                   "there are at least 1/FPR; Mann-Whitney test of the AUC); then high if that TPR is at least 10 "
                   "times its FPR or the AUC at least 0.80, moderate if at least 3 times or 0.60, else low. At 10 "
                   "times, one in ten members is exposed while one non-member in a hundred is wrongly accused"),
    "inversion": (f"moderate or high only if the evaluator's accuracy rejects the baseline at {sig.ALPHA:.0%} after "
                  "Holm's correction (exact binomial test against chance, 1/classes; exact McNemar test against the "
                  "same search guided by the attacker's own shadow classifier instead of the target); then high if "
                  "it recovers at least 40% of what the stronger baseline misses, (accuracy - baseline) / "
                  "(1 - baseline), moderate if 10%, else low"),
    "attribute": (f"moderate or high only if accuracy beats the strongest baseline (majority attribute, attribute "
                  "from the task label, the same attack on the attacker's own shadow model) on the same examples "
                  f"(exact McNemar test, {sig.ALPHA:.0%} after Holm's correction); then high by 0.10 or more, "
                  "moderate by 0.02 or more, else low (what the target's embedding adds to what needs no target)"),
    "stealing": (f"moderate or high only if the surrogate agrees with the target more often than a model trained "
                 "on the attacker's images with their true labels and no query (exact McNemar test on the same "
                 f"examples, {sig.ALPHA:.0%} after Holm's correction); then high by 0.10 or more, moderate by "
                 "0.02 or more, else low (what querying the target adds)"),
}


@dataclass(frozen=True)
class Evidence:
    """One statistic of one attack series (means over seeds), tested against no leakage."""

    family: str
    attack: str
    threat_model: str
    variant: str
    statistic: str  # the metric judged, e.g. tpr_at_fpr_0.01
    value: float
    baseline_name: str  # what it is compared with
    baseline: float
    interval: tuple[float, float]  # 95% interval of ``value``
    p_value: float  # one-sided, before the correction; NaN: not testable from these rows
    test: str
    effect: str  # the level the effect-size rule gives, before the test
    text: str  # the numbers in words
    strength: tuple = ()  # ranks series of one level: the strongest first
    seeds: int = 1

    @property
    def series(self) -> str:
        return series_label(self.attack, self.threat_model, self.variant)


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

    def as_dict(self) -> dict:
        """Plain data for ``verdicts.json``."""
        out = {k: v for k, v in asdict(self).items() if k != "judged"}
        out["interval"] = list(self.interval)
        out["judged"] = [{**{k: v for k, v in asdict(e).items() if k not in ("strength", "family")},
                          "series": e.series, "interval": list(e.interval), "rejected": bool(r)}
                         for e, r in self.judged]
        return out


Values = Mapping[str, list[float]]  # metric -> one value per seed, of one attack series


def _counts(values: Values, *metrics: str) -> Optional[list[list[float]]]:
    """Per seed, the values of ``metrics`` (all present in every seed), else ``None``."""
    found = [values.get(m) for m in metrics]
    if any(v is None or any(math.isnan(x) for x in v) for v in found):
        return None
    return [list(v) for v in found]


def _mean(values: Values, metric: str) -> float:
    found = values.get(metric)
    return math.nan if not found else sum(found) / len(found)


def _interval(intervals: Optional[Intervals], key: tuple, metric: str) -> tuple[float, float]:
    found = (intervals or {}).get((*key, metric))
    return (float(found[0]), float(found[1])) if found is not None else (math.nan, math.nan)


def membership_effect(statistic: str, value: float) -> str:
    """The effect-size level of a membership statistic (TPR at FPR x as a multiple of x, or AUC)."""
    if statistic == "auc":
        return HIGH if value >= 0.80 else MODERATE if value >= 0.60 else LOW
    ratio = value / float(statistic.removeprefix("tpr_at_fpr_"))
    return HIGH if ratio >= 10 else MODERATE if ratio >= 3 else LOW


def margin_effect(margin: float) -> str:
    """Attribute inference and stealing: an advantage over what needs no leakage."""
    return HIGH if margin >= 0.10 else MODERATE if margin >= 0.02 else LOW


def gain_effect(gain: float) -> str:
    """Inversion: the share of what the baseline misses that the attack recovers."""
    return HIGH if gain >= 0.40 else MODERATE if gain >= 0.10 else LOW


def membership_evidence(key: tuple, values: Values, intervals: Optional[Intervals] = None) -> list[Evidence]:
    """The AUC of one membership series and its TPR at each low FPR its non-members can measure."""
    counts = _counts(values, "n_members", "n_nonmembers")
    if counts is None:
        return []
    members, nonmembers = [[int(v) for v in c] for c in counts]
    out, seeds = [], len(members)
    aucs = _counts(values, "auc")
    if aucs is not None:
        value = sum(aucs[0]) / seeds
        interval = _interval(intervals, key, "auc")
        if math.isnan(interval[0]) and seeds == 1:
            interval = sig.auc_interval(value, members[0], nonmembers[0])
        out.append(Evidence("membership", *key, "auc", value, "no leakage", 0.5, interval,
                            sig.auc_pvalue(aucs[0], members, nonmembers), "Mann-Whitney U, one-sided, normal",
                            membership_effect("auc", value), f"AUC {value:.3f}", (0, value), seeds))
    tpr_1 = _mean(values, "tpr_at_fpr_0.01")
    for x in sorted(LOW_FPRS, reverse=True):
        metric = f"tpr_at_fpr_{x:g}"
        tprs = _counts(values, metric)
        if tprs is None or not all(sig.measurable(n, x) for n in nonmembers):
            continue
        value, floor = sum(tprs[0]) / seeds, sum(sig.tpr_floor(n, x) for n in nonmembers) / seeds
        out.append(Evidence(
            "membership", *key, metric, value, f"null floor at {x:.1%} FPR", floor, _interval(intervals, key, metric),
            sig.tpr_pvalue(tprs[0], members, nonmembers, x), "exact negative hypergeometric, one-sided",
            membership_effect(metric, value),
            f"TPR {value:.3f} at {x:.1%} FPR ({value / x:.1f} times the FPR; a guess reaches {floor:.3f})",
            (value / x, 0 if math.isnan(tpr_1) else tpr_1), seeds))
    return out


def _paired(fam: str, key: tuple, values: Values, value_metric: str, baseline_metric: str, what: str,
            baseline_what: str, statistic: str) -> list[Evidence]:
    """An accuracy against a baseline on the same examples, by McNemar's test on the discordant ones."""
    value, baseline = _mean(values, value_metric), _mean(values, baseline_metric)
    if math.isnan(value) or math.isnan(baseline):
        return []
    counts = _counts(values, "only_attack_right", "only_baseline_right", "n_test")
    margin, seeds = value - baseline, len(values[value_metric])
    text = f"{what} {value:.3f} against {baseline_what} {baseline:.3f} ({margin:+.3f})"
    if counts is None:  # a table written before the paired counts: the margin alone, untested
        return [Evidence(fam, *key, statistic, margin, baseline_what, baseline, (math.nan, math.nan), math.nan,
                         "none: no paired counts in this table (rerun the cell)", LOW, text, (margin,), seeds)]
    b, c, n = (int(sum(v)) for v in counts)
    return [Evidence(fam, *key, statistic, margin, baseline_what, baseline, sig.paired_difference_interval(b, c, n),
                     sig.mcnemar_pvalue(b, c), "exact McNemar, one-sided", margin_effect(margin),
                     f"{text}; {b} examples right only with the target, {c} only without", (margin,), seeds)]


def attribute_evidence(key: tuple, values: Values, intervals: Optional[Intervals] = None) -> list[Evidence]:
    """Attribute inference's accuracy against its strongest baseline, paired."""
    return _paired("attribute", key, values, "accuracy", "best_baseline_accuracy", "accuracy",
                   "the strongest baseline", "advantage_over_baseline")


def stealing_evidence(key: tuple, values: Values, intervals: Optional[Intervals] = None) -> list[Evidence]:
    """The surrogate's agreement with the target against the no-query model's, paired."""
    return _paired("stealing", key, values, "agreement", "baseline_agreement", "agreement",
                   "a model trained without queries", "agreement_over_baseline")


def inversion_evidence(key: tuple, values: Values, intervals: Optional[Intervals] = None) -> list[Evidence]:
    """The evaluator's accuracy on the reconstructions against chance or, where stronger, against the
    same search without the target (paired)."""
    counts = _counts(values, "eval_accuracy", "chance_accuracy", "reconstructions")
    if counts is None:
        return []
    seeds = len(counts[0])
    accuracy, chance = sum(counts[0]) / seeds, sum(counts[1]) / seeds
    n = int(sum(counts[2]))
    no_target = _mean(values, "no_target_eval_accuracy")
    paired = _counts(values, "only_attack_right", "only_baseline_right")
    if not math.isnan(no_target) and no_target > chance and paired is not None:
        baseline, what = no_target, "the same search without the target"
        b, c = (int(sum(v)) for v in paired)
        p_value, test = sig.mcnemar_pvalue(b, c), "exact McNemar, one-sided"
        low, high = sig.paired_difference_interval(b, c, n)
        interval = (low + baseline, high + baseline)
    else:
        baseline, what = chance, "chance"
        hits = int(round(sum(a * r for a, r in zip(counts[0], counts[2]))))
        p_value, test = sig.binomial_pvalue(hits, n, chance), "exact binomial, one-sided"
        interval = sig.clopper_pearson(hits, n)
    gain = (accuracy - baseline) / (1 - baseline) if baseline < 1 else 0.0
    text = (f"evaluator accuracy {accuracy:.3f} against {what} {baseline:.3f} (recovers {gain:.0%} of what it "
            f"misses; chance {chance:.3f})")
    return [Evidence("inversion", *key, "eval_accuracy", accuracy, what, baseline, interval, p_value, test,
                     gain_effect(gain), text, (gain,), seeds)]


JUDGES: dict[str, Callable[[tuple, Values, Optional[Intervals]], list[Evidence]]] = {
    "membership": membership_evidence, "inversion": inversion_evidence, "attribute": attribute_evidence,
    "stealing": stealing_evidence}
# What each family's verdict compares its number with, beside the number in a report's tables.
COMPARED = {"inversion": ("chance_accuracy", "no_target_eval_accuracy"),
            "attribute": ("best_baseline_accuracy", "no_target_accuracy", "advantage_over_baseline"),
            "stealing": ("baseline_agreement", "agreement_over_baseline")}


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
    return Verdict(fam, level, chosen.series, _words(chosen, bool(hits), len(testable), alpha), RULES[fam],
                   chosen.statistic, chosen.value, chosen.interval, chosen.baseline_name, chosen.baseline,
                   chosen.p_value, chosen.test, bool(hits), alpha, CORRECTION, len(testable), judged)


def _words(e: Evidence, significant: bool, tests: int, alpha: float) -> str:
    if math.isnan(e.p_value):
        return f"{e.text}; not tested: {e.test}"
    if not math.isnan(e.interval[0]):
        e = replace(e, text=f"{e.text} (95% interval {e.interval[0]:.3f} to {e.interval[1]:.3f})")
    p = f"p = {e.p_value:.2g}" if e.p_value >= 1e-4 else "p < 0.0001"
    verdict = (f"rejects no leakage ({p}, {e.test}; {CORRECTION} over {tests} statistics at {alpha:.0%})"
               if significant else
               f"no statistic rejects no leakage at {alpha:.0%} after {CORRECTION} over {tests}; the closest: {p}")
    seeds = f", {e.seeds} seeds pooled" if e.seeds > 1 else ""
    return f"{e.text}{seeds}; {verdict}"


def verdicts(frame: pd.DataFrame, intervals: Optional[Intervals] = None, alpha: float = sig.ALPHA) -> list[Verdict]:
    """One verdict per attack family with a usable row in ``frame`` (one model), in the families' order.
    ``intervals`` gives the 95% interval of a statistic where the table alone cannot (e.g. bootstrap
    intervals over saved membership scores)."""
    out = []
    for fam in JUDGES:
        found = decide(fam, family_evidence(frame, fam, intervals), alpha)
        if found is not None:
            out.append(found)
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
        lines += [f"- **{v.family}: {v.level}** ({v.series}: {v.evidence})." for v in found]
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

"""The evidence behind a verdict: one :class:`Evidence` per statistic of an attack series (means over
seeds), with its one-sided p-value against "no leakage", its interval and the level its size alone
would give. The tests are :mod:`~mldoctor_bench.report.significance`'s; which statistics each family
judges, and against what, is said in :mod:`~mldoctor_bench.report.verdicts` and docs/verdicts.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Optional

from mldoctor_bench.metrics import LOW_FPRS, measurable
from mldoctor_bench.report import significance as sig
from mldoctor_bench.report.stats import series_label

LOW, MODERATE, HIGH = "low", "moderate", "high"
Intervals = Mapping[tuple[str, str, str, str], tuple[float, float]]  # (attack, tm, variant, metric) -> interval


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
    sizes: dict = field(default_factory=dict)  # what the test rests on, for what it could have detected

    @property
    def series(self) -> str:
        return series_label(self.attack, self.threat_model, self.variant)


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
        out.append(
            Evidence(
                "membership",
                *key,
                "auc",
                value,
                "no leakage",
                0.5,
                interval,
                sig.auc_pvalue(aucs[0], members, nonmembers),
                "Mann-Whitney U, one-sided, normal",
                membership_effect("auc", value),
                f"AUC {value:.3f}",
                (0, value),
                seeds,
                {"members": members, "nonmembers": nonmembers},
            )
        )
    tpr_1 = _mean(values, "tpr_at_fpr_0.01")
    for x in sorted(LOW_FPRS, reverse=True):
        metric = f"tpr_at_fpr_{x:g}"
        tprs = _counts(values, metric)
        if tprs is None or not all(measurable(n, x) for n in nonmembers):
            continue
        value, floor = sum(tprs[0]) / seeds, sum(sig.tpr_floor(n, x) for n in nonmembers) / seeds
        out.append(
            Evidence(
                "membership",
                *key,
                metric,
                value,
                f"null floor at {x:.1%} FPR",
                floor,
                _interval(intervals, key, metric),
                sig.tpr_pvalue(tprs[0], members, nonmembers, x),
                "exact negative hypergeometric, one-sided",
                membership_effect(metric, value),
                f"TPR {value:.3f} at {x:.1%} FPR ({value / x:.1f} times the FPR; a guess reaches {floor:.3f})",
                (value / x, 0 if math.isnan(tpr_1) else tpr_1),
                seeds,
                {"members": members, "nonmembers": nonmembers},
            )
        )
    return out


def _paired(
    fam: str,
    key: tuple,
    values: Values,
    value_metric: str,
    baseline_metric: str,
    what: str,
    baseline_what: str,
    statistic: str,
) -> list[Evidence]:
    """An accuracy against a baseline on the same examples, by McNemar's test on the discordant ones."""
    value, baseline = _mean(values, value_metric), _mean(values, baseline_metric)
    if math.isnan(value) or math.isnan(baseline):
        return []
    counts = _counts(values, "only_attack_right", "only_baseline_right", "n_test")
    margin, seeds = value - baseline, len(values[value_metric])
    text = f"{what} {value:.3f} against {baseline_what} {baseline:.3f} ({margin:+.3f})"
    if counts is None:  # a table written before the paired counts: the margin alone, untested
        return [
            Evidence(
                fam,
                *key,
                statistic,
                margin,
                baseline_what,
                baseline,
                (math.nan, math.nan),
                math.nan,
                "none: no paired counts in this table (rerun the cell)",
                LOW,
                text,
                (margin,),
                seeds,
            )
        ]
    b, c, n = (int(sum(v)) for v in counts)
    return [
        Evidence(
            fam,
            *key,
            statistic,
            margin,
            baseline_what,
            baseline,
            sig.paired_difference_interval(b, c, n),
            sig.mcnemar_pvalue(b, c),
            "exact McNemar, one-sided",
            margin_effect(margin),
            f"{text}; {b} examples right only with the target, {c} only without",
            (margin,),
            seeds,
            {"discordant": b + c, "examples": n},
        )
    ]


def attribute_evidence(key: tuple, values: Values, intervals: Optional[Intervals] = None) -> list[Evidence]:
    """Attribute inference's training-data leakage (Jayaraman and Evans): its accuracy on members minus
    on non-members beyond the same difference for the imputation model. A table written before these
    counts: its accuracy against its strongest baseline on non-members, untested (distributional)."""
    names = [f"{g}_{m}" for g in ("member", "nonmember") for m in ("only_attack_right", "only_imputation_right")]
    counts = _counts(values, *names, "n_members_scored", "n_nonmembers_scored")
    leakage = _mean(values, "training_leakage")
    if counts is None or math.isnan(leakage):
        margin = _mean(values, "advantage_over_baseline")
        if math.isnan(margin):
            return []
        test = "none: no member and non-member counts in this table (rerun the cell)"
        text = f"accuracy on non-members {margin:+.3f} over the strongest baseline (distributional, untested)"
        nan2 = (math.nan, math.nan)
        return [Evidence("attribute", *key, "training_leakage", margin, "", 0.0, nan2, math.nan, test, LOW, text)]
    ma, mi, na, ni, nm, nn = (int(sum(c)) for c in counts)
    diff, p_value, interval = sig.difference_in_differences((ma, mi, nm), (na, ni, nn))
    acc = {k: _mean(values, k) for k in ("member_accuracy", "nonmember_accuracy")}
    imputation = {k: _mean(values, k) for k in ("member_imputation_accuracy", "nonmember_imputation_accuracy")}
    text = (
        f"accuracy on members minus non-members {diff:+.3f} beyond imputation (the attack {acc['member_accuracy']:.3f} "
        f"on {nm} members, {acc['nonmember_accuracy']:.3f} on {nn} non-members; the imputation model "
        f"{imputation['member_imputation_accuracy']:.3f} and {imputation['nonmember_imputation_accuracy']:.3f})"
    )
    return [
        Evidence(
            "attribute",
            *key,
            "training_leakage",
            diff,
            "no difference between members and non-members beyond imputation",
            0.0,
            interval,
            p_value,
            "two-sample normal test of paired differences, one-sided",
            margin_effect(diff),
            text,
            (diff,),
            len(counts[0]),
            {"standard_error": (interval[1] - interval[0]) / (2 * 1.959964)},
        )
    ]


def stealing_evidence(key: tuple, values: Values, intervals: Optional[Intervals] = None) -> list[Evidence]:
    """The surrogate's agreement with the target against the no-query model's, paired."""
    return _paired(
        "stealing",
        key,
        values,
        "agreement",
        "baseline_agreement",
        "agreement",
        "a model trained without queries",
        "agreement_over_baseline",
    )


def class_differences(values: Values) -> list[float]:
    """Per seed and class, the target-guided search's share of recognised reconstructions minus the
    control-guided one's (``target_hits_class_<c>``, ``control_hits_class_<c>``); empty where the
    table has no per-class counts."""
    classes = sorted(int(m.rsplit("_", 1)[1]) for m in values if m.startswith("target_hits_class_"))
    counts = _counts(
        values, "reconstructions", *(f"{k}_hits_class_{c}" for c in classes for k in ("target", "control"))
    )
    if not classes or counts is None:
        return []
    out = []
    for seed, total in enumerate(counts[0]):
        per_class = total / len(classes)
        out += [(counts[1 + 2 * i][seed] - counts[2 + 2 * i][seed]) / per_class for i in range(len(classes))]
    return out


def inversion_evidence(key: tuple, values: Values, intervals: Optional[Intervals] = None) -> list[Evidence]:
    """The evaluator's accuracy on the reconstructions against the same search guided by a model that
    never saw the training data (the control), tested with a class as the unit: the reconstructions
    of one class start alike and are judged by one evaluator, so they are not independent trials."""
    counts = _counts(values, "eval_accuracy", "chance_accuracy", "reconstructions", "no_target_eval_accuracy")
    if counts is None:
        return []
    seeds = len(counts[0])
    accuracy, chance, baseline = (sum(c) / seeds for c in (counts[0], counts[1], counts[3]))
    differences = class_differences(values)
    gain = (accuracy - baseline) / (1 - baseline) if baseline < 1 else 0.0
    what = "the same search guided by a model that never saw the training data"
    text = (
        f"evaluator accuracy {accuracy:.3f} against {what} {baseline:.3f} (recovers {gain:.0%} of what it "
        f"misses; chance {chance:.3f})"
    )
    if not differences:  # a table written before the per-class counts: untested
        test, p_value, interval = "none: no per-class counts in this table (rerun the cell)", math.nan, (math.nan,) * 2
    else:
        icc = _mean(values, "icc")
        text += f"; {len(differences)} classes{'' if seeds == 1 else ' x seeds'}, intra-class correlation {icc:.2f}"
        test, p_value = "exact sign-flip permutation over classes, one-sided", sig.sign_flip_pvalue(differences)
        low, high = sig.cluster_interval(differences)
        interval = (low + baseline, high + baseline)
    return [
        Evidence(
            "inversion",
            *key,
            "eval_accuracy",
            accuracy,
            what,
            baseline,
            interval,
            p_value,
            test,
            gain_effect(gain),
            text,
            (gain,),
            seeds,
            {"clusters": len(differences)},
        )
    ]

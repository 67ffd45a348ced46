"""Plain-language verdicts: per attack family, low / moderate / high risk, with the rule that gave it.

Each family is judged by its strongest series (attack, threat model, variant; means over seeds)
against what an attacker gets without the model's leakage, never by a raw score alone:

- membership: the TPR at 1% FPR as a multiple of that FPR (how much likelier a "member" call is on
  a member than on a non-member, where the attacker is almost never wrong), and the AUC;
- inversion: the evaluator's accuracy on the reconstructions as a multiple of chance (1/classes);
- attribute: accuracy above the stronger of the two baselines that need no model;
- stealing: the surrogate's agreement with the target above that of a model trained on the
  attacker's own images with their true labels, without a single query.

The thresholds are conventions stated beside each verdict (:data:`RULES`), so a reader can apply
another. Everything here takes the tidy results table and returns plain data; nothing draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from mldoctor_bench.report.stats import CELL, SERIES, family, ok_rows, series_label

LOW, MODERATE, HIGH = "low", "moderate", "high"
FPR = 0.01

RULES = {
    "membership": (f"high if TPR at {FPR:.0%} FPR is at least 10 times that FPR or the AUC at least 0.80; "
                   "moderate if at least 3 times or an AUC of at least 0.60; else low. At 10 times, one "
                   "in ten members is exposed while one non-member in a hundred is wrongly accused"),
    "inversion": ("high if the evaluator recognises at least half of the reconstructions and 5 times chance "
                  "(1/classes); moderate if at least twice chance; else low (reconstructions that an "
                  "independent classifier labels no better than guessing show nothing of the class)"),
    "attribute": ("high if accuracy beats the stronger baseline (majority attribute, or the attribute guessed "
                  "from the task label) by 0.10 or more; moderate by 0.02 or more; else low (what the "
                  "model's embedding adds to what the label already tells)"),
    "stealing": ("high if the surrogate agrees with the target 0.10 or more above a model trained on the "
                 "attacker's images with their true labels and no query; moderate 0.02 or more; else low "
                 "(what querying the target adds)"),
}


@dataclass(frozen=True)
class Verdict:
    """One family's verdict: its level, the series it rests on and the numbers it was read from."""

    family: str
    level: str
    series: str
    evidence: str
    rule: str


def _wide(frame: pd.DataFrame, fam: str) -> pd.DataFrame:
    """The family's ok series with one column per metric, means over seeds."""
    rows = ok_rows(frame)
    rows = rows[rows["attack"].map(family) == fam]
    if rows.empty:
        return pd.DataFrame()
    wide = rows.pivot_table(index=SERIES, columns="metric", values="value", aggfunc="mean").reset_index()
    wide.columns.name = None
    return wide


def _get(row: pd.Series, metric: str) -> float:
    value = row.get(metric, math.nan)
    return math.nan if value is None else float(value)


def membership_level(tpr: float, auc: float) -> str:
    ratio = tpr / FPR if not math.isnan(tpr) else math.nan
    if ratio >= 10 or auc >= 0.80:
        return HIGH
    if ratio >= 3 or auc >= 0.60:
        return MODERATE
    return LOW


def inversion_level(accuracy: float, chance: float) -> str:
    if accuracy >= 0.5 and accuracy >= 5 * chance:
        return HIGH
    if accuracy >= 2 * chance:
        return MODERATE
    return LOW


def margin_level(margin: float) -> str:
    """Attribute inference and stealing: an advantage over what needs no leakage."""
    if margin >= 0.10:
        return HIGH
    if margin >= 0.02:
        return MODERATE
    return LOW


ORDER = {LOW: 0, MODERATE: 1, HIGH: 2}


def _strongest(wide: pd.DataFrame, judge) -> tuple[pd.Series, str, str] | None:
    """The series with the highest level (ties: the first, highest key) and its level and evidence."""
    best = None
    for _, row in wide.iterrows():
        judged = judge(row)
        if judged is None:
            continue
        level, evidence, key = judged
        if best is None or (ORDER[level], key) > (ORDER[best[1]], best[3]):
            best = (row, level, evidence, key)
    return None if best is None else best[:3]


def _membership(row: pd.Series):
    tpr, auc = _get(row, "tpr_at_fpr_0.01"), _get(row, "auc")
    if math.isnan(tpr) and math.isnan(auc):
        return None
    evidence = f"TPR {tpr:.3f} at {FPR:.0%} FPR ({tpr / FPR:.1f} times the FPR), AUC {auc:.3f}"
    return membership_level(tpr, auc), evidence, (0 if math.isnan(tpr) else tpr, auc)


def _inversion(row: pd.Series):
    accuracy, chance = _get(row, "eval_accuracy"), _get(row, "chance_accuracy")
    if math.isnan(accuracy) or math.isnan(chance):
        return None
    return (inversion_level(accuracy, chance),
            f"evaluator accuracy {accuracy:.3f} against chance {chance:.3f} ({accuracy / chance:.1f} times)",
            (accuracy / chance,))


def _margin(margin: str, value: str, baseline: str, template: str):
    """A judge of an advantage ``margin`` of ``value`` over ``baseline`` (attribute, stealing)."""

    def judge(row: pd.Series):
        m = _get(row, margin)
        if math.isnan(m):
            return None
        return margin_level(m), template.format(_get(row, value), _get(row, baseline), m), (m,)

    return judge


_attribute = _margin("advantage_over_baseline", "accuracy", "best_baseline_accuracy",
                     "accuracy {:.3f} against the stronger baseline {:.3f} ({:+.3f})")
_stealing = _margin("agreement_over_baseline", "agreement", "baseline_agreement",
                    "agreement {:.3f} against {:.3f} without queries ({:+.3f})")


# What each family's verdict compares its number with, beside the number in a report's tables.
COMPARED = {"inversion": ("chance_accuracy",), "attribute": ("best_baseline_accuracy", "advantage_over_baseline"),
            "stealing": ("baseline_agreement", "agreement_over_baseline")}
JUDGES = {"membership": _membership, "inversion": _inversion, "attribute": _attribute, "stealing": _stealing}


def verdicts(frame: pd.DataFrame) -> list[Verdict]:
    """One verdict per attack family with a usable row in ``frame``, in the families' order."""
    out = []
    for fam, judge in JUDGES.items():
        wide = _wide(frame, fam)
        found = None if wide.empty else _strongest(wide, judge)
        if found is None:
            continue
        row, level, evidence = found
        out.append(Verdict(fam, level, series_label(row["attack"], row["threat_model"], row["variant"]),
                           evidence, RULES[fam]))
    return out


def name(key: tuple) -> str:
    """A model's name in the verdicts: dataset/arch/defense, then any swept settings."""
    return "/".join(str(part) for part in key if str(part))


def verdict_lines(frame: pd.DataFrame) -> list[str]:
    """The report's first section: per model (dataset, architecture, defense) one line per family,
    or with several models one row each, then the rules."""
    by = [c for c in CELL if c in frame]  # and the swept settings, where the report has read them
    cells = {key: rows for key, rows in frame.groupby(by, sort=True)} if not frame.empty else {}
    judged = {key: verdicts(rows) for key, rows in cells.items()}
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
    lines += ["", "How each verdict is reached (the strongest series of each family, means over seeds):", ""]
    lines += [f"- {f}: {RULES[f]}." for f in used]
    return lines + [""]

"""One cell's verdicts as data: ``verdicts.json`` (per family the level, the statistic it rests on,
its interval, the test and level used, the baseline) and, per judged membership series, a risk
statement an owner can act on, with the flagged training examples in ``exposed.csv``.

The risk statement reads a membership series at the threshold that gives 1% FPR on the evaluation
non-members (and 0.1% where there are at least 1,000 of them): how many evaluation members score at
or above it, what that means for the whole training set (with a Clopper-Pearson interval), how
many would be flagged with no leakage at all, and the precision of a "member" call at a stated prior
share of members (the run's own, and 1%): ``prior TPR / (prior TPR + (1 - prior) FPR)``, its interval
from the two rates' intervals. ``exposed.csv`` names the flagged members by dataset index (and file
name for folder data), so an owner can find them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Optional, Sequence

import pandas as pd

from mldoctor_bench.cellfiles import CellFiles
from mldoctor_bench.metrics import threshold_at_fpr
from mldoctor_bench.provenance import source_hash
from mldoctor_bench.report import significance as sig
from mldoctor_bench.report.collect import read_scores, score_files, score_intervals
from mldoctor_bench.report.verdicts import NOT_JUDGED, Intervals, Verdict, verdicts
from mldoctor_bench.results import read_table

VERDICTS = "verdicts.json"
EXPOSED_CSV = "exposed.csv"
INPUTS = "verdict_inputs.json"  # what rewriting the verdicts needs besides the table and the scores
# The verdict rules in force: a digest of the code that decides them. verdicts.json records it, and a
# finished cell whose verdicts were written under other rules has them rewritten before it is read.
RULES = source_hash(
    (
        "report/verdicts.py",
        "report/evidence.py",
        "report/significance.py",
        "report/detectable.py",
        "report/cell_verdicts.py",
    )
)
PRIORS = (0.01,)  # besides the run's own share of members
LEVELS = ("low", "moderate", "high")


def bootstrap_lookup(cell_dir: Path, frame: pd.DataFrame) -> Intervals:
    """Bootstrap intervals of the cell's membership statistics from its saved scores, where they
    reproduce the table's number: ``(attack, threat model, variant, metric) -> (low, high)``."""
    boot = score_intervals(score_files([cell_dir]))
    values = dict(zip(zip(frame["attack"], frame["threat_model"], frame["variant"], frame["metric"]), frame["value"]))
    return {
        (r.attack, r.threat_model, r.variant, r.metric): (r.ci_low, r.ci_high)
        for r in boot.itertuples(index=False)
        if abs(values.get((r.attack, r.threat_model, r.variant, r.metric), math.nan) - r.estimate) <= 1e-6
    }


def precision(prior: float, tpr: float, fpr: float) -> float:
    """The share of "member" calls that are members when a share ``prior`` of those tested are."""
    called = prior * tpr + (1 - prior) * fpr
    return prior * tpr / called if called > 0 else math.nan


def risk_statement(
    flagged: int, members: int, false_positives: int, nonmembers: int, fpr: float, training_examples: Optional[int]
) -> dict:
    """The numbers of one series at one FPR (see the module's docstring)."""
    tpr, observed_fpr = flagged / members, false_positives / nonmembers
    tpr_low, tpr_high = sig.clopper_pearson(flagged, members)
    fpr_low, fpr_high = sig.clopper_pearson(false_positives, nonmembers)
    # No flagged non-member does not make the false-positive rate 0: the precision then uses the upper
    # end of its 95% interval, and is a lower bound. "By chance" is what the verdict's test expects of an
    # attack with no leakage at this threshold rule: the null floor (floor(fpr N) + 1) / (N + 1).
    at_bound = false_positives == 0
    used_fpr = fpr_high if at_bound else observed_fpr
    out = {
        "fpr": fpr,
        "false_positives": false_positives,
        "nonmembers": nonmembers,
        "observed_fpr": observed_fpr,
        "fpr_interval": [fpr_low, fpr_high],
        "fpr_at_bound": at_bound,
        "members_flagged": flagged,
        "members_scored": members,
        "tpr": tpr,
        "tpr_interval": [tpr_low, tpr_high],
    }
    if training_examples:
        out.update(
            training_examples=training_examples,
            training_examples_flagged=training_examples * tpr,
            training_examples_flagged_interval=[training_examples * tpr_low, training_examples * tpr_high],
            flagged_without_leakage=training_examples * sig.tpr_floor(nonmembers, fpr),
        )
    share = members / (members + nonmembers)
    out["precision"] = [
        {
            "prior": prior,
            "value": precision(prior, tpr, used_fpr) if flagged or false_positives else math.nan,  # no call
            "interval": [precision(prior, tpr_low, fpr_high), precision(prior, tpr_high, fpr_low)],
        }
        for prior in (share, *PRIORS)
    ]
    return out


def risk_and_exposed(
    cell_dir: Path, verdict: Optional[Verdict], training_examples: Optional[int], files: Optional[Sequence[str]]
) -> tuple[list[dict], pd.DataFrame]:
    """A risk statement per judged TPR statistic of the membership family, and the flagged members."""
    statements, exposed = [], []
    judged = verdict.judged if verdict is not None and verdict.level != NOT_JUDGED else []
    judged = [(e, r) for e, r in judged if e.statistic.startswith("tpr_at_fpr_")]
    paths = {(f.attack, f.threat_model): f.path for f in score_files([cell_dir])}
    for evidence, rejected in judged:
        path = paths.get((evidence.attack, evidence.threat_model))
        scores = read_scores(path, with_index=True).get(evidence.variant) if path else None
        if scores is None:
            continue
        fpr = float(evidence.statistic.removeprefix("tpr_at_fpr_"))
        labels, values = scores["label"].to_numpy(), scores["score"].to_numpy()
        threshold, _, _ = threshold_at_fpr(labels, values, fpr)
        hit = values >= threshold
        members = labels == 1
        statement = risk_statement(
            int((hit & members).sum()),
            int(members.sum()),
            int((hit & ~members).sum()),
            int((~members).sum()),
            fpr,
            training_examples,
        )
        statements.append(
            {
                "series": evidence.series,
                "attack": evidence.attack,
                "threat_model": evidence.threat_model,
                "variant": evidence.variant,
                "rejects_no_leakage": bool(rejected),
                "threshold": threshold,
                **statement,
            }
        )
        flagged = scores[hit & members].sort_values("score", ascending=False)
        if "index" in flagged:
            rows = pd.DataFrame(
                {
                    "series": evidence.series,
                    "fpr": fpr,
                    "rejects_no_leakage": bool(rejected),
                    "index": flagged["index"].astype("int64"),
                    "score": flagged["score"],
                }
            )
            if files is not None:
                rows.insert(4, "file", [files[i] for i in rows["index"]])
            exposed.append(rows)
    columns = ["series", "fpr", "rejects_no_leakage", "index", "file", "score"]
    table = pd.concat(exposed, ignore_index=True) if exposed else pd.DataFrame(columns=columns)
    return statements, table


def member_files(cell_dir: Path, files: Optional[Sequence[str]]) -> dict[int, str]:
    """The file of every member a membership attack scored, by dataset index (folder data): what
    ``exposed.csv`` names, kept so that verdicts can be rewritten without the data."""
    if files is None:
        return {}
    indices = set()
    for f in score_files([cell_dir]):
        for scores in read_scores(f.path, with_index=True).values():
            if "index" in scores:
                indices |= set(scores.loc[scores["label"] == 1, "index"].astype(int))
    return {i: files[i] for i in sorted(indices)}


def gate_pvalues(found: list[Verdict]) -> dict[str, float]:
    """Per family, the p-value the release gate reads: Holm over the families of each family's smallest
    Holm-adjusted p-value, so that a gate failing on any family errs at most ``alpha`` of the time on a
    model with nothing to find, whatever the number of families (NaN: untested)."""
    per_family = {v.family: min((a for a in v.adjusted if not math.isnan(a)), default=math.nan) for v in found}
    tested = [f for f, p in per_family.items() if not math.isnan(p)]
    adjusted = dict(zip(tested, sig.holm_adjusted([per_family[f] for f in tested])))
    return {f: float(adjusted.get(f, math.nan)) for f in per_family}


def write_cell_verdicts(
    cell_dir: Path, training_examples: Optional[int] = None, files: Optional[Sequence[str] | Mapping[int, str]] = None
) -> dict:
    """Write ``verdicts.json`` and ``exposed.csv`` into ``cell_dir``; return what was written.
    ``training_examples``: the size of the target's whole training set (the risk statement scales its
    evaluation members to it); ``files``: the dataset's file names by index (folder data). Both are
    kept beside (:data:`INPUTS`), so that :func:`refresh_cell_verdicts` can rewrite the verdicts under
    other rules from the cell's folder alone."""
    cell_dir = Path(cell_dir)
    names = dict(files) if isinstance(files, Mapping) else member_files(cell_dir, files)
    (cell_dir / INPUTS).write_text(json.dumps({"training_examples": training_examples, "member_files": names}) + "\n")
    frame = read_table(CellFiles(cell_dir).table)
    found = verdicts(frame, bootstrap_lookup(cell_dir, frame))
    by_family = {v.family: v for v in found}
    statements, exposed = risk_and_exposed(cell_dir, by_family.get("membership"), training_examples, names or None)
    gate = gate_pvalues(found)
    key = frame.iloc[0] if len(frame) else {}
    data = {
        "cell": {
            k: (int(key[k]) if k == "seed" else str(key[k]))
            for k in ("dataset", "arch", "defense", "seed", "config_hash")
            if k in key
        },
        "rules": RULES,
        "alpha": sig.ALPHA,
        "correction": "Holm",
        "families": {v.family: {**v.as_dict(), "gate_p_value": gate[v.family]} for v in found},
        "membership_risk": statements,
        "exposed": EXPOSED_CSV,
    }
    (cell_dir / VERDICTS).write_text(json.dumps(data, indent=2, default=_plain) + "\n")
    exposed.to_csv(cell_dir / EXPOSED_CSV, index=False)
    return data


def refresh_cell_verdicts(cell_dir: Path) -> bool:
    """Rewrite a finished cell's ``verdicts.json`` when it is missing or was written by other verdict
    rules (its ``rules`` differ from :data:`RULES`), from the cell's table, scores and kept inputs (for
    a cell older than them, the training-set size and file names its earlier verdicts carried). No
    training: the gate then reads the rules in force. Whether it was rewritten."""
    cell_dir = Path(cell_dir)
    path = cell_dir / VERDICTS
    old = json.loads(path.read_text()) if path.exists() else {}
    if old.get("rules") == RULES:
        return False
    if (cell_dir / INPUTS).exists():
        kept = json.loads((cell_dir / INPUTS).read_text())
        size, names = kept.get("training_examples"), {int(i): f for i, f in kept.get("member_files", {}).items()}
    else:
        size = next((r["training_examples"] for r in old.get("membership_risk", []) if "training_examples" in r), None)
        flagged = pd.read_csv(cell_dir / EXPOSED_CSV) if (cell_dir / EXPOSED_CSV).exists() else pd.DataFrame()
        names = dict(zip(flagged["index"], flagged["file"])) if {"index", "file"} <= set(flagged) else {}
    write_cell_verdicts(cell_dir, size, names)
    return True


def _plain(value):
    """JSON for numpy numbers; NaN stays NaN (Python's json writes it as NaN)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def reaches(data: dict, level: str) -> list[str]:
    """The families of ``verdicts.json`` data whose level is ``level`` or above (a family not judged
    has no level)."""
    return [
        f
        for f, v in data.get("families", {}).items()
        if v["level"] in LEVELS and LEVELS.index(v["level"]) >= LEVELS.index(level)
    ]


def failing(data: dict, level: str, allow_incomplete: bool = False) -> list[str]:
    """What fails the release gate at ``level``, in words: each family at ``level`` or above whose test
    survives Holm over the families (:func:`gate_pvalues`: at most ``alpha`` false alarms in all on a
    model with nothing to find), and (unless ``allow_incomplete``) each family that is not judged or
    some of whose attacks did not run, whatever its level."""
    families, alpha = data.get("families", {}), data.get("alpha", sig.ALPHA)
    # a family at the level fails when it still rejects after Holm over the families (gate_p_value)
    out = [
        f"{f} {families[f]['level']}" for f in reaches(data, level) if not families[f].get("gate_p_value", 0) > alpha
    ]
    if not allow_incomplete:
        out += [
            f"{f} not judged (members and non-members differ without the model; assess.allow_incomplete=true "
            "to pass it)"
            for f, v in families.items()
            if v["level"] == NOT_JUDGED
        ]
        out += [
            f"{f} incomplete ({', '.join(n['series'] for n in v['not_run'])} not run; "
            "assess.allow_incomplete=true to pass it)"
            for f, v in families.items()
            if v.get("not_run") and f not in reaches(data, level) and v["level"] != NOT_JUDGED
        ]
    return out

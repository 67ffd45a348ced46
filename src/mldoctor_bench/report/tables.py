"""Markdown tables in the shape of the paper's Tables 3 to 5: rows dataset/arch, columns attack x
threat model, cells mean +- sd with a 95% t-interval over seeds."""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from mldoctor_bench.report import stats
from mldoctor_bench.results import OK

LOW_FPR_NOTE = ("`*` TPR at FPR x measured on fewer than 1/x non-members in at least one seed: "
                "it rests on a handful of examples.")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


def format_summary(s: stats.Summary | pd.Series, digits: int = 3) -> str:
    """``mean ± sd, 95% CI [lo, hi], n=k``; with one value ``mean (n=1)`` and no interval."""
    if isinstance(s, pd.Series):  # a line of stats.summarise
        s = stats.Summary(float(s["mean"]), float(s["sd"]), int(s["n"]), float(s["ci_low"]), float(s["ci_high"]))
    if s.n == 0 or math.isnan(s.mean):
        return ""
    if s.n == 1:
        return f"{s.mean:.{digits}f} (n=1)"
    return f"{s.mean:.{digits}f} ± {s.sd:.{digits}f}, CI [{s.ci_low:.{digits}f}, {s.ci_high:.{digits}f}], n={s.n}"


def _cell_label(keys: tuple, with_defense: bool) -> str:
    dataset, arch, defense = keys
    return f"{dataset} / {arch}" + (f" / {defense}" if with_defense else "")


def summary_table(rows: pd.DataFrame, flags: pd.DataFrame | None = None) -> str:
    """Rows: dataset/arch (and defense when several); columns: attack series (+ metric when the
    rows hold several metrics). ``flags`` (from :func:`stats.low_fpr_rows`) stars flagged cells."""
    several_metrics = rows["metric"].nunique() > 1
    by = stats.CELL + stats.SERIES + ["metric"]
    summary = stats.summarise(rows, by)
    starred = set()
    if flags is not None and not flags.empty:
        starred = {tuple(k) for k in flags.loc[flags["too_few"], by].drop_duplicates().itertuples(index=False)}
    with_defense = summary["defense"].nunique() > 1
    columns = sorted({(a, t, v, m) for a, t, v, m in summary[stats.SERIES + ["metric"]].itertuples(index=False)})
    header = ["dataset / arch" + (" / defense" if with_defense else "")] + [
        stats.series_label(a, t, v, m if several_metrics else "") for a, t, v, m in columns]
    lines = []
    for cell, group in summary.groupby(stats.CELL, sort=True):
        by_series = {tuple(r[c] for c in stats.SERIES + ["metric"]): r for _, r in group.iterrows()}
        out = [_cell_label(cell, with_defense)]
        for col in columns:
            r = by_series.get(col)
            text = "" if r is None else format_summary(r)
            if text and (*cell, *col) in starred:
                text += " *"
            out.append(text)
        lines.append(out)
    return markdown_table(header, lines)


def utility_table(gap: pd.DataFrame) -> str:
    """Target train/test accuracy and their gap, mean (sd, CI) over seeds, per dataset/arch/defense."""
    long = gap.melt(id_vars=stats.CELL + ["seed"], value_vars=["train_accuracy", "test_accuracy", "gap"],
                    var_name="metric", value_name="value")
    summary = stats.summarise(long, stats.CELL + ["metric"])
    lines = []
    for cell, group in summary.groupby(stats.CELL, sort=True):
        by_metric = {r["metric"]: r for _, r in group.iterrows()}
        lines.append([" / ".join(cell)] + [format_summary(by_metric[m]) for m in ("train_accuracy", "test_accuracy", "gap")])
    return markdown_table(["dataset / arch / defense", "train accuracy", "test accuracy", "train - test gap"], lines)


def problems_table(frame: pd.DataFrame) -> str:
    """Skipped and failed rows, one line per (attack, threat model, status, reason), with where."""
    bad = frame[frame["status"] != OK]
    if bad.empty:
        return ""
    lines = []
    for (attack, tm, status, reason), g in bad.groupby(["attack", "threat_model", "status", "reason"], sort=True):
        cells = sorted({f"{d}/{a}/{df}" for d, a, df in g[stats.CELL].itertuples(index=False)})
        seeds = ",".join(str(s) for s in sorted(g["seed"].unique()))
        lines.append([attack, tm, status, reason, "; ".join(cells) + f" (seeds {seeds})"])
    return markdown_table(["attack", "threat model", "status", "reason", "where"], lines)


AUDIT_NOTE = ("The audited bound holds with confidence 1 - beta for the audited copy's training run: an "
              "accountant epsilon below it means the DP implementation or its accounting is broken. A bound "
              "far below the accountant's epsilon does not show that less privacy was spent; it is only what "
              "these canaries and this black-box score could prove.")


def audit_table(audit: pd.DataFrame) -> str:
    """Accountant epsilon beside the audited lower bound, one line per cell, score variant and seed."""
    def num(v, digits=3):
        return "" if pd.isna(v) else f"{v:.{digits}f}"

    lines = []
    for _, r in audit.sort_values(stats.CELL + ["variant", "seed", "config_hash"]).iterrows():
        verdict = "" if pd.isna(r["sound"]) else ("yes" if r["sound"] else "NO: bound above the accountant")
        lines.append([" / ".join(str(r[c]) for c in stats.CELL), r["variant"], str(r["seed"]), str(r["config_hash"])[:8],
                      num(r["epsilon"]),
                      num(r["epsilon_lower_bound"]), f"{num(r['correct_guesses'], 0)} / {num(r['guesses'], 0)}",
                      num(r["canaries"], 0), num(r["delta"], 6).rstrip("0"), verdict])
    return markdown_table(["dataset / arch / defense", "score", "seed", "config", "accountant epsilon", "audited lower bound",
                           "correct / guesses", "canaries", "delta", "bound <= epsilon"], lines)

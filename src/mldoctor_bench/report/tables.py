"""Markdown tables in the shape of the paper's Tables 3 to 5: rows dataset/arch (and varying
settings), columns attack x threat model, cells mean +- sd with a 95% interval; tables at most
:data:`MAX_COLUMNS` wide."""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

from mldoctor_bench.report import intervals, settings, stats
from mldoctor_bench.results import SKIPPED, UNSUPPORTED, not_run
from mldoctor_bench.threat_catalog import short_name

LOW_FPR_NOTE = (
    "`*` TPR at FPR x measured on fewer than 1/x non-members in at least one seed: it rests on a handful of examples."
)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""

    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(r) for r in rows)])


MAX_COLUMNS = 8  # a table wider than this is split into several with the same first column
METHOD_NAMES = {
    "t": "95% CI",
    "seeds+within": "95% CI",
    "bootstrap": "95% bootstrap CI",
    "wilson": "95% Wilson CI",
    "hanley-mcneil": "95% Hanley-McNeil CI",
}


def format_summary(s: stats.Summary | pd.Series, digits: int = 3) -> str:
    """``mean ± sd, 95% CI [lo, hi], n=k`` over seeds; one run: ``mean, 95% bootstrap CI [lo, hi]
    (n=1)`` (or Wilson) where it has an interval, else ``mean (n=1)``."""
    if isinstance(s, pd.Series):  # a line of stats.summarise
        method = s.get("method", "")
        s = stats.Summary(
            float(s["mean"]),
            float(s["sd"]),
            int(s["n"]),
            float(s["ci_low"]),
            float(s["ci_high"]),
            "" if pd.isna(method) else str(method),
        )
    if s.n == 0 or math.isnan(s.mean):
        return ""
    interval = f"[{s.ci_low:.{digits}f}, {s.ci_high:.{digits}f}]"
    if s.n == 1:
        if s.method and not math.isnan(s.ci_low):
            return f"{s.mean:.{digits}f}, {METHOD_NAMES[s.method]} {interval} (n=1)"
        return f"{s.mean:.{digits}f} (n=1)"
    return f"{s.mean:.{digits}f} ± {s.sd:.{digits}f}, CI {interval}, n={s.n}"


def cell_label(keys: tuple, with_defense: bool) -> str:
    """``dataset / arch`` (``/ defense`` when several), then the run's varying settings."""
    dataset, arch, defense, settings = keys
    label = f"{dataset} / {arch}" + (f" / {defense}" if with_defense else "")
    return label + (f" / {settings}" if settings else "")


def _cell_order(summary: pd.DataFrame) -> list[tuple]:
    cells = summary[stats.CELL].drop_duplicates().itertuples(index=False, name=None)
    return sorted(cells, key=lambda c: (c[:3], settings.sort_key(c[3])))


def split_columns(header: list[str], rows: list[list[str]], width: int = MAX_COLUMNS) -> list[str]:
    """Markdown tables of at most ``width`` columns: the first column repeated, the rest in order."""
    per = max(1, width - 1)
    out = []
    for start in range(1, max(len(header), 2), per):
        cols = [0, *range(start, min(start + per, len(header)))]
        out.append(markdown_table([header[c] for c in cols], [[r[c] for c in cols] for r in rows]))
    return out


def summary_table(rows: pd.DataFrame, flags: pd.DataFrame | None = None, single: pd.DataFrame | None = None) -> str:
    """Rows: dataset/arch (and defense when several, and the varying settings); columns: attack
    series (+ metric when the rows hold several metrics), split into tables of at most
    :data:`MAX_COLUMNS` columns. ``flags`` (from :func:`stats.low_fpr_rows`) stars flagged cells;
    ``single`` gives one run its interval (see :func:`stats.single_run_intervals`)."""
    several_metrics = rows["metric"].nunique() > 1
    by = stats.CELL + stats.SERIES + ["metric"]
    summary = stats.summarise(rows, by, single=single)
    starred = set()
    if flags is not None and not flags.empty:
        starred = {tuple(k) for k in flags.loc[flags["too_few"], by].drop_duplicates().itertuples(index=False)}
    with_defense = summary["defense"].nunique() > 1
    columns = sorted({(a, t, v, m) for a, t, v, m in summary[stats.SERIES + ["metric"]].itertuples(index=False)})
    header = ["dataset / arch" + (" / defense" if with_defense else "")] + [
        stats.series_label(a, t, v, m if several_metrics else "") for a, t, v, m in columns
    ]
    groups = {cell: group for cell, group in summary.groupby(stats.CELL, sort=False)}
    lines = []
    for cell in _cell_order(summary):
        by_series = {tuple(r[c] for c in stats.SERIES + ["metric"]): r for _, r in groups[cell].iterrows()}
        out = [cell_label(cell, with_defense)]
        for col in columns:
            r = by_series.get(col)
            text = "" if r is None else format_summary(r)
            if text and (*cell, *col) in starred:
                text += " *"
            out.append(text)
        lines.append(out)
    return "\n\n".join(split_columns(header, lines))


def series_table(rows: pd.DataFrame, flags: pd.DataFrame | None = None, single: pd.DataFrame | None = None) -> str:
    """One model's numbers the other way round: a row per attack series, a column per metric (in the
    order the rows hold them), each value with its interval; flagged low-FPR values starred."""
    by = stats.SERIES + ["metric"]
    summary = stats.summarise(rows, by, single=single)
    starred = set()
    if flags is not None and not flags.empty:
        starred = {tuple(k) for k in flags.loc[flags["too_few"], by].drop_duplicates().itertuples(index=False)}
    metrics = list(dict.fromkeys(rows["metric"]))
    lines = []
    for series, group in summary.groupby(stats.SERIES, sort=True):
        by_metric = {r["metric"]: r for _, r in group.iterrows()}
        out = [stats.series_label(*series)]
        for metric in metrics:
            r = by_metric.get(metric)
            text = "" if r is None else format_summary(r)
            out.append(text + (" *" if text and (*series, metric) in starred else ""))
        lines.append(out)
    return "\n\n".join(split_columns(["attack (threat model) variant"] + metrics, lines))


def utility_table(gap: pd.DataFrame) -> str:
    """Target train/test accuracy and their gap, mean (sd, CI) over seeds, per dataset/arch/defense
    and varying settings."""
    long = gap.melt(
        id_vars=stats.CELL + ["seed"],
        value_vars=["train_accuracy", "test_accuracy", "gap"],
        var_name="metric",
        value_name="value",
    )
    summary = stats.summarise(long, stats.CELL + ["metric"])
    for i, row in summary[summary["n"] == 1].iterrows():  # one run: a Wilson interval over its examples
        count = {"train_accuracy": "n_train", "test_accuracy": "n_test"}.get(row["metric"])
        if count in gap.columns:
            n = gap.set_index(stats.CELL)[count].get(tuple(row[stats.CELL]))
            if n is not None and not pd.isna(n):
                summary.loc[i, ["ci_low", "ci_high"]] = intervals.wilson_interval(float(row["mean"]), float(n))
                summary.loc[i, "method"] = "wilson"
    groups = {cell: group for cell, group in summary.groupby(stats.CELL, sort=False)}
    lines = []
    for cell in _cell_order(summary):
        by_metric = {r["metric"]: r for _, r in groups[cell].iterrows()}
        lines.append(
            [cell_label(cell, True)]
            + [format_summary(by_metric[m]) for m in ("train_accuracy", "test_accuracy", "gap")]
        )
    return markdown_table(["dataset / arch / defense", "train accuracy", "test accuracy", "train - test gap"], lines)


def _where(g: pd.DataFrame) -> str:
    cells = sorted({f"{d}/{a}/{df}" for d, a, df in g[["dataset", "arch", "defense"]].itertuples(index=False)})
    seeds = ",".join(str(s) for s in sorted(g["seed"].unique()))
    return "; ".join(cells) + f" (seeds {seeds})"


def unsupported_lines(frame: pd.DataFrame) -> list[str]:
    """One line per attack naming the threat models it was asked for but does not support."""
    bad = frame[(frame["status"] == SKIPPED) & frame["reason"].str.contains(UNSUPPORTED, regex=False)]
    out = []
    for attack, g in bad.groupby("attack", sort=True):
        tms = ", ".join(f"{tm} {short_name(tm)}" for tm in sorted(g["threat_model"].unique()))
        supported = g["reason"].iloc[0].partition("; supported: ")[2]
        out.append(f"- {attack}: not run under {tms}" + (f" (it supports {supported})" if supported else ""))
    return out


def problems_table(frame: pd.DataFrame) -> str:
    """Failed rows and skipped rows with another reason, one line per (attack, threat model, status,
    reason), with where; threat models an attack does not support are :func:`unsupported_lines`."""
    bad = frame[not_run(frame)]
    if bad.empty:
        return ""
    lines = [
        [attack, tm, status, reason, _where(g)]
        for (attack, tm, status, reason), g in bad.groupby(["attack", "threat_model", "status", "reason"], sort=True)
    ]
    return markdown_table(["attack", "threat model", "status", "reason", "where"], lines)


AUDIT_NOTE = (
    "Each audited bound holds with confidence 1 - beta (attack.privacy_audit.beta, Bonferroni over the "
    "guess counts tried) for the audited copy's training run: Steinke et al.'s from the (epsilon, delta) "
    "test, the f-DP one (Mahloujifar et al.) from the Gaussian-DP trade-off curve, on the same guesses "
    "and turned into epsilon at the same delta. An accountant epsilon below either means the DP "
    "implementation or its accounting is broken. A bound far below the accountant's epsilon does not show "
    "that less privacy was spent; it is only what these canaries and this black-box score could prove."
)


def audit_table(audit: pd.DataFrame) -> str:
    """Accountant epsilon beside the two audited lower bounds (each at the audit's confidence), one line
    per cell, score variant and seed."""

    def num(v, digits=3):
        return "" if pd.isna(v) else f"{v:.{digits}f}"

    def bound(r: pd.Series, prefix: str) -> str:
        guesses = f"{num(r[prefix + 'correct_guesses'], 0)} / {num(r[prefix + 'guesses'], 0)}"
        return f"{num(r[prefix + 'epsilon_lower_bound'])} ({guesses})"

    lines = []
    for _, r in audit.sort_values(stats.CELL + ["variant", "seed", "config_hash"]).iterrows():
        verdict = "" if pd.isna(r["sound"]) else ("yes" if r["sound"] else "NO: a bound above the accountant")
        cell = cell_label(tuple(r[c] for c in stats.CELL), True)
        lines.append(
            [
                cell,
                f"{r['variant']}, seed {r['seed']}, config {str(r['config_hash'])[:8]}",
                num(r["epsilon"]),
                bound(r, ""),
                bound(r, "fdp_"),
                num(r["canaries"], 0),
                num(r["delta"], 6).rstrip("0"),
                verdict,
            ]
        )
    header = [
        "dataset / arch / defense",
        "score, seed, config",
        "accountant epsilon",
        "lower bound, Steinke et al. (correct / guesses)",
        "lower bound, f-DP, Mahloujifar et al. (correct / guesses)",
        "canaries",
        "delta",
        "bound <= epsilon",
    ]
    return "\n\n".join(split_columns(header, lines))

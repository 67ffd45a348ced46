"""Model stealing as budget curves (:mod:`mldoctor_bench.attacks.stealing_budget`): per cell, threat
model and query strategy, the surrogate's agreement, accuracy and adversarial transfer rate at each
query budget, mean over seeds, beside the no-query model's; a table and a figure for the report.

The budget is the ``queries`` metric, the strategy the variant's part before ``@``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mldoctor_bench.report import stats
from mldoctor_bench.report.figures import Drawn, _save, _slug, plt
from mldoctor_bench.report.tables import markdown_table

ATTACK = "stealing_budget"
CURVE_METRICS = ("agreement", "accuracy", "transfer_rate", "baseline_agreement", "baseline_transfer_rate")
CELL = ["dataset", "arch", "defense", "threat_model"]
LABELS = {
    "agreement": "agreement",
    "accuracy": "accuracy",
    "transfer_rate": "transfer rate",
    "baseline_agreement": "no-query agreement",
    "baseline_transfer_rate": "no-query transfer rate",
}


def strategy_of(variant: str) -> str:
    """``random@500`` -> ``random``."""
    return variant.rsplit("@", 1)[0]


def curves(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (cell, threat model, strategy, budget): each curve metric's mean over seeds and the
    number of seeds; empty where no budget curve ran."""
    rows = stats.ok_rows(frame)
    rows = rows[rows["attack"] == ATTACK]
    if rows.empty:
        return pd.DataFrame()
    wide = rows.pivot_table(index=CELL + ["variant", "seed"], columns="metric", values="value", aggfunc="mean")
    wide = wide.reset_index()
    wide["strategy"] = wide["variant"].map(strategy_of)
    wide["budget"] = wide["queries"].astype(int)
    present = [m for m in CURVE_METRICS if m in wide.columns]
    out = wide.groupby(CELL + ["strategy", "budget"]).agg(
        **{m: (m, "mean") for m in present}, seeds=("seed", "nunique")
    )
    return out.reset_index().sort_values(CELL + ["strategy", "budget"], ignore_index=True)


def curve_table(table: pd.DataFrame) -> str:
    """Markdown: a row per curve point."""
    header = ["cell", "threat model", "strategy", "queries", "seeds"] + [LABELS[m] for m in CURVE_METRICS]
    rows = [
        ["/".join(str(r[k]) for k in CELL[:3]), r["threat_model"], r["strategy"], str(r["budget"]), str(r["seeds"])]
        + [f"{r[m]:.3f}" if m in r else "" for m in CURVE_METRICS]
        for _, r in table.iterrows()
    ]
    return markdown_table(header, rows)


def half_budget_check(table: pd.DataFrame) -> list[str]:
    """For each cell and threat model: each strategy's agreement at half the largest budget against
    random's at the largest (Orekondy et al. and Pal et al. claim as much agreement for fewer queries)."""
    lines = []
    for key, rows in table.groupby(CELL):
        top = rows["budget"].max()
        random_top = rows[(rows["strategy"] == "random") & (rows["budget"] == top)]["agreement"]
        if random_top.empty:
            continue
        for strategy, own in rows[rows["strategy"] != "random"].groupby("strategy"):
            half = own[own["budget"] == top // 2]["agreement"]
            if not half.empty:
                gap = float(half.iloc[0]) - float(random_top.iloc[0])
                lines.append(
                    f"- {'/'.join(map(str, key))}: {strategy} at {top // 2} queries agrees {float(half.iloc[0]):.3f}, "
                    f"random at {top} {float(random_top.iloc[0]):.3f} ({gap:+.3f})"
                )
    return lines


def curve_figure(table: pd.DataFrame, out_dir: Path) -> Drawn:
    """Agreement and transfer rate against the budget (log scale), a line per strategy, the no-query
    model's as a dashed line; one row of panels per cell and threat model."""
    title = "model stealing budget curves"
    if table.empty:
        return Drawn(title, None, "no stealing_budget rows")
    groups = list(table.groupby(CELL))
    fig, axes = plt.subplots(len(groups), 2, figsize=(10, 3.6 * len(groups)), squeeze=False)
    for (key, rows), row_axes in zip(groups, axes):
        for ax, metric, baseline in zip(row_axes, ("agreement", "transfer_rate"), CURVE_METRICS[3:]):
            for strategy, line in rows.groupby("strategy"):
                ax.plot(line["budget"], line[metric], marker="o", ms=3, label=strategy)
            if baseline in rows:
                ax.axhline(float(rows[baseline].mean()), color="black", ls="--", lw=0.8, label="no query")
            ax.set(xscale="log", xlabel="queries", ylabel=metric, title=f"{'/'.join(map(str, key))}: {metric}")
            ax.legend(fontsize=7)
    fig.tight_layout()
    return Drawn(title, _save(fig, out_dir / f"{_slug('stealing', 'budget')}.png"))


def section(frame: pd.DataFrame, fig_dir: Path, figure_lines) -> list[str]:
    """The report's section, where budget curves ran; ``figure_lines`` renders a :class:`Drawn`."""
    table = curves(frame)
    if table.empty:
        return []
    return [
        "## Model stealing budget curves",
        "",
        "Per query strategy and budget, the surrogate's agreement with the target on target-test, its "
        "accuracy, and the share of PGD examples crafted on it that fool the target, mean over seeds; "
        "beside them the model trained on the attacker's labelled images without a query. The stealing "
        "verdict reads each strategy at the largest budget run.",
        "",
        curve_table(table),
        "",
        *half_budget_check(table),
        "",
        *figure_lines([curve_figure(table, fig_dir)]),
    ]

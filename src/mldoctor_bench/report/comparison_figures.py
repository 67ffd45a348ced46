"""The report's comparison figures, in the shape of ML-Doctor's: bars per dataset and architecture
(Figures 2 to 5), attacks against a swept setting and against the train-test gap (Figures 6 to 8),
the defense trade-off and the attack-vs-attack correlation (Figure 9). Each function draws from data
already computed in :mod:`.stats` and returns what it drew, or says why it drew nothing."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mldoctor_bench.report import stats  # noqa: E402
from mldoctor_bench.report.figures import Drawn, _save, _slug  # noqa: E402
from mldoctor_bench.report.settings import SETTING_PREFIX  # noqa: E402


def _cell_name(frame: pd.DataFrame, with_defense: bool) -> pd.Series:
    parts = frame["dataset"] + "/" + frame["arch"]
    parts = parts + "/" + frame["defense"] if with_defense else parts
    return parts.str.cat(frame[stats.SETTINGS].where(frame[stats.SETTINGS] == "", " " + frame[stats.SETTINGS]))


def series_colours(n: int) -> list:
    """``n`` colours, all different: tab10 up to 10, tab20 up to 20, else evenly spaced hues."""
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(n)]
    return [plt.get_cmap("hsv")(i / n) for i in range(n)]


def _legend_outside(ax, **kwargs) -> None:
    """The legend to the right of the axes, never over the data (none when nothing is labelled)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def chance_level(fam: str, metric: str, classes: int | None = None) -> float | None:
    """What guessing scores on ``metric``: 0.5 for membership AUC and accuracy (members and
    non-members in equal numbers), 0 for its advantage, x for TPR at FPR x, 1/classes for
    inversion's evaluator accuracy; ``None`` where the verdict compares with something else
    (attribute inference and stealing: their baselines per cell, drawn across each bar)."""
    if fam == "membership":
        if metric in ("auc", "accuracy"):
            return 0.5
        if metric == "advantage":
            return 0.0
        if metric.startswith(stats.LOW_FPR_PREFIX):
            return float(metric.removeprefix(stats.LOW_FPR_PREFIX))
    if (fam, metric) == ("inversion", "eval_accuracy") and classes:
        return 1.0 / classes
    return None  # stealing: its verdict compares with a model trained without queries, not chance


def _errors(summary: pd.DataFrame) -> np.ndarray:
    low = (summary["mean"] - summary["ci_low"]).clip(lower=0)  # NaN (no interval): no whisker
    high = (summary["ci_high"] - summary["mean"]).clip(lower=0)
    return np.vstack([low.to_numpy(), high.to_numpy()])


# What each family's verdict compares a bar with, drawn across it: (metric, legend).
COMPARED_BARS = {
    ("attribute", "accuracy"): ("best_baseline_accuracy", "the strongest baseline (no target)"),
    ("stealing", "agreement"): ("baseline_agreement", "a model trained without queries"),
    ("inversion", "eval_accuracy"): ("no_target_eval_accuracy", "the same search without the target"),
}


def draw_bars(
    summary: pd.DataFrame,
    fam: str,
    metric: str,
    classes: dict[str, int],
    baseline: pd.DataFrame | None = None,
    baseline_label: str = "",
):
    """A bar chart of one family's metric: ``summary`` (from :func:`stats.summarise` with ``cell``
    and ``series`` columns) gives the bars and their intervals; chance is a dashed line and
    ``baseline`` (same columns; the attribute baselines) a black bar across each bar; the legend
    sits right of the axes. Returns the figure (not saved)."""
    cells, series = sorted(summary["cell"].unique()), sorted(summary["series"].unique())
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 1.2 * len(cells) * max(1, len(series) / 3))), 4.5))
    x = np.arange(len(cells))
    base = None if baseline is None or baseline.empty else baseline.set_index(["cell", "series"])["mean"]
    marked = False
    for i, (name, colour) in enumerate(zip(series, series_colours(len(series)))):
        part = summary[summary["series"] == name].set_index("cell").reindex(cells)
        pos = x - 0.4 + width * (i + 0.5)
        ax.bar(
            pos,
            part["mean"],
            width,
            yerr=_errors(part),
            capsize=2,
            label=name,
            color=colour,
            edgecolor="black",
            linewidth=0.3,
        )
        if base is not None:  # each series' own baseline, across its bar
            for p, cell in zip(pos, cells):
                if (cell, name) in base.index and not pd.isna(part.loc[cell, "mean"]):
                    ax.hlines(
                        base[(cell, name)],
                        p - width / 2,
                        p + width / 2,
                        colors="black",
                        lw=2,
                        label=None if marked else f"compared with: {baseline_label}",
                    )
                    marked = True
    dataset_of = summary.drop_duplicates("cell").set_index("cell")["dataset"]
    _chance_marks(ax, [chance_level(fam, metric, classes.get(dataset_of[c])) for c in cells])
    ax.set_xticks(x, cells, rotation=20, ha="right")
    ax.set(ylabel=metric, title=f"{fam}: {metric} (mean over seeds, whiskers = 95% interval)")
    _legend_outside(ax)
    return fig


def _chance_marks(ax, chance: list) -> None:
    """Chance per group of bars: one dashed line when it is the same for all, else one per group."""
    if chance and all(c is not None for c in chance) and len(set(chance)) == 1:
        ax.axhline(chance[0], color="black", ls="--", lw=1, label=f"chance ({chance[0]:.3g})")
        return
    labelled = False
    for i, c in enumerate(chance):
        if c is not None:
            ax.hlines(
                c,
                i - 0.45,
                i + 0.45,
                colors="black",
                linestyles="--",
                lw=1,
                label=None if labelled else "chance (1/classes)",
            )
            labelled = True


def bar_figures(
    frame: pd.DataFrame, out_dir: Path, classes: dict[str, int] | None = None, single: pd.DataFrame | None = None
) -> list[Drawn]:
    """Per attack family's main metric: bars over dataset/arch (and varying settings), one bar per
    attack series (threat model, variant); height = mean over seeds, whiskers = its 95% interval
    (``single`` gives one run's, see :func:`stats.single_run_intervals`). Chance is marked where
    it is a number (``classes``: classes per dataset, for 1/classes); attribute inference marks
    the stronger of its two baselines (majority attribute, attribute from the task label)."""
    chosen = stats.main_metric_rows(frame)
    if not chosen:
        return [Drawn("attack bar charts", None, "no attack produced an ok metric")]
    attacks = stats.attack_rows(frame)
    drawn = []
    for (fam, metric), rows in chosen.items():
        with_defense = rows["defense"].nunique() > 1
        summary = stats.summarise(rows, stats.CELL + stats.SERIES + ["metric"], single=single)
        summary["cell"] = _cell_name(summary, with_defense)
        summary["series"] = [
            stats.series_label(a, t, v)
            for a, t, v in zip(summary["attack"], summary["threat_model"], summary["variant"])
        ]
        base = None
        compared = COMPARED_BARS.get((fam, metric))
        baseline = attacks[(attacks["family"] == fam) & (attacks["metric"] == compared[0])] if compared else None
        if baseline is not None and not baseline.empty:
            base = stats.summarise(baseline, stats.CELL + stats.SERIES)
            base["cell"] = _cell_name(base, with_defense)
            base["series"] = [
                stats.series_label(a, t, v) for a, t, v in zip(base["attack"], base["threat_model"], base["variant"])
            ]
        fig = draw_bars(summary, fam, metric, classes or {}, base, compared[1] if compared else "")
        drawn.append(Drawn(f"{fam} {metric} by dataset/arch", _save(fig, out_dir / f"bars_{_slug(fam, metric)}.png")))
    return drawn


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


SETTING_TITLES = {"train.epochs": "training epochs"}


def setting_figures(
    frame: pd.DataFrame,
    varying: list[str],
    out_dir: Path,
    classes: dict[str, int] | None = None,
    single: pd.DataFrame | None = None,
) -> list[Drawn]:
    """Per numeric setting that varies across the runs (Figure 8: ``train.epochs``): the target's
    train and test accuracy, then each family's main metric, against the setting's value; a line
    per dataset/arch/defense (and other varying settings) and attack series, mean over seeds with
    its 95% interval (``single``: a lone run's, see :func:`stats.single_run_intervals`); chance as
    in :func:`chance_level` (``classes`` per dataset)."""
    numeric = [k for k in varying if frame[SETTING_PREFIX + k].dropna().map(_is_number).all()]
    if not numeric:
        why = (
            f"the settings that vary ({', '.join(varying)}) are not numbers"
            if varying
            else "no setting but the seed varies across runs of the same dataset/arch/defense (the overfitting "
            "experiment sweeps train.epochs)"
        )
        return [Drawn("attacks against a swept setting (Figure 8)", None, why)]
    drawn = []
    for key in numeric:
        fig = draw_setting(frame, key, classes, single)
        figure8 = " (Figure 8)" if key == "train.epochs" else ""
        drawn.append(
            Drawn(
                f"attacks against {SETTING_TITLES.get(key, key)}{figure8}",
                _save(fig, out_dir / f"setting_{_slug(key)}.png"),
            )
        )
    return drawn


def draw_setting(
    frame: pd.DataFrame, key: str, classes: dict[str, int] | None = None, single: pd.DataFrame | None = None
):
    """The figure of :func:`setting_figures` for one numeric setting ``key`` (not saved)."""
    chosen = stats.main_metric_rows(frame)
    gap = stats.target_gap(frame)
    col = SETTING_PREFIX + key
    name = SETTING_TITLES.get(key, key)
    values = frame[[stats.SETTINGS, col]].dropna().drop_duplicates(stats.SETTINGS).set_index(stats.SETTINGS)[col]
    panels = len(chosen) + 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2), squeeze=False)
    ax = axes[0][0]
    utility = gap.assign(x=gap[stats.SETTINGS].map(values).astype(float)).dropna(subset=["x"])
    for metric, style in (("train_accuracy", "-o"), ("test_accuracy", "--s")):
        for (d, a, df), g in utility.groupby(["dataset", "arch", "defense"]):
            m = g.groupby("x")[metric].mean()
            ax.plot(m.index, m.to_numpy(), style, ms=4, label=f"{d}/{a}/{df} {metric.split('_')[0]}")
    ax.set(xlabel=name, ylabel="target accuracy", title="target: train and test accuracy", ylim=(0, 1.05))
    _legend_outside(ax)
    for ax, ((fam, metric), rows) in zip(axes[0][1:], chosen.items()):
        rows = rows[rows[col].notna()]
        rows = rows.assign(x=rows[col].astype(float))
        rows = rows.assign(
            line=_cell_name(rows.assign(**{stats.SETTINGS: _other_settings(rows, key)}), rows["defense"].nunique() > 1)
        )
        summary = stats.summarise(rows, ["line"] + stats.SERIES + ["metric", "x"], single=single)
        groups = list(summary.groupby(["line"] + stats.SERIES, sort=True))
        for ((line, a, t, v), g), colour in zip(groups, series_colours(len(groups))):
            g = g.sort_values("x")
            ax.errorbar(
                g["x"],
                g["mean"],
                yerr=_errors(g),
                fmt="-o",
                ms=4,
                capsize=2,
                color=colour,
                label=f"{line} {stats.series_label(a, t, v)}",
            )
        levels = {chance_level(fam, metric, (classes or {}).get(d)) for d in rows["dataset"].unique()}
        if len(levels) == 1 and None not in levels:
            level = levels.pop()
            ax.axhline(level, color="black", ls="--", lw=1, label=f"chance ({level:.3g})")
        ax.set(xlabel=name, ylabel=metric, title=f"{fam}: {metric}")
        _legend_outside(ax)
    fig.suptitle(f"attacks against {name} (mean over seeds, whiskers = 95% interval)")
    fig.tight_layout()
    return fig


def _other_settings(rows: pd.DataFrame, key: str) -> pd.Series:
    """Each row's settings label without ``key`` (the x axis), so lines join across its values."""
    return rows[stats.SETTINGS].map(
        lambda label: ", ".join(p for p in str(label).split(", ") if p and not p.startswith(f"{key}="))
    )


def gap_figure(frame: pd.DataFrame, out_dir: Path) -> Drawn:
    """Each family's main metric against the target's train-test gap, one point per run (cell,
    settings and seed)."""
    title = "attack metrics vs train-test gap"
    gap = stats.target_gap(frame)
    chosen = stats.main_metric_rows(frame)
    if gap.empty:
        return Drawn(title, None, "no target train/test accuracy rows (attack=target)")
    if not chosen:
        return Drawn(title, None, "no attack produced an ok metric")
    if len(gap) < 2:
        return Drawn(title, None, "needs at least two runs (cells or seeds) to set attacks against the gap; found one")
    fig, axes = plt.subplots(1, len(chosen), figsize=(5.2 * len(chosen), 4), squeeze=False)
    for ax, ((fam, metric), rows) in zip(axes[0], chosen.items()):
        joined = rows.merge(gap, on=stats.CELL + ["seed"], how="inner")
        groups = list(joined.groupby(stats.SERIES, sort=True))
        for ((a, t, v), g), colour in zip(groups, series_colours(len(groups))):
            ax.scatter(g["gap"], g["value"], s=18, color=colour, label=stats.series_label(a, t, v))
        level = chance_level(fam, metric)
        if level is not None:
            ax.axhline(level, color="black", ls="--", lw=1, label=f"chance ({level:.3g})")
        ax.set(xlabel="target train - test accuracy", ylabel=metric, title=f"{fam}: {metric}")
        _legend_outside(ax)
    fig.tight_layout()
    return Drawn(title, _save(fig, out_dir / "gap.png"))


def defense_figure(frame: pd.DataFrame, out_dir: Path) -> Drawn:
    """Trade-off: each family's main metric against target test accuracy, one point per defense
    (mean over seeds), a line per dataset/arch and attack series run under several defenses."""
    title = "defense trade-off"
    gap = stats.target_gap(frame)
    defenses = sorted(gap["defense"].unique()) if not gap.empty else []
    if len(defenses) < 2:
        return Drawn(title, None, f"needs at least two defenses with target utility rows; found {defenses or 'none'}")
    chosen = stats.main_metric_rows(frame)
    if not chosen:
        return Drawn(title, None, "no attack produced an ok metric")
    utility = gap.groupby(stats.CELL, as_index=False)["test_accuracy"].mean()
    compared = utility.groupby(["dataset", "arch"])["defense"].transform("nunique") > 1
    utility = utility[compared]  # a dataset/arch seen under one defense has no trade-off to show
    if utility.empty:
        return Drawn(title, None, "no dataset/arch was run under two or more defenses")
    markers = dict(zip(defenses, "osD^vP*X<>"))
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.5 * len(chosen), 4), squeeze=False)
    for ax, ((fam, metric), rows) in zip(axes[0], chosen.items()):
        summary = stats.summarise(rows, stats.CELL + stats.SERIES).merge(utility, on=stats.CELL)
        for (d, arch, st, a, t, v), g in summary.groupby(
            ["dataset", "arch", stats.SETTINGS, "attack", "threat_model", "variant"]
        ):
            g = g.sort_values("test_accuracy")
            line = ax.plot(g["test_accuracy"], g["mean"], lw=0.6, alpha=0.6)[0]
            for _, r in g.iterrows():
                ax.scatter(r["test_accuracy"], r["mean"], marker=markers[r["defense"]], color=line.get_color(), s=25)
            line.set_label(f"{d}/{arch} " + (f"{st} " if st else "") + stats.series_label(a, t, v))
        for d, m in markers.items():
            ax.scatter([], [], marker=m, color="grey", label=f"defense={d}")
        ax.set(xlabel="target test accuracy", ylabel=metric, title=f"{fam}: {metric}")
        _legend_outside(ax)
    fig.tight_layout()
    return Drawn(title, _save(fig, out_dir / "defenses.png"))


def correlation_figure(corr: pd.DataFrame, out_dir: Path, reason: str = "") -> Drawn:
    """Heat map of an attack-vs-attack Pearson matrix (see :func:`stats.pearson_matrix`)."""
    title = "attack-vs-attack Pearson correlation"
    if reason or corr.empty or len(corr) < 2:
        return Drawn(title, None, reason or "fewer than two attack series vary across cells")
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(corr), 1 + 0.6 * len(corr)))
    im = ax.imshow(corr.to_numpy(dtype=float), vmin=-1, vmax=1, cmap="coolwarm")
    ax.set_xticks(range(len(corr)), corr.columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(corr)), corr.index, fontsize=7)
    for i in range(len(corr)):
        for j in range(len(corr)):
            value = corr.iat[i, j]
            ax.text(j, i, "" if pd.isna(value) else f"{value:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(title)
    return Drawn(title, _save(fig, out_dir / "correlation.png"))

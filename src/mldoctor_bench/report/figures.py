"""The report's PNG figures. Each function draws from data already computed in :mod:`.stats` and
returns what it drew, or says why it drew nothing (no data is a reason, never an error)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from mldoctor_bench.report import stats  # noqa: E402
from mldoctor_bench.report.collect import ExposedSet, ScoreFile, read_scores  # noqa: E402


@dataclass(frozen=True)
class Drawn:
    """One figure: its title and file, or ``path=None`` and the reason it was not drawn."""

    title: str
    path: Path | None
    note: str = ""


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _slug(*parts: str) -> str:
    return "_".join(p for p in parts if p).replace(" ", "-").replace("/", "-").replace("(", "").replace(")", "").replace(",", "")


def roc_figures(files: list[ScoreFile], out_dir: Path) -> list[Drawn]:
    """Log-log ROC curves, one figure per (attack, threat model), one curve per cell x variant.

    FPRs below ``1/n_nonmembers`` cannot be measured (no single non-member is that rare): that
    region is shaded, for the smallest non-member count among the curves.
    """
    if not files:
        return [Drawn("MemInf ROC curves", None, "no saved membership scores (scores*.parquet) in the cells")]
    groups: dict[tuple[str, str], list[ScoreFile]] = {}
    for f in files:
        groups.setdefault((f.attack, f.threat_model), []).append(f)
    drawn = []
    for (attack, tm), members in sorted(groups.items()):
        fig, ax = plt.subplots(figsize=(6, 5))
        n_neg = []
        for f in members:
            for variant, frame in read_scores(f.path).items():
                labels = frame["label"].to_numpy().astype(int)
                if labels.min() == labels.max():
                    continue
                fpr, tpr, _ = roc_curve(labels, frame["score"].to_numpy())
                n = int((labels == 0).sum())
                n_neg.append(n)
                floor = 0.5 / n  # where FPR = 0 is drawn on the log axis
                label = f"{f.dataset}/{f.arch}/{f.defense} s{f.seed}" + (f" {variant}" if variant else "")
                ax.step(np.maximum(fpr, floor), np.maximum(tpr, floor), where="post", lw=1, label=label)
        if not n_neg:
            plt.close(fig)
            drawn.append(Drawn(f"ROC {attack} {tm}", None, "scores hold only one class"))
            continue
        lowest = 0.5 / max(n_neg)
        ax.plot([lowest, 1], [lowest, 1], "k--", lw=0.8, label="chance")
        ax.axvspan(lowest, 1 / min(n_neg), color="grey", alpha=0.25,
                   label=f"FPR < 1/n_nonmembers (n={min(n_neg)}): too few non-members")
        ax.set(xscale="log", yscale="log", xlim=(lowest, 1), ylim=(lowest, 1.05), xlabel="false positive rate",
               ylabel="true positive rate", title=f"{stats.series_label(attack, tm)}: ROC (log-log)")
        ax.legend(fontsize=6, loc="lower right")
        drawn.append(Drawn(f"ROC {stats.series_label(attack, tm)}", _save(fig, out_dir / f"roc_{_slug(attack, tm)}.png")))
    return drawn


def exposed_figures(sets: list[ExposedSet], out_dir: Path, columns: int = 8) -> list[Drawn]:
    """Per cell, a grid of its most exposed members (see :func:`collect.exposed_sets`), each
    captioned with its label and score, highest score first."""
    if not sets:
        return [Drawn("most exposed training examples", None, "no cell folders to read exposed.parquet from")]
    drawn = []
    for s in sets:
        title = f"most exposed members, {s.cell}"
        if s.examples is None or s.examples.empty:
            drawn.append(Drawn(title, None, s.note or "no exposed members saved"))
            continue
        rows = -(-len(s.examples) // columns)
        fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.5 * rows + 0.6), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, (_, ex) in zip(axes.flat, s.examples.iterrows()):
            pixels = np.asarray(Image.open(io.BytesIO(ex["image"])))
            ax.imshow(pixels, **({"cmap": "gray", "vmin": 0, "vmax": 255} if pixels.ndim == 2 else {}))
            ax.set_title(f"y={ex['label']}  {ex['score']:.3g}", fontsize=7)
        fig.suptitle(f"{s.cell}: {s.series}, TPR at 1% FPR {s.tpr:.3f}, AUC {s.auc:.3f}\n"
                     f"its {len(s.examples)} highest-scoring members (label, score)", fontsize=9)
        drawn.append(Drawn(f"{title}: {s.series}", _save(fig, out_dir / f"exposed_{_slug(s.cell_id)}.png"), s.note))
    return drawn


def _cell_name(frame: pd.DataFrame, with_defense: bool) -> pd.Series:
    parts = frame["dataset"] + "/" + frame["arch"]
    return parts + "/" + frame["defense"] if with_defense else parts


def bar_figures(frame: pd.DataFrame, out_dir: Path) -> list[Drawn]:
    """Per attack family's main metric: bars over dataset/arch, one bar per attack series (threat
    model, variant); height = mean over seeds, error bar = one standard deviation. Attribute
    inference also marks the stronger of its two baselines (majority attribute, attribute from the
    task label)."""
    chosen = stats.main_metric_rows(frame)
    if not chosen:
        return [Drawn("attack bar charts", None, "no attack produced an ok metric")]
    baseline = stats.attack_rows(frame)
    # the stronger baseline where the rows have it (older tables: the majority baseline alone)
    best = baseline[baseline["metric"] == "best_baseline_accuracy"]
    baseline = best if not best.empty else baseline[baseline["metric"] == "baseline_accuracy"]
    drawn = []
    for (fam, metric), rows in chosen.items():
        with_defense = rows["defense"].nunique() > 1
        summary = stats.summarise(rows, stats.CELL + stats.SERIES)
        summary["cell"] = _cell_name(summary, with_defense)
        summary["series"] = [stats.series_label(a, t, v) for a, t, v in
                             zip(summary["attack"], summary["threat_model"], summary["variant"])]
        cells, series = sorted(summary["cell"].unique()), sorted(summary["series"].unique())
        width = 0.8 / len(series)
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(cells) * max(1, len(series) / 3)), 4.5))
        x = np.arange(len(cells))
        for i, name in enumerate(series):
            part = summary[summary["series"] == name].set_index("cell").reindex(cells)
            pos = x - 0.4 + width * (i + 0.5)
            ax.bar(pos, part["mean"], width, yerr=part["sd"].fillna(0), capsize=2, label=name)
        if metric == "accuracy" and fam == "attribute" and not baseline.empty:
            base = stats.summarise(baseline, stats.CELL)
            base["cell"] = _cell_name(base, with_defense)
            base = base.set_index("cell").reindex(cells)
            ax.scatter(x, base["mean"], marker="_", s=900, color="black", zorder=3, label="stronger baseline")
        ax.set_xticks(x, cells, rotation=20, ha="right")
        ax.set(ylabel=metric, title=f"{fam}: {metric} (mean over seeds, bars = 1 sd)")
        ax.legend(fontsize=7, ncol=2)
        drawn.append(Drawn(f"{fam} {metric} by dataset/arch", _save(fig, out_dir / f"bars_{_slug(fam, metric)}.png")))
    return drawn


def gap_figure(frame: pd.DataFrame, out_dir: Path) -> Drawn:
    """Each family's main metric against the target's train-test gap, one point per cell and seed."""
    title = "attack metrics vs train-test gap"
    gap = stats.target_gap(frame)
    chosen = stats.main_metric_rows(frame)
    if gap.empty:
        return Drawn(title, None, "no target train/test accuracy rows (attack=target)")
    if not chosen:
        return Drawn(title, None, "no attack produced an ok metric")
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.5 * len(chosen), 4), squeeze=False)
    for ax, ((fam, metric), rows) in zip(axes[0], chosen.items()):
        joined = rows.merge(gap, on=stats.CELL + ["seed"], how="inner")
        for (a, t, v), g in joined.groupby(stats.SERIES, sort=True):
            ax.scatter(g["gap"], g["value"], s=18, label=stats.series_label(a, t, v))
        ax.set(xlabel="target train - test accuracy", ylabel=metric, title=f"{fam}: {metric}")
        ax.legend(fontsize=6)
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
        for (d, arch, a, t, v), g in summary.groupby(["dataset", "arch", "attack", "threat_model", "variant"]):
            g = g.sort_values("test_accuracy")
            line = ax.plot(g["test_accuracy"], g["mean"], lw=0.6, alpha=0.6)[0]
            for _, r in g.iterrows():
                ax.scatter(r["test_accuracy"], r["mean"], marker=markers[r["defense"]], color=line.get_color(), s=25)
            line.set_label(f"{d}/{arch} " + stats.series_label(a, t, v))
        for d, m in markers.items():
            ax.scatter([], [], marker=m, color="grey", label=f"defense={d}")
        ax.set(xlabel="target test accuracy", ylabel=metric, title=f"{fam}: {metric}")
        ax.legend(fontsize=6)
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

"""The report's figures of one cell's per-example results: log-log ROC curves from the saved scores
and grids of the most exposed members; and what every figure function shares (:class:`Drawn`). Each
function returns what it drew, or says why it drew nothing (no data is a reason, never an error).
The paper's comparison figures are in :mod:`.comparison_figures`."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
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
    return (
        "_".join(p for p in parts if p)
        .replace(" ", "-")
        .replace("/", "-")
        .replace("(", "")
        .replace(")", "")
        .replace(",", "")
    )


def roc_points(labels: np.ndarray, scores: np.ndarray, steps: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve's points, a run of tied scores drawn as the straight segment between the points
    before and after it (what breaking the tie at random gives on average, not a flat-then-vertical
    step that puts the tie's members after its non-members), with ``steps`` points along each such
    segment so that it stays straight on log axes too."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    xs, ys = [fpr[:1]], [tpr[:1]]
    for x0, x1, y0, y1 in zip(fpr[:-1], fpr[1:], tpr[:-1], tpr[1:]):
        t = np.linspace(0, 1, steps + 1)[1:] if x1 > x0 and y1 > y0 else np.ones(1)
        xs.append(x0 + t * (x1 - x0))
        ys.append(y0 + t * (y1 - y0))
    return np.concatenate(xs), np.concatenate(ys)


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
                fpr, tpr = roc_points(labels, frame["score"].to_numpy())
                n = int((labels == 0).sum())
                n_neg.append(n)
                floor = 0.5 / n  # where FPR = 0 is drawn on the log axis
                label = f"{f.dataset}/{f.arch}/{f.defense} s{f.seed}" + (f" {variant}" if variant else "")
                ax.plot(np.maximum(fpr, floor), np.maximum(tpr, floor), lw=1, label=label)
        if not n_neg:
            plt.close(fig)
            drawn.append(Drawn(f"ROC {attack} {tm}", None, "scores hold only one class"))
            continue
        lowest = 0.5 / max(n_neg)
        ax.plot([lowest, 1], [lowest, 1], "k--", lw=0.8, label="chance")
        ax.axvspan(
            lowest,
            1 / min(n_neg),
            color="grey",
            alpha=0.25,
            label=f"FPR < 1/n_nonmembers (n={min(n_neg)}): too few non-members",
        )
        ax.set(
            xscale="log",
            yscale="log",
            xlim=(lowest, 1),
            ylim=(lowest, 1.05),
            xlabel="false positive rate",
            ylabel="true positive rate",
            title=f"{stats.series_label(attack, tm)}: ROC (log-log)",
        )
        ax.legend(fontsize=6, loc="lower right")
        drawn.append(
            Drawn(f"ROC {stats.series_label(attack, tm)}", _save(fig, out_dir / f"roc_{_slug(attack, tm)}.png"))
        )
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
        fig.suptitle(
            f"{s.cell}: {s.series}, TPR at 1% FPR {s.tpr:.3f}, AUC {s.auc:.3f}\n"
            f"its {len(s.examples)} highest-scoring members (label, score)",
            fontsize=9,
        )
        drawn.append(Drawn(f"{title}: {s.series}", _save(fig, out_dir / f"exposed_{_slug(s.cell_id)}.png"), s.note))
    return drawn


def inversion_figure(
    images: np.ndarray, classes: np.ndarray, recognised: np.ndarray, names: list[str], title: str, out: Path
) -> Drawn:
    """The reconstructions of one inversion attack, one column per class (headed by its name) and one
    row per reconstruction, each framed green where the independent evaluator recognised its class and
    red where it did not. ``images``: ``(N, C, H, W)`` in ``[0, 1]``; ``classes`` and ``recognised``:
    one per image."""
    columns = sorted(set(classes.tolist()))
    rows = max(int((classes == c).sum()) for c in columns)
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.1 * len(columns), 1.1 * rows + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
    for j, c in enumerate(columns):
        axes[0, j].set_title(names[c] if c < len(names) else str(c), fontsize=7)
        for i, k in enumerate(np.flatnonzero(classes == c)):
            pixels = np.clip(np.moveaxis(images[k], 0, -1), 0, 1)
            ax = axes[i, j]
            ax.imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, cmap="gray", vmin=0, vmax=1)
            for side in ax.spines.values():
                side.set_visible(True)
                side.set_color("#2ca02c" if recognised[k] else "#d62728")
                side.set_linewidth(2)
    fig.suptitle(title, fontsize=9)
    share = f"{int(recognised.sum())} of {len(recognised)}"
    note = (
        f"{title}: one column per class, one row per reconstruction; framed green where the independent "
        f"evaluator recognised the class ({share}), red where it did not."
    )
    return Drawn(title, _save(fig, out), note)

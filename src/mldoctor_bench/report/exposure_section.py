"""The report section "Which examples leak, and to which attacks", for one cell: an UpSet-style plot
of the members each membership series flags at 1% FPR (and those whose attribute leaked), Spearman's
correlation between the series' scores as a heat map, the images of the members every family
exposes, and the cross-attack rows in words (see :mod:`.exposure`)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from mldoctor_bench.report.exposure import EXPOSURE, JOIN  # noqa: E402
from mldoctor_bench.report.figures import Drawn, _save, _slug  # noqa: E402

FLAGGED_BY_EVERY_FAMILY = "flagged_by_every_family.parquet"
MAX_SETS = 8  # an UpSet plot of more sets than this becomes unreadable: the largest are kept
MAX_COMBINATIONS = 15
NOT_MEASURED = (
    f"no {EXPOSURE} with cross-attack rows (written by runs that name their examples and score with at least "
    "two membership series)."
)


def flagged_sets(table: pd.DataFrame) -> dict[str, set]:
    """Per membership series, the members it flags at 1% FPR; per attribute series, the members whose
    attribute leaked (right where the strongest baseline is wrong)."""
    sets = {}
    members = table[table["member"] == 1]
    for name, rows in members[members["family"] == "membership"].groupby("series", sort=False):
        if rows["flagged_1pct"].notna().all():
            sets[name] = set(map(tuple, rows.loc[rows["flagged_1pct"] == 1, JOIN].to_numpy()))
    for name, rows in members[members["family"] == "attribute"].groupby("series", sort=False):
        sets[f"{name} leaked"] = set(map(tuple, rows.loc[rows["leaked"] == 1, JOIN].to_numpy()))
    return sets


def upset_figure(sets: dict[str, set], out: Path, title: str) -> Drawn:
    """Bars of the exact intersections (members in these sets and no other), largest first, over a
    dot matrix of which sets each is; the sets' own sizes beside their names."""
    sets = dict(sorted(sets.items(), key=lambda kv: -len(kv[1]))[:MAX_SETS])
    if len(sets) < 2 or not any(sets.values()):
        return Drawn(title, None, "fewer than two series flag any member")
    names = list(sets)
    every = set().union(*sets.values())
    combos: dict[tuple, int] = {}
    for member in every:
        key = tuple(name in names and member in sets[name] for name in names)
        combos[key] = combos.get(key, 0) + 1
    chosen = sorted(combos.items(), key=lambda kv: -kv[1])[:MAX_COMBINATIONS]
    fig, (bars, dots) = plt.subplots(
        2,
        1,
        figsize=(max(6, 0.5 * len(chosen) + 4), 2.5 + 0.35 * len(names)),
        gridspec_kw={"height_ratios": [2, 0.25 * len(names) + 0.5]},
        sharex=True,
    )
    x = np.arange(len(chosen))
    bars.bar(x, [c for _, c in chosen], color="#4c72b0")
    for xi, (_, count) in zip(x, chosen):
        bars.text(xi, count, str(count), ha="center", va="bottom", fontsize=7)
    bars.set(ylabel="members", title=title)
    for xi, (key, _) in zip(x, chosen):
        ys = [i for i, inside in enumerate(key) if inside]
        dots.scatter([xi] * len(names), range(len(names)), color="#dddddd", s=25)
        dots.scatter([xi] * len(ys), ys, color="black", s=25)
        if len(ys) > 1:
            dots.plot([xi, xi], [min(ys), max(ys)], color="black", lw=1)
    dots.set_yticks(range(len(names)), [f"{n} ({len(sets[n])})" for n in names], fontsize=7)
    dots.set_xticks([])
    dots.invert_yaxis()
    fig.tight_layout()
    return Drawn(title, _save(fig, out))


def spearman_figure(cross: pd.DataFrame, out: Path, title: str) -> Drawn:
    """Spearman's correlation between every two membership series' scores, as a heat map."""
    pairs = cross[cross["metric"] == "spearman"]
    pairs = pairs[pairs["variant"].str.count(r" \| ") == 1]
    names = list(dict.fromkeys(n for v in pairs["variant"] for n in v.split(" | ")))
    if len(names) < 2:
        return Drawn(title, None, "fewer than two membership series")
    matrix = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for variant, value in zip(pairs["variant"], pairs["value"]):
        a, b = variant.split(" | ")
        if a in matrix.index and b in matrix.index:
            matrix.loc[a, b] = matrix.loc[b, a] = value
    fig, ax = plt.subplots(figsize=(1.5 + 0.55 * len(names), 1 + 0.5 * len(names)))
    image = ax.imshow(matrix.to_numpy(dtype=float), vmin=-1, vmax=1, cmap="coolwarm")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=6)
    ax.set_yticks(range(len(names)), names, fontsize=6)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{matrix.iat[i, j]:.2f}", ha="center", va="center", fontsize=5)
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=9)
    return Drawn(title, _save(fig, out))


def images_figure(frame: pd.DataFrame, out: Path, title: str, columns: int = 8) -> Drawn:
    """The members every family exposes, each captioned with its index (or file) and label."""
    if frame.empty:
        return Drawn(title, None, "no member is exposed by every family that ran")
    rows = -(-len(frame) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.5 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (_, ex) in zip(axes.flat, frame.iterrows()):
        pixels = np.asarray(Image.open(io.BytesIO(ex["image"])))
        ax.imshow(pixels, **({"cmap": "gray", "vmin": 0, "vmax": 255} if pixels.ndim == 2 else {}))
        name = ex["file"] if "file" in ex and isinstance(ex["file"], str) else f"#{ex['index']}"
        ax.set_title(f"{name[-14:]} y={ex['label']}", fontsize=6)
    fig.suptitle(title, fontsize=9)
    return Drawn(title, _save(fig, out))


def words(cross: pd.DataFrame) -> list[str]:
    """The cross-attack rows in sentences: agreement of the membership series against chance, the
    odds ratio of attribute leakage on exposed members, and inversion against membership by class."""
    wide = cross.pivot_table(index="variant", columns="metric", values="value", aggfunc="first")
    lines = []
    if "jaccard" in wide:
        j = wide.dropna(subset=["jaccard"])
        above = j[j["jaccard_low"] > j["jaccard_chance"]]
        lines.append(
            f"Of {len(j)} pairs of membership series, {len(above)} flag the same members at 1% FPR more "
            "often than two independent sets of their sizes would (the lower end of the Jaccard index's "
            f"95% interval above its chance value); the median Jaccard index is {j['jaccard'].median():.2f} "
            f"against a median chance value of {j['jaccard_chance'].median():.2f}."
        )
    for variant, r in wide.dropna(subset=["odds_ratio"]).iterrows() if "odds_ratio" in wide else []:
        attribute, lead = variant.split(" | ")
        verdict = "more" if r["odds_ratio_low"] > 1 else "less" if r["odds_ratio_high"] < 1 else "no more or less"
        lines.append(
            f"{attribute}: a member that {lead} flags is {verdict} likely to have its attribute inferred "
            f"correctly than one it does not (odds ratio {r['odds_ratio']:.2f}, 95% interval "
            f"{r['odds_ratio_low']:.2f} to {r['odds_ratio_high']:.2f}; {r['flagged_members']:.0f} of "
            f"{r['members']:.0f} members flagged)."
        )
    for variant, r in wide.dropna(subset=["classes"]).iterrows() if "classes" in wide else []:
        series, lead = variant.split(" | ")
        lines.append(
            f"{series}: across {r['classes']:.0f} classes, Spearman's correlation between a class's inversion "
            f"success and its members' mean membership percentile under {lead} is {r['spearman']:.2f} "
            f"(95% interval {r['spearman_low']:.2f} to {r['spearman_high']:.2f})."
        )
    return [f"- {line}" for line in lines]


def exposure_lines(cell_dir: Path, frame: pd.DataFrame, report_dir: Path, name: str) -> list[str]:
    """The section for one cell that :func:`has_exposure` (``frame``: its rows of the results table)."""
    cross = frame[(frame["attack"] == "exposure") & (frame["status"] == "ok")]
    table = pd.read_parquet(Path(cell_dir) / EXPOSURE)
    fig_dir = report_dir / "figures"
    slug = _slug(Path(cell_dir).name)
    drawn = [
        upset_figure(
            flagged_sets(table), fig_dir / f"upset_{slug}.png", f"{name}: members flagged at 1% FPR, by series"
        ),
        spearman_figure(cross, fig_dir / f"spearman_{slug}.png", f"{name}: Spearman between series' scores"),
    ]
    every = Path(cell_dir) / FLAGGED_BY_EVERY_FAMILY
    frame_every = pd.read_parquet(every) if every.exists() else pd.DataFrame()
    drawn.append(
        images_figure(
            frame_every,
            fig_dir / f"every_family_{slug}.png",
            f"{name}: members every family exposes ({len(frame_every)})",
        )
    )
    lines = []
    for d in drawn:
        lines += [
            f"![{d.title}]({d.path.relative_to(report_dir).as_posix()})"
            if d.path
            else f"- {d.title}: not drawn: {d.note}.",
            "",
        ]
    return lines + words(cross) + [""]


def section(cells: list[Path], frame: pd.DataFrame, report_dir: Path, limit: int = 6) -> list[str]:
    """The section over the report's cells (the first ``limit`` of them: one plot set per cell)."""
    lines = [
        "## Which examples leak, and to which attacks",
        "",
        "Per cell: the members each membership series flags at 1% FPR and those whose sensitive attribute "
        "leaked (UpSet plot: bars are the members in exactly the marked sets), how the series' scores "
        "correlate, the members every family that ran exposes (flagged by the strongest membership series "
        "and, where attribute inference ran, with their attribute leaked), and the cross-attack rows in words "
        "(family `exposure` in the results table; docs/reports.md says how each is computed).",
        "",
    ]
    measured = [c for c in cells if has_exposure(c, frame)]
    for cell in measured[:limit]:
        lines += [f"### {cell.name}", "", *exposure_lines(cell, rows_of(cell, frame), report_dir, cell.name)]
    if len(measured) > limit:
        lines += [f"{len(measured) - limit} more cell(s) left out; each holds its own {EXPOSURE}.", ""]
    if len(measured) < len(cells):
        lines += [f"- {len(cells) - len(measured)} cell(s) not drawn: {NOT_MEASURED}", ""]
    return lines


def rows_of(cell: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the results table that ``cell`` wrote (a cell's folder name ends with its hash)."""
    return frame[frame["config_hash"] == cell.name.rsplit("_", 1)[-1]]


def has_exposure(cell: Path, frame: pd.DataFrame) -> bool:
    """Whether ``cell`` has an exposure table and cross-attack rows to draw."""
    rows = rows_of(cell, frame)
    return (Path(cell) / EXPOSURE).exists() and bool(((rows["attack"] == "exposure") & (rows["status"] == "ok")).any())

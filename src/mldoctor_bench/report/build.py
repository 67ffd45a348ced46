"""Assemble ``report/report.md`` from the tidy table: tables, figures, and what could not be drawn."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from mldoctor_bench.report import (
    comparison_figures,
    exposure_section,
    figures,
    frontier,
    intervals,
    stats,
    stealing_curves,
    tables,
    verdicts,
)
from mldoctor_bench.report.collect import (
    Source,
    cell_configs,
    class_counts,
    exposed_sets,
    locate,
    score_files,
    score_intervals,
)
from mldoctor_bench.report.settings import latest_per_setting, with_settings
from mldoctor_bench.results import KEY, merge_tables

MIN_CORRELATION_CELLS = 3


def _figure_lines(drawn: list[figures.Drawn], report_dir: Path) -> list[str]:
    out = []
    for d in drawn:
        if d.path is None:
            out.append(f"- {d.title}: not drawn: {d.note}.")
        else:
            out.append(f"![{d.title}]({d.path.relative_to(report_dir).as_posix()})")
            if d.note:
                out.append(f"\n{d.note}")
        out.append("")
    return out


def correlation_section(frame: pd.DataFrame, fig_dir: Path, report_dir: Path) -> list[str]:
    """Figure 9: Pearson r between attack series across (dataset, arch, defense) cells."""
    matrix = stats.cell_matrix(frame)
    lines = ["## Attack-vs-attack correlation (Figure 9)", ""]
    if len(matrix) < MIN_CORRELATION_CELLS:
        reason = f"needs at least {MIN_CORRELATION_CELLS} dataset/arch/defense cells; found {len(matrix)}"
        return lines + _figure_lines(
            [comparison_figures.correlation_figure(pd.DataFrame(), fig_dir, reason)], report_dir
        )
    corr, dropped = stats.pearson_matrix(matrix, MIN_CORRELATION_CELLS)
    lines.append(
        f"Pearson r of each series' seed mean over {len(matrix)} cells (pairs need "
        f"{MIN_CORRELATION_CELLS} cells with both values)."
    )
    if dropped:
        lines.append(f"Left out (constant or in fewer than {MIN_CORRELATION_CELLS} cells): {', '.join(dropped)}.")
    lines.append("")
    lines += _figure_lines([comparison_figures.correlation_figure(corr, fig_dir)], report_dir)
    if not corr.empty:
        rows = [[name] + ["" if pd.isna(v) else f"{v:.3f}" for v in corr.loc[name]] for name in corr.index]
        lines += ["\n\n".join(tables.split_columns(["series"] + list(corr.columns), rows)), ""]
    return lines


def single_intervals(single: pd.DataFrame) -> dict:
    """One run's intervals (:func:`stats.single_run_intervals`) as the verdicts take them."""
    return {
        (a, t, v, m): (lo, hi)
        for _, a, t, v, m, lo, hi in single[stats.SINGLE_RUN_KEY + ["ci_low", "ci_high"]].itertuples(
            index=False, name=None
        )
    }


@dataclass(frozen=True)
class Material:
    """What every section of a report reads: the table with the runs' swept settings, the cells'
    saved scores, one run's intervals, and where figures go."""

    frame: pd.DataFrame
    source: Source
    report_dir: Path
    configs: pd.DataFrame
    varying: list[str]
    repeats: int
    scores: list
    single: pd.DataFrame

    @property
    def fig_dir(self) -> Path:
        return self.report_dir / "figures"

    @property
    def runs(self) -> int:
        return self.frame[["dataset", "arch", "defense", "seed", "config_hash"]].drop_duplicates().shape[0]

    def figures(self, drawn: list[figures.Drawn]) -> list[str]:
        return _figure_lines(drawn, self.report_dir)


def material(frame: pd.DataFrame, source: Source, report_dir: Path) -> Material:
    """Read what the report's sections need, once."""
    configs = cell_configs(source.cell_dirs)
    frame, varying = with_settings(frame, configs)
    frame, repeats = latest_per_setting(frame, set(configs.index))
    scores = score_files(source.cell_dirs)
    single = stats.single_run_intervals(frame, score_intervals(scores, stats.single_runs(frame)))
    return Material(frame, source, report_dir, configs, varying, repeats, scores, single)


def header(m: Material, title: str) -> list[str]:
    ok = stats.ok_rows(m.frame)
    return [
        f"# {title}",
        "",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} from {len(m.source.tables)} table(s), "
        f"{m.runs} run(s), {len(m.frame)} rows ({len(ok)} ok metric rows). How its numbers and intervals "
        'are computed: "Method notes", at the end.',
        "",
    ]


def verdict_section(m: Material) -> list[str]:
    return verdicts.verdict_lines(m.frame, single_intervals(m.single) if m.runs == 1 else None)


def grouping_notes(m: Material) -> list[str]:
    """How runs were grouped: swept settings, repeated measurements, configurations without config.yaml."""
    lines, frame = [], m.frame
    if m.varying:
        lines += [
            f"Runs differ in {', '.join(f'`{k}`' for k in m.varying)} besides dataset, arch, defense and seed: "
            "each value is its own row, never pooled with the others as if it were a seed.",
            "",
        ]
    if m.repeats:
        lines += [
            f"{m.repeats} row(s) repeat a measurement of another run with the same settings and seed (the "
            "configurations differ only in which attacks or threat models ran): the latest run's is shown.",
            "",
        ]
    ok = stats.ok_rows(frame)
    unknown = sorted(set(frame["config_hash"]) - set(m.configs.index))
    repeated = ok[ok.duplicated(KEY + ["metric", stats.SETTINGS], keep=False)]
    if unknown and not repeated.empty:
        lines += [
            f"Note: {repeated[KEY].drop_duplicates().shape[0]} key(s) were measured under more than one "
            f"configuration (different config_hash) whose config.yaml is not beside the table ({len(unknown)} "
            "run(s) without one): their values are pooled as if they were extra seeds.",
            "",
        ]
    return lines


def utility_section(m: Material) -> list[str]:
    gap = stats.target_gap(m.frame)
    return [
        "## Target utility",
        "",
        tables.utility_table(gap) if not gap.empty else "No target utility rows (attack=target).",
        "",
    ]


def low_fpr_note(m: Material) -> list[str]:
    low = stats.low_fpr_rows(m.frame)
    return [tables.LOW_FPR_NOTE, ""] if not low.empty and low["too_few"].any() else []


def paper_tables(m: Material) -> list[str]:
    """Tables 3 to 5: rows dataset/arch, columns attack x threat model, per family and metric."""
    chosen, low = stats.table_metric_rows(m.frame), stats.low_fpr_rows(m.frame)
    lines = ["## Attack tables (Tables 3 to 5)", ""]
    for (fam, metric), rows in chosen.items():
        lines += [f"### {fam}: {metric}", "", tables.summary_table(rows, single=m.single), ""]
    if not low.empty:
        lines += ["### membership: TPR at low FPR", "", tables.summary_table(low, low, m.single), ""]
    if not chosen:
        lines += ["No attack produced an ok metric.", ""]
    return lines + low_fpr_note(m)


def family_tables(m: Material) -> list[str]:
    """One model: a table per family, a row per attack series, with what its verdict compares it with."""
    chosen, low = stats.table_metric_rows(m.frame), stats.low_fpr_rows(m.frame)
    lines = ["## Numbers by attack family", ""]
    attacks = stats.attack_rows(m.frame)
    for fam in dict.fromkeys(f for f, _ in chosen):
        compared = attacks[(attacks["family"] == fam) & attacks["metric"].isin(verdicts.COMPARED.get(fam, ()))]
        rows = pd.concat(
            [r for (f, _), r in chosen.items() if f == fam]
            + [compared]
            + ([low] if fam == "membership" and not low.empty else []),
            ignore_index=True,
        )
        lines += [f"### {fam}", "", tables.series_table(rows, low, m.single), ""]
    if not chosen:
        lines += ["No attack produced an ok metric.", ""]
    return lines + low_fpr_note(m)


def audit_section(m: Material) -> list[str]:
    audit = stats.audit_rows(m.frame)
    if audit.empty:
        return []
    return [
        "## DP audit: accountant epsilon vs audited lower bounds",
        "",
        tables.audit_table(audit),
        "",
        tables.AUDIT_NOTE,
        "",
    ]


def roc_section(m: Material) -> list[str]:
    return [
        "## MemInf ROC curves (log-log)",
        "",
        "The shaded band marks FPRs below 1/n_nonmembers (no measurement there rests on one non-member).",
        "",
        *m.figures(figures.roc_figures(m.scores, m.fig_dir)),
    ]


def exposed_section(m: Material) -> list[str]:
    return [
        "## Most exposed training examples",
        "",
        "Per cell, the evaluation members that its strongest membership attack (by TPR at 1% FPR, ties "
        "by AUC, among attacks that saved them) scores highest: the training examples it exposes most.",
        "",
        *m.figures(figures.exposed_figures(exposed_sets(m.source.cell_dirs), m.fig_dir)),
    ]


def exposure_report(m: Material) -> list[str]:
    """Which examples leak, and to which attacks (per cell; see :mod:`.exposure_section`)."""
    return exposure_section.section(m.source.cell_dirs, m.frame, m.report_dir)


def frontier_section(m: Material) -> list[str]:
    """Membership power per second of compute (:mod:`.frontier`), where membership attacks ran."""
    table = frontier.frontier_of(m.source.cell_dirs)
    if table.empty:
        return []
    return [
        "## Membership power per second of compute",
        "",
        "Each membership attack's TPR at 1% FPR and AUC (mean and 95% t-interval over seeds) against what it "
        "cost the attacker beyond the target: the seconds of the models trained for it (shadow model, "
        "reference models, QMIA's regressor) plus the attack's own phase (queries, scoring). Pareto-optimal "
        "(*): no other attack is as cheap or cheaper and as strong or stronger at 1% FPR. Seconds are this "
        "machine's, under its load when the cells ran.",
        "",
        frontier.frontier_table(table),
        "",
        *m.figures(frontier.frontier_figures(table, m.fig_dir)),
    ]


def problems_section(m: Material) -> list[str]:
    lines = ["## Skipped and failed", ""]
    unsupported = tables.unsupported_lines(m.frame)
    if unsupported:
        lines += ["Threat models an attack does not support (not run):", "", *unsupported, ""]
    problems = tables.problems_table(m.frame)
    return lines + [
        problems
        or (
            "Nothing else: every other selected attack and threat model ran."
            if unsupported
            else "None: every selected attack and threat model ran."
        ),
        "",
    ]


def method_notes(m: Material) -> list[str]:
    return [
        "## Method notes",
        "",
        "Cells show mean ± sample standard deviation, the 95% confidence interval of the mean and n, the "
        "number of seeds. Over several seeds whose runs each have an interval of their own (below), the "
        "interval combines both sources of error: SE^2 = max(s^2, mean of the runs' SE^2) / n, s the spread "
        "between seeds, normal quantile (a t-interval on two or three seeds alone is wide and unstable); "
        "otherwise it is the t-interval over the seeds. Intervals are cut to the metric's range, e.g. [0, 1] "
        "for AUC. A single run (n=1) shows, where its evaluation examples allow, a 95% percentile "
        f"bootstrap interval ({intervals.BOOTSTRAP_RESAMPLES} stratified resamples of its saved membership "
        f"scores, seed {intervals.BOOTSTRAP_SEED}: AUC, advantage, TPR at low FPR), or a Wilson interval for a "
        "proportion of a known count (membership accuracy over its members and non-members, inversion's "
        "evaluator accuracy over its reconstructions), or Hanley and McNeil's for an AUC without saved "
        "scores; its other numbers have no interval. The verdicts' tests and rules: docs/verdicts.md.",
        "",
    ]


def render(frame: pd.DataFrame, source: Source, report_dir: Path, title: str = "ML-Doctor assessment report") -> str:
    """The benchmark's report: verdicts, utility, the paper's tables and figures, then the notes;
    its figures are drawn into ``report_dir/figures``."""
    m = material(frame, source, report_dir)
    sections = [
        header(m, title),
        verdict_section(m),
        grouping_notes(m),
        utility_section(m),
        paper_tables(m),
        audit_section(m),
        roc_section(m),
        exposed_section(m),
        exposure_report(m),
        frontier_section(m),
        stealing_curves.section(m.frame, m.fig_dir, m.figures),
        paper_figure_sections(m),
        problems_section(m),
        method_notes(m),
    ]
    return "\n".join(line for section in sections for line in section)


def paper_figure_sections(m: Material) -> list[str]:
    """Figures 2 to 9: attacks compared across datasets, architectures, settings and defenses."""
    frame, fig_dir = m.frame, m.fig_dir
    lines = ["## Attacks by dataset and architecture (Figures 2 to 5)", ""]
    lines += [
        "Bars: mean over seeds, whiskers: its 95% interval. Each chart's reference is what its verdict "
        "compares with: a dashed line at chance for membership (0.5 for AUC and accuracy) and inversion "
        "(1/classes); a black bar across each bar where the baseline is its own: attribute inference's "
        "strongest baseline (majority, attribute from the task label, the attacker's own model), stealing's "
        "model trained without queries, GMI's search without the target.",
        "",
    ]
    classes = class_counts(m.source.cell_dirs)
    lines += m.figures(comparison_figures.bar_figures(frame, fig_dir, classes, m.single))
    lines += ["## Attacks against training settings and the train-test gap (Figures 6 to 8)", ""]
    lines += m.figures(comparison_figures.setting_figures(frame, m.varying, fig_dir, classes, m.single))
    lines += m.figures([comparison_figures.gap_figure(frame, fig_dir)])
    lines += ["## Defense trade-off", ""]
    lines += m.figures([comparison_figures.defense_figure(frame, fig_dir)])
    return lines + correlation_section(frame, fig_dir, m.report_dir)


def build_report(path: Path, out_dir: Path | None = None) -> Path:
    """Write ``report.md`` and its figures for what ``path`` names; return the Markdown's path."""
    source = locate(path)
    report_dir = Path(out_dir) if out_dir else source.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    frame = merge_tables(source.tables)
    out = report_dir / "report.md"
    out.write_text(render(frame, source, report_dir))
    return out


def version_text() -> str:
    from mldoctor_bench.provenance import code_version
    from mldoctor_bench.version import __version__

    return f"mldoctor-report {__version__} (code {code_version()})"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: ``mldoctor-report RESULTS_DIR_OR_TABLE [--out DIR]``."""
    parser = argparse.ArgumentParser(
        prog="mldoctor-report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Turn mldoctor-bench results into report/report.md with PNG figures: target utility, the\n"
        "paper's Tables 3-5 (mean, sd and 95% interval over seeds; a bootstrap or Wilson interval\n"
        "for one run), TPR at low FPR, ROC curves, the most exposed training examples, bar charts\n"
        "per attack family, attacks against swept settings (e.g. training epochs) and the train-test\n"
        "gap, the defense trade-off, the attack correlation matrix, and every skipped or failed row.",
        epilog="examples:\n  mldoctor-report results\n  mldoctor-report results/hydra/sweeps/<time> --out /tmp/report\n"
        "  mldoctor-report /tmp/res/cells/<cell>/results.parquet",
    )
    parser.add_argument(
        "path", type=Path, help="a results directory (with cells/), a sweep folder, or a results.parquet"
    )
    parser.add_argument("--out", type=Path, default=None, help="report folder (default: <path>/report)")
    parser.add_argument("--version", "-V", action="version", version=version_text())
    args = parser.parse_args(argv)
    try:
        out = build_report(args.path, args.out)
    except FileNotFoundError as exc:
        print(f"mldoctor-report: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"report: {out}")


if __name__ == "__main__":
    main()

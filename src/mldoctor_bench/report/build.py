"""Assemble ``report/report.md`` from the tidy table: tables, figures, and what could not be drawn."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import pandas as pd

from mldoctor_bench.report import figures, intervals, stats, tables, verdicts
from mldoctor_bench.report.collect import (Source, cell_configs, class_counts, exposed_sets, locate, score_files,
                                           score_intervals)
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
        return lines + _figure_lines([figures.correlation_figure(pd.DataFrame(), fig_dir, reason)], report_dir)
    corr, dropped = stats.pearson_matrix(matrix, MIN_CORRELATION_CELLS)
    lines.append(f"Pearson r of each series' seed mean over {len(matrix)} cells (pairs need "
                 f"{MIN_CORRELATION_CELLS} cells with both values).")
    if dropped:
        lines.append(f"Left out (constant or in fewer than {MIN_CORRELATION_CELLS} cells): {', '.join(dropped)}.")
    lines.append("")
    lines += _figure_lines([figures.correlation_figure(corr, fig_dir)], report_dir)
    if not corr.empty:
        rows = [[name] + ["" if pd.isna(v) else f"{v:.3f}" for v in corr.loc[name]] for name in corr.index]
        lines += ["\n\n".join(tables.split_columns(["series"] + list(corr.columns), rows)), ""]
    return lines


def single_intervals(single: pd.DataFrame) -> dict:
    """One run's intervals (:func:`stats.single_run_intervals`) as the verdicts take them."""
    return {(a, t, v, m): (lo, hi) for _, a, t, v, m, lo, hi in
            single[stats.SINGLE_RUN_KEY + ["ci_low", "ci_high"]].itertuples(index=False, name=None)}


def render(frame: pd.DataFrame, source: Source, report_dir: Path, *, title: str = "ML-Doctor assessment report",
           preface: Sequence[str] = (), after_verdicts: Sequence[str] = (), appendix: Sequence[str] = (),
           paper_figures: bool = True) -> str:
    """The report's Markdown, drawing its figures into ``report_dir/figures``.

    ``preface`` lines come right after the opening paragraph, ``after_verdicts`` after the verdicts,
    ``appendix`` lines before the list of
    skipped and failed rows; ``paper_figures=False`` (a report on one model) gives a table per attack
    family with a row per series instead of the paper's tables, and leaves out the paper's comparison
    figures (bars per dataset and architecture, settings, defense trade-off, correlation)."""
    fig_dir = report_dir / "figures"
    configs = cell_configs(source.cell_dirs)
    frame, varying = with_settings(frame, configs)
    frame, repeats = latest_per_setting(frame, set(configs.index))
    scores = score_files(source.cell_dirs)
    single = stats.single_run_intervals(frame, score_intervals(scores, stats.single_runs(frame)))
    ok = stats.ok_rows(frame)
    n_runs = frame[["dataset", "arch", "defense", "seed", "config_hash"]].drop_duplicates().shape[0]
    lines = [
        f"# {title}", "",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} from {len(source.tables)} table(s), "
        f"{n_runs} run(s), {len(frame)} rows ({len(ok)} ok metric rows).",
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
        "scores; its other numbers have no interval.",
        "",
    ]
    lines += list(preface)
    lines += verdicts.verdict_lines(frame, single_intervals(single) if n_runs == 1 else None)
    lines += list(after_verdicts)
    if varying:
        lines += [f"Runs differ in {', '.join(f'`{k}`' for k in varying)} besides dataset, arch, defense and seed: "
                  "each value is its own row, never pooled with the others as if it were a seed.", ""]
    if repeats:
        lines += [f"{repeats} row(s) repeat a measurement of another run with the same settings and seed (the "
                  "configurations differ only in which attacks or threat models ran): the latest run's is shown.", ""]
    unknown = sorted(set(frame["config_hash"]) - set(configs.index))
    repeated = ok[ok.duplicated(KEY + ["metric", stats.SETTINGS], keep=False)]
    if unknown and not repeated.empty:
        lines += [f"Note: {repeated[KEY].drop_duplicates().shape[0]} key(s) were measured under more than one "
                  f"configuration (different config_hash) whose config.yaml is not beside the table ({len(unknown)} "
                  "run(s) without one): their values are pooled as if they were extra seeds.", ""]

    lines += ["## Target utility", ""]
    gap = stats.target_gap(frame)
    lines += [tables.utility_table(gap) if not gap.empty else "No target utility rows (attack=target).", ""]

    chosen = stats.table_metric_rows(frame)
    low = stats.low_fpr_rows(frame)
    if paper_figures:
        lines += ["## Attack tables (Tables 3 to 5)", ""]
        for (fam, metric), rows in chosen.items():
            lines += [f"### {fam}: {metric}", "", tables.summary_table(rows, single=single), ""]
        if not low.empty:
            lines += ["### membership: TPR at low FPR", "", tables.summary_table(low, low, single), ""]
    else:  # one model: a table per family, a row per attack series, with what its verdict compares
        lines += ["## Numbers by attack family", ""]
        attacks = stats.attack_rows(frame)
        for fam in dict.fromkeys(f for f, _ in chosen):
            compared = attacks[(attacks["family"] == fam) & attacks["metric"].isin(verdicts.COMPARED.get(fam, ()))]
            rows = pd.concat([r for (f, _), r in chosen.items() if f == fam] + [compared]
                             + ([low] if fam == "membership" and not low.empty else []), ignore_index=True)
            lines += [f"### {fam}", "", tables.series_table(rows, low, single), ""]
    if not chosen:
        lines += ["No attack produced an ok metric.", ""]
    if not low.empty and low["too_few"].any():
        lines += [tables.LOW_FPR_NOTE, ""]

    audit = stats.audit_rows(frame)
    if not audit.empty:
        lines += ["## DP audit: accountant epsilon vs audited lower bound", "",
                  tables.audit_table(audit), "", tables.AUDIT_NOTE, ""]

    lines += ["## MemInf ROC curves (log-log)", "",
              "The shaded band marks FPRs below 1/n_nonmembers: no measurement there rests on even one "
              "non-member.", ""]
    lines += _figure_lines(figures.roc_figures(scores, fig_dir), report_dir)
    lines += ["## Most exposed training examples", "",
              "Per cell, the evaluation members that its strongest membership attack (by TPR at 1% FPR, ties "
              "by AUC, among attacks that saved them) scores highest: the training examples it exposes most.", ""]
    lines += _figure_lines(figures.exposed_figures(exposed_sets(source.cell_dirs), fig_dir), report_dir)
    if paper_figures:
        lines += paper_figure_sections(frame, source, fig_dir, report_dir, varying, single)
    lines += list(appendix)
    lines += ["## Skipped and failed", ""]
    unsupported = tables.unsupported_lines(frame)
    if unsupported:
        lines += ["Threat models an attack does not support (not run):", "", *unsupported, ""]
    problems = tables.problems_table(frame)
    lines += [problems or ("Nothing else: every other selected attack and threat model ran." if unsupported
                           else "None: every selected attack and threat model ran."), ""]
    return "\n".join(lines)


def paper_figure_sections(frame: pd.DataFrame, source: Source, fig_dir: Path, report_dir: Path,
                          varying: list[str], single: pd.DataFrame) -> list[str]:
    """Figures 2 to 9: attacks compared across datasets, architectures, settings and defenses."""
    lines = ["## Attacks by dataset and architecture (Figures 2 to 5)", ""]
    lines += ["Bars: mean over seeds, whiskers: its 95% interval. Each chart's reference is what its verdict "
              "compares with: a dashed line at chance for membership (0.5 for AUC and accuracy) and inversion "
              "(1/classes); a black bar across each bar where the baseline is its own: attribute inference's "
              "strongest baseline (majority, attribute from the task label, the attacker's own model), stealing's "
              "model trained without queries, GMI's search without the target.", ""]
    classes = class_counts(source.cell_dirs)
    lines += _figure_lines(figures.bar_figures(frame, fig_dir, classes, single), report_dir)
    lines += ["## Attacks against training settings and the train-test gap (Figures 6 to 8)", ""]
    lines += _figure_lines(figures.setting_figures(frame, varying, fig_dir, classes, single), report_dir)
    lines += _figure_lines([figures.gap_figure(frame, fig_dir)], report_dir)
    lines += ["## Defense trade-off", ""]
    lines += _figure_lines([figures.defense_figure(frame, fig_dir)], report_dir)
    return lines + correlation_section(frame, fig_dir, report_dir)


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
    from mldoctor_bench import __version__
    from mldoctor_bench.provenance import code_version

    return f"mldoctor-report {__version__} (code {code_version()})"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: ``mldoctor-report RESULTS_DIR_OR_TABLE [--out DIR]``."""
    parser = argparse.ArgumentParser(
        prog="mldoctor-report", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Turn mldoctor-bench results into report/report.md with PNG figures: target utility, the\n"
                    "paper's Tables 3-5 (mean, sd and 95% interval over seeds; a bootstrap or Wilson interval\n"
                    "for one run), TPR at low FPR, ROC curves, the most exposed training examples, bar charts\n"
                    "per attack family, attacks against swept settings (e.g. training epochs) and the train-test\n"
                    "gap, the defense trade-off, the attack correlation matrix, and every skipped or failed row.",
        epilog="examples:\n  mldoctor-report results\n  mldoctor-report results/hydra/sweeps/<time> --out /tmp/report\n"
               "  mldoctor-report /tmp/res/cells/<cell>/results.parquet")
    parser.add_argument("path", type=Path, help="a results directory (with cells/), a sweep folder, or a results.parquet")
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

"""Terminal output: progress bars for long work and the end-of-run summary (rich, on stderr)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mldoctor_bench.metrics import too_few_negatives
from mldoctor_bench.threat_catalog import short_name

console = Console(stderr=True)
if not console.is_terminal:  # logs and CI: wide enough for the summary table
    console = Console(stderr=True, width=160)

Advance = Callable[..., None]

# Columns of the end-of-run summary: each attack family's headline numbers.
SUMMARY_METRICS = ("train_accuracy", "test_accuracy", "auc", "advantage", "tpr_at_fpr_0.001",
                   "tpr_at_fpr_0.01", "accuracy", "best_baseline_accuracy", "agreement", "eval_accuracy", "mse")
HEADERS = {"train_accuracy": "train acc", "test_accuracy": "test acc", "advantage": "adv",
           "tpr_at_fpr_0.001": "TPR@0.1%", "tpr_at_fpr_0.01": "TPR@1%", "accuracy": "acc",
           "best_baseline_accuracy": "baseline", "agreement": "agree", "eval_accuracy": "eval acc"}


class Bars:
    """Opens one bar per task; ``bar(label, total)`` returns a function that advances it."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def __call__(self, label: str, total: int) -> Advance:
        task = self._progress.add_task(label, total=total, info="")

        def advance(n: int = 1, info: str = "") -> None:
            self._progress.update(task, advance=n, info=info)

        return advance


@contextmanager
def progress_bars() -> Iterator[Bars]:
    """A live progress display for the duration of the block."""
    progress = Progress(
        TextColumn("[bold]{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    )
    with progress:
        yield Bars(progress)


def summary_table(frame: pd.DataFrame, title: str, metrics: tuple[str, ...]) -> Table:
    """A compact table: one line per (attack, threat model, variant), chosen metrics as columns."""
    table = Table(title=title, title_justify="left")
    for col in ("attack", "threat model", "variant", "status"):
        table.add_column(col, no_wrap=True)
    for m in metrics:
        table.add_column(HEADERS.get(m, m), justify="right")
    flagged = False
    unsupported = frame["reason"].str.contains("does not support", regex=False)
    for keys, group in frame[~unsupported].groupby(["attack", "threat_model", "variant"], sort=False):
        values = dict(zip(group["metric"], group["value"]))
        status = group["status"].iloc[0]
        reason = group["reason"].iloc[0]
        cells = []
        for m in metrics:
            text = f"{values[m]:.3f}" if m in values else ""
            if text and too_few_negatives(m, values.get("n_nonmembers")):
                text, flagged = text + "*", True
            cells.append(text)
        if status != "ok" and reason:
            cells = [reason[:60]] + [""] * (len(metrics) - 1)
        attack, tm, variant = keys
        table.add_row(attack, short_name(tm), variant, status, *cells)
    notes = []
    if flagged:
        notes.append("* TPR at FPR x measured on fewer than 1/x non-members: it rests on a handful of examples")
    if unsupported.any():
        notes.append(f"{int(unsupported.sum())} attack x threat-model pairs that the attack does not support "
                     "are recorded as skipped rows")
    table.caption = "\n".join(notes) or None
    return table

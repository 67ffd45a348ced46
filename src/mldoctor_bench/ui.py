"""Terminal output: progress bars for long work and the end-of-run summary (rich, on stderr)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mldoctor_bench.metrics import too_few_negatives
from mldoctor_bench.threat_catalog import short_name

console = Console(stderr=True)
if not console.is_terminal:
    # logs, CI, SLURM, `make demo > log`: plain lines that never wrap (paths stay pasteable)
    console = Console(stderr=True, soft_wrap=True, no_color=True, highlight=False, width=10_000)
INTERACTIVE = console.is_terminal

Advance = Callable[..., None]

# Columns of the end-of-run summary: each attack family's headline numbers.
SUMMARY_METRICS = ("train_accuracy", "test_accuracy", "auc", "advantage", "tpr_at_fpr_0.001",
                   "tpr_at_fpr_0.01", "accuracy", "best_baseline_accuracy", "agreement", "eval_accuracy", "mse",
                   "epsilon", "epsilon_lower_bound")
HEADERS = {"train_accuracy": "train acc", "test_accuracy": "test acc", "advantage": "adv",
           "tpr_at_fpr_0.001": "TPR@0.1%", "tpr_at_fpr_0.01": "TPR@1%", "accuracy": "acc",
           "best_baseline_accuracy": "baseline", "agreement": "agree", "eval_accuracy": "eval acc",
           "epsilon": "DP eps", "epsilon_lower_bound": "audited eps"}
LINE_EVERY_S = 15.0  # a non-terminal progress task prints a line at most this often


class Bars:
    """Opens one bar per task; ``bar(label, total)`` returns a function that advances it."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def __call__(self, label: str, total: int) -> Advance:
        task = self._progress.add_task(label, total=total, info="")

        def advance(n: int = 1, info: str = "") -> None:
            self._progress.update(task, advance=n, info=info)

        return advance


@dataclass
class _Task:
    """One task of :class:`LineBars`: how far it got, when it started and last reported."""

    label: str
    total: int
    done: int = 0
    info: str = ""
    started: float = field(default_factory=time.monotonic)
    reported: float = field(default_factory=time.monotonic)

    def line(self, now: float, word: str = "") -> str:
        text = f"{self.label}: {self.done}/{self.total} {now - self.started:.0f}s"
        return " ".join(t for t in (text, word, self.info) if t)


class LineBars:
    """Progress for a log: one line when a task starts, one every :data:`LINE_EVERY_S` seconds
    while it runs, one when it completes; tasks that stop early say so when the block ends."""

    def __init__(self, out: Console, every: float = LINE_EVERY_S) -> None:
        self.out, self.every = out, every
        self.open: dict[int, _Task] = {}
        self.opened = 0

    def __call__(self, label: str, total: int) -> Advance:
        self.opened += 1
        key, task = self.opened, _Task(label, total)
        self.open[key] = task
        self.out.print(f"{label}: started ({total})")

        def advance(n: int = 1, info: str = "") -> None:
            task.done += n
            task.info = info or task.info
            now = time.monotonic()
            if task.done >= task.total:
                if self.open.pop(key, None) is not None:
                    self.out.print(task.line(now, "done"))
            elif now - task.reported >= self.every:
                task.reported = now
                self.out.print(task.line(now))

        return advance

    def close(self) -> None:
        now = time.monotonic()
        for task in self.open.values():
            self.out.print(task.line(now, "stopped early"))
        self.open.clear()


@contextmanager
def progress_bars() -> Iterator[Bars]:
    """Live progress bars on a terminal; periodic one-line updates elsewhere."""
    if not INTERACTIVE:
        bars = LineBars(console)
        try:
            yield bars
        finally:
            bars.close()
        return
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


def print_summary(frame: pd.DataFrame, title: str, metrics: tuple[str, ...] = SUMMARY_METRICS) -> None:
    """The end-of-run summary: a table on a terminal, aligned plain text in a log."""
    if INTERACTIVE:
        console.print(summary_table(frame, title, metrics))
    else:
        console.print(plain_summary(frame, title, metrics))


def summary_rows(frame: pd.DataFrame, metrics: tuple[str, ...]) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers, rows (one per attack, threat model and variant; failures first) and notes of the
    summary."""
    headers = ["attack", "threat model", "variant", "status"] + [HEADERS.get(m, m) for m in metrics]
    flagged = False
    unsupported = frame["reason"].str.contains("does not support", regex=False)
    groups = list(frame[~unsupported].groupby(["attack", "threat_model", "variant"], sort=False))
    groups.sort(key=lambda kv: kv[1]["status"].iloc[0] != "failed")  # failures first
    rows = []
    for (attack, tm, variant), group in groups:
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
        rows.append([attack, short_name(tm), variant, status, *cells])
    notes = []
    if flagged:
        notes.append("* TPR at FPR x measured on fewer than 1/x non-members: it rests on a handful of examples")
    if unsupported.any():
        notes.append(f"{int(unsupported.sum())} attack x threat-model pairs that the attack does not support "
                     "are recorded as skipped rows")
    return headers, rows, notes


def summary_table(frame: pd.DataFrame, title: str, metrics: tuple[str, ...]) -> Table:
    """The summary as a rich table (for a terminal)."""
    headers, rows, notes = summary_rows(frame, metrics)
    table = Table(title=title, title_justify="left")
    for i, h in enumerate(headers):
        table.add_column(h, no_wrap=i < 4, justify="left" if i < 4 else "right")
    for row in rows:
        table.add_row(*row)
    table.caption = "\n".join(notes) or None
    return table


def plain_summary(frame: pd.DataFrame, title: str, metrics: tuple[str, ...]) -> str:
    """The summary as aligned plain text (for a log): full headers and cells, nothing cut."""
    headers, rows, notes = summary_rows(frame, metrics)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([title, line(headers), *(line(r) for r in rows), *notes])

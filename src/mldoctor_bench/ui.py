"""Terminal output: progress bars for long work (rich, on stderr) and the end-of-run summary (plain
lines on stdout, so ``make demo > log`` keeps it)."""

from __future__ import annotations

import textwrap
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mldoctor_bench.metrics import too_few_negatives
from mldoctor_bench.threat_catalog import short_name

console = Console(stderr=True)
if not console.is_terminal:
    # logs, CI, SLURM, `make demo > log`: plain lines that never wrap (paths stay pasteable)
    console = Console(stderr=True, soft_wrap=True, no_color=True, highlight=False, width=10_000)
INTERACTIVE = console.is_terminal

Advance = Callable[..., None]

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


# The summary's columns per attack family, in order: (metric, header). A family shows only the
# columns its rows have values in, so every number fits a 100-column terminal.
FAMILY_COLUMNS = {
    "target": (("train_accuracy", "train acc"), ("test_accuracy", "test acc")),
    "membership": (
        ("auc", "AUC"),
        ("advantage", "adv"),
        ("tpr_at_fpr_0.01", "TPR@1%"),
        ("tpr_at_fpr_0.001", "TPR@0.1%"),
        ("accuracy", "acc"),
    ),
    "inversion": (
        ("eval_accuracy", "eval acc"),
        ("no_target_eval_accuracy", "no target"),
        ("chance_accuracy", "chance"),
        ("mse", "mse"),
    ),
    "attribute": (
        ("member_accuracy", "members"),
        ("nonmember_accuracy", "non-memb"),
        ("training_leakage", "leakage"),
        ("accuracy", "test acc"),
        ("advantage_over_baseline", "distrib"),
    ),
    "stealing": (("agreement", "agree"), ("baseline_agreement", "no query"), ("agreement_over_baseline", "over")),
    "privacy_audit": (
        ("epsilon_lower_bound", "audited eps"),
        ("fdp_epsilon_lower_bound", "f-DP eps"),
        ("epsilon", "DP eps"),
        ("correct_guesses", "correct"),
    ),
    "worst_case": (("tpr_at_fpr_0.01", "TPR@1%"), ("auc", "AUC"), ("test_accuracy", "test acc"), ("epsilon", "DP eps")),
}
WIDTH = 100  # the summary's lines fit a terminal this wide
LABEL_WIDTH = 50  # "membership_label_only (B-label,S) noise_robustness" is 49
COLUMN_WIDTH = 10


def print_summary(frame: pd.DataFrame, title: str, verdicts: list[str] = ()) -> None:
    """The end-of-run summary on stdout (progress and logs go to stderr): see :func:`summary_lines`."""
    print("\n".join(summary_lines(frame, title, verdicts)), flush=True)


def labelled(label: str, paths: list[str]) -> list[str]:
    """``label`` and its paths, one a line, aligned under the first; a path that would pass
    :data:`WIDTH` columns there goes on a line of its own instead, so that it wraps nowhere it need not."""
    out = []
    for i, path in enumerate(paths):
        head = label if i == 0 else " " * len(label)
        if len(head) + 1 + len(path) <= WIDTH:
            out.append(f"{head} {path}")
            continue
        out += ([label] if i == 0 else []) + [f"  {path}"]
    return out


def summary_lines(frame: pd.DataFrame, title: str, verdicts: list[str] = ()) -> list[str]:
    """The summary as plain lines of at most 100 characters: per attack family a block with only the
    columns it has numbers in (one row per attack, threat model and variant), failures and skipped
    pairs with their reasons, then the verdicts."""
    from mldoctor_bench.report.stats import families  # torch-free, and only needed at the end of a run

    lines, flagged = [title], False
    unsupported = frame["reason"].str.contains("does not support", regex=False)
    ok = frame[(frame["status"] == "ok") & ~unsupported]
    family = families(ok).where(ok["attack"] != "target", "target")
    for fam in dict.fromkeys(family):
        rows = ok[family == fam]
        columns = [(m, h) for m, h in FAMILY_COLUMNS.get(fam, ()) if (rows["metric"] == m).any()]
        if not columns:
            continue
        lines += ["", f"{fam:<{LABEL_WIDTH}}" + "".join(f"{h:>{COLUMN_WIDTH}}" for _, h in columns)]
        for (attack, tm, variant), group in rows.groupby(["attack", "threat_model", "variant"], sort=False):
            values = dict(zip(group["metric"], group["value"]))
            label = " ".join(p for p in (attack, short_name(tm) if tm != "none" else "", variant) if p)
            cells = []
            for metric, _ in columns:
                text = f"{values[metric]:.3f}" if metric in values else ""
                if text and too_few_negatives(metric, values.get("n_nonmembers")):
                    text, flagged = text + "*", True
                cells.append(f"{text:>{COLUMN_WIDTH}}")
            lines.append((f"{label[:LABEL_WIDTH]:<{LABEL_WIDTH}}" + "".join(cells)).rstrip())
    problems = frame[(frame["status"] != "ok") & ~unsupported].drop_duplicates(["attack", "threat_model", "variant"])
    if not problems.empty:
        lines.append("")
        for _, r in problems.sort_values("status").iterrows():  # failed before skipped
            text = f"{r['status']}: {r['attack']} {short_name(r['threat_model'])}: {r['reason']}"
            lines += textwrap.wrap(
                text, WIDTH, subsequent_indent="    ", break_long_words=False, break_on_hyphens=False
            )
    notes = []
    if flagged:
        notes.append("* TPR at FPR x on fewer than 1/x non-members: it rests on a handful of examples")
    if unsupported.any():
        notes.append(f"{int(unsupported.sum())} attack x threat-model pairs the attack does not support: skipped rows")
    if verdicts:
        notes += textwrap.wrap(
            "verdicts: " + "; ".join(verdicts), WIDTH, subsequent_indent="    ", break_long_words=False
        )
    return lines + ([""] + notes if notes else [])

"""What to do about the families at risk, from the defense trade-off table this benchmark measured
(:mod:`.tradeoffs`): per family judged moderate or high, the defenses whose effect on it lies beyond
the noise of a difference, with their utility cost and the families they make worse; and the table
itself, with how it was made."""

from __future__ import annotations

import pandas as pd

from mldoctor_bench.defense_catalog import BY_NAME, OUTPUT, TRAINING, names_of
from mldoctor_bench.report import tradeoffs
from mldoctor_bench.report.evidence import HIGH, MODERATE


def caveat_of(defense: str) -> str:
    """What a measurement of ``defense`` leaves out, as its catalog entry says (empty if nothing)."""
    entry = BY_NAME.get(defense)
    return entry.caveat if entry is not None else ""


def quoted(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names)


def _difference(row: pd.Series) -> str:
    return f"{row['difference']:+.3f} [{row['difference_low']:+.3f}, {row['difference_high']:+.3f}]"


def nothing_lowered(table: pd.DataFrame, column: str) -> str:
    """Why no defense is named for ``column``: every interval of a difference includes zero, and
    the defenses whose difference has no interval (one seed, no single-run interval) are named."""
    rows = table[(table["column"] == column) & (table["defense"] != "none")]
    unmeasured = sorted(rows.loc[rows["difference_low"].isna(), "defense"])
    text = f"no defense measured lowered {column} beyond the noise"
    if len(unmeasured) < len(rows):
        text += " (the interval of every measured difference from no defense includes zero)"
    if unmeasured:
        text += f"; without an interval of the difference (too few seeds): {', '.join(unmeasured)}"
    return text + "."


def weaker_target(table: pd.DataFrame, row: pd.Series, worse: list[str]) -> str:
    """Why stealing "rises" under a defense that costs accuracy: the table's stealing column is
    agreement over a no-query model, and a weaker target errs where a plain model is right, so that
    model agrees less with it with nothing more stolen (the attack's split by where the target is
    right says which part moved)."""
    undefended = table[(table["defense"] == "none") & (table["column"] == tradeoffs.UTILITY)]["mean"]
    if "stealing" not in worse or undefended.empty or not row["utility"] < float(undefended.iloc[0]) - 0.02:
        return ""
    return (
        f" (its target is weaker, test accuracy {row['utility']:.3f} against {float(undefended.iloc[0]):.3f} "
        "undefended, which alone lowers the no-query model's agreement with it: part of that rise is this)"
    )


def remedy_lines(table: pd.DataFrame, levels: dict[str, str]) -> list[str]:
    """For each family judged moderate or high here, the defenses whose measured effect on it lies
    beyond the noise of a difference (its interval excludes zero), each with its utility and the
    families it measurably worsens: what would help, from the table alone."""
    lines = []
    for family, level in levels.items():
        if level not in (MODERATE, HIGH) or family not in tradeoffs.FAMILY_COLUMN:
            continue
        column = tradeoffs.FAMILY_COLUMN[family]
        lowered, _ = tradeoffs.effects(table, family)
        if lowered.empty:
            lines.append(f"- **{family}** ({level} here): {nothing_lowered(table, column)}")
            continue
        parts = []
        for _, row in lowered.iterrows():
            worse = [
                f
                for f in tradeoffs.FAMILY_COLUMN
                if f != family and row["defense"] in set(tradeoffs.effects(table, f)[1]["defense"])
            ]
            note = [f"the benchmark's digits model reached test accuracy {row['utility']:.3f} with it"] + (
                [caveat_of(row["defense"])] if caveat_of(row["defense"]) else []
            )
            note += [f"raises {', '.join(worse)}{weaker_target(table, row, worse)}"] if worse else []
            parts.append(f"`{row['defense']}` {_difference(row)} ({'; '.join(note)})")
        lines.append(f"- **{family}** ({level} here): {column} changed by " + "; ".join(parts) + ".")
    if lines:
        lines = [
            "What would help with the families judged moderate or high here (cheapest in accuracy first; "
            "each difference from no defense with its 95% interval, over the seeds of the benchmark's "
            "measurements):",
            "",
            *lines,
            "",
        ]
    else:
        lines = [
            "No family is judged moderate or high here: no defense is indicated by the attacks that ran (which "
            "ran, and what they could have detected, is in the verdicts and the evidence below).",
            "",
        ]
    return lines


def todo_lines(levels: dict[str, str]) -> list[str]:
    """What to do: per family at risk, the defenses that measurably lower it and what they cost."""
    try:
        table, _ = tradeoffs.shipped()
    except (FileNotFoundError, ValueError) as exc:
        return ["## What to do", "", f"The defense trade-off table is not installed ({exc}).", ""]
    return [
        "## What to do",
        "",
        *remedy_lines(table, levels),
        f"How to apply them: output-time defenses ({quoted(names_of(OUTPUT))}) change only what the deployed model "
        "releases, and `mldoctor-assess defense=<name>` assesses the model behind that release; the others "
        f"({quoted(names_of(TRAINING))}) change training and need the model retrained. The measurements behind "
        'this are in "Defense measurements" below.',
        "",
    ]


def defense_lines() -> list[str]:
    """The benchmark's own measurements of each defense's cost and effect, with how they were made."""
    try:
        table, meta = tradeoffs.shipped()
    except (FileNotFoundError, ValueError) as exc:
        return ["## Defense measurements", "", f"The defense trade-off table is not installed ({exc}).", ""]
    headers, rows = tradeoffs.wide(table)
    lines = [
        "## Defense measurements",
        "",
        "Measured by this benchmark, not estimated: one target per defense on the embedded digits "
        f"({meta.get('cell', '')}), every other setting the same; seed means with 95% intervals. Lower attack "
        "numbers are better for the owner; compare each row's utility cost with what it removes. The numbers "
        "are for that model and data: rerun the sweep on data like yours before choosing.",
        "",
        "| " + " | ".join(headers) + " |",
        "| --- |" + " ---: |" * (len(headers) - 1),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    lines += [
        "",
        *[f"- {note}" for note in meta.get("notes", [])],
        "- Why a stealing number moves: the column is the surrogate's agreement over a no-query model's. "
        "Under a defense that costs accuracy the target errs where a plain model is right, so the no-query "
        "model agrees less with it and the column rises with nothing more stolen. The stealing attack "
        "reports agreement where the target is right and where it is wrong (copying its mistakes is what "
        "only querying gives) and the share of the target's accuracy the surrogate reaches.",
        f"- Made with: `{meta.get('command', '?')}` then `{meta.get('summary', '?')}` "
        f"(code {meta.get('code_version', '?')}, {meta.get('date', '?')}).",
        "",
    ]
    return lines

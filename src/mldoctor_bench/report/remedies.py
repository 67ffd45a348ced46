"""What to do about the families at risk, from the defense tables this benchmark measured: per
family judged moderate or high, the defenses whose effect on it survives Holm's correction over the
table's comparisons, with their utility cost and the families they make worse; and the tables
themselves, with how they were made.

Membership reads the worst case (:mod:`.worst_case_table`: the canaries a defense fails to protect,
Aerni, Zhang and Tramer, CCS 2024) where that table is installed: a defense that lowers the
population's average TPR can leave the most vulnerable examples exposed. The other families read the
population table (:mod:`.tradeoffs`, the average case)."""

from __future__ import annotations

import pandas as pd

from mldoctor_bench.defense_catalog import BY_NAME, OUTPUT, TRAINING, names_of
from mldoctor_bench.report import tradeoffs
from mldoctor_bench.report import worst_case_table as worst_case
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
        text += " (no measured difference from no defense survives Holm's correction over the column's comparisons)"
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


def worse_families(table: pd.DataFrame, defense: str, family: str) -> list[str]:
    """The families other than ``family`` that ``defense`` measurably raises in the population table."""
    return [
        f for f in tradeoffs.FAMILY_COLUMN if f != family and defense in set(tradeoffs.effects(table, f)[1]["defense"])
    ]


def worst_case_line(worst: pd.DataFrame, table: pd.DataFrame, level: str) -> list[str]:
    """Membership from the worst-case table: the defenses that lower the canary TPR at 1% FPR beyond
    the noise (Holm), each with its accuracy, the DP-SGD matched to that accuracy, its average-case
    effect and what it makes worse; then, apart, the defenses that do not."""
    rows = worst_case.at_fpr(worst, 0.01)
    none = rows[rows["defense"] == "none"].iloc[0]
    tested = rows[rows["defense"] != "none"].sort_values("test_accuracy", ascending=False)
    head = (
        f"- **membership** ({level} here), in the worst case on the benchmark's digits model (canary TPR at 1% FPR, "
        "the stronger of LiRA and RMIA, "
        f"{int(none['models'])} copies x {int(none['canaries'])} canaries; no defense {none['tpr']:.3f}; Holm over "
        f"the table's {len(tested)} comparisons): "
    )
    population = tradeoffs.corrected(table, tradeoffs.FAMILY_COLUMN["membership"]).set_index("defense")
    named = []
    for _, row in tested[tested["lowered"]].iterrows():
        note = [f"test accuracy {row['test_accuracy']:.3f}"]
        if row["defense"] == "dp_sgd":
            note += [] if pd.isna(row["epsilon"]) else [f"epsilon {row['epsilon']:.3g}"]
        else:
            dp = worst_case.matched_dp(worst[worst["fpr"] == row["fpr"]], row["label"])
            note.append(
                "no DP-SGD matched to that accuracy was measured"
                if dp is None
                else f"DP-SGD at that accuracy ({dp['label']}, test accuracy {dp['test_accuracy']:.3f}, "
                f"epsilon {dp['epsilon']:.3g}): {dp['tpr']:.3f}"
            )
        if row["label"] in population.index:  # the population table measured this configuration
            pop = population.loc[row["label"]]
            note.append(f"average case: population TPR changed by {_difference(pop)}")
            worse = worse_families(table, row["label"], "membership")
            pop = pd.concat([pop, pd.Series({"utility": _utility(table, row["label"])})])
            note += [f"raises {', '.join(worse)}{weaker_target(table, pop, worse)}"] if worse else []
        if caveat_of(row["defense"]):
            note.append(caveat_of(row["defense"]))
        named.append(
            f"`{row['label']}` {row['tpr']:.3f}, changed by {row['difference']:+.3f} "
            f"[{row['difference_low']:+.3f}, {row['difference_high']:+.3f}], Holm p {row['p_holm']:.3g} "
            f"({'; '.join(note)})"
        )
    lines = [head + ("; ".join(named) if named else "no defense lowered it beyond the noise") + "."]
    kept = tested[~tested["lowered"]]
    if len(kept):
        lines.append(
            "  - Not lowered beyond the noise in the worst case, whatever their average case: "
            + ", ".join(f"`{r['label']}` {r['tpr']:.3f} (Holm p {r['p_holm']:.3g})" for _, r in kept.iterrows())
            + "."
        )
    return lines


def _utility(table: pd.DataFrame, defense: str) -> float:
    rows = table[(table["defense"] == defense) & (table["column"] == tradeoffs.UTILITY)]["mean"]
    return float(rows.iloc[0]) if len(rows) else float("nan")


def remedy_lines(table: pd.DataFrame, levels: dict[str, str], worst: pd.DataFrame | None = None) -> list[str]:
    """For each family judged moderate or high here, the defenses whose measured effect on it
    survives Holm's correction, each with its utility and the families it measurably worsens: what
    would help, from the tables alone. Membership reads ``worst`` (the worst-case table) if given."""
    lines = []
    for family, level in levels.items():
        if level not in (MODERATE, HIGH) or family not in tradeoffs.FAMILY_COLUMN:
            continue
        if family == "membership" and worst is not None:
            lines += worst_case_line(worst, table, level)
            continue
        column = tradeoffs.FAMILY_COLUMN[family]
        lowered, _ = tradeoffs.effects(table, family)
        if lowered.empty:
            lines.append(f"- **{family}** ({level} here): {nothing_lowered(table, column)}")
            continue
        parts = []
        for _, row in lowered.iterrows():
            worse = worse_families(table, row["defense"], family)
            note = [f"the benchmark's digits model reached test accuracy {row['utility']:.3f} with it"] + (
                [caveat_of(row["defense"])] if caveat_of(row["defense"]) else []
            )
            note += [f"raises {', '.join(worse)}{weaker_target(table, row, worse)}"] if worse else []
            parts.append(f"`{row['defense']}` {_difference(row)} ({'; '.join(note)})")
        lines.append(f"- **{family}** ({level} here): {column} changed by " + "; ".join(parts) + ".")
    if lines:
        lines = [
            "What would help with the families judged moderate or high here (cheapest in accuracy first; "
            "each difference from no defense with its 95% interval, named only where it survives Holm's "
            "correction over its table's comparisons; the benchmark's own measurements):",
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


def todo_lines(levels: dict[str, str], measured_here: list[str] | None = None) -> list[str]:
    """What to do: per family at risk, the defenses that measurably lower it and what they cost;
    ``measured_here``: the lines on output-time defenses measured on the assessed model itself."""
    try:
        table, _ = tradeoffs.shipped()
    except (FileNotFoundError, ValueError) as exc:
        return ["## What to do", "", f"The defense trade-off table is not installed ({exc}).", ""]
    worst, missing = shipped_worst_case()
    return [
        "## What to do",
        "",
        *remedy_lines(table, levels, worst),
        *([f"Membership reads the average case: {missing}", ""] if missing else []),
        *(measured_here or []),
        f"How to apply them: output-time defenses ({quoted(names_of(OUTPUT))}) change only what the deployed model "
        "releases (`mldoctor-assess` measures them on your model: `assess.output_defenses`); the others "
        f"({quoted(names_of(TRAINING))}) change training and need the model retrained. The benchmark's "
        'measurements behind this are in "Defense measurements" below.',
        "",
    ]


def shipped_worst_case() -> tuple[pd.DataFrame | None, str]:
    """The shipped worst-case table, or None and why it is not there."""
    try:
        return worst_case.shipped()[0], ""
    except (FileNotFoundError, ValueError) as exc:
        return None, f"the worst-case table is not installed ({exc})."


def worst_case_section() -> list[str]:
    """The worst-case table as a reader sees it, with how it was made."""
    try:
        worst, meta = worst_case.shipped()
    except (FileNotFoundError, ValueError) as exc:
        return [f"The worst-case table is not installed ({exc}).", ""]
    lines = [
        "### The worst case: canaries a defense fails to protect",
        "",
        "Per defense, copies of the target that each train on half of a set of mislabelled canaries, every "
        "copy attacked with the others as references, trained with the same defense (Aerni, Zhang and "
        "Tramer, CCS 2024): the canary TPR at 1% FPR (the stronger of LiRA and RMIA), with its 95% interval "
        "over canaries, and its difference from no defense with the paired bootstrap's interval and "
        f"Holm's p over the table's comparisons ({meta.get('cell', '')}).",
        "",
        "| defense | canary TPR at 1% FPR | difference from none | Holm p | lowered | test accuracy | epsilon "
        "| matched in accuracy to |",
        "| --- | --- | --- | ---: | --- | ---: | ---: | --- |",
    ]
    for _, r in worst_case.at_fpr(worst, 0.01).iterrows():
        diff = (
            ""
            if r["defense"] == "none"
            else f"{r['difference']:+.3f} [{r['difference_low']:+.3f}, {r['difference_high']:+.3f}]"
        )
        lines.append(
            f"| {r['label']} | {r['tpr']:.3f} [{r['low']:.3f}, {r['high']:.3f}] | {diff} "
            f"| {'' if pd.isna(r['p_holm']) else format(r['p_holm'], '.3g')} | {'yes' if r['lowered'] else ''} "
            f"| {r['test_accuracy']:.3f} | {'' if pd.isna(r['epsilon']) else format(r['epsilon'], '.3g')} "
            f"| {r['matches']} |"
        )
    lines += ["", *[f"- {note}" for note in meta.get("notes", [])]]
    lines += [
        f"- Made with: `{meta.get('command', '?')}` (code {meta.get('code_version', '?')}, {meta.get('date', '?')}).",
        "",
    ]
    return lines


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
        "Measured by this benchmark, not estimated. The average case: one target per defense on the embedded "
        f"digits ({meta.get('cell', '')}), every other setting the same, each attack scored over the population "
        "of members and non-members; seed means with 95% intervals. Lower attack "
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
        *worst_case_section(),
    ]
    return lines

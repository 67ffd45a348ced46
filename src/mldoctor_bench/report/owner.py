"""The risk report of ``mldoctor-assess``: ``report.md`` and ``report.html`` (one file, figures embedded).

It is the benchmark's report of one cell (verdicts first, then every number with its 95% interval,
TPR at low FPR, log-ROC curves, the most exposed training examples), opened by what was assessed
(the model, the data and the partition's pools) and closed by the files of the most exposed
examples and the defenses this benchmark measured, from the table that
``scripts/defense_tradeoffs.py`` writes from a documented sweep (its command is printed with it).
"""

from __future__ import annotations

import base64
import html
import json
import re
from importlib import resources
from pathlib import Path

import pandas as pd

from mldoctor_bench.cellfiles import CellFiles
from mldoctor_bench.report.build import render
from mldoctor_bench.report.collect import Source, exposed_sets
from mldoctor_bench.report.verdicts import LOW, verdicts
from mldoctor_bench.results import read_table

TRADEOFFS = "defense_tradeoffs"  # report/defense_tradeoffs.csv and .json, shipped with the package
POOLS = {
    "target_train": "evaluation members: the model's training examples that attacks are scored on",
    "target_test": "evaluation non-members: examples the model did not train on, scored against the members",
    "shadow_train": "attacker's data: trains the attacker's shadow model (non-members only)",
    "shadow_test": "attacker's data: the shadow model's non-members (non-members only)",
    "heldout": "evaluators' data: trains the inversion evaluator, which no other model sees",
}
# Without a members file no pool's membership is known.
UNKNOWN_POOLS = {
    "target_train": "a random part of the data, its membership unknown: utility is measured on it, no attack is scored on it",
    "target_test": "a random part of the data, its membership unknown: what stealing and attribute inference are scored on",
    "shadow_train": "attacker's data: trains the attacker's shadow model",
    "shadow_test": "attacker's data: the shadow model's non-members",
    "heldout": POOLS["heldout"],
}
EXPOSED_FILES = 10


def pool_lines(manifest: dict) -> list[str]:
    """What was assessed, and the partition's pools with their sizes."""
    model = manifest.get("model", {})
    arch = model.get("arch") or f"factory {model.get('factory')}"
    lines = ["## What was assessed", "",
             f"- Model: {arch}, weights `{manifest.get('weights')}`, {manifest.get('num_classes', '?')} classes, "
             f"{manifest.get('in_channels', '?')}-channel {manifest.get('image_size', '?')}x{manifest.get('image_size', '?')} "
             "images. It was not retrained: only the attacker's models were trained.",
             f"- Data: dataset `{manifest.get('dataset')}`, {manifest.get('examples', '?')} examples; members file: "
             f"`{manifest.get('members') or 'none (membership inference skipped)'}` "
             f"({manifest.get('members_listed', 0)} examples listed).", "",
             "| pool | examples | what it is |", "| --- | ---: | --- |"]
    sizes = manifest.get("sizes", {})
    for name, what in (POOLS if manifest.get("members") else UNKNOWN_POOLS).items():
        if sizes.get(name):
            lines.append(f"| {name} | {sizes[name]} | {what} |")
    lines += ["", "The pools are disjoint."]
    if not manifest.get("members"):
        lines[-1] += (" Without a members file no example is known to be a training example: the pools are "
                      "random parts of the data, membership inference and the partial threat models, whose attacker "
                      "holds known training examples, are skipped, and utility is measured on examples that may "
                      "include training ones.")
    return lines + [""]


def exposed_file_lines(cell_dir: Path, manifest: dict) -> list[str]:
    """The files of the most exposed evaluation members (``dataset=folder``), so an owner can act on them."""
    files = manifest.get("evaluation_member_files")
    if not files:
        return []
    lines = []
    for s in exposed_sets([cell_dir]):
        if s.examples is None or s.examples.empty:
            continue
        top = s.examples.head(EXPOSED_FILES)
        lines += ["## Most exposed training files", "",
                  f"The {len(top)} members that {s.series} scores highest (TPR at 1% FPR {s.tpr:.3f}): candidates to "
                  "remove, deduplicate or relabel, or whose class needs more examples.", "",
                  "| rank | file | label | score |", "| ---: | --- | ---: | ---: |"]
        for rank, (_, ex) in enumerate(top.iterrows(), start=1):
            lines.append(f"| {rank} | `{files[int(ex['member_position'])]}` | {ex['label']} | {ex['score']:.4g} |")
        lines.append("")
    return lines


def tradeoff_table() -> tuple[pd.DataFrame, dict]:
    """The shipped defense trade-off table and how it was made."""
    folder = resources.files("mldoctor_bench.report")
    table = pd.read_csv(folder.joinpath(f"{TRADEOFFS}.csv").open())
    meta = json.loads(folder.joinpath(f"{TRADEOFFS}.json").read_text())
    return table, meta


# The trade-off table's columns, as scripts/defense_tradeoffs.py writes them from the sweep:
# (column, attack or attacks (the larger value counts), threat model, metric).
TRADEOFF_COLUMNS = [
    ("test accuracy", "target", "none", "test_accuracy"),
    ("train-test gap", "target", "none", "gap"),
    ("MemInf AUC (B,S)", "membership", "blackbox_shadow", "auc"),
    ("best TPR at 1% FPR (B,S)", ("membership", "membership_rmia"), "blackbox_shadow", "tpr_at_fpr_0.01"),
    ("inversion evaluator accuracy (W,S)", "inversion", "whitebox_shadow", "eval_accuracy"),
    ("attribute advantage (W,S)", "attribute", "whitebox_shadow", "advantage_over_baseline"),
    ("stealing agreement over baseline (B,S)", "stealing", "blackbox_shadow", "agreement_over_baseline"),
]
COLUMN_OF = {metric: column for column, _, _, metric in TRADEOFF_COLUMNS}
UTILITY = COLUMN_OF["test_accuracy"]
# Per family: the column that measures it, and the smallest drop from `none` that counts (about a
# single run's 95% interval half-width there: smaller drops are not evidence).
REMEDIES = {
    "membership": (COLUMN_OF["tpr_at_fpr_0.01"], 0.03),
    "inversion": (COLUMN_OF["eval_accuracy"], 0.15),
    "attribute": (COLUMN_OF["advantage_over_baseline"], 0.03),
    "stealing": (COLUMN_OF["agreement_over_baseline"], 0.02),
}
# What a row's number leaves out, said beside it wherever the row is suggested.
CAVEATS = {"output_labels_only": "posterior attacks only: label-only attacks, not in the table, still apply"}


def remedy_lines(table: pd.DataFrame, levels: dict[str, str]) -> list[str]:
    """For each family judged moderate or high here, the defenses whose measured effect on it exceeds
    the noise, each with its utility cost: what would help, from the table alone."""
    base = table.set_index("defense")
    if "none" not in base.index:
        return []
    lines = []
    for family, level in levels.items():
        column, margin = REMEDIES.get(family, (None, 0.0))
        if level == LOW or column not in base.columns:
            continue
        before = base.loc["none", column]
        helped = [(d, r[column], r[UTILITY]) for d, r in base.iterrows()
                  if d != "none" and pd.notna(r[column]) and before - r[column] >= margin]
        if helped:
            parts = "; ".join(f"`{d}` to {value:.3f} (test accuracy {acc:.3f}"
                              + (f"; {CAVEATS[d]})" if d in CAVEATS else ")")
                              for d, value, acc in sorted(helped, key=lambda h: -h[2]))
            lines.append(f"- **{family}** ({level} here): in the benchmark's measurements, {column} fell from "
                         f"{before:.3f} without a defense (test accuracy {base.loc['none', UTILITY]:.3f}) with {parts}.")
        else:
            lines.append(f"- **{family}** ({level} here): no defense measured lowered {column} by {margin} or more.")
    if lines:
        lines = ["What would help with the families judged moderate or high here (cheapest in accuracy first):", "",
                 *lines, ""]
    return lines


def defense_lines(levels: dict[str, str] | None = None) -> list[str]:
    """Suggested defenses: the benchmark's own measurements of each defense's cost and effect, and
    for the families at risk (``levels``: family -> verdict) the defenses that lowered them."""
    try:
        table, meta = tradeoff_table()
    except (FileNotFoundError, ValueError) as exc:
        return ["## Suggested defenses", "", f"The defense trade-off table is not installed ({exc}).", ""]
    columns = [c for c in table.columns if c != "defense"]
    lines = ["## Suggested defenses", "", *remedy_lines(table, levels or {}),
             "Measured by this benchmark, not estimated: one target per defense on the embedded digits "
             f"({meta.get('cell', '')}), every other setting the same. Lower attack numbers are better for the owner; "
             "compare each row's utility cost with what it removes. The numbers are for that model and data: rerun "
             "the sweep on data like yours before choosing.", "",
             "| defense | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for _, row in table.iterrows():
        cells = ["" if pd.isna(row[c]) else (f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c])) for c in columns]
        lines.append(f"| {row['defense']} | " + " | ".join(cells) + " |")
    lines += ["", *[f"- {note}" for note in meta.get("notes", [])],
              f"- Made with: `{meta.get('command', '?')}` then `{meta.get('summary', '?')}` "
              f"(code {meta.get('code_version', '?')}, {meta.get('date', '?')}).", "",
              "How to apply them: output-time defenses (`output_topk`, `output_rounding`, `output_labels_only`) "
              "change only what the deployed model releases, and `mldoctor-assess defense=<name>` assesses the "
              "model behind that release; the others (`dp_sgd`, `distillation`, `relaxloss`) change training and "
              "need the model retrained.", ""]
    return lines


def to_html(markdown_text: str, report_dir: Path, title: str) -> str:
    """One self-contained HTML page: the Markdown rendered, every figure embedded as a data URI."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"])

    def embed(match: re.Match) -> str:
        path = report_dir / html.unescape(match.group(2))
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f'{match.group(1)}data:image/png;base64,{data}"'

    body = re.sub(r'(<img[^>]*?src=")([^"]+\.png)"', embed, body)
    style = ("body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
             "table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.25rem .5rem}"
             "th{background:#f3f3f3}img{max-width:100%}code{background:#f6f6f6;padding:0 .2rem}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n{body}\n</body></html>\n")


def write_owner_report(cell_dir: Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` for an assessed cell into ``cell_dir/report``."""
    cell_dir = Path(cell_dir)
    files = CellFiles(cell_dir)
    manifest = json.loads(files.target_manifest.read_text())
    report_dir = cell_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    frame = read_table(files.table)
    model = manifest.get("model", {})
    title = f"Risk report: {model.get('arch') or model.get('factory')} on {manifest.get('dataset')}"
    text = render(frame, Source([files.table], [cell_dir], report_dir), report_dir, title=title,
                  preface=pool_lines(manifest),
                  appendix=exposed_file_lines(cell_dir, manifest) + defense_lines({v.family: v.level for v in verdicts(frame)}),
                  paper_figures=False)
    md = report_dir / "report.md"
    md.write_text(text)
    page = report_dir / "report.html"
    page.write_text(to_html(text, report_dir, title))
    return md, page

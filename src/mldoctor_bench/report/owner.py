"""The risk report of ``mldoctor-assess``: ``report.md`` and ``report.html`` (one file, figures embedded).

In the order an owner reads it: the verdicts and the membership risk statement; what to do (the
defenses this benchmark measured to lower each family at risk beyond the noise, with their cost and
the families they make worse, from the table ``scripts/defense_tradeoffs.py`` writes from a documented
sweep); then the evidence (what was assessed, every number with its 95% interval, the inversion
reconstructions, the most exposed training files and images, log-ROC curves, the defense
measurements); then the method notes.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
from pathlib import Path

import pandas as pd

from mldoctor_bench.cellfiles import CellFiles
from mldoctor_bench.report import exposure_section, figures, frontier, stats
from mldoctor_bench.report.build import (
    Material,
    family_tables,
    grouping_notes,
    header,
    material,
    method_notes,
    problems_section,
    roc_section,
    verdict_section,
)
from mldoctor_bench.report.cell_verdicts import EXPOSED_CSV, VERDICTS
from mldoctor_bench.report.collect import Source, exposed_sets
from mldoctor_bench.report.owner_releases import release_remedies, release_section
from mldoctor_bench.report.remedies import defense_lines, todo_lines
from mldoctor_bench.report.risk_statement import risk_lines
from mldoctor_bench.report.verdicts import NOT_JUDGED
from mldoctor_bench.results import SKIPPED, SKIPPED_FOR_COST, read_table

POOLS = {
    "target_train": "evaluation members: the model's training examples that attacks are scored on",
    "target_test": "evaluation non-members: examples the model did not train on, scored against the members",
    "shadow_train": "attacker's data: trains the attacker's shadow model (non-members only)",
    "shadow_test": "attacker's data: the shadow model's non-members (non-members only)",
    "heldout": "evaluators' data: trains the inversion evaluator, which no other model sees",
}
# Without a members file no pool's membership is known.
UNKNOWN_POOLS = {
    "target_train": "a random part of the data, its membership unknown: utility is measured on it, no attack is "
    "scored on it",
    "target_test": "a random part of the data, its membership unknown: what stealing and attribute inference are "
    "scored on",
    "shadow_train": "attacker's data: trains the attacker's shadow model",
    "shadow_test": "attacker's data: the shadow model's non-members",
    "heldout": POOLS["heldout"],
}
EXPOSED_FILES = 10


def pool_lines(manifest: dict) -> list[str]:
    """What was assessed, and the partition's pools with their sizes."""
    model = manifest.get("model", {})
    arch = model.get("arch") or f"factory {model.get('factory')}"
    lines = [
        "## What was assessed",
        "",
        f"- Model: {arch}, weights `{manifest.get('weights')}`, {manifest.get('num_classes', '?')} classes, "
        f"{manifest.get('in_channels', '?')}-channel {manifest.get('image_size', '?')}x"
        f"{manifest.get('image_size', '?')} images. It was not retrained: only the attacker's models were trained.",
        f"- Data: dataset `{manifest.get('dataset')}`, {manifest.get('examples', '?')} examples; members file: "
        f"`{manifest.get('members') or 'none (membership inference skipped)'}` "
        f"({manifest.get('members_listed', 0)} examples listed).",
        *accuracy_lines(manifest),
        "",
        "| pool | examples | what it is |",
        "| --- | ---: | --- |",
    ]
    sizes = manifest.get("sizes", {})
    for name, what in (POOLS if manifest.get("members") else UNKNOWN_POOLS).items():
        if sizes.get(name):
            lines.append(f"| {name} | {sizes[name]} | {what} |")
    lines += ["", "The pools are disjoint."]
    trained, shadow = manifest.get("members_listed"), sizes.get("shadow_train")
    if manifest.get("members") and trained and shadow:
        lines[-1] += (
            f" The attacker's models are trained like the model: the shadow model on {shadow} rows, the "
            f"offline reference models on as many, against the model's {trained} training examples "
            f"(ratio {shadow / trained:.2f}"
            + (
                ""
                if shadow >= trained
                else ": the non-members could not fill more; an attacker trained on "
                "less data than the target tends to understate the risk"
            )
            + ")."
        )
    if not manifest.get("members"):
        lines[-1] += (
            " Without a members file no example is known to be a training example: the pools are "
            "random parts of the data, membership inference and the partial threat models, whose attacker "
            "holds known training examples, are skipped, and utility is measured on examples that may "
            "include training ones."
        )
    return lines + [""]


def accuracy_lines(manifest: dict) -> list[str]:
    """The model's accuracy as given on its listed members and on non-members, measured before any
    attacker model trained, and the warning where the members' is too low (inputs prepared otherwise
    than in its training)."""
    acc = manifest.get("accuracy") or {}
    lines = []
    if acc.get("members") is not None:
        lines.append(
            f"- As given, the model is right on {acc['members']:.1%} of its listed training examples and "
            f"{acc['nonmembers']:.1%} of the non-members."
        )
    if manifest.get("preprocessing_warning"):
        lines.append(f"- **Warning**: {manifest['preprocessing_warning']}.")
    return lines


def rejected_series(data: dict) -> set[tuple[str, str, str]]:
    """The membership series (attack, threat model, variant) of ``verdicts.json`` data that rejected
    no leakage: the only ones whose most exposed members are more than chance."""
    membership = data.get("families", {}).get("membership", {})
    if membership.get("level") == NOT_JUDGED:
        return set()
    return {(j["attack"], j["threat_model"], j["variant"]) for j in membership.get("judged", []) if j.get("rejected")}


def exposed_file_lines(m: Material, cell_dir: Path, manifest: dict, data: dict) -> list[str]:
    """The most exposed evaluation members of the strongest membership series that rejected no
    leakage: their files (``dataset=folder``, found by dataset index, so a series that scored only
    some of the members names the right ones) and their images."""
    rejected = rejected_series(data)
    lines = ["## Most exposed training examples", ""]
    if data.get("families", {}).get("membership", {}).get("level") == NOT_JUDGED:
        return lines + ["None listed: membership is not judged (see the verdicts).", ""]
    if not rejected:
        return lines + ["None listed: no membership series rejects no leakage, so no member stands out.", ""]
    [exposed] = exposed_sets([cell_dir], only=rejected)
    if exposed.examples is None or exposed.examples.empty:
        return lines + [f"None listed: {exposed.note}.", ""]
    top = exposed.examples.head(EXPOSED_FILES)
    top = exposed.examples[exposed.examples["score"] >= top["score"].min()]  # members tied with the last too
    tied = (
        f" ({len(top) - EXPOSED_FILES} more tie with the {EXPOSED_FILES}th; all listed"
        + (", and maybe more: the attack saved its 32 highest" if len(top) == len(exposed.examples) else "")
        + ")"
        if len(top) > EXPOSED_FILES
        else ""
    )
    lines += [
        f"The {len(top)} members that {exposed.series} scores highest{tied} (TPR at 1% FPR {exposed.tpr:.3f}; "
        "it rejects no leakage): candidates to remove, deduplicate or relabel, or whose class needs more "
        "examples.",
        "",
    ]
    files = manifest.get("evaluation_member_files") or {}  # dataset index -> file (a list before 2026-12-07)
    if isinstance(files, dict) and files and "index" in top:
        lines += ["| rank | file | label | score |", "| ---: | --- | ---: | ---: |"]
        for rank, (_, ex) in enumerate(top.iterrows(), start=1):
            lines.append(f"| {rank} | `{files[str(int(ex['index']))]}` | {ex['label']} | {ex['score']:.4g} |")
        lines.append("")
    return lines + m.figures(figures.exposed_figures([exposed], m.fig_dir))


FLAGGED_LISTED = 20


def leak_lines(m: Material, cell_dir: Path) -> list[str]:
    """Which examples leak, and to which attacks: the section of :mod:`.exposure_section`, then the
    training examples of ``exposed.csv`` with every attack series that flags each, most flagged first."""
    lines = ["## Which examples leak, and to which attacks", ""]
    if exposure_section.has_exposure(cell_dir, m.frame):
        lines += exposure_section.exposure_lines(cell_dir, m.frame, m.report_dir, "this model")
    else:
        lines += [exposure_section.NOT_MEASURED, ""]
    path = cell_dir / EXPOSED_CSV
    flagged = pd.read_csv(path) if path.exists() else pd.DataFrame()
    flagged = flagged[flagged["fpr"] == 0.01] if not flagged.empty else flagged
    if flagged.empty:
        return lines
    key = "file" if "file" in flagged and flagged["file"].notna().all() else "index"
    grouped = flagged.groupby(key)["series"].agg(lambda s: sorted(set(s)))
    grouped = grouped.iloc[sorted(range(len(grouped)), key=lambda i: -len(grouped.iloc[i]))][:FLAGGED_LISTED]
    lines += [
        f"The training examples flagged at 1% FPR by the most attack series (of {len(set(flagged[key]))} flagged "
        f"by any; all in `{EXPOSED_CSV}`):",
        "",
        f"| {key} | series flagging it |",
        "| --- | --- |",
    ]
    lines += [f"| `{name}` | {len(series)}: {', '.join(series)} |" for name, series in grouped.items()]
    return lines + [""]


def inversion_lines(m: Material, class_names: list[str]) -> list[str]:
    """The reconstructions the inversion verdict rests on: each attack's, labelled by class and by what
    the evaluator recognised (from the tensors the attack saved); the no-target search's as saved."""
    from safetensors.numpy import load_file

    found = sorted(g for d in m.source.cell_dirs for g in Path(d).glob("inversion/*/inversion_*.png"))
    if not found:
        return []
    lines = [
        "## Model inversion: the reconstructions",
        "",
        "An independent evaluator judged each reconstruction. `gmi_no_target`: the same search guided by the "
        "attacker's own shadow model instead of the target, what it gets without the target.",
        "",
    ]
    drawn = []
    for grid in found:
        name, tm = grid.stem.removeprefix("inversion_"), grid.parent.name
        title = f"{name} ({tm})"
        tensors = grid.with_suffix(".safetensors")
        if tensors.exists():
            t = load_file(str(tensors))
            recognised = t["evaluator_prediction"] == t["classes"]
            out = m.fig_dir / f"inversion_{tm}_{name}.png"
            drawn.append(figures.inversion_figure(t["images"], t["classes"], recognised, class_names, title, out))
            continue
        copy = m.fig_dir / f"{tm}_{grid.name}"
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(grid, copy)
        note = f"{title}: one row per reconstruction, one column per class in class order."
        drawn.append(figures.Drawn(title, copy, note))
    return lines + m.figures(drawn)


def to_html(markdown_text: str, report_dir: Path, title: str) -> str:
    """One self-contained HTML page: the Markdown rendered, every figure embedded as a data URI."""
    import markdown

    converter = markdown.Markdown(extensions=["tables", "toc"])
    body = converter.convert(markdown_text)
    # the table of contents after the title: a long page an owner navigates by its sections
    body = body.replace("</h1>", f"</h1>\n<nav><strong>Contents</strong>{converter.toc}</nav>", 1)

    def embed(match: re.Match) -> str:
        path = report_dir / html.unescape(match.group(2))
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f'{match.group(1)}data:image/png;base64,{data}"'

    body = re.sub(r'(<img[^>]*?src=")([^"]+\.png)"', embed, body)
    style = (
        "body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
        "table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #ccc;padding:.25rem .5rem}"
        "th{background:#f3f3f3}img{max-width:100%}code{background:#f6f6f6;padding:0 .2rem}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>\n{body}\n</body></html>\n"
    )


def budget_lines(m: Material, cell_dir: Path) -> list[str]:
    """Which membership attacks ran with what they cost the attacker, and which the budget left out."""
    rows = m.frame[stats.families(m.frame) == "membership"]
    over = rows[(rows["status"] == SKIPPED) & rows["reason"].str.startswith(SKIPPED_FOR_COST)]
    ran = frontier.frontier_of([cell_dir])
    if ran.empty and over.empty:
        return []
    lines = ["## Membership attacks: what each cost, and what was left out for cost", ""]
    if not ran.empty:
        lines += [
            "What each membership attack cost the attacker in this run: the seconds of the models it uses "
            "(the shadow model, reference models, QMIA's regressor) plus its own attack phase:",
            "",
            frontier.frontier_table(ran),
            "",
        ]
    for row in over.itertuples():
        lines.append(f"- {stats.series_label(row.attack, row.threat_model)}: {row.reason}.")
    return lines + ([""] if len(over) else [])


def write_owner_report(cell_dir: Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` for an assessed cell into ``cell_dir/report``."""
    cell_dir = Path(cell_dir)
    files = CellFiles(cell_dir)
    manifest = json.loads(files.target_manifest.read_text())
    report_dir = cell_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    frame = read_table(files.table)
    model = manifest.get("model", {})
    where = f" {Path(manifest['folder']).name}" if manifest.get("folder") else ""
    title = f"Risk report: {model.get('arch') or model.get('factory')} on {manifest.get('dataset')}{where}"
    data = json.loads((cell_dir / VERDICTS).read_text()) if (cell_dir / VERDICTS).exists() else {}
    m = material(frame, Source([files.table], [cell_dir], report_dir), report_dir)
    levels = {f: v["level"] for f, v in data.get("families", {}).items()}
    sections = [
        header(m, title),
        verdict_section(m),
        risk_lines(data),
        todo_lines(levels, release_remedies(cell_dir, levels)),
        release_section(cell_dir),
        pool_lines(manifest),
        family_tables(m),
        budget_lines(m, cell_dir),
        inversion_lines(m, manifest.get("class_names") or []),
        exposed_file_lines(m, cell_dir, manifest, data),
        leak_lines(m, cell_dir),
        roc_section(m),
        defense_lines(),
        grouping_notes(m),
        problems_section(m),
        method_notes(m),
    ]
    text = "\n".join(line for section in sections for line in section)
    md = report_dir / "report.md"
    md.write_text(text)
    page = report_dir / "report.html"
    page.write_text(to_html(text, report_dir, title))
    return md, page

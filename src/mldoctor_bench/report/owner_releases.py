"""Output-time defenses measured on the owner's own model (``mldoctor-assess``,
``assess.output_defenses``): per release (the model's outputs as released now, and through each
defense), the black-box verdicts under the same rules, on the same examples, with the same attacks.
An output-time defense changes only what is released: an attacker with the weights is untouched, so
the comparison keeps the black-box series of the assessment alone. Lines for the report's table and
for "What to do"."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from mldoctor_bench.cellfiles import CellFiles
from mldoctor_bench.report.cell_verdicts import bootstrap_lookup
from mldoctor_bench.report.evidence import HIGH, MODERATE
from mldoctor_bench.report.verdicts import Verdict, verdicts
from mldoctor_bench.results import read_table
from mldoctor_bench.threat_catalog import THREAT_MODELS, WHITEBOX

RELEASES = "releases.json"  # written by mldoctor-assess beside the assessed cell's table
AS_RELEASED = "as released"
RANK = {"low": 0, MODERATE: 1, HIGH: 2}


@dataclass(frozen=True)
class Release:
    """One release's black-box verdicts by family and the released top-1 test accuracy (or why its
    cell has none)."""

    name: str
    verdicts: dict[str, Verdict]
    accuracy: float = float("nan")
    problem: str = ""


def blackbox(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of attacks under a threat model without white-box access (and the target's own)."""
    tm = frame["threat_model"].astype(str)
    white = tm.map(lambda t: t in THREAT_MODELS and THREAT_MODELS.get(t).access == WHITEBOX)
    return frame[~white]


def release(name: str, cell_dir: Path) -> Release:
    """``cell_dir``'s black-box verdicts and its target's test accuracy."""
    frame = blackbox(read_table(CellFiles(cell_dir).table))
    found = {v.family: v for v in verdicts(frame, bootstrap_lookup(cell_dir, frame))}
    target = frame[(frame["attack"] == "target") & (frame["metric"] == "test_accuracy")]["value"]
    return Release(name, found, float(target.iloc[0]) if len(target) else float("nan"))


def releases(cell_dir: Path) -> Optional[list[Release]]:
    """The release as it is and each measured output-time defense, or None where none was measured."""
    listed = cell_dir / RELEASES
    if not listed.is_file():
        return None
    out = [release(AS_RELEASED, cell_dir)]
    for name, entry in json.loads(listed.read_text()).items():
        folder = cell_dir.parent / entry["cell"] if entry.get("cell") else None
        if folder is None or not CellFiles(folder).table.is_file():
            out.append(Release(name, {}, problem=entry.get("reason") or "its cell has no results"))
            continue
        out.append(release(name, folder))
    return out


def cell_text(v: Optional[Verdict]) -> str:
    if v is None:
        return "not judged"
    return f"{v.label} ({v.series}: {v.statistic} {v.value:.3f})"


def release_section(cell_dir: Path) -> list[str]:
    """The table of releases: per family, the black-box verdict with the statistic it rests on."""
    found = releases(cell_dir)
    if not found:
        return []
    families = [f for f in ("membership", "attribute", "inversion", "stealing") if any(f in r.verdicts for r in found)]
    lines = [
        "## Output-time defenses on your model",
        "",
        "Your model's outputs released as they are and through each output-time defense "
        "(`assess.output_defenses`), the black-box attacks of this assessment rerun against each release on "
        "the same examples and judged by the same rules (white-box attacks are left out: an attacker with "
        "the weights sees no release). The model is not retrained.",
        "",
        "| release | test accuracy | " + " | ".join(families) + " |",
        "| --- | ---: |" + " --- |" * len(families),
    ]
    for r in found:
        if r.problem:
            lines.append(f"| {r.name} | | failed: {r.problem} |" + " |" * (len(families) - 1))
            continue
        cells = [cell_text(r.verdicts.get(f)) for f in families]
        lines.append(f"| {r.name} | {r.accuracy:.3f} | " + " | ".join(cells) + " |")
    return lines + [""]


def release_remedies(cell_dir: Path, levels: dict[str, str]) -> list[str]:
    """For each family judged moderate or high: the output-time defenses under which its black-box
    verdict on this model is lower than as released, quoting both; or that none is."""
    found = releases(cell_dir)
    if not found:
        return []
    now, measured = found[0], [r for r in found[1:] if not r.problem]
    lines = []
    for family, level in levels.items():
        if level not in (MODERATE, HIGH) or family not in now.verdicts:
            continue
        before = now.verdicts[family]
        lower = [r for r in measured if family in r.verdicts and RANK[r.verdicts[family].level] < RANK[before.level]]
        if lower:
            parts = [f"`{r.name}` {cell_text(r.verdicts[family])}, test accuracy {r.accuracy:.3f}" for r in lower]
            lines.append(
                f"- **{family}** on your model, black-box attacks: {cell_text(before)} as released; lower under "
                + "; ".join(parts)
                + "."
            )
        else:
            tried = ", ".join(f"`{r.name}`" for r in measured) or "none ran"
            lines.append(
                f"- **{family}** on your model, black-box attacks: {cell_text(before)} as released; no output-time "
                f"defense measured here ({tried}) judged it lower."
            )
    if not lines:
        return []
    return [
        'Output-time defenses measured on your model (the table is under "Output-time defenses on your '
        "model\"; each verdict tested as the assessment's are):",
        "",
        *lines,
        "",
    ]

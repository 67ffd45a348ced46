"""The defenses as plain data: what each changes (training or output), and what a report must say
beside its numbers, in the order reports list them (no defense, then output-time, then training-time
defenses, cheapest in effort first).

No torch here, so the report can list and qualify defenses without loading a model stack; the
defenses themselves are registered in :mod:`mldoctor_bench.defenses`, each against its entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

NONE, TRAINING, OUTPUT = "none", "training", "output"


@dataclass(frozen=True)
class DefenseEntry:
    """One defense: its config name, ``kind`` (none, training or output) and ``caveat`` (what a
    measurement of it leaves out, said wherever a report suggests it; empty if nothing)."""

    name: str
    kind: str
    caveat: str = ""


CATALOG = (
    DefenseEntry("none", NONE),
    DefenseEntry("output_rounding", OUTPUT),
    DefenseEntry("output_topk", OUTPUT),
    DefenseEntry(
        "output_labels_only", OUTPUT, "posterior attacks only: label-only attacks, not in the table, still apply"
    ),
    DefenseEntry("relaxloss", TRAINING),
    DefenseEntry("distillation", TRAINING),
    DefenseEntry("dp_sgd", TRAINING),
)
BY_NAME = {entry.name: entry for entry in CATALOG}
ORDER = [entry.name for entry in CATALOG]


def names_of(kind: str) -> list[str]:
    """The defenses of ``kind``, in the catalog's order."""
    return [entry.name for entry in CATALOG if entry.kind == kind]


def check_entry(name: str, defense: object) -> None:
    """Refuse a registered defense without an entry here, or whose ``kind`` differs from its entry's."""
    entry = BY_NAME.get(name)
    if entry is None:
        raise ValueError(f"defense {name!r} has no entry in mldoctor_bench.defense_catalog.CATALOG; add one")
    if getattr(defense, "kind", None) != entry.kind:
        raise ValueError(
            f"defense {name!r} has kind {getattr(defense, 'kind', None)!r}, its catalog entry {entry.kind!r}"
        )

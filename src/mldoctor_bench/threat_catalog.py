"""The six threat models as plain data: name, model access, auxiliary knowledge, paper notation.

No torch here, so the report and the console can name threat models without loading a model
stack; the access objects that enforce them live in :mod:`mldoctor_bench.threat_models`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mldoctor_bench.registry import Registry

BLACKBOX, LABEL_ONLY, WHITEBOX = "blackbox", "label_only", "whitebox"
SHADOW, PARTIAL, NONE = "shadow", "partial", "none"


@dataclass(frozen=True)
class ThreatModel:
    """A named pair of model access and auxiliary-data knowledge."""

    name: str
    access: str  # blackbox | label_only | whitebox
    knowledge: str  # shadow | partial | none

    @property
    def short(self) -> str:
        """The paper's notation, e.g. ``(B,S)``."""
        a = {BLACKBOX: "B", LABEL_ONLY: "B-label", WHITEBOX: "W"}[self.access]
        return f"({a},{self.knowledge[0].upper()})"


THREAT_MODELS: Registry[ThreatModel] = Registry("threat model")
for _tm in (
    ThreatModel("blackbox_shadow", BLACKBOX, SHADOW),
    ThreatModel("blackbox_partial", BLACKBOX, PARTIAL),
    ThreatModel("blackbox_label_only", LABEL_ONLY, SHADOW),
    ThreatModel("whitebox_shadow", WHITEBOX, SHADOW),
    ThreatModel("whitebox_partial", WHITEBOX, PARTIAL),
    ThreatModel("whitebox_none", WHITEBOX, NONE),
):
    THREAT_MODELS.register(_tm.name)(_tm)


def short_name(name: str) -> str:
    """The paper's notation of threat model ``name``; an unknown name is returned as it is."""
    return THREAT_MODELS.get(name).short if name in THREAT_MODELS else name

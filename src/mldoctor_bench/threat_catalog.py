"""The threat models as plain data: name, model access, auxiliary knowledge, paper notation.

No torch here, so the report and the console can name threat models without loading a model
stack; the access objects that enforce them live in :mod:`mldoctor_bench.threat_models`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mldoctor_bench.registry import Registry

BLACKBOX, LABEL_ONLY, WHITEBOX = "blackbox", "label_only", "whitebox"
SHADOW, PARTIAL, NONE, OWNER = "shadow", "partial", "none", "owner"


@dataclass(frozen=True)
class ThreatModel:
    """A named pair of model access and auxiliary-data knowledge."""

    name: str
    access: str  # blackbox | label_only | whitebox
    knowledge: str  # shadow | partial | none | owner

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
    # The model owner auditing its own training: it holds the training data, may add canaries to
    # it, and scores the released model through its black-box API (Steinke et al. 2023).
    ThreatModel("auditor", BLACKBOX, OWNER),
):
    THREAT_MODELS.register(_tm.name)(_tm)


def short_name(name: str) -> str:
    """The paper's notation of threat model ``name``; an unknown name is returned as it is."""
    return THREAT_MODELS.get(name).short if name in THREAT_MODELS else name

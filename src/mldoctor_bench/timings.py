"""Where a cell's time goes: every model trained or loaded and every attack, as timed phases.

Phases nest (an attack trains its surrogate inside its own phase); each phase's ``self_s`` is its
time minus its sub-phases', so the largest phases are where the time really goes. The cell writes
the list to ``timings.json`` and its summary names the largest.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from mldoctor_bench.files import atomic_write_text

MODEL, ATTACK, DATA = "model", "attack", "data"
# In an attack phase's ``info``: the models the attack asked for, each ``{"role", "series"}`` (the
# variants whose scores use it; ``None``: every variant of the attack). A model phase's ``info``
# ``models`` says what each role cost to train: the report joins the two by role.
ASKED = "asked"


def asked_entry(role: str, series: Optional[tuple[str, ...]] = None) -> dict:
    """One model an attack asked for, as :data:`ASKED` lists it."""
    return {"role": role, "series": None if series is None else list(series)}


@dataclass
class Phase:
    """One timed piece of work: ``kind`` is model, attack or data; ``info`` what it did (trained or
    loaded, images per second ...)."""

    name: str
    kind: str
    seconds: float = 0.0
    self_s: float = 0.0
    parent: Optional[int] = None
    info: dict = field(default_factory=dict)


class Timings:
    """The phases of one run, in the order they started."""

    def __init__(self, **context) -> None:
        self.context = context  # what the run's times depend on besides the code (e.g. torch_threads)
        self.phases: list[Phase] = []
        self._open: list[int] = []
        self._started = time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str, kind: str, **info) -> Iterator[Phase]:
        """Time the ``with`` block as a phase (nested in the phase open around it); the block may
        add to the yielded phase's ``info``."""
        record = Phase(name, kind, parent=self._open[-1] if self._open else None, info=dict(info))
        self.phases.append(record)
        index = len(self.phases) - 1
        self._open.append(index)
        start = time.perf_counter()
        try:
            yield record
        finally:
            self._open.pop()
            record.seconds = round(time.perf_counter() - start, 3)
            inner = sum(p.seconds for p in self.phases if p.parent == index)
            record.self_s = round(max(record.seconds - inner, 0.0), 3)

    def total(self) -> float:
        return round(time.perf_counter() - self._started, 3)

    def largest(self, n: int = 3) -> list[Phase]:
        """The ``n`` phases with the most time of their own."""
        return sorted(self.phases, key=lambda p: p.self_s, reverse=True)[:n]

    def as_dict(self) -> dict:
        return {"total_s": self.total(), **self.context, "phases": [asdict(p) for p in self.phases]}

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.as_dict(), indent=2, default=str))

    def headline(self, n: int = 3) -> str:
        """The total, then the largest phases with their share of it, one per line (a terminal of
        100 columns shows each whole)."""
        total = self.total()
        parts = [f"  {p.name} {p.self_s:.0f} s ({100 * p.self_s / total:.0f}%)" for p in self.largest(n) if total > 0]
        return "\n".join([f"time: {total:.0f} s; largest:", *parts])

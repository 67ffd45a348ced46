"""A small trained cell (target and shadow on the embedded data) for testing attacks directly.

``prepared_cell(tmp, *overrides)`` composes the real config, trains through the real cell (so models
are cached under ``tmp``) and returns the :class:`~mldoctor_bench.cell.CellRun`;
``cell.context(attack, tm)`` then gives exactly what the attack receives in a real run.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hydra import compose, initialize_config_module

from mldoctor_bench.cell import CellRun, prepared
from mldoctor_bench.settings import as_dict, parse

# Small but real: 200 training images and enough epochs to overfit visibly (train acc 1.0).
SMALL = ["data.quarter_size=200", "train.epochs=80", "device=cpu"]


def all_attacks() -> str:
    """An ``attack=[...]`` override selecting every attack config, so each has its settings."""
    from mldoctor_bench.attacks import ATTACKS

    return f"attack=[{','.join(ATTACKS.names())}]"


def with_settings(ctx, **changes):
    """A copy of the attack context ``ctx`` with some of its typed settings changed (checked like
    the command line's)."""
    settings = as_dict(ctx.settings)
    unknown = set(changes) - set(settings)
    if unknown:
        raise KeyError(f"no such settings: {sorted(unknown)}")
    return replace(ctx, settings=parse(type(ctx.settings), {**settings, **changes}, "attack"))


def prepared_cell(results_dir: Path, *overrides: str) -> CellRun:
    """Compose the config with ``overrides``, then train (or load) the cell's target and shadow."""
    with initialize_config_module("mldoctor_bench.conf", version_base="1.3"):
        cfg = compose("config", overrides=[*SMALL, f"results_dir={results_dir}", *overrides])
    return prepared(cfg)

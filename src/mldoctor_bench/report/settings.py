"""Which settings tell a table's runs apart, beyond dataset, arch, defense and seed.

A sweep over ``train.epochs`` makes cells that share dataset, arch, defense and seed but not their
results; pooling them as if they were seeds loses the x-axis of Figure 8 and miscounts n. Every
setting that takes two or more values among the runs that have it becomes a grouping column.

Pure functions of data frames: :func:`mldoctor_bench.report.collect.cell_configs` reads the files.
"""

from __future__ import annotations

import json

import pandas as pd

from mldoctor_bench.cellfiles import LOCATION_KEYS
from mldoctor_bench.results import KEY

# Keys of a cell's config.yaml that say where things are, are columns of the table already, or
# only describe the selected threat models.
IGNORED = (
    *LOCATION_KEYS,
    "seed",
    "dataset.name",
    "arch.name",
    "defense.name",
    "threat_model",
)
SETTING_PREFIX = "setting:"  # a grouping column holding one varying setting's value
LABEL = "settings"  # the column naming a run's varying settings, e.g. "train.epochs=10" ("" if none vary)


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """``{"train.epochs": 80, ...}`` from a nested config; lists become JSON text and ``None``
    ``"null"`` (a value, unlike a key the config does not have)."""
    out: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else "null" if value is None else value
    return out


def _ignored(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in IGNORED)


GROUP = ("dataset.name", "arch.name", "defense.name")  # settings compared only within one of these


def varying_settings(configs: pd.DataFrame) -> list[str]:
    """Flattened keys of ``configs`` (one row per run, index ``config_hash``) that take two or more
    values among runs of the same dataset, arch and defense that have the key, less :data:`IGNORED`
    ones. A key only some runs have (an attack's settings where only some runs selected it) varies
    only if those runs disagree; two defenses' own settings (``defense.alpha``) are never compared."""
    groups = [c for c in GROUP if c in configs.columns]
    grouped = configs.groupby(groups, dropna=False) if groups else [((), configs)]
    keys = []
    for key in configs.columns:
        if _ignored(key):
            continue
        if any(g[key].dropna().astype(str).nunique() > 1 for _, g in grouped):
            keys.append(key)
    return keys


def latest_per_setting(frame: pd.DataFrame, known: set[str]) -> tuple[pd.DataFrame, int]:
    """Keep the latest row of each measurement that several runs with the same settings and seed
    repeat (configurations that differ only in which attacks or threat models were selected, once
    the settings label is added by :func:`with_settings`), and say how many rows were dropped. Rows
    of runs whose configuration is not ``known`` are kept: their settings cannot be compared."""
    mine = frame["config_hash"].isin(known)
    kept = frame[mine].sort_values("started_at", kind="stable").drop_duplicates(KEY + ["metric", LABEL], keep="last")
    out = pd.concat([kept, frame[~mine]]).sort_index()
    return out, len(frame) - len(out)


def _text(value) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def with_settings(frame: pd.DataFrame, configs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``frame`` with a :data:`LABEL` column and a ``setting:<key>`` column per varying key (runs
    without a config get NaN there and an empty label), and the varying keys."""
    frame = frame.copy()
    keys = varying_settings(configs) if not configs.empty else []
    labels = pd.Series("", index=frame.index, dtype=object)
    for key in keys:
        values = frame["config_hash"].map(configs[key])
        frame[SETTING_PREFIX + key] = values
        part = values.map(lambda v, k=key: "" if pd.isna(v) else f"{k}={_text(v)}")
        labels = labels.str.cat(part, sep=", ").str.strip(", ")
    frame[LABEL] = labels
    return frame, keys


def sort_key(label: str) -> tuple:
    """Order settings labels by their values, numbers as numbers (``epochs=3`` before ``epochs=10``)."""
    parts = []
    for item in str(label).split(", "):
        name, _, value = item.partition("=")
        try:
            parts.append((name, 0, float(value), ""))
        except ValueError:
            parts.append((name, 1, 0.0, value))
    return tuple(parts)

"""scripts/bench_against.py: the side-by-side table, the budget check and the shipped budgets."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_against.py"
spec = importlib.util.spec_from_file_location("bench_against", SCRIPT)
bench_against = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench_against
spec.loader.exec_module(bench_against)


def run(wall: float, **phases: float) -> dict:
    return {"wall_s": wall, "phases": {name.replace("_", " "): s for name, s in phases.items()}}


def test_the_table_gives_each_phase_its_median_for_both_and_their_ratio():
    runs = {
        "rev": [run(100.0, train=40.0, attack=10.0), run(110.0, train=44.0, attack=12.0)],
        "tree": [run(120.0, train=42.0, attack=24.0), run(130.0, train=42.0, attack=26.0)],
    }
    lines = bench_against.table("default", runs, {"rev": "abc1234", "tree": "working tree"})
    assert "| train | 42.0 | 42.0 | 1.00 |" in lines
    assert "| attack | 11.0 | 25.0 | 2.27 |" in lines
    [wall] = [line for line in lines if "wall time" in line]
    assert wall.endswith("| 105.0 | 125.0 | 1.19 |") and "100.0, 110.0 / 120.0, 130.0" in wall


def test_a_phase_grown_beyond_its_budget_share_by_more_than_a_tenth_is_named(tmp_path, monkeypatch):
    budgets = tmp_path / "bench_budgets.json"
    budgets.write_text(json.dumps({"share": {"train": 0.40, "attack": 0.10}}))
    monkeypatch.setattr(bench_against, "BUDGETS", budgets)
    within = bench_against.over_budget([run(100.0, train=43.0, attack=10.5)])
    assert within == ["- every budgeted phase within 10% of its share"]
    [grown] = bench_against.over_budget([run(100.0, train=43.0, attack=12.0)])
    assert grown.startswith("- `attack`: 12.0% of the run, its budget 10.0% (+20%)")


def test_the_budgets_written_are_the_shares_the_check_reads():
    shares = bench_against.shares([run(100.0, train=40.0, attack=10.0, load=0.5), run(120.0, train=50.0, attack=12.0)])
    assert shares == {"train": 0.4091, "attack": 0.1}  # medians over wall 110 s; under 1% left out


def test_the_shipped_budgets_are_shares_of_the_default_run():
    budgets = json.loads(bench_against.BUDGETS.read_text())
    shares = budgets["share"]
    assert shares and all(0 < v <= 1 for v in shares.values()) and sum(shares.values()) <= 1
    assert any(name.startswith("train target") for name in shares) and budgets["wall_s"] > 0


def test_an_unknown_revision_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(SystemExit, match="REV=no-such-commit is not a commit of this repository"):
        bench_against.worktree("no-such-commit", tmp_path)
    assert not list(tmp_path.iterdir())

"""Resume and the model cache at the sweep level: reruns skip done cells, a killed sweep resumes to
the same table as an uninterrupted one, and parallel jobs train a shared model once."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import TINY, cli_path
from mldoctor_bench.results import KEY
from mldoctor_bench.store import ModelStore

ROW_KEY = ["config_hash", *KEY, "metric"]


def sweep_tables(results_dir: Path) -> list[pd.DataFrame]:
    """The merged tables of every sweep under ``results_dir``, oldest first."""
    return [pd.read_parquet(p) for p in sorted((results_dir / "hydra" / "sweeps").glob("*/results.parquet"))]


def row_keys(table: pd.DataFrame, extra: tuple[str, ...] = ()) -> set[tuple]:
    assert not table.duplicated(ROW_KEY).any(), "duplicate rows in a merged table"
    return set(map(tuple, table[ROW_KEY + list(extra)].itertuples(index=False)))


def leftovers(directory: Path) -> list[Path]:
    """Temporary files that an interrupted atomic write would leave behind."""
    return [p for p in directory.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_rerun_of_an_unchanged_multirun_skips_every_cell_and_merges_the_same_rows(run_cli, tmp_path):
    out = tmp_path / "res"
    args = ("-m", "seed=0,1", "threat_model=blackbox_shadow", f"results_dir={out}", *TINY)
    t0 = time.perf_counter()
    first = run_cli(*args)
    t1 = time.perf_counter()
    assert first.returncode == 0, first.stderr
    second = run_cli(*args)
    t2 = time.perf_counter()
    assert second.returncode == 0, second.stderr
    assert first.stderr.count("cell already done") == 0
    assert second.stderr.count("cell already done") == 2
    assert "reused cached" not in second.stderr  # skipped before loading anything
    before, after = sweep_tables(out)
    assert set(before.seed) == {0, 1}
    assert row_keys(before) == row_keys(after)
    pd.testing.assert_frame_equal(before, after)  # the very same cell tables, not recomputed
    print(f"first sweep {t1 - t0:.1f} s, unchanged rerun {t2 - t1:.1f} s")


@pytest.mark.slow
def test_a_killed_multirun_resumes_to_the_table_of_an_uninterrupted_one(run_cli, tmp_path):
    sweep = ("-m", "seed=0,1,2", "threat_model=blackbox_shadow", *TINY)
    killed_dir = tmp_path / "killed"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(
        [cli_path(), *sweep, f"results_dir={killed_dir}"],
        cwd=run_cli.workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    try:
        while not list(killed_dir.glob("cells/*/done.json")):
            assert proc.poll() is None, "the sweep ended before any cell finished"
            assert time.monotonic() < deadline, "no cell finished in time"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    cells = list((killed_dir / "cells").iterdir())
    assert len([c for c in cells if (c / "done.json").exists()]) < 3  # something was left unfinished
    assert not sweep_tables(killed_dir)  # the killed sweep merged nothing

    resumed = run_cli(*sweep, f"results_dir={killed_dir}")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.count("cell already done") >= 1
    clean_dir = tmp_path / "clean"
    clean = run_cli(*sweep, f"results_dir={clean_dir}")
    assert clean.returncode == 0, clean.stderr

    (resumed_table,), (clean_table,) = sweep_tables(killed_dir), sweep_tables(clean_dir)
    assert row_keys(resumed_table, ("status",)) == row_keys(clean_table, ("status",))
    assert len(resumed_table) == len(clean_table)
    cells = sorted((killed_dir / "cells").iterdir())
    assert len(cells) == 3
    for cell in cells:
        assert (cell / "done.json").exists() and (cell / "results.parquet").exists(), cell
    assert leftovers(killed_dir / "cells") == [] and leftovers(killed_dir / "cache") == []


# --- parallel jobs sharing one model ------------------------------------------------------------


def build() -> torch.nn.Module:
    return torch.nn.Linear(4, 3)


def slow_train(marker: Path):
    def train(model: torch.nn.Module) -> dict:
        with open(marker, "a") as f:  # one line per training run, from whichever process trains
            f.write(f"{os.getpid()}\n")
        time.sleep(1.5)  # long enough that the other process asks while this one trains
        gen = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        return {"loss": 0.5}

    return train


def fetch(root: str, marker: str, out: str, barrier) -> None:
    barrier.wait()  # both processes ask for the model at the same moment
    stored = ModelStore(Path(root)).get_or_train({"role": "shared", "n": 1}, build, slow_train(Path(marker)))
    torch.save({"state": stored.model.state_dict(), "reused": stored.reused}, out)


def test_parallel_jobs_needing_the_same_model_train_it_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    marker = tmp_path / "trained.txt"
    outs = [tmp_path / f"job{i}.pt" for i in range(2)]
    jobs = [ctx.Process(target=fetch, args=(str(tmp_path / "store"), str(marker), str(o), barrier)) for o in outs]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(120)
        assert job.exitcode == 0
    assert len(marker.read_text().splitlines()) == 1  # trained exactly once
    a, b = (torch.load(o, weights_only=True) for o in outs)
    assert sorted([a["reused"], b["reused"]]) == [False, True]
    assert a["state"].keys() == b["state"].keys()
    for name in a["state"]:
        assert torch.equal(a["state"][name], b["state"][name]), name
    assert leftovers(tmp_path / "store") == []


def test_store_clears_temporary_files_left_by_a_killed_writer(tmp_path):
    store = ModelStore(tmp_path)
    payload = {"role": "shared", "n": 2}
    weights, manifest = store.paths(store.key(payload))
    stale = [weights.with_name(f".{weights.name}.99999.tmp"), manifest.with_name(f".{manifest.name}.99999.tmp")]
    for path in stale:
        path.write_bytes(b"half a file")
    marker = tmp_path / "trained.txt"
    first = store.get_or_train(payload, build, slow_train(marker))
    assert not first.reused and not any(p.exists() for p in stale)
    again = store.get_or_train(payload, build, slow_train(marker))
    assert again.reused and len(marker.read_text().splitlines()) == 1
    assert torch.equal(first.model.weight, again.model.weight)


@pytest.mark.slow
def test_a_done_cell_rerun_after_the_verdict_rules_changed_gets_the_verdicts_of_the_rules_in_force(run_cli, tmp_path):
    """A release gate must never read a verdict that an older rule wrote: verdicts.json records the rules
    (a digest of the code that decides them), and a rerun of a finished cell rewrites it from the
    cell's table and scores when they differ, training nothing."""
    import json

    from mldoctor_bench.report.cell_verdicts import RULES

    out = tmp_path / "res"
    args = [*TINY, f"results_dir={out}"]
    assert run_cli(*args).returncode == 0
    [cell] = list((out / "cells").iterdir())
    path = cell / "verdicts.json"
    fresh = json.loads(path.read_text())
    assert fresh["rules"] == RULES and (cell / "verdict_inputs.json").exists()
    stale = {**fresh, "rules": "an older rule", "families": {"membership": {"level": "high", "not_run": []}}}
    path.write_text(json.dumps(stale))
    rerun = run_cli(*args)
    assert rerun.returncode == 0 and "verdicts rewritten under the rules in force" in rerun.stderr
    assert "train target" not in rerun.stderr  # nothing trained: the cell is done
    assert json.loads(path.read_text()) == json.loads(json.dumps(fresh))  # the same as its first run wrote
    again = run_cli(*args)  # the rules in force already: left alone
    assert "verdicts rewritten" not in again.stderr

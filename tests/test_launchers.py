"""Multiruns through the launchers: local parallel cells, and a real single-node SLURM cluster."""

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY

pytestmark = pytest.mark.slow


def merged_table(results_dir: Path) -> pd.DataFrame:
    tables = list((results_dir / "hydra" / "sweeps").glob("*/results.parquet"))
    assert len(tables) == 1
    return pd.read_parquet(tables[0])


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running SLURM cluster, as ``SLURM_CONF`` names it; the tests never start one (that would
    install system packages and leave daemons): ``make test-slurm`` starts a local one around them."""
    conf = os.environ.get("SLURM_CONF")
    if not conf or not Path(conf).is_file() or not shutil.which("sinfo"):
        pytest.skip("no SLURM cluster here (SLURM_CONF unset or sinfo missing); make test-slurm provides one")
    proc = subprocess.run(
        ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30, env={**os.environ, "SLURM_CONF": conf}
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        pytest.skip(f"the SLURM cluster of {conf} does not answer: {proc.stderr.strip()}")
    return {"SLURM_CONF": conf}


def test_slurm_multirun_lands_rows_in_the_merged_table(run_cli, tmp_path, slurm_cluster):
    out = tmp_path / "res"
    proc = run_cli(
        "-m",
        "seed=0,1",
        "hydra/launcher=slurm",
        "threat_model=blackbox_shadow",
        f"results_dir={out}",
        *TINY,
        env_extra=slurm_cluster,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = merged_table(out)
    assert sorted(table.seed.unique()) == [0, 1]
    assert set(table.attack) == {"target", "membership"}
    assert list((out / "hydra" / "sweeps").glob("*/.submitit/*"))  # really went through submitit


def test_local_parallel_launcher(run_cli, tmp_path):
    out = tmp_path / "res"
    proc = run_cli(
        "-m", "seed=0,1", "hydra/launcher=local_parallel", "threat_model=blackbox_shadow", f"results_dir={out}", *TINY
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(merged_table(out).seed.unique()) == [0, 1]


def test_bounded_local_submitit_launcher_runs_batches(run_cli, tmp_path):
    out = tmp_path / "res"
    proc = run_cli(
        "-m",
        "seed=0,1,2",
        "hydra/launcher=local",
        "hydra.launcher.max_parallel=2",
        "threat_model=blackbox_shadow",
        f"results_dir={out}",
        *TINY,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = merged_table(out)
    assert sorted(table.seed.unique()) == [0, 1, 2]
    cells = table.groupby("seed").agg(start=("started_at", "first"), wall=("wall_s", "first"))
    cells["start"] = pd.to_datetime(cells["start"])
    cells["end"] = cells["start"] + pd.to_timedelta(cells["wall"], unit="s")
    # the third job waits for the first batch of two to finish
    assert cells.loc[2, "start"] >= max(cells.loc[0, "end"], cells.loc[1, "end"])

"""The laptop-sized rehearsals of the paper's experiments run end to end, report included."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def report(results_dir: Path) -> Path:
    exe = Path(sys.executable).parent / "mldoctor-report"
    proc = subprocess.run([str(exe), str(results_dir)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return results_dir / "report" / "report.md"


@pytest.mark.parametrize("experiment,cells", [("overfitting_small", 4), ("paper_grid_small", 4)])
def test_small_experiment_sweeps_and_reports(run_cli, tmp_path, experiment, cells):
    out = tmp_path / experiment
    proc = run_cli("-m", f"+experiment={experiment}", f"results_dir={out}", "device=cpu", timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged = pd.read_parquet(next((out / "hydra" / "sweeps").glob("*/results.parquet")))
    assert merged.config_hash.nunique() == cells
    assert (merged.status != "failed").all(), merged[merged.status == "failed"].reason.unique()
    md = report(out)
    assert md.exists() and list((out / "report").rglob("*.png"))

"""docs/contributing.md's walk-through is true: following its steps in a copy of the package adds an
attack that runs in a real cell, lands in the results table with its family, is judged with the
other membership attacks, and appears on the membership frontier with what it cost."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mldoctor_bench.report.frontier import frontier_of

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "contributing.md"


def blocks(text: str) -> list[str]:
    """The fenced code blocks of the guide, in order."""
    return re.findall(r"```(?:python|yaml|bash)\n(.*?)```", text, flags=re.S)


def follow_the_guide(package_root: Path) -> None:
    """Apply the guide's steps to the package under ``package_root`` (a copy of ``src``)."""
    for block in blocks(GUIDE.read_text()):
        lines = block.splitlines()
        path = next((line[2:].split(":")[0] for line in lines[:2] if line.startswith("# src/")), None)
        path = path or next((line[2:].split(":")[0] for line in lines[:2] if line.startswith("# conf/")), None)
        if path is not None:  # a whole file: the attack module, its config
            target = package_root / path.removeprefix("src/")
            if path.startswith("conf/"):
                target = package_root / "mldoctor_bench" / path
            target.write_text(block)
        elif lines and lines[0].startswith("# add under recipes:"):  # one line per profile
            for name in re.findall(r"conf/profile/(\w+)\.yaml", lines[0]):
                profile = package_root / "mldoctor_bench" / "conf" / "profile" / f"{name}.yaml"
                text = profile.read_text()
                assert "\nrecipes:\n" in text, profile
                profile.write_text(text.replace("\nrecipes:\n", "\nrecipes:\n" + "\n".join(lines[1:]) + "\n", 1))


@pytest.mark.slow
def test_the_guide_adds_a_working_attack(tmp_path):
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src", copy, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    follow_the_guide(copy)
    assert (copy / "mldoctor_bench" / "attacks" / "membership_loss.py").is_file()
    assert (copy / "mldoctor_bench" / "conf" / "attack" / "membership_loss.yaml").is_file()
    out = tmp_path / "results"
    env = {**os.environ, "PYTHONPATH": str(copy)}
    env.pop("HYDRA_FULL_ERROR", None)
    run = [
        sys.executable,
        "-c",
        "from mldoctor_bench.cli import main; main()",
        "attack=membership_loss",
        "threat_model=[blackbox_shadow,blackbox_partial]",
        "profile=tiny",
        "device=cpu",
        f"results_dir={out}",
    ]
    proc = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [cell] = list((out / "cells").iterdir())
    table = pd.read_parquet(cell / "results.parquet")
    rows = table[table["attack"] == "membership_loss"]
    assert set(rows["threat_model"]) == {"blackbox_shadow", "blackbox_partial"} and (rows["status"] == "ok").all()
    assert set(rows["family"]) == {"membership"} and {"auc", "tpr_at_fpr_0.01", "threshold"} <= set(rows["metric"])
    judged = json.loads((cell / "verdicts.json").read_text())["families"]["membership"]["judged"]
    assert {j["series"] for j in judged if j["series"].startswith("membership_loss")} == {
        "membership_loss (B,S)",
        "membership_loss (B,P)",
    }
    # its cost: the shadow model it scores with under (B,S) and its own seconds; under (B,P) its seconds
    front = frontier_of([cell])
    ours = front[front["attack"] == "membership_loss"].set_index("threat_model")
    assert set(ours.index) == {"blackbox_shadow", "blackbox_partial"}
    assert all(math.isfinite(c) and c > 0 for c in ours["cost_s"])
    assert ours.loc["blackbox_shadow", "models_s"] > 0 == ours.loc["blackbox_partial", "models_s"]
    assert (cell / "membership_loss" / "blackbox_shadow" / "scores.parquet").is_file()
    # the package as shipped does not have it: the guide's steps made it
    assert not (ROOT / "src" / "mldoctor_bench" / "attacks" / "membership_loss.py").exists()

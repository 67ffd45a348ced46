"""Shared fixtures: the installed console script and tiny CLI settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Under pytest-xdist (make test: one worker per core), each worker, and every command it starts,
# takes an equal share of the cores rather than all of them; set before torch is first imported.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(share))

# An end-to-end run in seconds on a CPU: one attack, the tiny profile (conf/profile/tiny.yaml).
TINY = [
    "attack=membership",  # the default run selects every attack; these tests need one
    "profile=tiny",
    "device=cpu",
]


def cli_path() -> str:
    exe = Path(sys.executable).parent / "mldoctor-bench"
    if not exe.exists():
        pytest.skip("mldoctor-bench console script is not installed (run `make install`)")
    return str(exe)


@pytest.fixture
def run_cli(tmp_path):
    """Run ``mldoctor-bench`` with overrides from an unrelated, empty working directory."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()

    def run(*overrides: str, timeout: int = 600, env_extra: dict | None = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
        env.update(env_extra or {})
        return subprocess.run(
            [cli_path(), *overrides], cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env
        )

    run.workdir = workdir
    return run


@pytest.fixture(scope="session")
def small_cell(tmp_path_factory):
    """One small trained cell, shared by attack tests (see ``attack_fixtures``)."""
    from attack_fixtures import all_attacks, prepared_cell

    return prepared_cell(
        tmp_path_factory.mktemp("small-cell"),
        all_attacks(),
        "threat_model=[blackbox_shadow,blackbox_partial,whitebox_shadow,whitebox_partial,whitebox_none,blackbox_label_only]",
    )

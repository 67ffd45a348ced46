"""End-to-end runs of ``mldoctor-bench`` on tiny copies of the paper's datasets, and a wrong data.root."""

import time

import pandas as pd
import pytest

import fake_datasets as fake

TINY_DATA = ["attack=membership", "train.epochs=1", "data.quarter_size=8", "attack.membership.epochs=1",
             "threat_model=blackbox_shadow", "device=cpu"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["utkface", "celeba"])
def test_face_dataset_runs_end_to_end_and_reuses_its_cache(run_cli, tmp_path, name):
    fake.WRITERS[name](tmp_path / "data")
    common = [f"dataset={name}", "arch=simple_cnn", *TINY_DATA, f"data.root={tmp_path / 'data'}",
              f"data.cache_dir={tmp_path / 'dcache'}", f"results_dir={tmp_path / 'res'}"]
    first = run_cli(*common)
    assert first.returncode == 0, first.stderr
    assert f"decoding {name}" in first.stderr
    cell = next((tmp_path / "res" / "cells").iterdir())
    assert cell.name.startswith(f"{name}_simple_cnn_none_seed0_")
    table = pd.read_parquet(cell / "results.parquet")
    assert set(table.dataset) == {name} and (table.status == "ok").all()
    assert table.query("attack == 'membership'").metric.str.fullmatch("auc").any()
    second = run_cli(*common, "seed=1")  # a new cell, same preprocessed images
    assert second.returncode == 0, second.stderr
    assert f"decoding {name}" not in second.stderr and "from cache" in second.stderr


@pytest.mark.slow
def test_wrong_data_root_fails_fast_with_a_clear_message(run_cli, tmp_path):
    started = time.perf_counter()
    proc = run_cli("dataset=celeba", f"data.root={tmp_path / 'nowhere'}", f"data.cache_dir={tmp_path / 'dcache'}",
                   f"results_dir={tmp_path / 'res'}", "device=cpu")
    assert proc.returncode == 2
    assert "dataset 'celeba' not found in" in proc.stderr and str(tmp_path / "nowhere" / "celeba") in proc.stderr
    assert "list_attr_celeba.txt" in proc.stderr and "data.download=true" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "res" / "cells").exists()  # failed before the cell folder was made
    assert time.perf_counter() - started < 60

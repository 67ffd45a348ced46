"""End-to-end runs of ``mldoctor-bench`` on tiny copies of the paper's datasets, and a wrong data.root."""

import time

import pandas as pd
import pytest

import fake_datasets as fake

TINY_DATA = [
    "attack=membership",
    "train.epochs=1",
    "data.quarter_size=8",
    "attack.membership.epochs=1",
    "threat_model=blackbox_shadow",
    "device=cpu",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["utkface", "celeba"])
def test_face_dataset_runs_end_to_end_and_reuses_its_cache(run_cli, tmp_path, name):
    fake.WRITERS[name](tmp_path / "data")
    common = [
        f"dataset={name}",
        "arch=simple_cnn",
        *TINY_DATA,
        f"data.root={tmp_path / 'data'}",
        f"data.cache_dir={tmp_path / 'dcache'}",
        f"results_dir={tmp_path / 'res'}",
    ]
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
    proc = run_cli(
        "dataset=celeba",
        f"data.root={tmp_path / 'nowhere'}",
        f"data.cache_dir={tmp_path / 'dcache'}",
        f"results_dir={tmp_path / 'res'}",
        "device=cpu",
    )
    assert proc.returncode == 2
    assert "dataset 'celeba' not found in" in proc.stderr and str(tmp_path / "nowhere" / "celeba") in proc.stderr
    assert "list_attr_celeba.txt" in proc.stderr and "data.download=true" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "res" / "cells").exists()  # failed before the cell folder was made
    assert time.perf_counter() - started < 60


@pytest.mark.slow
def test_a_quarter_size_the_dataset_cannot_hold_is_one_line_and_exit_2(run_cli, tmp_path):
    fake.write_fmnist(tmp_path / "data", n_train=80, n_test=40)  # 120 images
    proc = run_cli(
        "dataset=fmnist",
        "data.quarter_size=500",
        f"data.root={tmp_path / 'data'}",
        f"data.cache_dir={tmp_path / 'dcache'}",
        f"results_dir={tmp_path / 'res'}",
        "device=cpu",
    )
    assert proc.returncode == 2
    # the dataset's size is known once its files are read (decoded once, then cached); the loader's
    # notes are held back until the data fits the cell, so a refused run says one thing
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("mldoctor-bench: error: fmnist has 120 examples")
    assert "500" in lines[0] and "data.quarter_size=null" in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "res" / "cells").exists()


@pytest.mark.slow
def test_paper_profile_with_distillation_and_inversion_saves_disjoint_named_pools(run_cli, tmp_path):
    """Under profile=paper (quarter_size null) the partition sets aside transfer data as large as
    target-train for the student and a heldout pool for the inversion evaluator, all disjoint."""
    import json

    from mldoctor_bench.cell import load_target
    from mldoctor_bench.data.splits import QUARTERS

    fake.write_fmnist(tmp_path / "data", n_train=80, n_test=40)
    proc = run_cli(
        "profile=paper",
        "dataset=fmnist",
        "defense=distillation",
        "attack=inversion",
        "threat_model=whitebox_none",
        "train.epochs=2",
        "attack.inversion.miface.steps=5",
        "attack.inversion.per_class=2",
        "attack.inversion.evaluator_epochs=1",
        f"data.root={tmp_path / 'data'}",
        f"data.cache_dir={tmp_path / 'dcache'}",
        f"results_dir={tmp_path / 'res'}",
        "device=cpu",
    )
    assert proc.returncode == 0, proc.stderr
    cell = next((tmp_path / "res" / "cells").iterdir())
    _, splits, _ = load_target(cell)
    pools = splits.all_pools()
    assert len(pools["transfer"]) >= len(pools["target_train"]) > 0
    assert len(pools["heldout"]) >= 10
    names = list(QUARTERS) + ["transfer", "heldout"]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not set(pools[a].tolist()) & set(pools[b].tolist()), (a, b)
    table = pd.read_parquet(cell / "results.parquet")
    target = dict(table.query("attack == 'target'")[["metric", "value"]].values)
    assert target["transfer_size"] == len(pools["transfer"]) and target["student_data_disjoint"] == 1
    evaluator = json.loads((cell / "inversion" / "whitebox_none" / "evaluator.json").read_text())
    assert evaluator["evaluator_arch"] != "simple_cnn"
    assert evaluator["evaluator_train_size"] + evaluator["evaluator_test_size"] == len(pools["heldout"])

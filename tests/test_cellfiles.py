"""The one helper that names a cell's files: folder name, file names, sweep pointers."""

from __future__ import annotations

from mldoctor_bench.cellfiles import POINTER, CellFiles, pointed_cells, pointer_payload


def test_cell_folder_is_named_by_key_then_hash(tmp_path):
    files = CellFiles.under(tmp_path, "mnist5k", "simple_cnn", "none", 3, "0123abcd")
    assert files.dir == tmp_path / "cells" / "mnist5k_simple_cnn_none_seed3_0123abcd"
    names = [
        p.name
        for p in (
            files.table,
            files.csv,
            files.done,
            files.config,
            files.splits,
            files.target_weights,
            files.target_manifest,
        )
    ]
    assert names == [
        "results.parquet",
        "results.csv",
        "done.json",
        "config.yaml",
        "splits.safetensors",
        "target.safetensors",
        "target.json",
    ]
    assert files.error("membership", "blackbox_shadow") == files.dir / "membership" / "blackbox_shadow" / "error.txt"


def test_done_needs_the_marker_and_the_table(tmp_path):
    files = CellFiles(tmp_path / "cell")
    files.dir.mkdir()
    files.done.write_text("{}")
    assert not files.is_done()
    files.table.write_bytes(b"")
    assert files.is_done()


def test_sweep_pointers_lead_back_to_their_cells(tmp_path):
    cells = [CellFiles(tmp_path / "cells" / name) for name in ("b", "a")]
    for job, cell in enumerate(cells):
        (tmp_path / "sweep" / str(job)).mkdir(parents=True)
        (tmp_path / "sweep" / str(job) / POINTER).write_text(pointer_payload(cell))
    assert pointed_cells(tmp_path / "sweep") == cells  # in job order

"""dataset=folder: an owner's images in torchvision's ImageFolder layout, read back exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mldoctor_bench.data import DataUnavailableError, load_dataset
from mldoctor_bench.data.folder import FolderError


def settings(root, cache, **extra):
    return {"root": str(root), "cache_dir": str(cache), "image_size": 8, "in_channels": 3, **extra}


def write_folder(root, layout, size=8, seed=0):
    """Write ``{relative path: None}`` as random RGB images of ``size``; return their pixels."""
    rng = np.random.default_rng(seed)
    pixels = {}
    for rel in layout:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels[rel] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels[rel]).save(path, format="PNG" if rel.lower().endswith(".png") else None)
    return pixels


LAYOUT = ["dog/b.png", "dog/a.PNG", "cat/2.png", "cat/10.png", "cat/sub/1.png", "zebra/x.jpg"]


def test_labels_order_and_paths_are_torchvision_imagefolders(tmp_path):
    write_folder(tmp_path / "d", LAYOUT)
    (tmp_path / "d" / "cat" / "notes.txt").write_text("not an image")
    data = load_dataset("folder", settings(tmp_path / "d", tmp_path / "cache"))
    expected = ["cat/10.png", "cat/2.png", "cat/sub/1.png", "dog/a.PNG", "dog/b.png", "zebra/x.jpg"]
    assert data.files == tuple(expected)
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 2] and data.num_classes == 3
    assert data.images.shape == (6, 3, 8, 8) and data.attribute is None
    tv = pytest.importorskip("torchvision.datasets")
    samples = tv.ImageFolder(str(tmp_path / "d")).samples
    assert [(str((tmp_path / "d" / f)), y) for f, y in zip(data.files, data.labels.tolist())] == samples


def test_pixels_rgb_exact_grey_is_pillows_luma_and_resize_matches_pillow(tmp_path):
    pixels = write_folder(tmp_path / "d", ["a/1.png", "b/1.png"])
    red = np.zeros((8, 8, 3), dtype=np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(tmp_path / "d" / "b" / "1.png")
    rgb = load_dataset("folder", settings(tmp_path / "d", tmp_path / "cache"))
    assert torch.equal(rgb.images[0], torch.from_numpy(pixels["a/1.png"]).permute(2, 0, 1))
    grey = load_dataset("folder", settings(tmp_path / "d", tmp_path / "cache", in_channels=1))
    assert grey.images.shape == (2, 1, 8, 8)
    assert (grey.images[1] == 76).all()  # 0.299 * 255, Pillow's ITU-R 601-2 luma
    luma = np.asarray(Image.fromarray(pixels["a/1.png"]).convert("L"))
    assert torch.equal(grey.images[0, 0], torch.from_numpy(luma.copy()))
    small = load_dataset("folder", settings(tmp_path / "d", tmp_path / "cache", image_size=5))
    want = np.asarray(Image.fromarray(pixels["a/1.png"]).resize((5, 5), Image.Resampling.BILINEAR))
    assert torch.equal(small.images[0], torch.from_numpy(want.copy()).permute(2, 0, 1))


def test_grey_source_images_become_three_equal_channels(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "b").mkdir()
    for i, cls in enumerate("ab"):
        Image.fromarray(np.full((8, 8), 40 * (i + 1), dtype=np.uint8), mode="L").save(tmp_path / "d" / cls / "g.jpg")
    data = load_dataset("folder", settings(tmp_path / "d", tmp_path / "cache"))
    assert data.images.shape == (2, 3, 8, 8)
    assert (data.images[:, 0] == data.images[:, 1]).all() and (data.images[:, 1] == data.images[:, 2]).all()
    assert (data.images[0].float() - 40).abs().max() <= 2 and (data.images[1].float() - 80).abs().max() <= 2


def test_files_survive_the_cache(tmp_path):
    write_folder(tmp_path / "d", LAYOUT)
    first = load_dataset("folder", settings(tmp_path / "d", tmp_path / "cache"))
    notes = []
    from mldoctor_bench.data.base import Feedback

    second = load_dataset("folder", settings(tmp_path / "d", tmp_path / "cache"), Feedback(note=notes.append))
    assert any("from cache" in n for n in notes)
    assert second.files == first.files and torch.equal(second.images, first.images)
    assert torch.equal(second.labels, first.labels)


def test_attributes_csv_with_header_numeric_order_and_extra_rows(tmp_path):
    write_folder(tmp_path / "d", ["a/1.png", "a/2.png", "b/1.png"])
    csv = tmp_path / "attr.csv"
    csv.write_text("file,age group\na/1.png,10\na/2.png,2\nb/1.png,10\nelsewhere/9.png,3\n")
    data = load_dataset("folder", settings(tmp_path / "d", tmp_path / "cache", attributes=str(csv)))
    assert data.attribute.tolist() == [1, 0, 1]  # 2 < 10 numerically
    assert data.num_attribute_classes == 2 and data.attribute_name == "age group (0 2, 1 10)"
    csv.write_text("b/1.png,male\na/1.png,female\na/2.png,male\n")  # no header
    data = load_dataset("folder", settings(tmp_path / "d", tmp_path / "cache", attributes=str(csv)))
    assert data.attribute.tolist() == [0, 1, 1] and data.attribute_name == "attribute (0 female, 1 male)"


def test_an_image_missing_from_the_attributes_is_named(tmp_path):
    write_folder(tmp_path / "d", ["a/1.png", "a/2.png", "b/1.png"])
    csv = tmp_path / "attr.csv"
    csv.write_text("file,sex\na/1.png,f\nb/1.png,m\n")
    with pytest.raises(FolderError, match=r"no row for a/2\.png \(1 of 3 images missing\)") as err:
        load_dataset("folder", settings(tmp_path / "d", tmp_path / "cache", attributes=str(csv)))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing root", r"data.root=.*nowhere is not a folder; point data.root at a folder with one subfolder"),
        ("one class", r"has 1 class folder\(s\) \(only 'a'\); a classifier needs at least 2"),
        ("empty class", r"class folder .*/b holds no image"),
        ("unreadable", r"cannot read image .*/b/broken\.png.*remove or replace the file"),
    ],
)
def test_clear_one_line_errors(tmp_path, case, message):
    root = tmp_path / ("nowhere" if case == "missing root" else "d")
    if case != "missing root":
        write_folder(root, ["a/1.png"])
        (root / "b").mkdir()
        if case == "unreadable":
            (root / "b" / "broken.png").write_bytes(b"not a png")
        if case == "one class":
            (root / "b").rmdir()
    with pytest.raises(DataUnavailableError, match=message) as err:
        load_dataset("folder", settings(root, tmp_path / "cache"))
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_mldoctor_bench_runs_on_an_image_folder(run_cli, tmp_path):
    rng = np.random.default_rng(0)
    for cls in range(2):
        folder = tmp_path / "imgs" / f"class{cls}"
        folder.mkdir(parents=True)
        for i in range(40):
            pixels = rng.integers(0, 128, (12, 12, 3), dtype=np.uint8) + np.uint8(100 * cls)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    proc = run_cli(
        "dataset=folder",
        f"data.root={tmp_path / 'imgs'}",
        "data.image_size=12",
        "data.in_channels=1",
        "attack=membership",
        "threat_model=blackbox_shadow",
        "data.quarter_size=16",
        "train.epochs=1",
        "attack.membership.epochs=1",
        "device=cpu",
        f"data.cache_dir={tmp_path / 'dcache'}",
        f"results_dir={tmp_path / 'res'}",
    )
    assert proc.returncode == 0, proc.stderr
    cell = next((tmp_path / "res" / "cells").iterdir())
    assert cell.name.startswith("folder_simple_cnn_none_seed0_")
    table = pd.read_parquet(cell / "results.parquet")
    assert set(table.dataset) == {"folder"} and (table.status == "ok").all()
    assert table.query("attack == 'membership'").metric.str.fullmatch("auc").any()
    missing = run_cli(
        "dataset=folder", f"data.root={tmp_path / 'nowhere'}", "device=cpu", f"results_dir={tmp_path / 'res2'}"
    )
    assert missing.returncode == 2 and "is not a folder" in missing.stderr
    assert "Traceback" not in missing.stderr

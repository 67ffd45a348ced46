"""The paper's datasets, read by the real loaders from tiny copies in their official formats."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

import fake_datasets as fake
from mldoctor_bench.data import DataUnavailableError, images, load_dataset
from mldoctor_bench.data.base import Feedback
from mldoctor_bench.data.cache import cache_key, file_stamps

PAPER_DATASETS = ("fmnist", "cifar10", "stl10", "utkface", "celeba")


def settings(root, cache, **extra):
    """A ``data`` config section pointing at ``root`` with the cache in ``cache``."""
    return {"root": str(root), "cache_dir": str(cache), "download": False, "image_size": None, **extra}


@pytest.fixture
def decodes(monkeypatch):
    """Counts calls to the two decoders every loader goes through."""
    calls = []
    for name in ("decode_files", "from_array"):
        real = getattr(images, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(images, name, counted)
    return calls


class Heard:
    """A :class:`Feedback` that records what a loader reports: notes, and progress bars with their
    totals and how far they were advanced."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.bars: dict[str, list[int]] = {}  # label -> [total, done]

    def progress(self, label: str, total: int):
        self.bars[label] = bar = [total, 0]

        def advance(n: int = 1) -> None:
            bar[1] += n

        return advance

    @property
    def feedback(self) -> Feedback:
        return Feedback(self.progress, self.notes.append)

    def said(self, text: str) -> bool:
        return any(text in note for note in self.notes)


@pytest.mark.parametrize("gz", [True, False])
def test_fmnist_idx_files_read_exactly(tmp_path, gz):
    pixels, labels = fake.write_fmnist(tmp_path / "data", gz=gz)
    data = load_dataset("fmnist", settings(tmp_path / "data", tmp_path / "cache", image_size=28))
    assert data.images.shape == (72, 1, 28, 28)
    assert torch.equal(data.images[:, 0], torch.from_numpy(pixels))  # train then test, row-major
    assert torch.equal(data.labels, torch.from_numpy(labels))
    assert data.num_classes == 10 and data.attribute is None and data.num_attribute_classes == 0


def test_cifar10_python_batches_read_exactly(tmp_path):
    pixels, labels = fake.write_cifar10(tmp_path / "data")
    data = load_dataset("cifar10", settings(tmp_path / "data", tmp_path / "cache", image_size=32))
    assert torch.equal(data.images, torch.from_numpy(pixels))
    assert torch.equal(data.labels, torch.from_numpy(labels))
    assert data.num_classes == 10 and data.attribute is None


def test_stl10_column_major_binaries_read_exactly(tmp_path):
    pixels, labels = fake.write_stl10(tmp_path / "data")
    data = load_dataset("stl10", settings(tmp_path / "data", tmp_path / "cache", image_size=96))
    assert torch.equal(data.images, torch.from_numpy(pixels))  # a transposition would differ
    assert torch.equal(data.labels, torch.from_numpy(labels))  # stored 1..10, read 0..9
    assert data.num_classes == 10 and data.attribute is None


@pytest.mark.parametrize("name", ["fmnist", "cifar10", "stl10"])
def test_default_size_is_64_with_the_dataset_channels(tmp_path, name):
    fake.WRITERS[name](tmp_path / "data")
    data = load_dataset(name, settings(tmp_path / "data", tmp_path / "cache"))
    assert data.images.shape[1:] == ((1 if name == "fmnist" else 3), 64, 64)
    assert data.images.dtype == torch.uint8 and data.name == name


def grey_of_top_right(data):
    """The grey level of each image's top-right quadrant, where the fakes encode the labels."""
    return data.images[:, :, 16, 48].int()


def test_utkface_labels_come_from_the_file_names(tmp_path):
    names, races, genders = fake.write_utkface(tmp_path / "data")
    heard = Heard()
    data = load_dataset("utkface", settings(tmp_path / "data", tmp_path / "cache"), heard.feedback)
    assert data.images.shape == (len(names), 3, 64, 64)
    assert torch.equal(data.labels, torch.from_numpy(races)) and torch.equal(data.attribute, torch.from_numpy(genders))
    assert data.num_classes == 4 and data.num_attribute_classes == 2 and "gender" in data.attribute_name
    expected = torch.tensor([fake.utkface_grey(r, g) for r, g in zip(races, genders)])
    assert (grey_of_top_right(data) - expected[:, None]).abs().max() <= 3  # each label with its image
    assert data.images[:, :, 48, 16].max() <= 3 and data.images[:, :, 16, 16].max() <= 3  # not flipped
    assert heard.said(f"skipped {len(fake.UTKFACE_MALFORMED)} files with malformed names")
    assert heard.said("left out 3 faces of race 4")
    assert heard.bars["decode utkface"] == [len(names), len(names)]  # one bar, advanced to its total


def test_utkface_name_parser_rejects_what_the_release_gets_wrong():
    from mldoctor_bench.data.utkface import parse_name

    assert parse_name("26_1_3_20170104235421282.jpg.chip.jpg") == (26, 1, 3)
    assert parse_name("26_1_4_20170104235421282.jpg") == (26, 1, 4)
    for name in fake.UTKFACE_MALFORMED + ("26_1_3_.jpg.chip.jpg", "26_1_3_2017.png", "26_1_3_2017_x.jpg"):
        assert parse_name(name) is None, name


def test_celeba_codes_attributes_as_in_the_paper(tmp_path):
    labels, attributes = fake.write_celeba(tmp_path / "data")
    data = load_dataset("celeba", settings(tmp_path / "data", tmp_path / "cache"))
    assert data.images.shape == (len(labels), 3, 64, 64)
    assert torch.equal(data.labels, torch.from_numpy(labels))
    assert torch.equal(data.attribute, torch.from_numpy(attributes))
    assert data.num_classes == 8 and data.num_attribute_classes == 4
    assert set(data.labels.tolist()) == set(range(8)) and set(data.attribute.tolist()) == set(range(4))
    expected = torch.tensor([fake.celeba_grey(int(y), int(a)) for y, a in zip(labels, attributes)])
    assert (grey_of_top_right(data) - expected[:, None]).abs().max() <= 3
    assert data.images[:, :, 48, 16].max() <= 3


def test_celeba_code_bits_follow_the_header_names():
    from mldoctor_bench.data.celeba import binary_code

    header = ["Smiling", "Heavy_Makeup", "Other", "Mouth_Slightly_Open"]
    table = np.array([[1, -1, 1, -1], [-1, 1, 1, 1], [1, 1, -1, 1]], dtype=np.int8)
    codes = binary_code(table, header, ("Heavy_Makeup", "Mouth_Slightly_Open", "Smiling"))
    assert codes.tolist() == [4, 1 + 2, 1 + 2 + 4]


@pytest.mark.parametrize("name", PAPER_DATASETS)
def test_second_load_comes_from_the_cache_without_decoding(tmp_path, monkeypatch, name):
    fake.WRITERS[name](tmp_path / "data")
    cfg = settings(tmp_path / "data", tmp_path / "cache")
    heard = Heard()
    first = load_dataset(name, cfg, heard.feedback)
    assert heard.said("decoding")
    assert len(list((tmp_path / "cache").glob(f"{name}_64px_*.safetensors"))) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(images, "decode_files", refuse)
    monkeypatch.setattr(images, "from_array", refuse)
    heard = Heard()
    second = load_dataset(name, cfg, heard.feedback)
    assert heard.said("from cache") and not heard.bars
    assert second.fingerprint() == first.fingerprint()
    assert (second.num_classes, second.num_attribute_classes, second.attribute_name) == (
        first.num_classes,
        first.num_attribute_classes,
        first.attribute_name,
    )


def test_cache_key_follows_mtime_and_image_size(tmp_path, decodes):
    fake.write_cifar10(tmp_path / "data")
    cfg = settings(tmp_path / "data", tmp_path / "cache")
    load_dataset("cifar10", cfg)
    load_dataset("cifar10", cfg)
    assert len(decodes) == 1
    batch = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_3"
    st = batch.stat()
    os.utime(batch, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load_dataset("cifar10", cfg)
    assert len(decodes) == 2
    load_dataset("cifar10", {**cfg, "image_size": 32})
    assert len(decodes) == 3
    assert len(list((tmp_path / "cache").glob("cifar10_*.safetensors"))) == 3


def test_cache_key_reads_no_contents(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abcd")
    st = path.stat()
    key = cache_key("x", file_stamps([path], tmp_path), {"image_size": 64})
    path.write_bytes(b"wxyz")  # same size; restore the modification time
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache_key("x", file_stamps([path], tmp_path), {"image_size": 64}) == key
    assert cache_key("x", file_stamps([path], tmp_path), {"image_size": 32}) != key


def test_no_cache_dir_decodes_every_time(tmp_path, decodes):
    fake.write_fmnist(tmp_path / "data")
    cfg = settings(tmp_path / "data", tmp_path / "cache", cache_dir=None)
    load_dataset("fmnist", cfg)
    load_dataset("fmnist", cfg)
    assert len(decodes) == 2 and not (tmp_path / "cache").exists()


EXPECTED_FILES = {
    "fmnist": ("FashionMNIST/raw", "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "data.download=true"),
    "cifar10": ("cifar-10-batches-py", "data_batch_1", "test_batch", "data.download=true"),
    "stl10": ("stl10_binary", "train_X.bin", "test_y.bin", "data.download=true"),
    "utkface": ("", "UTKFace/", "UTKFace/", "https://susanqq.github.io/UTKFace/"),
    "celeba": ("celeba", "img_align_celeba/", "list_attr_celeba.txt", "list_eval_partition.txt"),
}


@pytest.mark.parametrize("name", PAPER_DATASETS)
def test_missing_dataset_error_says_where_what_and_how(tmp_path, name):
    folder, first, last, how = EXPECTED_FILES[name]
    with pytest.raises(DataUnavailableError) as info:
        load_dataset(name, settings(tmp_path / "nowhere", tmp_path / "cache"))
    message = str(info.value)
    assert f"dataset {name!r}" in message
    assert str((tmp_path / "nowhere" / folder)) in message
    assert first in message and last in message and how in message
    assert not (tmp_path / "cache").exists()


def test_partial_copy_names_only_the_missing_files(tmp_path):
    fake.write_stl10(tmp_path / "data")
    (tmp_path / "data" / "stl10_binary" / "test_y.bin").unlink()
    with pytest.raises(DataUnavailableError, match="missing:  test_y.bin\n"):
        load_dataset("stl10", settings(tmp_path / "data", tmp_path / "cache"))


def test_truncated_file_is_reported_as_damaged(tmp_path):
    fake.write_stl10(tmp_path / "data")
    x = tmp_path / "data" / "stl10_binary" / "train_X.bin"
    x.write_bytes(x.read_bytes()[:-100])
    with pytest.raises(DataUnavailableError, match="'stl10' .* incomplete or damaged: train_X.bin holds"):
        load_dataset("stl10", settings(tmp_path / "data", tmp_path / "cache"))
    assert not list((tmp_path / "cache").glob("*.safetensors"))


def test_celeba_image_missing_from_the_folder_is_reported(tmp_path):
    fake.write_celeba(tmp_path / "data")
    (tmp_path / "data" / "celeba" / "img_align_celeba" / "000007.jpg").unlink()
    with pytest.raises(DataUnavailableError, match=r"1 of the 72 listed images are missing .*000007\.jpg"):
        load_dataset("celeba", settings(tmp_path / "data", tmp_path / "cache"))


def test_celeba_attribute_row_cut_short_is_reported(tmp_path):
    fake.write_celeba(tmp_path / "data")
    attr = tmp_path / "data" / "celeba" / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    lines[5] = lines[5][:-6]  # the row of 000004.jpg loses its last two values
    attr.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataUnavailableError, match="'celeba' .* damaged: list_attr_celeba.txt .*: .*at row 4 "):
        load_dataset("celeba", settings(tmp_path / "data", tmp_path / "cache"))


def test_cifar_batch_cannot_run_code(tmp_path):
    fake.write_cifar10(tmp_path / "data")
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "data" / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataUnavailableError, match="unexpected object"):
        load_dataset("cifar10", settings(tmp_path / "data", tmp_path / "cache"))
    assert not marker.exists()


def test_download_without_a_downloader_says_how_to_get_it(tmp_path):
    with pytest.raises(DataUnavailableError, match="cannot be downloaded automatically.*susanqq"):
        load_dataset("utkface", settings(tmp_path / "data", tmp_path / "cache", download=True))


def test_failed_download_is_a_data_error(tmp_path):
    import dataclasses

    from mldoctor_bench.data.stl10 import SOURCE

    def offline(root):
        raise OSError("network is unreachable")

    source = dataclasses.replace(SOURCE, download=offline)
    with pytest.raises(DataUnavailableError, match="downloading dataset 'stl10' .* failed: network is unreachable"):
        source.locate(tmp_path, download=True)


def test_embedded_mnist_resizes_only_when_asked():
    data = load_dataset("mnist5k", {"image_size": 32})
    assert data.images.shape == (5000, 1, 32, 32)
    assert torch.equal(data.labels, load_dataset("mnist5k", {"image_size": None}).labels)


def test_data_config_defaults_and_hash(monkeypatch, tmp_path):
    from hydra import compose, initialize_config_module

    from mldoctor_bench.cell import ConfigError, plan

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with initialize_config_module("mldoctor_bench.conf", version_base="1.3"):

        def hash_of(*overrides):
            return plan(compose("config", overrides=["device=cpu", *overrides])).config_hash

        cfg = compose("config")
        assert cfg.data.cache_dir == f"{tmp_path / 'xdg'}/mldoctor-bench/data" and cfg.data.image_size is None
        base = hash_of()
        assert hash_of(f"data.cache_dir={tmp_path}", f"data.root={tmp_path}", "data.download=true") == base
        assert hash_of("data.image_size=32") != base
        with pytest.raises(ConfigError, match=r"data.image_size=4 is out of range: must be null or an integer >= 8"):
            hash_of("data.image_size=4")

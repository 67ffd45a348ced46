"""Tiny copies of the paper's datasets in their official on-disk formats, for tests of the real loaders.

Each writer puts a few images under ``root`` exactly where and how the official release (or
torchvision's download) puts them, and returns what it wrote in the order the loader reads it:
``(images, labels)`` as numpy arrays, plus the attribute for the face datasets. Face images are
JPEGs whose top-right quadrant has a grey level that encodes the example's labels (the rest is
black), so a test can check that labels travel with the right image and that nothing is flipped.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

# list_attr_celeba.txt's 40 attributes, in the official order.
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()

# Names that the UTKFace loader must skip: a missing field (as in the release), an empty field,
# a non-integer field, and out-of-range gender, race and age.
UTKFACE_MALFORMED = (
    "39_1_20170116174525125.jpg.chip.jpg",
    "_0_1_20170116174525125.jpg.chip.jpg",
    "2x_0_1_20170116174525125.jpg.chip.jpg",
    "30_2_1_20170116174525125.jpg.chip.jpg",
    "30_0_7_20170116174525125.jpg.chip.jpg",
    "300_0_1_20170116174525125.jpg.chip.jpg",
)


def utkface_grey(race: int, gender: int) -> int:
    """The grey level a fake UTKFace image carries for its (race, gender)."""
    return 30 + 50 * race + 20 * gender


def celeba_grey(label: int, attribute: int) -> int:
    """The grey level a fake CelebA image carries for its task label (0-7) and attribute (0-3)."""
    return 20 + 7 * (label + 8 * attribute)


def quadrant_image(width: int, height: int, grey: int) -> Image.Image:
    """Black RGB image whose top-right quadrant is ``grey``."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[: height // 2, width // 2 :] = grey
    return Image.fromarray(pixels)


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fmnist(root: Path, n_train: int = 48, n_test: int = 24, gz: bool = True, seed: int = 0):
    """``FashionMNIST/raw/`` idx files (gzipped as downloaded, or plain as torchvision extracts them)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "FashionMNIST" / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (n_train + n_test, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n_train + n_test).astype(np.uint8)
    parts = {
        "train-images-idx3-ubyte": images[:n_train],
        "train-labels-idx1-ubyte": labels[:n_train],
        "t10k-images-idx3-ubyte": images[n_train:],
        "t10k-labels-idx1-ubyte": labels[n_train:],
    }
    for name, array in parts.items():
        data = _idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return images, labels.astype(np.int64)


def write_cifar10(root: Path, per_batch: int = 12, seed: int = 0):
    """``cifar-10-batches-py/`` python batches: dicts with bytes keys, ``data`` rows of 3072 bytes."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    images = rng.integers(0, 256, (len(names) * per_batch, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, len(images))
    for i, name in enumerate(names):
        rows = slice(i * per_batch, (i + 1) * per_batch)
        batch = {
            b"batch_label": f"batch {i + 1} of 6".encode(),
            b"labels": [int(v) for v in labels[rows]],
            b"data": images[rows].reshape(per_batch, -1),
            b"filenames": [f"img_{j}.png".encode() for j in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2))
    return images, labels.astype(np.int64)


def write_stl10(root: Path, n_train: int = 40, n_test: int = 32, seed: int = 0):
    """``stl10_binary/`` binaries: images column-major 3x96x96, labels bytes 1..10."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, (n_train + n_test, 3, 96, 96), dtype=np.uint8)
    labels = rng.integers(0, 10, n_train + n_test)
    for split, rows in (("train", slice(0, n_train)), ("test", slice(n_train, None))):
        (folder / f"{split}_X.bin").write_bytes(images[rows].transpose(0, 1, 3, 2).tobytes())
        (folder / f"{split}_y.bin").write_bytes((labels[rows] + 1).astype(np.uint8).tobytes())
    return images, labels.astype(np.int64)


def write_utkface(root: Path, n: int = 72, n_others: int = 3, seed: int = 0):
    """``UTKFace/age_gender_race_date.jpg.chip.jpg`` (200x200) plus race-4 and malformed names.

    Returns ``(names, races, genders)`` of the ``n`` faces the loader keeps, sorted by name as the
    loader orders them; some use the plain ``.jpg`` ending, which the loader also accepts.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "UTKFace"
    folder.mkdir(parents=True, exist_ok=True)
    kept = []
    for i in range(n + n_others):
        age, gender = int(rng.integers(1, 90)), int(rng.integers(0, 2))
        race = 4 if i >= n else int(rng.integers(0, 4))
        ending = ".jpg" if i % 10 == 9 else ".jpg.chip.jpg"
        name = f"{age}_{gender}_{race}_2017011617452{i:04d}{ending}"
        quadrant_image(200, 200, utkface_grey(min(race, 3), gender)).save(folder / name, quality=95)
        if race != 4:
            kept.append((name, race, gender))
    for name in UTKFACE_MALFORMED:
        quadrant_image(200, 200, 255).save(folder / name, quality=95)
    (folder / "README.txt").write_text("not an image\n")
    kept.sort()
    return [k[0] for k in kept], np.array([k[1] for k in kept]), np.array([k[2] for k in kept])


def write_celeba(root: Path, n: int = 72, seed: int = 0):
    """``celeba/`` as torchvision lays it out: ``img_align_celeba/`` (178x218 JPEGs), the -1/1
    attribute table (count line, header line, space-padded rows) and the partition list.

    Returns ``(labels, attributes)`` in the attribute file's order.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "celeba"
    images = folder / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    table = rng.choice([-1, 1], size=(n, len(CELEBA_ATTRIBUTES)))
    bit = (table + 1) // 2
    col = CELEBA_ATTRIBUTES.index
    labels = bit[:, col("Heavy_Makeup")] + 2 * bit[:, col("Mouth_Slightly_Open")] + 4 * bit[:, col("Smiling")]
    attributes = bit[:, col("Male")] + 2 * bit[:, col("Young")]
    rows, partitions = [], []
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        quadrant_image(178, 218, celeba_grey(int(labels[i]), int(attributes[i]))).save(images / name, quality=95)
        rows.append(f"{name} " + " ".join(f"{v:2d}" for v in table[i]))
        partitions.append(f"{name} {min(2, 3 * i // n)}")
    (folder / "list_attr_celeba.txt").write_text(
        f"{n}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n" + "\n".join(rows) + "\n"
    )
    (folder / "list_eval_partition.txt").write_text("\n".join(partitions) + "\n")
    return labels.astype(np.int64), attributes.astype(np.int64)


WRITERS = {
    "fmnist": write_fmnist,
    "cifar10": write_cifar10,
    "stl10": write_stl10,
    "utkface": write_utkface,
    "celeba": write_celeba,
}


def write_all(root: Path) -> Path:
    """Tiny copies of all five datasets under ``root`` (72 examples each); returns ``root``."""
    for write in WRITERS.values():
        write(root)
    return Path(root)

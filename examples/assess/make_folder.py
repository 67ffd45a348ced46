"""Write the embedded 5,000 MNIST digits as an image folder an owner might have:
``OUT/<digit>/<number>.png`` (torchvision's ImageFolder layout) and ``OUT/attributes.csv``
(file, thick_stroke): the benchmark's embedded data, in the format of someone else's.

    python examples/assess/make_folder.py OUT
"""

import argparse
import csv
from pathlib import Path

from PIL import Image

from mldoctor_bench.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    out = parser.parse_args().out
    data = load_dataset("mnist5k", {"root": "unused", "cache_dir": None})
    rows = [("file", "thick_stroke")]
    for i, (image, label) in enumerate(zip(data.images, data.labels)):
        name = f"{int(label)}/{i:05d}.png"
        (out / str(int(label))).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy(), mode="L").save(out / name)
        rows.append((name, int(data.attribute[i])))
    with (out / "attributes.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    print(f"{len(data)} images in {out}, attributes in {out / 'attributes.csv'}")


if __name__ == "__main__":
    main()

"""A planted null for ``mldoctor-assess``: the owner's folder without any image the model trained on,
and a members file that lists images it never saw. A sound assessment finds no membership leakage
there (the "members" are non-members like the rest); the same model with its true members file must.

    python examples/assess/planted_null.py FOLDER MODEL_DIR OUT [--members 500] [--seed 0] [--by ink]

FOLDER is the image folder the model's script trained on (``make_folder.py``), MODEL_DIR holds the
model's ``members.txt`` (``train.py``). Writes OUT/digits (the folder less the model's training images,
hard links where the file system allows, with its attributes CSV) and OUT/members.txt (``--members``
random images of OUT/digits, none of which the model trained on). ``--by ink`` lists instead the
``--members`` images with the most ink, as if the training set had been written with a thicker pen:
a split that is not random, which the assessment's blind check must catch before judging membership.
"""

import argparse
import csv
import os
import random
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--by", choices=("random", "ink"), default="random")
    args = parser.parse_args()
    trained = set((args.model_dir / "members.txt").read_text().split())
    with (args.folder / "attributes.csv").open() as handle:
        rows = list(csv.reader(handle))
    header, kept = rows[0], [r for r in rows[1:] if r[0] not in trained]
    target = args.out / "digits"
    for name, _ in kept:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(args.folder / name, target / name)
        except OSError:
            shutil.copyfile(args.folder / name, target / name)
    with (target / "attributes.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *kept])
    names = [name for name, _ in kept]
    if args.by == "ink":
        import numpy as np
        from PIL import Image

        ink = {name: int(np.asarray(Image.open(target / name).convert("L")).sum()) for name in names}
        fake = sorted(sorted(names, key=lambda name: -ink[name])[: args.members])
    else:
        fake = sorted(random.Random(args.seed).sample(names, args.members))
    (args.out / "members.txt").write_text("\n".join(fake) + "\n")
    print(
        f"{len(kept)} images in {target} (the model's {len(trained)} training images left out); "
        f"{len(fake)} of them ({args.by}), never trained on, listed in {args.out / 'members.txt'}"
    )


if __name__ == "__main__":
    main()

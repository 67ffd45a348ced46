"""``mldoctor-assess`` on a model trained outside the project: its partition, its report, its refusals.

The owner's model is trained by ``examples/assess/train.py`` (plain torchvision, its own architecture
module ``tiny_net``) on an image folder written from the embedded digits, then assessed by the
installed console script from an unrelated working directory.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from mldoctor_bench.data.splits import PartitionError, owner_partition
from mldoctor_bench.members import MembersError, read_members
from mldoctor_bench.owner.model import NoEmbedding, OwnerClassifier

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "assess"
PER_CLASS = 50  # 500 images: 100 members, 400 non-members
# The tiny profile with a few more epochs, every family under a shadow threat model (inversion also
# without data).
NO_RELEASES = "assess.output_defenses=[]"  # output-time defenses are measured in the first test only
QUICK = [
    "profile=tiny",
    "data.quarter_size=60",
    "train.epochs=4",
    "device=cpu",
    NO_RELEASES,
    "attack=[membership,membership_rmia,membership_qmia,inversion,attribute,stealing]",
    "threat_model=[blackbox_shadow,whitebox_shadow,whitebox_none]",
]
BASE = QUICK[:5]  # the sizes, the device and no output-time defenses
RELEASED = "assess.output_defenses=[output_rounding,output_topk,output_labels_only]"


def owner_args(root: Path, model_dir: Path, *extra: str) -> list[str]:
    return [
        f"model.weights={model_dir / 'net.safetensors'}",
        "model.factory=tiny_net:make_net",
        "dataset=folder",
        f"data.root={root}",
        f"data.attributes={root / 'attributes.csv'}",
        "model.image_size=28",
        "model.in_channels=1",
        "model.normalize.mean=[0.1307]",
        "model.normalize.std=[0.3081]",
        *extra,
    ]


@pytest.fixture(scope="module")
def owned(tmp_path_factory):
    """An image folder (digits, with a stroke attribute) and a model trained on part of it by the
    owner's own script: ``(folder, model_dir)`` with net.safetensors, net.pt and members.txt."""
    from mldoctor_bench.data import load_dataset

    base = tmp_path_factory.mktemp("owner")
    root = base / "digits"
    data = load_dataset("mnist5k", {"root": "unused", "cache_dir": None})
    rows, taken = [("file", "thick_stroke")], {c: 0 for c in range(10)}
    for i, (image, label) in enumerate(zip(data.images, data.labels.tolist())):
        if taken[label] == PER_CLASS:
            continue
        taken[label] += 1
        name = f"{label}/{i:05d}.png"
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy(), mode="L").save(root / name)
        rows.append((name, int(data.attribute[i])))
    with (root / "attributes.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    model_dir = base / "model"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), str(root), str(model_dir), "--members", "100", "--epochs", "8"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    return root, model_dir


@pytest.fixture
def assess(tmp_path):
    """Run the installed ``mldoctor-assess`` from an empty working directory, the owner's module importable."""
    exe = Path(sys.executable).parent / "mldoctor-assess"
    if not exe.exists():
        pytest.skip("mldoctor-assess console script is not installed (run `make install`)")
    workdir = tmp_path / "cwd"
    workdir.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(EXAMPLE), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1",
        }
        env.pop("HYDRA_FULL_ERROR", None)
        run.last = subprocess.run([str(exe), *args], cwd=workdir, capture_output=True, text=True, timeout=900, env=env)
        return run.last

    run.workdir = workdir
    return run


def refused(proc: subprocess.CompletedProcess) -> str:
    """The one line of a refusal: exit code 2, the last line on stderr (a refusal that needs the data
    comes after the progress of reading it), and no other error line."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if "error" in line.lower()]
    assert errors == lines[-1:] and lines[-1].startswith("mldoctor-assess: error: "), proc.stderr
    return lines[-1]


@pytest.mark.slow
def test_an_owner_model_gets_a_report_on_all_four_families_and_only_attacker_models_are_trained(
    owned, assess, tmp_path
):
    root, model_dir = owned
    out = tmp_path / "res"
    # every member evaluated, against as many non-members: 100, enough to judge TPR at 1% FPR
    sized = [a if not a.startswith("data.quarter_size=") else "data.quarter_size=100" for a in QUICK]
    sized = [a if not a.startswith("assess.output_defenses=") else RELEASED for a in sized]
    sized += [  # and the label-only attack, which the labels-only release must face too
        "attack=[membership,membership_rmia,membership_qmia,membership_label_only,inversion,attribute,stealing]",
        "threat_model=[blackbox_shadow,blackbox_label_only,whitebox_shadow,whitebox_none]",
    ]
    proc = assess(*owner_args(root, model_dir, f"members={model_dir / 'members.txt'}", f"results_dir={out}", *sized))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list(assess.workdir.iterdir()) == []
    [cell] = [c for c in (out / "cells").iterdir() if (c / "releases.json").exists()]
    check_releases(cell)
    manifest = json.loads((cell / "target.json").read_text())
    splits = load_file(str(cell / "splits.safetensors"))
    members = set((model_dir / "members.txt").read_text().split())

    # the partition: evaluation members from the members file, every other pool from the non-members
    from mldoctor_bench.data.folder import find_classes, list_images

    files = [f for f, _ in list_images(root, find_classes(root))]
    pools = {name: [files[i] for i in idx.tolist()] for name, idx in splits.items()}
    assert pools["target_train"] and set(pools["target_train"]) <= members
    for name in ("target_test", "shadow_train", "shadow_test", "heldout"):
        assert pools[name] and not set(pools[name]) & members, name
    seen = [f for rows in pools.values() for f in rows]
    assert len(seen) == len(set(seen))  # disjoint
    assert manifest["sizes"]["target_train"] == 100 and manifest["members_listed"] == 100
    # the attacker's shadow pools are as large as the model's training set: trained like it
    assert manifest["sizes"]["shadow_train"] == manifest["sizes"]["shadow_test"] == 100
    named_by_index = manifest["evaluation_member_files"]
    assert [named_by_index[str(i)] for i in splits["target_train"].tolist()] == pools["target_train"]

    # the owner's model is never trained: no stored model plays the target
    roles = {json.loads(f.read_text())["payload"].get("role") for f in (out / "cache").glob("*.json")}
    assert "shadow" in roles and "target" not in roles

    # its utility is the owner's model's own, as the owner's normalisation gives it
    table = __import__("pandas").read_parquet(cell / "results.parquet")
    target = table[table.attack == "target"].set_index("metric")["value"]
    assert target["train_accuracy"] > 0.9 and target["n_train"] == 100

    report = (cell / "report" / "report.md").read_text()
    verdicts = report.split("## Verdicts", 1)[1].split("## ", 1)[0]
    for family in ("membership", "inversion", "attribute", "stealing"):
        assert f"**{family}: " in verdicts, family
    assert "| shadow_train | 100 |" in report and "## What to do" in report and "## Defense measurements" in report
    assert "ratio 1.00" in report
    numbers = report.split("## Numbers by attack family", 1)[1].split("\n## ", 1)[0]
    for family in ("membership", "inversion", "attribute", "stealing"):
        assert f"### {family}" in numbers, family
    assert "agreement_over_baseline" in numbers and "95% Wilson CI" in numbers and "95% bootstrap CI" in numbers
    # the most exposed files are named, and each is one of the owner's members
    listed = report.split("## Most exposed training examples", 1)[1].split("\n## ", 1)[0]
    named = [line.split("`")[1] for line in listed.splitlines() if line.startswith("| ") and "`" in line]
    assert named and set(named) <= members
    page = (cell / "report" / "report.html").read_text()
    assert page.count("<img") >= 2 and page.count('src="data:image/png;base64,') == page.count("<img")
    assert "<table>" in page

    # verdicts.json: every family with its statistic, interval, test and level; the flagged members
    data = json.loads((cell / "verdicts.json").read_text())
    assert set(data["families"]) == {"membership", "inversion", "attribute", "stealing"}
    for verdict in data["families"].values():
        assert {"level", "series", "statistic", "interval", "test", "alpha", "correction", "baseline"} <= set(verdict)
    assert data["membership_risk"] and all(r["training_examples"] == 100 for r in data["membership_risk"])
    exposed = __import__("pandas").read_csv(cell / "exposed.csv")
    assert set(exposed["file"]) <= members and {"series", "fpr", "index", "score"} <= set(exposed.columns)

    # the release gate: exit code 4 exactly when a family reaches assess.fail_on or is incomplete (the done
    # cell is reused)
    from mldoctor_bench.report.cell_verdicts import failing

    base = owner_args(root, model_dir, f"members={model_dir / 'members.txt'}", f"results_dir={out}", *sized)
    for level in ("moderate", "high"):
        gated = assess(*base, f"assess.fail_on={level}")
        assert gated.returncode == (4 if failing(data, level) else 0), (level, gated.stderr[-2000:])
        if gated.returncode == 4:
            last = gated.stderr.strip().splitlines()[-1]
            assert f"(assess.fail_on={level}; see " in last and all(f in last for f in failing(data, level))
    assert "assess.fail_on" in refused(assess(*base, "assess.fail_on=medium"))


def check_releases(cell: Path) -> None:
    """Each output-time defense measured on the owner's model: a cell of its own with the assessment's
    black-box attacks only, the outputs released through it, and a row of the report's table."""
    import pandas as pd

    released = json.loads((cell / "releases.json").read_text())
    assert list(released) == ["output_rounding", "output_topk", "output_labels_only"]
    undefended = pd.read_parquet(cell / "results.parquet")
    accuracy = undefended[(undefended.attack == "target") & (undefended.metric == "test_accuracy")]["value"].iloc[0]
    report = (cell / "report" / "report.md").read_text()
    table = report.split("## Output-time defenses on your model", 1)[1].split("\n## ", 1)[0]
    for name, entry in released.items():
        assert not entry["failed"], entry
        rows = pd.read_parquet(cell.parent / entry["cell"] / "results.parquet")
        assert set(rows["defense"]) == {name}
        attacked = set(rows.loc[rows.attack != "target", "threat_model"])
        assert attacked and not attacked & {
            "whitebox_shadow",
            "whitebox_none",
        }  # an attacker with weights sees no release
        mine = rows[(rows.attack == "target") & (rows.metric == "test_accuracy")]["value"].iloc[0]
        if name != "output_rounding":  # top-k and labels keep the top class: the same accuracy
            assert mine == pytest.approx(accuracy)
        assert f"| {name} | {mine:.3f} | " in table
    assert "| as released | " in table and "membership" in table.splitlines()[6]
    labels_only = pd.read_parquet(cell.parent / released["output_labels_only"]["cell"] / "results.parquet")
    assert "membership_label_only" in set(labels_only["attack"])  # label-only attacks rerun too


@pytest.mark.slow
def test_most_exposed_files_of_a_partial_knowledge_series_are_the_files_it_scored(owned, assess, tmp_path):
    """A partial-knowledge series scores only the members the attacker did not hold: a member's position
    among them is not its position among all members, so files are found by dataset index."""
    root, model_dir = owned
    out = tmp_path / "res"
    args = [*owner_args(root, model_dir), f"members={model_dir / 'members.txt'}", "profile=tiny", "device=cpu"]
    args += ["data.quarter_size=100", "train.epochs=4", "attack=[membership,membership_metric]", NO_RELEASES]
    assert assess(*args, "threat_model=blackbox_partial", f"results_dir={out}").returncode == 0, assess.last.stderr
    [cell] = list((out / "cells").iterdir())
    report = (cell / "report" / "report.md").read_text()
    section = report.split("## Most exposed training examples", 1)[1].split("\n## ", 1)[0]
    data = json.loads((cell / "verdicts.json").read_text())
    series = {j["series"]: j for j in data["families"]["membership"]["judged"] if j["rejected"]}
    assert series, "no partial-knowledge series rejected no leakage: the case tests nothing"
    [chosen] = [name for name in series if f"members that {name} scores highest" in section]
    listed = [line.split("|") for line in section.splitlines() if line.startswith("| ") and "`" in line]
    assert listed
    pick = series[chosen]
    scores = pd.read_parquet(cell / pick["attack"] / pick["threat_model"] / "scores.parquet")
    scores = scores[(scores.variant == pick["variant"]) & (scores.label == 1)]
    from mldoctor_bench.data.folder import find_classes, list_images

    files = [f for f, _ in list_images(root, find_classes(root))]
    score_of = {files[int(i)]: s for i, s in zip(scores["index"], scores["score"])}
    exposed = pd.read_csv(cell / "exposed.csv")
    exposed = exposed[exposed.series == chosen].set_index("file")["score"]
    for _, _, file, label, score, _ in listed:
        file = file.strip().strip("`")
        assert file.split("/")[0] == label.strip(), (file, label)  # a folder per class: the file's own label
        assert f"{score_of[file]:.4g}" == score.strip(), (file, score)
        if file in exposed.index:
            assert f"{exposed[file]:.4g}" == score.strip()


@pytest.mark.slow
def test_without_members_membership_is_skipped_with_the_reason(owned, assess, tmp_path):
    root, model_dir = owned
    out = tmp_path / "res"
    proc = assess(
        *owner_args(root, model_dir, f"results_dir={out}"),
        "data.quarter_size=60",
        "train.epochs=2",
        "device=cpu",
        "attack=[membership,stealing]",
        "threat_model=[blackbox_shadow,blackbox_partial]",
        "attack.membership.epochs=2",
        "attack.stealing.epochs=2",
        NO_RELEASES,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    [cell] = list((out / "cells").iterdir())
    table = __import__("pandas").read_parquet(cell / "results.parquet")
    skipped = table[table.attack == "membership"]
    assert (skipped.status == "skipped").all() and skipped.reason.str.contains("no members file").all()
    steal = table[(table.attack == "stealing") & (table.threat_model == "blackbox_shadow")]
    assert (steal.status == "ok").all() and "agreement" in set(steal.metric)
    partial = table[(table.attack == "stealing") & (table.threat_model == "blackbox_partial")]
    assert (partial.status == "skipped").all()
    assert "train_accuracy" not in set(table[table.attack == "target"].metric)
    report = (cell / "report" / "report.md").read_text()
    assert "its membership unknown" in report and "(non-members only)" not in report


@pytest.mark.slow
def test_membership_attacks_over_the_budget_are_skipped_for_cost_and_the_report_says_so(owned, assess, tmp_path):
    root, model_dir = owned
    args = [*owner_args(root, model_dir), f"members={model_dir / 'members.txt'}", *BASE]
    args += ["attack=[membership,membership_rmia]", "threat_model=blackbox_shadow"]
    out = tmp_path / "res"
    assert assess(*args, f"results_dir={out}", "assess.budget_models=0").returncode == 0, assess.last.stderr[-3000:]
    [cell] = list((out / "cells").iterdir())
    table = pd.read_parquet(cell / "results.parquet")
    rmia = table[table.attack == "membership_rmia"]
    assert (rmia.status == "skipped").all() and rmia.reason.str.startswith("skipped for cost: its 2 model(s)").all()
    assert (table[table.attack == "membership"].status == "ok").all()  # the shadow model is no extra cost
    report = (cell / "report" / "report.md").read_text()
    section = report.split("## Membership attacks: what each cost")[1].split("\n## ")[0]
    assert "| membership (B,S) |" in section and "- membership_rmia (B,S): skipped for cost" in section
    # the verdict says on its own line that membership was judged without RMIA, and so does verdicts.json
    verdict_line = next(line for line in report.splitlines() if line.startswith("- **membership: "))
    assert "incomplete: membership_rmia (B,S) not run**" in verdict_line
    judged = json.loads((cell / "verdicts.json").read_text())["families"]["membership"]
    assert judged["incomplete"] and judged["not_run"][0]["series"] == "membership_rmia (B,S)"
    assert judged["not_run"][0]["reason"].startswith("skipped for cost")
    # the release gate fails an incomplete family whatever its level, unless told to allow it
    gated = assess(*args, f"results_dir={out}", "assess.budget_models=0", "assess.fail_on=high")
    assert gated.returncode == 4 and "membership incomplete (membership_rmia (B,S) not run" in gated.stderr
    allowed = ["assess.fail_on=high", "assess.allow_incomplete=true"]
    assert assess(*args, f"results_dir={out}", "assess.budget_models=0", *allowed).returncode == (
        4 if judged["level"] == "high" else 0
    )
    assert len(list((out / "cells").iterdir())) == 1  # the gate's settings are no new cell
    # a budget that fits runs it: another cell (the budget is part of the cell's identity)
    assert assess(*args, f"results_dir={out}", "assess.budget_models=100000").returncode == 0
    cells = {c: pd.read_parquet(c / "results.parquet") for c in (out / "cells").iterdir()}
    [again] = [t for c, t in cells.items() if c != cell]
    assert (again[again.attack == "membership_rmia"].status == "ok").all()
    assert "warning:" not in assess.last.stderr  # the owner's own normalisation: no preprocessing warning


@pytest.mark.slow
def test_a_model_fed_wrongly_normalised_images_gets_a_one_line_warning_and_the_report_says_so(owned, assess, tmp_path):
    root, model_dir = owned
    args = [*owner_args(root, model_dir), f"members={model_dir / 'members.txt'}", *BASE]
    args += ["attack=membership", "threat_model=blackbox_shadow", "model.normalize.mean=[0.9]"]
    proc = assess(*args, "model.normalize.std=[0.05]", f"results_dir={tmp_path / 'res'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [warning] = [line for line in proc.stderr.splitlines() if line.startswith("warning: the model is right on")]
    assert all(key in warning for key in ("model.normalize", "model.image_size", "model.in_channels"))
    assert "with the images' own statistics" in warning  # and what the members reach with those
    [cell] = list((tmp_path / "res" / "cells").iterdir())
    report = (cell / "report" / "report.md").read_text()
    assert "- **Warning**: the model is right on" in report and "As given, the model is right on" in report


class Touch:
    """Unpickling this creates a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_crafted_pickle_is_refused_in_one_line_with_no_side_effect(owned, assess, tmp_path):
    root, model_dir = owned
    control = tmp_path / "pwned"
    crafted = tmp_path / "net.pt"
    torch.save({"weight": Touch(control)}, crafted)
    out = tmp_path / "res"
    line = refused(assess(*owner_args(root, model_dir, f"results_dir={out}"), f"model.weights={crafted}"))
    assert "is a pickle that needs code to load" in line
    assert not control.exists() and not out.exists()


def test_weights_of_another_architecture_are_refused_naming_the_first_mismatched_tensor(owned, assess, tmp_path):
    """Before any image is decoded: a folder's layout gives the class count, so model.num_classes is not
    needed for the check."""
    root, model_dir = owned
    line = refused(
        assess(
            *owner_args(root, model_dir, f"results_dir={tmp_path / 'res'}"),
            "model.factory=null",
            "model.arch=simple_cnn",
        )
    )
    assert "do not match the architecture: no tensor 'features.0.weight'" in line
    assert len(assess.last.stderr.strip().splitlines()) == 1  # no progress of reading the images first


def test_a_state_dict_saved_with_torch_save_is_read_too(owned, assess, tmp_path):
    """And a class count the model does not have is refused before any training."""
    root, model_dir = owned
    line = refused(
        assess(
            *owner_args(root, model_dir, f"results_dir={tmp_path / 'res'}"),
            f"model.weights={model_dir / 'net.pt'}",
            "model.num_classes=3",
            "model.kwargs={num_classes: 3}",
        )
    )
    assert "do not match the architecture" in line  # the file's 10-way layer against a 3-way model
    fewer = tmp_path / "three"
    fewer.mkdir()
    for label in ("0", "1", "2"):
        (fewer / label).symlink_to(root / label)
    out = tmp_path / "res"
    line = refused(
        assess(
            *owner_args(root, model_dir, f"results_dir={out}"),
            f"data.root={fewer}",
            "data.attributes=null",
            f"model.weights={model_dir / 'net.pt'}",
        )
    )
    assert "gives outputs of shape (10,) per image but dataset folder has 3 classes" in line
    assert not (out / "cells").exists()


def test_members_naming_missing_files_or_rows_out_of_range_are_refused(owned, assess, tmp_path):
    root, model_dir = owned
    members = tmp_path / "members.txt"
    members.write_text("0/00000.png\n7/not-there.png\n")
    line = refused(assess(*owner_args(root, model_dir, f"results_dir={tmp_path / 'res'}", f"members={members}")))
    assert "line 2: '7/not-there.png' is not an image" in line
    shown = assess.last.stderr.strip().splitlines()
    assert len(shown) == 1, shown  # refused from the file list, before any image is decoded (no progress lines)
    members.write_text("12\n5000\n")
    line = refused(
        assess(
            f"model.weights={model_dir / 'net.safetensors'}",
            "model.factory=tiny_net:make_net",
            "model.normalize.mean=[0.1307]",
            "model.normalize.std=[0.3081]",
            f"members={members}",
            f"results_dir={tmp_path / 'res'}",
        )
    )
    assert "line 2: index 5000 is out of range; dataset mnist5k has 5000 examples" in line


def test_training_time_defenses_and_arch_overrides_are_refused(owned, assess, tmp_path):
    root, model_dir = owned
    assert "did you mean members=?" in refused(assess(*owner_args(root, model_dir), "+member=members.txt"))
    assert "did you mean model.weights=?" in refused(assess(*owner_args(root, model_dir), "model.wieghts=x"))
    typo = refused(assess(*owner_args(root, model_dir), "model.factory=null", "model.arch=resnet"))
    assert "did you mean model.arch=resnet18?" in typo
    assert "the architecture is the owner's" in refused(assess(*owner_args(root, model_dir), "arch=vgg19"))
    assert "defense=dp_sgd changes training" in refused(assess(*owner_args(root, model_dir), "defense=dp_sgd"))


# --- the pieces, without the command ---------------------------------------------------------------


def test_owner_partition_keeps_members_out_of_every_attacker_pool():
    members = torch.arange(0, 3000, 10)  # 300 members among 3000 rows
    splits = owner_partition(3000, members, seed=4, quarter_size=100, heldout_size=50)
    inside = set(members.tolist())
    assert set(splits.target_train.tolist()) <= inside and len(splits.target_train) == 100
    for name in ("target_test", "shadow_train", "shadow_test", "heldout"):
        assert not set(splits.pool(name).tolist()) & inside, name
    every = torch.cat(list(splits.all_pools().values())).tolist()
    assert len(every) == len(set(every))
    # the attacker's shadow pools as large as the model's training set; the evaluation capped
    assert splits.sizes() == {
        "target_train": 100,
        "target_test": 100,
        "shadow_train": 300,
        "shadow_test": 300,
        "transfer": 0,
        "canary": 0,
        "heldout": 50,
    }
    # fewer members than the quarter: the pools shrink to them rather than borrow non-members
    few = owner_partition(1000, torch.arange(10), seed=0, quarter_size=100)
    assert all(len(q) == 10 for q in few.as_dict().values())
    with pytest.raises(PartitionError, match="cannot hold the assessment's pools"):
        owner_partition(4, torch.arange(3), seed=0)


def test_owner_partition_fits_small_data_instead_of_refusing():
    # 2,000 images, 500 members: 1,500 non-members for 500 evaluation non-members, two shadow pools of
    # 500 and 100 heldout rows (10 classes x 10): everything shrinks by one factor, 1400 / 1500
    splits = owner_partition(2000, torch.arange(500), seed=0, quarter_size=500, min_heldout=100)
    sizes = splits.sizes()
    assert sizes["target_train"] == sizes["target_test"] == sizes["shadow_train"] == sizes["shadow_test"] == 466
    assert sizes["heldout"] == 2000 - 500 - 3 * 466 >= 100
    # refused only below the stated minimums, with them named
    with pytest.raises(
        PartitionError,
        match="at least 50 evaluation non-members, 50 in each of the attacker's two "
        "shadow pools, 100 for the evaluators",
    ):
        owner_partition(600, torch.arange(400), seed=0, min_heldout=100)


def test_without_members_the_quarters_fit_the_data_instead_of_refusing():
    """The quick profile's quarters of 500 do not fit 600 images; without a members file nothing needs
    them to match a training set, so they are sized from the data (600 x 2/3 / 4 = 100)."""
    from types import SimpleNamespace

    from mldoctor_bench.data.base import ImageData
    from mldoctor_bench.owner.target import OwnerTarget

    plan = SimpleNamespace(data=SimpleNamespace(reserve=1 / 3, heldout_size=None, quarter_size=500), seed=0)
    images = torch.zeros(600, 1, 8, 8, dtype=torch.uint8)
    data = ImageData("folder", images, torch.arange(600) % 10, 10)
    splits = OwnerTarget.unlisted_partition(plan, data, needs_heldout=True)
    assert len(splits.target_train) == len(splits.shadow_test) == 100 and len(splits.pool("heldout")) == 200
    with pytest.raises(PartitionError, match="members=FILE"):
        OwnerTarget.unlisted_partition(plan, ImageData("folder", images[:6], torch.arange(6) % 4, 4), True)


def test_members_file_reads_paths_or_indices(tmp_path):
    from mldoctor_bench.data.base import ImageData

    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    folder = ImageData(
        "folder", images, torch.tensor([0, 1, 0, 1]), 2, files=("a/1.png", "a/2.png", "b/3.png", "b/4.png")
    )
    path = tmp_path / "m.txt"
    path.write_text("# trained on\n./b/3.png\n\na/1.png\na/1.png\n")
    assert read_members(path, folder).tolist() == [0, 2]
    registry = ImageData("digits", images, torch.tensor([0, 1, 0, 1]), 2)
    path.write_text("3\n1\n")
    assert read_members(path, registry).tolist() == [1, 3]
    path.write_text("0\n1\n2\n3\n")
    with pytest.raises(MembersError, match="names every example"):
        read_members(path, registry)
    path.write_text("b/3.png\n")
    with pytest.raises(MembersError, match="not a row index"):
        read_members(path, registry)


class Plain(torch.nn.Module):
    def __init__(self, softmax: bool = False) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.fc = torch.nn.Linear(2 * 6 * 6, 3)
        self.softmax = softmax

    def forward(self, x):
        out = self.fc(torch.relu(self.conv(x)).flatten(1))
        return out.softmax(1) if self.softmax else out


def test_owner_classifier_applies_the_owners_normalisation_and_reads_its_last_linear():
    torch.manual_seed(0)
    plain = Plain().eval()
    wrapped = OwnerClassifier(plain, 3, 1, mean=[0.1307], std=[0.3081]).eval()
    pixels = torch.rand(5, 1, 8, 8)
    benchmark = pixels * 2 - 1  # what the benchmark feeds its models
    assert torch.allclose(wrapped(benchmark), plain((pixels - 0.1307) / 0.3081), atol=1e-5)
    embedding = wrapped.embed(benchmark)
    assert embedding.shape == (5, 72) and wrapped.embedding_dim == 72
    assert torch.allclose(wrapped.head(embedding), wrapped(benchmark), atol=1e-5)
    # a model whose output is not its last Linear's: no embedding to read, said plainly
    with pytest.raises(NoEmbedding, match="does not give its output"):
        OwnerClassifier(Plain(softmax=True), 3, 1).embed(benchmark)
    # the benchmark's own normalisation is the default: the model sees the benchmark's inputs
    assert torch.allclose(OwnerClassifier(plain, 3, 1).eval()(benchmark), plain(benchmark), atol=1e-6)


def test_images_take_the_channels_the_model_expects():
    from mldoctor_bench.data.base import ImageData
    from mldoctor_bench.owner import with_channels

    colour = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], dtype=torch.uint8)
    data = ImageData("c", colour.t().reshape(1, 3, 2, 2).expand(2, 3, 2, 2).contiguous(), torch.tensor([0, 1]), 2)
    grey = with_channels(data, 1)
    # ITU-R 601 luma, as Pillow's convert("L"): red 76, green 150, blue 29, (10, 20, 30) 18
    assert grey.images.shape == (2, 1, 2, 2) and grey.images[0, 0].flatten().tolist() == [76, 150, 29, 18]
    back = with_channels(grey, 3)
    assert back.images.shape == (2, 3, 2, 2) and torch.equal(back.images[:, 0], back.images[:, 2])
    assert with_channels(data, 3) is data


def test_tradeoff_differences_are_paired_over_seeds_or_combine_two_runs():
    from mldoctor_bench.report import tradeoffs
    from mldoctor_bench.results import Cell, Provenance, metric_rows, to_frame

    rows = []
    for seed, (none, dp) in enumerate([(0.10, 0.02), (0.06, 0.01), (0.08, 0.03)]):
        for defense, tpr in (("none", none), ("dp_sgd", dp)):
            rows += metric_rows(
                Cell("d", "a", defense, seed), "membership", "blackbox_shadow", "", {"tpr_at_fpr_0.01": tpr}
            )
    frame = to_frame(rows, Provenance("r", "h", "c", "t"), 0.0)
    table = tradeoffs.summarise(frame).set_index(["defense", "column"])
    dp = table.loc[("dp_sgd", tradeoffs.FAMILY_COLUMN["membership"])]
    deltas = np.array([-0.08, -0.05, -0.05])  # per seed: the pairs share a partition
    half = 4.302653 * deltas.std(ddof=1) / np.sqrt(3)
    assert dp["difference"] == pytest.approx(deltas.mean())
    assert dp["difference_low"] == pytest.approx(deltas.mean() - half, abs=1e-6) and dp["seeds"] == 3
    # a seed measured under another thread count than no defense's pairs with nothing
    threads = {("none", 0): 2, ("dp_sgd", 0): 2, ("none", 1): 2, ("dp_sgd", 1): 2, ("none", 2): 2, ("dp_sgd", 2): 1}
    two = tradeoffs.summarise(frame, threads=threads).set_index(["defense", "column"])
    assert two.loc[("dp_sgd", tradeoffs.FAMILY_COLUMN["membership"]), "difference"] == pytest.approx(-0.065)
    # one seed: the two runs' own intervals combined (half-widths 0.03 and 0.02)
    one = frame[frame["seed"] == 0].copy()
    one.loc[one["defense"] == "dp_sgd", "config_hash"] = "h2"
    single = pd.DataFrame(
        {
            "config_hash": ["h", "h2"],
            "attack": ["membership"] * 2,
            "threat_model": ["blackbox_shadow"] * 2,
            "variant": ["", ""],
            "metric": ["tpr_at_fpr_0.01"] * 2,
            "ci_low": [0.07, 0.0],
            "ci_high": [0.13, 0.04],
            "method": ["bootstrap"] * 2,
        }
    )
    row = (
        tradeoffs.summarise(one, single)
        .set_index(["defense", "column"])
        .loc[("dp_sgd", tradeoffs.FAMILY_COLUMN["membership"])]
    )
    assert row["difference"] == pytest.approx(-0.08)
    assert row["difference_high"] - row["difference"] == pytest.approx(np.hypot(0.03, 0.02))


@pytest.mark.slow
def test_members_chosen_by_a_visible_property_of_images_the_model_never_saw_are_not_judged(owned, assess, tmp_path):
    """Das, Zhang and Tramèr's blind baseline: listed "members" the model never trained on, chosen as the
    images with the most ink (another collection, as it were). The attacks would find the shift; the
    blind check finds it without the model, and membership is not judged."""
    root, model_dir = owned
    trained = set((model_dir / "members.txt").read_text().split())
    unseen = [f for f in sorted({str(p.relative_to(root)) for p in root.glob("*/*.png")}) if f not in trained]
    ink = {f: np.asarray(Image.open(root / f)).mean() for f in unseen}
    listed = sorted(unseen, key=lambda f: -ink[f])[:100]
    members = tmp_path / "thick.txt"
    members.write_text("\n".join(listed) + "\n")
    out = tmp_path / "res"
    args = [*owner_args(root, model_dir), f"members={members}", *BASE, "attack=[membership,stealing]"]
    proc = assess(*args, "threat_model=[blackbox_shadow,blackbox_partial]", f"results_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "membership will not be judged" in proc.stderr
    [cell] = list((out / "cells").iterdir())
    data = json.loads((cell / "verdicts.json").read_text())
    assert data["families"]["membership"]["level"] == "not judged" and not data["membership_risk"]
    assert data["families"]["stealing"]["level"] in ("low", "moderate", "high")  # the others are still judged
    report = (cell / "report" / "report.md").read_text()
    line = next(x for x in report.splitlines() if x.startswith("- **membership: "))
    assert "not judged" in line and "differ without the model" in line
    gated = assess(
        *args, "threat_model=[blackbox_shadow,blackbox_partial]", f"results_dir={out}", "assess.fail_on=high"
    )
    assert gated.returncode == 4 and "membership not judged" in gated.stderr

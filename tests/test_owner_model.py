"""An owner's model trained outside the project, loaded safely; crafted and mismatched files refused."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mldoctor_bench.models import build_model
from mldoctor_bench.owner.model import (
    OwnerModelError,
    build_owner_model,
    load_owner_model,
    load_weights,
)

# The owner's own architecture: a module this project has never seen, imported only by name.
ARCH_MODULE = """
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, width=4, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.norm = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width * 4 * 4, classes)

    def forward(self, x):
        x = torch.relu(self.norm(self.conv(x)))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))


def make(width=4, classes=3):
    return TinyNet(width, classes)
"""

# The owner's training script, run in its own process: trains a few steps and saves the weights
# both ways, with the inputs and logits to compare against.
TRAIN_SCRIPT = """
import sys
import torch
from safetensors.torch import save_file
from owner_arch import make

out = sys.argv[1]
torch.manual_seed(0)
model = make(width=4, classes=3)
x = torch.rand(32, 3, 8, 8) * 2 - 1
y = torch.randint(0, 3, (32,))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
for _ in range(5):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
model.eval()
save_file(model.state_dict(), f"{out}/model.safetensors")
torch.save(model.state_dict(), f"{out}/model.pt")
torch.save({"epoch": 5, "state_dict": model.state_dict(), "optimizer": opt.state_dict()}, f"{out}/checkpoint.pt")
torch.save(model, f"{out}/whole.pt")
with torch.no_grad():
    torch.save({"x": x, "logits": model(x)}, f"{out}/expected.pt")
"""


@pytest.fixture(scope="module")
def owner(tmp_path_factory):
    """A folder with the owner's architecture module and what their script saved; the module is
    importable (as model.factory needs) while the tests of this file run."""
    root = tmp_path_factory.mktemp("owner")
    (root / "owner_arch.py").write_text(ARCH_MODULE)
    (root / "train_owner.py").write_text(TRAIN_SCRIPT)
    proc = subprocess.run(
        [sys.executable, "train_owner.py", str(root)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "PATH": ""},
    )
    assert proc.returncode == 0, proc.stderr
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    sys.modules.pop("owner_arch", None)


FACTORY = dict(factory="owner_arch:make", kwargs={"width": 4, "classes": 3}, num_classes=3, image_size=8, in_channels=3)


@pytest.mark.parametrize("file", ["model.safetensors", "model.pt", "checkpoint.pt"])
def test_owner_model_loads_with_the_same_logits(owner, file):
    expected = torch.load(owner / "expected.pt", weights_only=True)
    model = load_owner_model(owner / file, **FACTORY)
    assert not model.training
    with torch.no_grad():
        assert torch.equal(model(expected["x"]), expected["logits"])


def test_registry_architecture_round_trip(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    trained = build_model("lenet", 1, 4, 28).eval()
    save_file(trained.state_dict(), str(tmp_path / "lenet.safetensors"))
    loaded = load_owner_model(tmp_path / "lenet.safetensors", arch="lenet", num_classes=4, image_size=28, in_channels=1)
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), trained(x))


class Touch:
    """Unpickling this creates a file: what a crafted 'weights' file can do under full unpickling."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_pickle_that_runs_code_is_refused_and_creates_nothing(tmp_path, writer):
    marker = tmp_path / "pwned"
    payload = {"conv.weight": torch.zeros(1), "evil": Touch(marker)}
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Touch(control)))  # the payload is real: full unpickling runs it
    assert control.exists()
    path = tmp_path / "evil.pt"
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    # torch.save's file names the function it would call (getattr, reaching Path.touch); pickle's
    # protocol 4 is refused sooner, at an opcode the weights-only unpickler does not take
    refused = r"needs code to load \(\S+\)" if writer == "torch.save" else r"a weights-only load refuses"
    with pytest.raises(
        OwnerModelError, match=rf"is a pickle that {refused}.*and was not loaded; save the weights alone"
    ) as err:
        load_weights(path)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_wrong_architecture_names_the_first_mismatched_tensor_and_both_shapes(owner):
    with pytest.raises(
        OwnerModelError, match=r"'conv\.weight' is \(4, 3, 3, 3\) in the file but \(8, 3, 3, 3\) in the model"
    ) as err:
        load_owner_model(owner / "model.safetensors", **{**FACTORY, "kwargs": {"width": 8, "classes": 3}})
    assert "\n" not in str(err.value)
    with pytest.raises(OwnerModelError, match=r"'fc\.weight' is \(3, 64\) in the file but \(5, 64\)"):
        load_owner_model(owner / "model.pt", **{**FACTORY, "kwargs": {"width": 4, "classes": 5}})
    with pytest.raises(OwnerModelError, match=r"no tensor 'conv1\.weight'|no tensor '[\w.]+'"):
        load_owner_model(owner / "model.pt", arch="simple_cnn", num_classes=3, image_size=8, in_channels=3)


def test_a_missing_or_unexpected_tensor_is_named(owner, tmp_path):
    state = load_weights(owner / "model.pt")
    torch.save({k: v for k, v in state.items() if k != "fc.bias"}, tmp_path / "less.pt")
    with pytest.raises(OwnerModelError, match=r"no tensor 'fc\.bias'"):
        load_owner_model(tmp_path / "less.pt", **FACTORY)
    torch.save({**state, "extra.weight": torch.zeros(2)}, tmp_path / "more.pt")
    with pytest.raises(OwnerModelError, match=r"the file has 'extra\.weight', which the model does not"):
        load_owner_model(tmp_path / "more.pt", **FACTORY)
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "parallel.pt")
    with pytest.raises(OwnerModelError, match=r"DataParallel's 'module\.' prefix: save model\.module\.state_dict\(\)"):
        load_owner_model(tmp_path / "parallel.pt", **FACTORY)


def test_a_whole_pickled_module_is_refused_with_how_to_save_a_state_dict(owner, tmp_path):
    with pytest.raises(
        OwnerModelError, match=r"needs code to load \(owner_arch\.TinyNet\).*torch\.save\(model\.state_dict\(\)"
    ):
        load_weights(owner / "whole.pt")
    torch.save(nn.Linear(2, 2), tmp_path / "linear.pt")
    with pytest.raises(OwnerModelError, match=r"a whole pickled model"):
        load_weights(tmp_path / "linear.pt")


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda p: torch.save([torch.zeros(2)], p), r"holds a list, not a mapping of parameter names to tensors"),
        (lambda p: torch.save({"w": torch.zeros(2), "epoch": 3}, p), r"holds a mapping whose entry 'epoch' is a int"),
        (lambda p: p.write_text("hello, not weights"), r"is neither safetensors nor a PyTorch state dict"),
        (lambda p: None, r"does not exist"),
    ],
)
def test_files_that_are_not_state_dicts_are_refused(tmp_path, content, message):
    path = tmp_path / "weights.bin"
    content(path)
    with pytest.raises(OwnerModelError, match=message) as err:
        load_weights(path)
    assert "\n" not in str(err.value)
    if "does not exist" not in message:
        assert "save the weights alone" in str(err.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(), r"name the architecture once"),
        (dict(arch="simple_cnn", factory="a:b"), r"name the architecture once"),
        (dict(arch="nope"), r"unknown architecture 'nope'; choose one of"),
        (dict(factory="no_colon"), r"not of the form package\.module:callable"),
        (dict(factory="surely_not_a_module_xyz:make"), r"cannot import surely_not_a_module_xyz"),
        (dict(factory="math:nothing_here"), r"math has no nothing_here"),
        (dict(factory="math:pi"), r"pi is a float, not callable"),
        (dict(factory="builtins:dict", kwargs={"a": 1}), r"returned a dict, not a torch\.nn\.Module"),
        (dict(factory="math:sqrt", kwargs={"nope": 1}), r"raised TypeError"),
    ],
)
def test_architecture_choice_errors(kwargs, message):
    with pytest.raises(OwnerModelError, match=message) as err:
        build_owner_model(**kwargs, num_classes=3, image_size=8, in_channels=3)
    assert "\n" not in str(err.value)

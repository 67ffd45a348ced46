"""An owner's trained model, loaded safely: weights that are only tensors, on an architecture the
owner names.

Weights come from a ``.safetensors`` file or a PyTorch state dict read with
``torch.load(weights_only=True)``: nothing in the file is executed, and a file that would need code
to load (a whole pickled model, or a pickle crafted to run something) is refused. The architecture
is a registry entry (``arch``) or the owner's own code (``factory="package.module:callable"``),
which is imported and run: naming a factory means trusting that module, as running it would.

Every refusal raises :class:`OwnerModelError`, one line that names the problem and the fix.

The model need not be a :class:`mldoctor_bench.models.Classifier`: any ``nn.Module`` whose forward
pass maps a batch of images ``(N, C, S, S)``, normalised as the owner trained it, to logits
``(N, num_classes)`` can be loaded. :class:`OwnerClassifier` wraps it so that the benchmark queries
it as its own models: it takes the benchmark's inputs (pixels scaled to ``[-1, 1]``) and applies the
owner's normalisation, and for white-box attacks it reads the penultimate embedding as the input of
the model's last ``nn.Linear``, checked on every call to give the model's own output.
"""

from __future__ import annotations

import importlib
import json
import pickle
import re
import struct
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from mldoctor_bench.models import Classifier, NoEmbedding, build_model
from mldoctor_bench.registry import UnknownEntryError

SAVE_HINT = (
    "save the weights alone: safetensors.torch.save_file(model.state_dict(), 'model.safetensors') "
    "or torch.save(model.state_dict(), 'model.pt')"
)
WRAPPER_KEYS = ("state_dict", "model")  # checkpoints that hold the state dict under one of these


BENCHMARK_MEAN, BENCHMARK_STD = 0.5, 0.5  # the benchmark's own normalisation: pixels p in [0, 1] -> (p - 0.5) / 0.5


class OwnerModelError(ValueError):
    """An owner's weights or architecture that cannot be loaded as given; the message is one line with the fix."""


class OwnerClassifier(nn.Module):
    """An owner's model as the benchmark queries its own: inputs normalised the benchmark's way
    (``[-1, 1]``) are mapped to the owner's ``(p - mean) / std`` on the ``[0, 1]`` pixel scale.

    ``embed`` and ``head`` are a :class:`Classifier`'s own where the model is one; otherwise ``head``
    is the model's last ``nn.Linear`` and ``embed(x)`` its input (flattened), recorded by a forward
    hook. Every ``embed`` call checks that this layer's output is the model's output; where it is not
    (e.g. a softmax or another layer after it), or the model has no ``nn.Linear``, ``embed`` raises
    :class:`NoEmbedding` and the white-box attack is recorded as skipped with that reason."""

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        in_channels: int,
        mean: Optional[list[float]] = None,
        std: Optional[list[float]] = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.num_classes = int(num_classes)
        mean_t, std_t = normalisation(mean, std, in_channels)
        # x = 2p - 1 (benchmark) -> (p - mean) / std = x * (0.5 / std) + (0.5 - mean) / std
        self.register_buffer("scale", (0.5 / std_t).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", ((0.5 - mean_t) / std_t).view(1, -1, 1, 1), persistent=False)

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """Benchmark-normalised images as the owner's model takes them."""
        return x * self.scale + self.shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.adapt(x))

    @property
    def head(self) -> nn.Linear:
        if isinstance(self.model, Classifier):
            return self.model.head
        linears = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise NoEmbedding(
                "the owner's model has no nn.Linear layer, so no penultimate embedding for white-box attacks to read"
            )
        return linears[-1]

    @property
    def embedding_dim(self) -> int:
        return self.head.in_features

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate embedding of ``x`` (see the class docstring); raises :class:`NoEmbedding`."""
        if isinstance(self.model, Classifier):
            return self.model.embed(self.adapt(x))
        head, seen = self.head, {}

        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            seen["input"], seen["output"] = inputs[0], output

        handle = head.register_forward_hook(record)
        try:
            out = self.model(self.adapt(x))
        finally:
            handle.remove()
        last = seen.get("output")
        if last is None or last.shape != out.shape or not torch.allclose(last, out, rtol=1e-4, atol=1e-5):
            raise NoEmbedding(
                f"the owner's model's last nn.Linear ({type(self.model).__name__}: "
                f"{head.in_features} -> {head.out_features}) does not give its output, so white-box "
                "attacks cannot read a penultimate embedding; end the forward pass with that layer"
            )
        return seen["input"].flatten(1)


def normalisation(
    mean: Optional[list[float]], std: Optional[list[float]], in_channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std on the ``[0, 1]`` pixel scale (``None``: the benchmark's 0.5 and 0.5);
    one value serves every channel. Raises :class:`OwnerModelError` for a wrong length or a std <= 0."""
    values = []
    for key, given, default in (("mean", mean, BENCHMARK_MEAN), ("std", std, BENCHMARK_STD)):
        seq = (
            [default] if given is None else [float(v) for v in (given if isinstance(given, (list, tuple)) else [given])]
        )
        if len(seq) == 1:
            seq = seq * in_channels
        if len(seq) != in_channels:
            raise OwnerModelError(
                f"model.normalize.{key} has {len(seq)} values for {in_channels}-channel images; give one "
                f"per channel, e.g. model.normalize.{key}=[{','.join(['0.5'] * in_channels)}]"
            )
        values.append(torch.tensor(seq, dtype=torch.float32))
    if (values[1] <= 0).any():
        raise OwnerModelError(f"model.normalize.std={values[1].tolist()} must be positive in every channel")
    return values[0], values[1]


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """A safetensors file starts with an 8-byte little-endian header length and a JSON header."""
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length <= size - 8 and head[8:9] == b"{"


def _is_tensor_mapping(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _describe(obj: Any) -> str:
    """What a file's top level holds, in a few words, for a refusal."""
    if isinstance(obj, Mapping):
        odd = next(((k, v) for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))), None)
        if odd is None:
            return "an empty mapping"
        return f"a mapping whose entry {odd[0]!r} is a {type(odd[1]).__name__}, not a tensor"
    return f"a {type(obj).__name__}"


def _refusal_reason(exc: BaseException) -> tuple[str, str]:
    """``(global, reason)`` from a weights-only load's refusal: the class or function the file asked
    for ('' when none was named) and torch's one-line reason."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    after = text.split("WeightsUnpickler error:", 1)[-1]
    reason = next((line.strip() for line in after.splitlines() if line.strip()), type(exc).__name__)
    return (found.group(1) if found else ""), reason[:160]


def load_weights(path: Union[str, Path]) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or of a PyTorch state dict, by name, on the CPU.

    Nothing in the file is executed: safetensors holds only tensors, and a PyTorch file is read with
    ``torch.load(weights_only=True)``, which refuses any class or function outside plain tensors and
    containers. A checkpoint that holds the state dict under ``"state_dict"`` or ``"model"`` is
    unwrapped. Raises :class:`OwnerModelError` for a missing file, a file that is neither format, a
    pickle that needs code to load (a whole pickled model among them), and a top level that is not a
    mapping of names to tensors.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise OwnerModelError(
            f"weights file {path} does not exist; give the path of a .safetensors file or a saved state dict"
        )
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(9)
    if _looks_like_safetensors(head, size):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, json.JSONDecodeError, ValueError, OSError) as exc:
            raise OwnerModelError(
                f"weights file {path} starts like safetensors but cannot be read ({exc}); {SAVE_HINT}"
            ) from None
    obj = _torch_load(path)
    if not _is_tensor_mapping(obj) and isinstance(obj, Mapping):
        inner = next((obj[k] for k in WRAPPER_KEYS if _is_tensor_mapping(obj.get(k))), None)
        obj = obj if inner is None else inner
    if not _is_tensor_mapping(obj):
        raise OwnerModelError(
            f"weights file {path} holds {_describe(obj)}, not a mapping of parameter names to tensors; {SAVE_HINT}"
        )
    return dict(obj)


def _torch_load(path: Path) -> Any:
    """A PyTorch file read with ``weights_only=True``; every refusal an :class:`OwnerModelError`."""
    try:
        with warnings.catch_warnings():  # a refusal is one line: torch's own warning about the file is not it
            warnings.simplefilter("ignore")
            return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        needed, reason = _refusal_reason(exc)
        if needed:
            kind = (
                "a whole pickled model"
                if needed.startswith("torch.nn.")
                else "a pickled model or code that runs when loaded"
            )
            raise OwnerModelError(
                f"weights file {path} is a pickle that needs code to load ({needed}): it may hold {kind}, "
                f"and was not loaded; {SAVE_HINT}"
            ) from None
        raise OwnerModelError(
            f"weights file {path} is a pickle that a weights-only load refuses ({reason}), "
            f"and was not loaded; {SAVE_HINT}"
        ) from None
    except Exception as exc:  # a zip that is no checkpoint, random bytes, a truncated file...
        text = str(exc).strip()
        first = text.splitlines()[0].split(". ")[0][:160] if text else type(exc).__name__
        raise OwnerModelError(
            f"weights file {path} is neither safetensors nor a PyTorch state dict ({first}); {SAVE_HINT}"
        ) from None


def _import_factory(factory: str) -> Any:
    """The callable named ``package.module:attribute`` (the attribute may be dotted: ``mod:Net.create``)."""
    module_name, sep, attribute = factory.partition(":")
    if not sep or not module_name or not attribute:
        raise OwnerModelError(
            f"model.factory={factory!r} is not of the form package.module:callable "
            "(e.g. model.factory=my_models.nets:make_net)"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise OwnerModelError(
            f"model.factory={factory!r}: cannot import {module_name} ({exc}); make the module "
            "importable (install its package, or add its folder to PYTHONPATH)"
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise OwnerModelError(
                f"model.factory={factory!r}: {module_name} has no {attribute}; name a function "
                "or class in it that returns the model"
            )
        target = getattr(target, part)
    if not callable(target):
        raise OwnerModelError(f"model.factory={factory!r}: {attribute} is a {type(target).__name__}, not callable")
    return target


def build_owner_model(
    arch: Optional[str] = None,
    factory: Optional[str] = None,
    kwargs: Optional[Mapping] = None,
    *,
    num_classes: int,
    image_size: int,
    in_channels: int,
) -> nn.Module:
    """The owner's architecture, untrained: registry architecture ``arch`` built for
    ``in_channels`` x ``image_size`` images and ``num_classes`` classes, or ``factory(**kwargs)``.

    ``factory`` is ``"package.module:callable"``; the module is imported and the callable run with
    ``kwargs`` (the owner's own code runs here). Give exactly one of ``arch`` and ``factory``.
    """
    if (arch is None) == (factory is None):
        raise OwnerModelError(
            "name the architecture once: model.arch=NAME (a registry architecture) "
            "or model.factory=package.module:callable, not both or neither"
        )
    if arch is not None:
        if kwargs:
            raise OwnerModelError(f"model.kwargs are passed to a model.factory, not to model.arch={arch}; remove them")
        try:
            return build_model(arch, in_channels, num_classes, image_size)
        except UnknownEntryError as exc:
            raise OwnerModelError(str(exc).splitlines()[0]) from None
    make = _import_factory(str(factory))
    try:
        model = make(**dict(kwargs or {}))
    except Exception as exc:
        raise OwnerModelError(
            f"model.factory={factory!r} raised {type(exc).__name__}: {exc}; check model.kwargs"
        ) from None
    if not isinstance(model, nn.Module):
        raise OwnerModelError(f"model.factory={factory!r} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def check_state_dict(model: nn.Module, weights: Mapping[str, torch.Tensor], source: str = "the weights") -> None:
    """Refuse ``weights`` that ``model.load_state_dict(strict=True)`` would reject, naming the first
    problem in the model's own order: a missing tensor or one of another shape (with both shapes),
    then the first tensor the model does not have."""
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in weights:
            fix = (
                "the file's names carry DataParallel's 'module.' prefix: save model.module.state_dict() instead"
                if f"module.{name}" in weights
                else "give the architecture the weights were trained with"
            )
            raise OwnerModelError(
                f"{source} do not match the architecture: no tensor {name!r} "
                f"(the model has {len(expected)} tensors, the file {len(weights)}); {fix}"
            )
        if tuple(weights[name].shape) != tuple(tensor.shape):
            raise OwnerModelError(
                f"{source} do not match the architecture: {name!r} is {tuple(weights[name].shape)} "
                f"in the file but {tuple(tensor.shape)} in the model; give the architecture and "
                "model settings (classes, channels, image size, kwargs) the weights were trained with"
            )
    extra = next((name for name in weights if name not in expected), None)
    if extra is not None:
        raise OwnerModelError(
            f"{source} do not match the architecture: the file has {extra!r}, which the model "
            "does not; give the architecture the weights were trained with"
        )


def load_owner_model(
    weights: Union[str, Path],
    arch: Optional[str] = None,
    factory: Optional[str] = None,
    kwargs: Optional[Mapping] = None,
    *,
    num_classes: int,
    image_size: int,
    in_channels: int,
) -> nn.Module:
    """The owner's trained model in eval mode on the CPU: built with :func:`build_owner_model`, its
    weights read with :func:`load_weights`, checked with :func:`check_state_dict` and loaded strictly."""
    model = build_owner_model(
        arch, factory, kwargs, num_classes=num_classes, image_size=image_size, in_channels=in_channels
    )
    return load_checked(model, load_weights(weights), f"weights {Path(weights).name}")


def load_checked(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "the weights") -> nn.Module:
    """``model`` in eval mode with ``state`` loaded strictly, after :func:`check_state_dict` has named
    any mismatch (``source`` says what the weights are in the refusal)."""
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)  # in the owner's layout: answers as the owner's model does
    return model.eval()

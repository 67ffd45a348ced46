"""Typed settings: one dataclass per attack and per defense holds each setting's type, range and
(where it does not depend on the profile) its default.

Profiles supply the recipe sizes in yaml; :func:`parse` turns the composed node into the entry's
dataclass, so code reads ``s.epochs`` as an ``int`` and a bad value fails at planning time with one
line that names the key, the value, what is allowed and an example.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Optional, Union

from omegaconf import OmegaConf

MISSING = dataclasses.MISSING


class SettingsError(ValueError):
    """A setting with a value it cannot take; the message is one line with the fix."""


def setting(
    default: Any = MISSING,
    *,
    min: Optional[float] = None,
    max: Optional[float] = None,
    min_exclusive: bool = False,
    choices: Optional[tuple] = None,
    example: Any = None,
) -> Any:
    """A dataclass field with a range (``min``/``max``, inclusive unless ``min_exclusive``) or a set
    of ``choices`` (for a list: of each element) and an ``example`` for error messages."""
    meta = {"min": min, "max": max, "min_exclusive": min_exclusive, "choices": choices, "example": example}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class NoSettings:
    """For entries without settings."""


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return "null or " + " or ".join(_describe(a) for a in inner)
    if origin in (list, tuple):
        return f"a list of {_describe(typing.get_args(tp)[0]).removeprefix('an ').removeprefix('a ')}s"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _convert(tp: Any, value: Any) -> Any:
    """``value`` as ``tp``, or raise TypeError."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value)
            except TypeError:
                continue
        raise TypeError
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError
        items = [_convert(typing.get_args(tp)[0], v) for v in value]
        return items if origin is list else tuple(items)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise TypeError
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError
        return value
    raise TypeError


def _check_range(key: str, value: Any, meta: dict, allowed: str, example: Any) -> None:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if v is None:
            continue
        choices = meta.get("choices")
        if choices is not None and v not in choices:
            raise SettingsError(
                f"{key}={v!r} is not allowed: choose from {', '.join(map(str, choices))} (e.g. {key}={example})"
            )
        lo, hi = meta.get("min"), meta.get("max")
        low_bad = lo is not None and (v <= lo if meta.get("min_exclusive") else v < lo)
        if low_bad or (hi is not None and v > hi):
            lo_text = "" if lo is None else (f"> {lo}" if meta.get("min_exclusive") else f">= {lo}")
            hi_text = "" if hi is None else f"<= {hi}"
            bounds = " and ".join(t for t in (lo_text, hi_text) if t)
            each = ", each" if isinstance(value, (list, tuple)) else ""
            raise SettingsError(f"{key}={v!r} is out of range: must be {allowed}{each} {bounds} (e.g. {key}={example})")


def parse(cls: type, node: Any, prefix: str) -> Any:
    """Build ``cls`` from a config node (DictConfig or dict); unknown keys and bad values raise
    :class:`SettingsError` naming ``prefix.key``."""
    plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(plain) - names - {"name"})
    if unknown:
        raise SettingsError(
            f"{prefix}.{unknown[0]} is not a setting; settings of {prefix}: {', '.join(sorted(names)) or 'none'}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        key, tp = f"{prefix}.{f.name}" if prefix else f.name, hints[f.name]
        if f.name not in plain:
            if f.default is MISSING and f.default_factory is MISSING:
                raise SettingsError(f"{key} is missing; set it, e.g. {key}={f.metadata.get('example')}")
            continue
        value = plain[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = parse(tp, value, key)
            continue
        example = f.metadata.get("example")
        if example is None:
            example = f.default if f.default is not MISSING else value
        allowed = _describe(tp)
        try:
            converted = _convert(tp, value)
        except TypeError:
            raise SettingsError(f"{key}={value!r} is not valid: must be {allowed} (e.g. {key}={example})") from None
        _check_range(key, converted, f.metadata, allowed, example)
        kwargs[f.name] = converted
    return cls(**kwargs)


def as_dict(settings: Any) -> dict:
    """Plain-data form of a settings object (for cache keys and manifests)."""
    return dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings or {})

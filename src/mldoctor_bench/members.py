"""The members file of an owner's model: which examples it was trained on, one a line.

For a dataset whose examples are files (``dataset=folder``) each line is an image's path relative to
``data.root`` (``cat/001.png``, as :attr:`ImageData.files` lists them); for a registry dataset it is
a row index in ``[0, N)``. Blank lines and lines starting with ``#`` are ignored; an example named
twice counts once. Every refusal is a :class:`MembersError`, one line naming the line and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from mldoctor_bench.data.base import ImageData


class MembersError(ValueError):
    """A members file that does not name examples of the dataset; the message is one line with the fix."""


def entries(path: Path) -> list[tuple[int, str]]:
    """``(line number, entry)`` of every line that names an example."""
    if not path.is_file():
        raise MembersError(
            f"members={path} is not a file; give a text file with the model's training examples, one "
            "a line (or leave members out to skip membership inference)"
        )
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            out.append((number, text))
    if not out:
        raise MembersError(f"members={path} names no example; list the model's training examples, one a line")
    return out


def as_posix(text: str) -> str:
    """A relative path as :attr:`ImageData.files` spells it: forward slashes, no leading ``./``."""
    text = text.replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def read_members(path: str | Path, data: ImageData) -> torch.Tensor:
    """The sorted row indices (``int64``) of ``data`` that the members file at ``path`` names."""
    return member_rows(path, len(data), data.files, data.name)


def member_rows(path: str | Path, count: int, files: Optional[Sequence[str]], name: str) -> torch.Tensor:
    """:func:`read_members` for a dataset of ``count`` examples called ``name`` whose examples are
    the relative paths ``files`` (``None``: named by row index); needs no decoded image."""
    path = Path(path).expanduser()
    lines = entries(path)
    if files is not None:
        row = {f: i for i, f in enumerate(files)}
        missing = [(number, text) for number, text in lines if as_posix(text) not in row]
        if missing:
            number, text = missing[0]
            raise MembersError(
                f"members={path} line {number}: {text!r} is not an image of dataset {name} "
                f"({len(missing)} of {len(lines)} entries are not); give paths relative to data.root, "
                f"as in {files[0]!r}"
            )
        chosen = [row[as_posix(text)] for _, text in lines]
    else:
        chosen = []
        for number, text in lines:
            if not text.lstrip("-").isdigit():
                raise MembersError(
                    f"members={path} line {number}: {text!r} is not a row index; dataset {name} "
                    f"names its examples by index, 0 to {count - 1}"
                )
            index = int(text)
            if not 0 <= index < count:
                raise MembersError(
                    f"members={path} line {number}: index {index} is out of range; dataset "
                    f"{name} has {count} examples (0 to {count - 1})"
                )
            chosen.append(index)
    members = torch.unique(torch.tensor(chosen, dtype=torch.int64))
    if len(members) == count:
        raise MembersError(
            f"members={path} names every example of {name}: an assessment needs examples the "
            "model did not train on (evaluation non-members and the attacker's data)"
        )
    return members

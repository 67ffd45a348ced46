"""Provenance: stable hashes of configs and of the code that produced a number."""

from __future__ import annotations

import hashlib
import json
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from mldoctor_bench.version import __version__

PACKAGE_DIR = Path(__file__).resolve().parent


def stable_hash(payload: Any, length: int = 16) -> str:
    """SHA-256 of the canonical JSON of ``payload`` (sorted keys), truncated to ``length`` hex."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def source_hash(relative_paths: Iterable[str]) -> str:
    """Hash of the package's own source files (files or folders, relative to the package)."""
    h = hashlib.sha256()
    for rel in sorted(relative_paths):
        target = PACKAGE_DIR / rel
        files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
        for f in files:
            h.update(str(f.relative_to(PACKAGE_DIR)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


@lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+<git commit>`` when run from a checkout, else ``+src.<source hash>``."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(PACKAGE_DIR), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(PACKAGE_DIR), "status", "--porcelain", "--", str(PACKAGE_DIR)],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return f"{__version__}+g{commit}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return f"{__version__}+src.{source_hash(['.'])}"

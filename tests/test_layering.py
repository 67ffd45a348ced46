"""Layering: every module imports on its own, and the report tool runs without torch.

Each module is imported in a process where no module of the package is loaded yet: within one
process an earlier import can hide a cycle (``a -> b -> a`` works when ``b`` happens to be imported
first), which is exactly what must fail.
"""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import mldoctor_bench

SRC = str(Path(mldoctor_bench.__file__).resolve().parent.parent)


def all_modules() -> list[str]:
    """Every module of the package, subpackages included (``__main__`` modules run a program, not an import)."""
    names = [mldoctor_bench.__name__]
    for info in pkgutil.walk_packages(mldoctor_bench.__path__, prefix=f"{mldoctor_bench.__name__}."):
        if not info.name.endswith(".__main__"):
            names.append(info.name)
    return sorted(names)


def fresh_python(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a new interpreter with this checkout's source first on the path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_the_walk_finds_the_subpackages():
    modules = all_modules()
    for name in (
        "mldoctor_bench.training",
        "mldoctor_bench.threat_models",
        "mldoctor_bench.data.cache",
        "mldoctor_bench.attacks.membership",
        "mldoctor_bench.report.build",
    ):
        assert name in modules


# Third-party libraries the package uses, loaded once by the fork-based check below.
PRELOAD = (
    "numpy",
    "torch",
    "torchvision",
    "pandas",
    "scipy.stats",
    "sklearn.metrics",
    "matplotlib.pyplot",
    "hydra",
    "hydra.experimental.callback",
    "omegaconf",
    "rich.console",
    "rich.progress",
    "safetensors.torch",
    "filelock",
    "opacus",
    "PIL.Image",
)

# Loads the third-party libraries (not the package), then imports each module in a forked child:
# every child starts with no module of the package loaded, as a fresh interpreter would, without
# paying for torch's import once per module.
FORK_EACH = """
import importlib, json, os, sys, traceback
for lib in PRELOAD:
    try:
        importlib.import_module(lib)
    except ImportError:
        pass
assert not [m for m in sys.modules if m.split(".")[0] == "mldoctor_bench"]
failed = {}
for name in MODULES:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 0
        try:
            importlib.import_module(name)
        except BaseException:
            os.write(write, traceback.format_exc().strip().splitlines()[-1].encode())
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        message = pipe.read()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failed[name] = message or f"exit status {status}"
print(json.dumps(failed))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_every_module_imports_alone_in_a_forked_clean_process():
    modules = all_modules()
    code = f"PRELOAD = {PRELOAD!r}\nMODULES = {modules!r}\n" + FORK_EACH
    run = fresh_python(code)
    assert run.returncode == 0, run.stderr[-3000:]
    failures = json.loads(run.stdout.strip().splitlines()[-1])
    assert not failures, f"modules that fail to import on their own: {failures}"


# The modules a user's command starts from. Each is imported in its own fresh interpreter, with
# nothing preloaded: the forked check above preloads third-party libraries to import ~100 modules in
# seconds, which could hide a module that uses a library's submodule without importing it.
ENTRY_POINTS = ("mldoctor_bench", "mldoctor_bench.cli", "mldoctor_bench.assess", "mldoctor_bench.report")


def test_every_entry_point_imports_alone_in_a_fresh_interpreter():
    assert set(ENTRY_POINTS) <= set(all_modules())
    with ThreadPoolExecutor(max(2, min(4, os.cpu_count() or 1))) as pool:
        results = list(pool.map(lambda m: (m, fresh_python(f"import {m}")), ENTRY_POINTS))
    failures = {m: r.stderr.strip().splitlines()[-1] for m, r in results if r.returncode != 0}
    assert not failures, f"entry points that fail to import on their own: {failures}"


# A tiny hand-made tidy table of one finished cell: target utility and one membership attack.
MAKE_CELL = """
import sys
from pathlib import Path
from mldoctor_bench.cellfiles import CellFiles
from mldoctor_bench.results import Cell, Provenance, metric_rows, to_frame, write_table
from mldoctor_bench.files import atomic_write_text
results = Path(sys.argv[1])
files = CellFiles.under(results, "mnist5k", "simple_cnn", "none", 0, "abc123")
cell = Cell("mnist5k", "simple_cnn", "none", 0)
rows = metric_rows(cell, "target", "none", "", {"train_accuracy": 1.0, "test_accuracy": 0.9})
rows += metric_rows(cell, "membership", "blackbox_shadow", "", {"auc": 0.7, "accuracy": 0.65, "advantage": 0.3})
write_table(to_frame(rows, Provenance("run", "abc123", "v", "2026-01-01T00:00:00"), 1.0), files.dir)
atomic_write_text(files.done, "{}")
"""


def test_report_builds_without_loading_torch(tmp_path):
    code = (
        MAKE_CELL.replace("sys.argv[1]", repr(str(tmp_path)))
        + """
from mldoctor_bench.report import main
main([str(results)])
assert (results / "report" / "report.md").exists()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "safetensors"))
assert not loaded, loaded
print("no torch")
"""
    )
    run = fresh_python(code, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "no torch" in run.stdout
    report = (tmp_path / "report" / "report.md").read_text()
    assert "membership" in report and "mnist5k" in report


# --- the package's structure, read from its sources ------------------------------------------------

PACKAGE = Path(mldoctor_bench.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports anywhere: at the top, inside functions and under
    ``TYPE_CHECKING`` alike (each is a dependency a reader has to follow)."""
    import ast

    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m in modules and m != name}


def test_no_import_cycle_anywhere_in_the_package():
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: package_imports(p, set(files)) for m, p in files.items()}
    cycles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dep in sorted(graph[module]):
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# Below plan(): the modules that receive a Plan. Its raw configuration (``.cfg``) is read only to
# write the cell's config.yaml; everything else reads the plan's typed values.
BELOW_PLAN = ("cell", "owner/target.py", "owner/budget.py", "attacks", "defenses", "report")


def test_nothing_below_the_plan_reads_the_raw_configuration():
    import ast

    reads = []
    for entry in BELOW_PLAN:
        root = PACKAGE / entry
        for path in [root] if root.is_file() else sorted(root.rglob("*.py")):
            if path.name == "plan.py":
                continue
            tree = ast.parse(path.read_text())
            allowed = {
                id(arg)
                for call in ast.walk(tree)
                if isinstance(call, ast.Call) and ast.unparse(call.func) == "OmegaConf.to_yaml"
                for arg in call.args
            }
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr == "cfg" and id(node) not in allowed:
                    reads.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {ast.unparse(node)}")
    assert not reads, f"raw configuration read below plan(): {reads}"


def test_no_isinstance_tells_the_models_to_obtain_apart():
    import re

    told = [
        f"{p.relative_to(PACKAGE)}:{n}"
        for p in PACKAGE.rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"isinstance\([^)]*(CachedRequest|ModelSpec|ModelRequest)", line)
    ]
    assert not told, told

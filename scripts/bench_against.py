"""Side by side: the default run of another commit and of the working tree, on this machine, in turn.

Any change that touches training, attacks or the cell is timed against the commit before it
(docs/contributing.md): a round's changes add up, and only a side-by-side run on one machine under
one load says what a change cost. For each of ``--rounds`` rounds, each selection (the full default
run, and the ML-Doctor selection: the paper's four families without RMIA) runs once for ``REV``
(checked out in a temporary git worktree, its sources first on the Python path of this
environment) and once for the working tree, alternating which goes first, each in a fresh results
folder (nothing cached), with the same torch threads. Then, per selection, every phase of
``timings.json`` (its own seconds, median over the rounds) for both, their ratio, and the wall
times; and, against the shipped budgets (``scripts/bench_budgets.json``: each phase's share of the
default run as measured on the 2-core machine), the phases whose share has grown by more than 10%.

Usage: ``python scripts/bench_against.py --against REV [--rounds 2] [--selection default ml-doctor]
[--keep DIR] [--write-budgets]``; ``make bench-against REV=...``; ``--tables DIR/bench_against.json``
prints the tables of a kept run again. Prints a Markdown table per selection (the attacker's models,
trained as one group whose name lists them, compared as one phase). ``--write-budgets`` replaces
the budgets with the working tree's shares of this run (after a change that makes a phase cheaper or
adds work on purpose, with the note saying so).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGETS = Path(__file__).with_name("bench_budgets.json")
SELECTIONS = {
    "default": [],
    "ml-doctor": ["attack=[membership,membership_metric,membership_label_only,inversion,attribute,stealing]"],
}
GROWN = 1.10  # a phase whose share of the run grew past its budget's by this factor is named
RUN = "import sys; sys.argv[0] = 'mldoctor-bench'; from mldoctor_bench.cli import main; main()"


def short_hash(rev: str) -> str:
    """The short hash of commit ``rev``; a clear refusal when there is none."""
    sha = subprocess.run(["git", "rev-parse", "--short", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True, text=True)
    if sha.returncode != 0:
        raise SystemExit(f"REV={rev} is not a commit of this repository ({sha.stderr.strip()}); e.g. REV=HEAD~1")
    return sha.stdout.strip()


def worktree(rev: str, where: Path) -> Path:
    """``rev`` checked out (detached) at ``where`` / its short hash."""
    path = where / f"rev-{short_hash(rev)}"
    if path.exists():  # left by an interrupted run with the same --keep
        subprocess.run(["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True)
    subprocess.run(["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT, check=True, capture_output=True)
    return path


def run_once(source: Path, overrides: list[str], results: Path) -> dict:
    """One run of the default cell with ``source``'s package; its wall seconds and phases' own seconds."""
    env = {**os.environ, "PYTHONPATH": str(source / "src")}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RUN, f"results_dir={results}", "device=cpu", *overrides],
        cwd=results.parent,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"the run of {source} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    [timings] = list((results / "cells").glob("*/timings.json"))
    phases = json.loads(timings.read_text())["phases"]
    out: dict[str, float] = {}
    models = 0
    for p in phases:
        name = phase_group(p["name"])
        out[name] = out.get(name, 0.0) + float(p["self_s"])
        if name == "train the attacker's models":
            models += int(re.search(r"\((\d+) models\)$", p["name"]).group(1)) if "models)" in p["name"] else 2
    return {"wall_s": wall, "phases": out, "attacker_models": models}


def phase_group(name: str) -> str:
    """The name a phase of ``timings.json`` is compared under: the group of the attacker's models is
    named after its models and their count (``train evaluator+...+gan (8 models)``), which a change
    may alter, so every training phase but the target's and shadow's is one, and so is every load."""
    if name.startswith("train ") and name != "train target+shadow":
        return "train the attacker's models"
    if name.startswith("load "):
        return "load data and stored models"
    return name


def regroup(run: dict) -> dict:
    """A saved run's phases under :func:`phase_group`'s names (a no-op on runs saved so)."""
    phases: dict[str, float] = {}
    for name, seconds in run["phases"].items():
        phases[phase_group(name)] = phases.get(phase_group(name), 0.0) + seconds
    return {**run, "phases": phases}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(name: str, runs: dict[str, list[dict]], labels: dict[str, str]) -> list[str]:
    """The Markdown table of one selection: each phase's median own seconds for both, the ratio."""
    old, new = labels["rev"], labels["tree"]
    names = sorted(
        {n for r in runs["rev"] + runs["tree"] for n in r["phases"]},
        key=lambda n: -max(median([r["phases"].get(n, 0.0) for r in runs[k]]) for k in runs),
    )
    lines = [f"### {name}", "", f"| phase | {old} s | {new} s | ratio |", "| --- | ---: | ---: | ---: |"]
    for n in names:
        a = median([r["phases"][n] for r in runs["rev"] if n in r["phases"]])
        b = median([r["phases"][n] for r in runs["tree"] if n in r["phases"]])
        ratio = f"{b / a:.2f}" if a == a and b == b and a > 0.05 else ""
        show = [f"{v:.1f}" if v == v else "-" for v in (a, b)]
        lines.append(f"| {n} | {show[0]} | {show[1]} | {ratio} |")
    a, b = (median([r["wall_s"] for r in runs[k]]) for k in ("rev", "tree"))
    walls = {k: ", ".join(f"{r['wall_s']:.1f}" for r in runs[k]) for k in runs}
    lines += [
        f"| **wall time** (median; runs: {walls['rev']} / {walls['tree']}) | {a:.1f} | {b:.1f} | {b / a:.2f} |",
        "",
    ]
    return lines


def over_budget(runs: list[dict]) -> list[str]:
    """Phases whose share of the default run's wall time grew past their budget share by
    :data:`GROWN`, from the working tree's runs."""
    if not BUDGETS.exists():
        return [f"no budgets file ({BUDGETS.name})"]
    budgets = json.loads(BUDGETS.read_text())["share"]
    wall = median([r["wall_s"] for r in runs])
    lines = []
    for phase, share in budgets.items():
        now = median([r["phases"].get(phase, 0.0) for r in runs]) / wall
        if now > share * GROWN:
            lines.append(f"- `{phase}`: {now:.1%} of the run, its budget {share:.1%} (+{now / share - 1:.0%})")
    return lines or ["- every budgeted phase within 10% of its share"]


def shares(runs: list[dict], least: float = 0.01) -> dict[str, float]:
    """Each phase's median own seconds as a share of the median wall time, for phases of at least
    ``least`` of it (the budgets file)."""
    wall = median([r["wall_s"] for r in runs])
    names = {n for r in runs for n in r["phases"]}
    out = {n: median([r["phases"].get(n, 0.0) for r in runs]) / wall for n in names}
    return {n: round(v, 4) for n, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= least}


def report(runs: dict, labels: dict[str, str], rounds: int, write_budgets: bool) -> None:
    """Print the tables and the budget check of ``runs`` (selection -> rev/tree -> runs); with
    ``write_budgets``, rewrite the budgets from the working tree's default runs."""
    threads = os.environ.get("OMP_NUM_THREADS", "all cores")
    print(f"## {labels['tree']} against {labels['rev']}: {rounds} round(s) in turn, torch threads {threads}\n")
    for s, by in runs.items():
        print("\n".join(table(s, by, labels)))
        counts = {k: sorted({r["attacker_models"] for r in by[k] if "attacker_models" in r}) for k in by}
        if counts["rev"] or counts["tree"]:
            print(f"(the attacker's models trained together: {counts['rev']} / {counts['tree']})\n")
    if "default" not in runs:
        return
    print("Phases over their budget (scripts/bench_budgets.json), working tree:\n")
    print("\n".join(over_budget(runs["default"]["tree"])))
    if write_budgets:
        tree = runs["default"]["tree"]
        budgets = {
            "measured": f"{time.strftime('%Y-%m-%d')}, {len(tree)} default run(s) of the working tree "
            f"side by side with {labels['rev']}, {os.cpu_count()} cores, torch threads {threads}",
            "wall_s": round(median([r["wall_s"] for r in tree]), 1),
            "share": shares(tree),
        }
        BUDGETS.write_text(json.dumps(budgets, indent=1) + "\n")
        print(f"\nwrote {BUDGETS}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", help="the commit (or any git revision) to compare with")
    parser.add_argument("--tables", type=Path, help="print the tables of a saved bench_against.json instead of running")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--selection", nargs="+", choices=list(SELECTIONS), default=list(SELECTIONS))
    parser.add_argument("--keep", type=Path, help="keep the results folders here (default: a temporary folder)")
    parser.add_argument("--write-budgets", action="store_true", help=f"write {BUDGETS.name} from the working tree")
    args = parser.parse_args()
    if args.tables is not None:
        saved = json.loads(args.tables.read_text())
        runs = {s: {k: [regroup(r) for r in rs] for k, rs in by.items()} for s, by in saved["runs"].items()}
        report(runs, saved["labels"], saved["rounds"], args.write_budgets)
        return
    if args.against is None:
        parser.error("--against REV is needed (or --tables FILE)")
    short_hash(args.against)  # refused before any folder is made
    scratch = Path(tempfile.mkdtemp(prefix="bench-against-")) if args.keep is None else args.keep.resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    rev_source = worktree(args.against, scratch)
    sources = {"rev": rev_source, "tree": ROOT}
    labels = {"rev": rev_source.name.removeprefix("rev-"), "tree": "working tree"}
    runs = {s: {"rev": [], "tree": []} for s in args.selection}
    try:
        for r in range(args.rounds):
            for s in args.selection:
                for which in ("rev", "tree") if r % 2 == 0 else ("tree", "rev"):
                    results = scratch / f"{s}-{which}-{r}"
                    print(f"round {r + 1}/{args.rounds}: {s} with {labels[which]} ...", file=sys.stderr, flush=True)
                    runs[s][which].append(run_once(sources[which], SELECTIONS[s], results))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(rev_source)], cwd=ROOT, capture_output=True)
    saved = {"labels": labels, "rounds": args.rounds, "runs": runs}
    (scratch / "bench_against.json").write_text(json.dumps(saved, indent=1))
    report(runs, labels, args.rounds, args.write_budgets)
    print(f"\nruns: {scratch / 'bench_against.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Before and after a change, interleaved: ``bench/run.py`` in a checkout of a base commit and in
this working tree, in turn, and the medians of both.

On these machines two runs minutes apart differ by more than most changes do, and the
difference drifts over an hour; alternating the two builds run by run spreads the drift over
both, and the medians say which is cheaper (the run-by-run figures are printed too: a change
is only as sure as their spread).

    .venv/bin/python -m bench.before_after --base HEAD~1 --runs 4 -- --scenarios chat --concurrency 32

The base is checked out with ``git worktree`` in a temporary directory (removed afterwards) and
runs with this checkout's virtualenv; ``bench/run.py`` starts each build's own server code
(its ``PYTHONPATH`` is the checkout's). Arguments after ``--`` go to both runs (``--no-scale
--no-nodes --duration 5`` are added unless given).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RUN_ARGS = ("--no-scale", "--no-nodes", "--duration", "5")

# (label, how to read it from a row of bench/run.py's JSON); lower is better for all but rps.
METRICS: tuple[tuple[str, Any], ...] = (
    ("cpu ms/req envoy+workers", lambda r: r["cpu_ms_per_request"]["envoy_plus_workers"]),
    ("cpu ms/req workers", lambda r: r["cpu_ms_per_request"]["workers"]),
    ("cpu ms/req envoy", lambda r: r["cpu_ms_per_request"]["envoy"]),
    ("cpu ms/req redis", lambda r: r["cpu_ms_per_request"]["redis"]),
    ("rps", lambda r: r["relay"]["rps"]),
    ("added p50 ms", lambda r: r.get("added_p50_ms")),
    ("ttft overhead p50 ms", lambda r: r.get("ttft_overhead_p50_ms")),
)

Key = tuple[str, int]  # (scenario, concurrency)
Runs = dict[str, dict[Key, dict[str, list[float]]]]  # build → row → metric → one value per run


def collect(runs: Runs, build: str, payload: dict[str, Any]) -> None:
    """Add one ``bench/run.py`` result (its JSON) to ``build``'s figures."""
    rows = runs.setdefault(build, {})
    for row in payload.get("rows", []):
        figures = rows.setdefault((row["scenario"], int(row["concurrency"])), {})
        for label, read in METRICS:
            try:
                value = read(row)
            except (KeyError, TypeError):
                value = None
            if value is not None:
                figures.setdefault(label, []).append(float(value))


@dataclass(frozen=True)
class Change:
    scenario: str
    concurrency: int
    metric: str
    before: list[float]
    after: list[float]

    @property
    def medians(self) -> tuple[float, float]:
        return statistics.median(self.before), statistics.median(self.after)

    @property
    def percent(self) -> float | None:
        old, new = self.medians
        return (new - old) / old * 100 if old else None

    def line(self) -> str:
        old, new = self.medians
        change = f"{self.percent:+.1f} %" if self.percent is not None else "-"
        return (
            f"{self.scenario:<8} c={self.concurrency:<3} {self.metric:<26} base {_fmt(self.before)}  "
            f"this {_fmt(self.after)}  median {old:.3f} → {new:.3f} ({change})"
        )


def changes(runs: Runs, before: str = "base", after: str = "this") -> list[Change]:
    """Each (row, metric) both builds measured, with every run's figure."""
    found = []
    for key in sorted(runs.get(after, {})):
        for label, _ in METRICS:
            old = runs.get(before, {}).get(key, {}).get(label)
            new = runs[after][key].get(label)
            if old and new:
                found.append(Change(key[0], key[1], label, old, new))
    return found


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


@contextmanager
def checkout(base: str) -> Iterator[Path]:
    """``base`` checked out beside this repository, sharing its virtualenv."""
    with tempfile.TemporaryDirectory(prefix="relay-base-") as tmp:
        tree = Path(tmp) / "tree"
        added = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), base],
                               capture_output=True, text=True, check=False)  # fmt: skip
        if added.returncode != 0:
            raise SystemExit(f"cannot check out {base!r}: {added.stderr.strip()}")
        try:
            (tree / ".venv").symlink_to(REPO / ".venv")
            yield tree
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False,
                           capture_output=True)  # fmt: skip


def run_once(root: Path, run_args: Sequence[str], output: Path) -> dict[str, Any]:
    argv = [str(REPO / ".venv" / "bin" / "python"), str(root / "bench" / "run.py"), *run_args, "--output", str(output)]
    done = subprocess.run(argv, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench/run.py failed in {root}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads(output.read_text())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    run_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="python -m bench.before_after", description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="the commit to compare with (e.g. HEAD~1)")
    p.add_argument("--runs", type=int, default=4, help="runs of each build, alternated")
    args = p.parse_args(own)
    if args.runs < 1:
        p.error("--runs must be at least 1")
    for flag in DEFAULT_RUN_ARGS[:2]:
        if flag not in run_args:
            run_args.append(flag)
    if not any(a == "--duration" or a.startswith("--duration=") for a in run_args):
        run_args += list(DEFAULT_RUN_ARGS[2:])
    runs: Runs = {}
    with checkout(args.base) as base_tree, tempfile.TemporaryDirectory(prefix="relay-ab-") as out:
        for i in range(args.runs):
            for build, root in (("base", base_tree), ("this", REPO)):
                print(f"run {i + 1}/{args.runs}: {build} ...", flush=True)
                collect(runs, build, run_once(root, run_args, Path(out) / f"{build}-{i}.json"))
    print(f"\nbase = {args.base}, this = the working tree; {args.runs} runs each, alternated")
    for change in changes(runs):
        print(change.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

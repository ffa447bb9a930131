#!/usr/bin/env python
"""Run a planned series of timed synthetic trainings, one after another, and keep their output.

    python -m benchmarks.timed_series benchmarks/results/2026-12-07_my_question
    python -m benchmarks.timed_series benchmarks/results/2026-12-07_my_question --print-commands

The folder holds ``plan.txt`` (the question, the runs and the rule that decides, written before
the runs) and ``series.json``, the runs themselves::

    {"task": "instance",
     "config": "configs/synthetic/instance/knet_R18_tiny_16k_bf16_keep_freed.yaml",
     "time_budget": 600,
     "baselines": "benchmarks/results/2026-12-05_quickstart_recipes_36e503e/baselines.json",
     "runs": [{"name": "A1", "opts": ["MODEL.KNET.THING_SOFTMAX", "True"]},
              {"name": "A2", "opts": ["SEED", "2", "MODEL.KNET.THING_SOFTMAX", "True"]},
              {"name": "L3", "time_budget": 1800, "schedule_seconds": 1790}]}

A run's own keys (``task``, ``config``, ``time_budget``, ``schedule_seconds``, ``baselines``,
``opts``) override the series' keys. ``task`` and ``config`` are required (here or in the run),
``baselines`` is optional (without it :mod:`benchmarks.train_synthetic` fits the baselines
again, inside the run's wall time but outside its training time), ``schedule_seconds`` becomes
``SOLVER.TIME_BUDGET.SECONDS`` (left to the config when absent).

Before anything runs, the series is refused (one line naming the file and the problem) when
``plan.txt`` or ``series.json`` is missing, not committed, or changed since its commit (a plan
is written and committed before the runs, never after), when a run name repeats or is not a
plain folder name, or when a run's training folder ``output/<series>/<name>`` or its result
folder ``<series dir>/<name>`` exists already (earlier output is never overwritten).

Each run is ``python -m benchmarks.train_synthetic --task T --output output/<series>/<name>
[--baselines J] --config-file C --time-budget B [SOLVER.TIME_BUDGET.SECONDS S] OPTS...``, under
GNU ``/usr/bin/time -v`` where it exists, from the repository root, with the environment of the
caller (set ``DETECTRON2_DATASETS`` as for the run itself). The series holds the benchmark lock
of :mod:`benchmarks.bench_lock` from the first run to the last, so no other timed benchmark
starts between two of its runs; the runs inherit it.

Written into the series folder: ``driver.log`` (UTC start and end of every run, its exit status
and result) and, per run, ``<name>/``: ``benchmark_summary.json``, ``metrics.json``,
``config.yaml``, ``run.log`` (gzip-compressed above 1 MB, as ``run.log.gz``), ``time.txt``
(``/usr/bin/time -v``) and ``plots/`` (``tools/plot_metrics.py``). A failed run is recorded and
the series goes on; the exit status is 0 only when every run ended with status 0.
"""
from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from .bench_lock import benchmark_lock

ROOT = Path(__file__).resolve().parents[1]
#: keys a run (or the series, as their default) may set
RUN_KEYS = ("task", "config", "time_budget", "schedule_seconds", "baselines", "opts")
#: files copied from a run's training folder into its result folder
RUN_FILES = ("benchmark_summary.json", "metrics.json", "config.yaml")
#: run logs above this size are kept gzip-compressed
GZIP_ABOVE_BYTES = 1 << 20
GNU_TIME = Path("/usr/bin/time")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: ``runner(command, log_path, cwd) -> exit status``: how one run's command is executed
Runner = Callable[[List[str], Path, Path], int]


class SeriesError(ValueError):
    """The series cannot start: its message names the file and the problem (``main`` prints it
    on one line and exits with status 2)."""


def load_series(series_dir: Path) -> List[Dict]:
    """The runs of ``series_dir/series.json``, each a dict with its ``name`` and every key of
    :data:`RUN_KEYS` resolved (the run's own value, else the series', else the default).

    Raises:
        SeriesError: the file is missing or not JSON, has unknown keys, or a run lacks a name,
            a task or a config, repeats a name, or has an odd number of ``opts``.
    """
    path = series_dir / "series.json"
    if not path.is_file():
        raise SeriesError(f"{path}: missing (the runs of the series, see the module docstring)")
    try:
        series = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SeriesError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(series, dict) or not isinstance(series.get("runs"), list) \
            or not series["runs"]:
        raise SeriesError(f"{path}: needs a non-empty list \"runs\"")
    unknown = set(series) - set(RUN_KEYS) - {"runs"}
    if unknown:
        raise SeriesError(f"{path}: unknown keys {sorted(unknown)} (known: {list(RUN_KEYS)})")
    defaults = {"time_budget": 600.0, "schedule_seconds": None, "baselines": None, "opts": []}
    runs: List[Dict] = []
    for i, given in enumerate(series["runs"]):
        name = given.get("name") if isinstance(given, dict) else None
        if not isinstance(name, str) or not _NAME.match(name):
            raise SeriesError(f"{path}: run {i} needs a \"name\" that is a plain folder name")
        if any(r["name"] == name for r in runs):
            raise SeriesError(f"{path}: run name {name!r} appears twice")
        unknown = set(given) - set(RUN_KEYS) - {"name"}
        if unknown:
            raise SeriesError(f"{path}: run {name!r} has unknown keys {sorted(unknown)}")
        spec = {"name": name}
        for key in RUN_KEYS:
            spec[key] = given.get(key, series.get(key, defaults.get(key)))
        for key in ("task", "config"):
            if not spec[key]:
                raise SeriesError(f"{path}: run {name!r} has no {key!r} (nor has the series)")
        if not isinstance(spec["opts"], list) or len(spec["opts"]) % 2:
            raise SeriesError(f"{path}: run {name!r}: \"opts\" must be a list of KEY VALUE pairs")
        runs.append(spec)
    return runs


def output_dir(series_dir: Path, spec: Dict) -> Path:
    """The training folder of the run ``spec`` (relative to the repository root):
    ``output/<series folder name>/<run name>``."""
    return Path("output") / series_dir.name / spec["name"]


def train_command(series_dir: Path, spec: Dict, python: str = sys.executable) -> List[str]:
    """The command line of the run ``spec``: :mod:`benchmarks.train_synthetic` with its settings
    (without the ``/usr/bin/time`` wrapper)."""
    from benchmarks.train_synthetic import command_line

    schedule = [] if spec["schedule_seconds"] is None else [
        "SOLVER.TIME_BUDGET.SECONDS", f"{float(spec['schedule_seconds']):g}"]
    return command_line(spec["task"], output_dir(series_dir, spec), config=spec["config"],
                        baselines=spec["baselines"], time_budget=spec["time_budget"],
                        opts=[*schedule, *spec["opts"]], python=python)


def check_plan_committed(series_dir: Path, root: Path) -> None:
    """Refuse unless ``plan.txt`` and ``series.json`` are tracked by git in ``root`` and
    unchanged since their last commit."""
    for name in ("plan.txt", "series.json"):
        path = series_dir / name
        if not path.is_file():
            raise SeriesError(f"{path}: missing (write and commit the plan before the runs)")
        rel = os.path.relpath(path.resolve(), root.resolve())
        tracked = subprocess.run(["git", "-C", str(root), "ls-files", "--error-unmatch", rel],
                                 capture_output=True)
        if tracked.returncode != 0:
            raise SeriesError(f"{path}: not committed (commit the plan before the runs)")
        changed = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD", "--", rel])
        if changed.returncode != 0:
            raise SeriesError(f"{path}: changed since its commit (a plan is not edited after it "
                              "is committed; commit the change before the runs)")


def check_nothing_overwritten(series_dir: Path, runs: Sequence[Dict], root: Path) -> None:
    """Refuse when a run's training folder or result folder exists already."""
    for spec in runs:
        for folder in (root / output_dir(series_dir, spec), series_dir / spec["name"]):
            if folder.exists():
                raise SeriesError(f"{folder}: exists already (run {spec['name']!r} would write "
                                  "into it; move it away or rename the run)")


def run_with_log(command: List[str], log_path: Path, cwd: Path) -> int:
    """The default :data:`Runner`: ``command`` in ``cwd``, stdout and stderr into ``log_path``."""
    with open(log_path, "w") as log:
        return subprocess.run(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT).returncode


def collect(run_out: Path, log_path: Path, time_path: Path, dest: Path, root: Path) -> List[str]:
    """Copy one run's raw output into ``dest`` and plot its curves (``tools/plot_metrics.py``,
    run in ``root``); returns the names of what was missing."""
    dest.mkdir(parents=True)
    missing = []
    for name in RUN_FILES:
        if (run_out / name).is_file():
            shutil.copy2(run_out / name, dest / name)
        else:
            missing.append(name)
    if not log_path.is_file():
        missing.append("run.log")
    elif log_path.stat().st_size > GZIP_ABOVE_BYTES:
        with open(log_path, "rb") as src, gzip.open(dest / "run.log.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        shutil.copy2(log_path, dest / "run.log")
    if time_path.is_file():
        shutil.copy2(time_path, dest / "time.txt")
    if (dest / "metrics.json").is_file():
        plot = subprocess.run(
            [sys.executable, str(ROOT / "tools" / "plot_metrics.py"), str(dest / "metrics.json"),
             "--output-dir", str(dest / "plots")], cwd=root, capture_output=True, text=True)
        if plot.returncode != 0:
            missing.append("plots")
    return missing


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M:%S")


def result_line(dest: Path) -> Dict:
    """What ``dest/benchmark_summary.json`` says of a finished run (empty when absent)."""
    path = dest / "benchmark_summary.json"
    if not path.is_file():
        return {}
    s = json.loads(path.read_text())
    return {k: s.get(k) for k in ("metric", "value", "iterations", "train_seconds")}


def run(series_dir: Path, root: Path = ROOT, runner: Runner = run_with_log,
        python: str = sys.executable, print_fn: Callable[[str], None] = print) -> int:
    """Check the series, then run, record and collect every run; returns the exit status."""
    series_dir = Path(series_dir).resolve()
    runs = load_series(series_dir)
    check_plan_committed(series_dir, root)
    check_nothing_overwritten(series_dir, runs, root)
    driver_log = series_dir / "driver.log"
    rows = []
    for spec in runs:
        out = root / output_dir(series_dir, spec)
        out.parent.mkdir(parents=True, exist_ok=True)
        log_path, time_path = out.parent / f"{out.name}.log", out.parent / f"{out.name}.time.txt"
        command = train_command(series_dir, spec, python)
        if GNU_TIME.exists():
            command = [str(GNU_TIME), "-v", "-o", str(time_path), *command]
        with open(driver_log, "a") as f:
            f.write(f"{_now()} start {spec['name']}: {' '.join(command)}\n")
        rc = runner(command, log_path, root)
        dest = series_dir / spec["name"]
        missing = collect(out, log_path, time_path, dest, root)
        res = result_line(dest)
        with open(driver_log, "a") as f:
            got = f" {res['metric']} = {res['value']} in {res['iterations']} iterations" \
                if res else ""
            lacks = f" (missing: {', '.join(missing)})" if missing else ""
            f.write(f"{_now()} end {spec['name']} rc={rc}{got}{lacks}\n")
        rows.append([spec["name"], rc, res.get("metric"), res.get("value"),
                     res.get("iterations"), res.get("train_seconds")])
    from tabulate import tabulate

    print_fn(tabulate(rows, headers=["run", "exit", "metric", "value", "iterations", "train s"]))
    return int(any(row[1] != 0 for row in rows))


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("series_dir", type=Path, help="folder holding plan.txt and series.json")
    ap.add_argument("--print-commands", action="store_true",
                    help="print each run's command line (for the plan) and exit")
    a = ap.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if a.print_commands:
            for spec in load_series(a.series_dir.resolve()):
                print(" ".join(train_command(a.series_dir.resolve(), spec, "python")))
            return 0
        with benchmark_lock("benchmarks.timed_series", argv):
            return run(a.series_dir)
    except SeriesError as e:
        print(f"benchmarks.timed_series: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

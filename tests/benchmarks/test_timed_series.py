"""benchmarks/timed_series.py: a planned series refuses to start unless its plan is committed
and unchanged and nothing it writes exists yet; it runs every run with its own settings, logs
start and end, and keeps each run's raw output, log and plots in the series folder."""
import gzip
import json
import subprocess

import pytest

from benchmarks import timed_series
from benchmarks.bench_lock import HELD_ENV, LOCK_ENV
from benchmarks.timed_series import SeriesError, load_series, train_command

GIT = ["git", "-c", "user.email=test@example.com", "-c", "user.name=test"]
CONFIG = "configs/synthetic/instance/knet_R18_tiny_16k_bf16_keep_freed.yaml"
SERIES = {
    "task": "instance",
    "config": CONFIG,
    "baselines": "b.json",
    "runs": [
        {"name": "A1", "opts": ["MODEL.KNET.THING_SOFTMAX", "True"]},
        {"name": "L2.5x", "task": "panoptic", "config": "p.yaml", "time_budget": 1200,
         "schedule_seconds": 1190, "opts": ["SEED", 2]},
    ],
}


def make_repo(tmp_path, series=SERIES, commit=True):
    """A git repository holding results/2026-01-01_q/{plan.txt, series.json}."""
    root = tmp_path / "repo"
    sdir = root / "results" / "2026-01-01_q"
    sdir.mkdir(parents=True)
    (sdir / "plan.txt").write_text("question, runs, rule\n")
    (sdir / "series.json").write_text(json.dumps(series))
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    if commit:
        subprocess.run(["git", "-C", str(root), "add", "."], check=True)
        subprocess.run([*GIT, "-C", str(root), "commit", "-qm", "plan"], check=True)
    return root, sdir


class FakeTraining:
    """Stands in for train_synthetic: writes what a run writes into its --output folder."""

    def __init__(self, status=(0,), log_bytes=100):
        self.commands, self.status, self.log_bytes = [], list(status), log_bytes

    def __call__(self, command, log_path, cwd):
        self.commands.append(command)
        out = cwd / command[command.index("--output") + 1]
        out.mkdir(parents=True)
        name = out.name
        (out / "benchmark_summary.json").write_text(json.dumps(
            {"metric": "segm/AP", "value": 12.5 if name == "A1" else 30.0, "iterations": 40,
             "train_seconds": 9.5}))
        (out / "metrics.json").write_text("".join(
            json.dumps({"iteration": i, "total_loss": 5.0 / (i + 1), "lr": 1e-3}) + "\n"
            for i in range(0, 40, 10)))
        (out / "config.yaml").write_text(f"SEED: {name}\n")
        log_path.write_text(f"log of {name}\n" + "x" * self.log_bytes)
        return self.status.pop(0)


def test_commands_carry_each_runs_settings(tmp_path):
    sdir = tmp_path / "2026-01-01_q"
    sdir.mkdir()
    (sdir / "series.json").write_text(json.dumps(SERIES))
    a1, l2 = (train_command(sdir, r, "py") for r in load_series(sdir))
    assert a1 == ["py", "-m", "benchmarks.train_synthetic", "--task", "instance", "--output",
                  "output/2026-01-01_q/A1", "--baselines", "b.json", "--config-file", CONFIG,
                  "--time-budget", "600", "MODEL.KNET.THING_SOFTMAX", "True"]
    assert l2 == ["py", "-m", "benchmarks.train_synthetic", "--task", "panoptic", "--output",
                  "output/2026-01-01_q/L2.5x", "--baselines", "b.json", "--config-file", "p.yaml",
                  "--time-budget", "1200", "SOLVER.TIME_BUDGET.SECONDS", "1190", "SEED", "2"]


@pytest.mark.parametrize("series,problem", [
    ({"runs": []}, "non-empty list"),
    ({**SERIES, "budget": 3}, "unknown keys ['budget']"),
    ({"config": "c", "runs": [{"name": "A"}]}, "run 'A' has no 'task'"),
    ({**SERIES, "runs": [{"name": "A"}, {"name": "A"}]}, "'A' appears twice"),
    ({**SERIES, "runs": [{"name": "../up"}]}, "plain folder name"),
    ({**SERIES, "runs": [{"name": "A", "opts": ["SEED"]}]}, "KEY VALUE pairs"),
])
def test_bad_series_is_refused_naming_file_and_problem(tmp_path, series, problem):
    (tmp_path / "series.json").write_text(json.dumps(series))
    with pytest.raises(SeriesError, match="series.json: .*" + problem.replace("[", r"\[")
                       .replace("]", r"\]")) as e:
        load_series(tmp_path)
    assert "\n" not in str(e.value)


def test_refusal_is_one_line_on_stderr_with_status_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(LOCK_ENV, str(tmp_path / "bench.lock"))
    monkeypatch.delenv(HELD_ENV, raising=False)
    assert timed_series.main([str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (f"benchmarks.timed_series: {tmp_path / 'series.json'}: missing (the "
                            "runs of the series, see the module docstring)\n")


def test_uncommitted_plan_is_refused(tmp_path):
    root, sdir = make_repo(tmp_path, commit=False)
    fake = FakeTraining()
    with pytest.raises(SeriesError, match="plan.txt: not committed"):
        timed_series.run(sdir, root=root, runner=fake)
    assert fake.commands == []


def test_plan_changed_after_its_commit_is_refused(tmp_path):
    root, sdir = make_repo(tmp_path)
    (sdir / "series.json").write_text(json.dumps({**SERIES, "time_budget": 700}))
    fake = FakeTraining()
    with pytest.raises(SeriesError, match="series.json: changed since its commit"):
        timed_series.run(sdir, root=root, runner=fake)
    assert fake.commands == []


@pytest.mark.parametrize("existing", ["output/2026-01-01_q/L2.5x", "results/2026-01-01_q/A1"])
def test_nothing_runs_when_an_output_exists(tmp_path, existing):
    root, sdir = make_repo(tmp_path)
    (root / existing).mkdir(parents=True)
    (root / existing / "model_final.pth").write_text("a user's checkpoint")
    fake = FakeTraining()
    with pytest.raises(SeriesError, match=f"{existing}: exists already"):
        timed_series.run(sdir, root=root, runner=fake)
    assert fake.commands == []
    assert (root / existing / "model_final.pth").read_text() == "a user's checkpoint"


def test_series_runs_in_order_logs_and_keeps_raw_output(tmp_path, monkeypatch):
    root, sdir = make_repo(tmp_path)
    monkeypatch.setattr(timed_series, "GZIP_ABOVE_BYTES", 1000)
    fake = FakeTraining(status=(0,), log_bytes=0)
    fake_big = FakeTraining(status=(3,), log_bytes=5000)
    calls = iter([fake, fake_big])
    printed = []
    status = timed_series.run(sdir, root=root, runner=lambda *a: next(calls)(*a),
                              print_fn=printed.append)
    assert status == 1  # L2.5x ended with status 3
    assert fake.commands[0][fake.commands[0].index("--output") + 1] == "output/2026-01-01_q/A1"
    assert "--task" in fake_big.commands[0] and "panoptic" in fake_big.commands[0]
    log = (sdir / "driver.log").read_text().splitlines()
    assert [line.split(" ", 1)[1].split(":")[0] for line in log] == [
        "start A1", "end A1 rc=0 segm/AP = 12.5 in 40 iterations",
        "start L2.5x", "end L2.5x rc=3 segm/AP = 30.0 in 40 iterations"]
    # each run's log and time file beside its training folder, dotted names kept whole
    assert (root / "output/2026-01-01_q/L2.5x.log").read_text().startswith("log of L2.5x\n")
    for name in ("A1", "L2.5x"):
        for f in ("benchmark_summary.json", "metrics.json", "config.yaml", "plots/losses.png"):
            assert (sdir / name / f).is_file(), (name, f)
    assert (sdir / "A1" / "config.yaml").read_text() == "SEED: A1\n"
    assert (sdir / "A1" / "run.log").read_text() == "log of A1\n"
    assert not (sdir / "L2.5x" / "run.log").exists()
    assert gzip.open(sdir / "L2.5x" / "run.log.gz", "rt").read().startswith("log of L2.5x\n")
    table = printed[-1].splitlines()
    assert table[2].split()[:4] == ["A1", "0", "segm/AP", "12.5"]
    assert table[3].split()[:4] == ["L2.5x", "3", "segm/AP", "30"]


def test_print_commands_lists_the_runs(tmp_path, capsys):
    (tmp_path / "series.json").write_text(json.dumps(SERIES))
    assert timed_series.main([str(tmp_path), "--print-commands"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("python -m benchmarks.train_synthetic --task instance")

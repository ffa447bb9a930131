"""benchmarks/bench_lock.py: a timed benchmark refuses to start while another one runs, naming
the lock file and the PID and command of the run holding it; a child of the holder runs under its
parent's lock; the lock goes when its holder ends."""
import os
import subprocess
import sys
import textwrap

import pytest

from benchmarks import (
    bench_demo_folder,
    bench_inference,
    bench_lock,
    bench_onnx_runtime,
    bench_resize,
    bench_scaling,
    bench_sections,
    bench_train,
    fit_real_images,
    quickstart,
    timed_series,
    train_synthetic,
)
from benchmarks.bench_lock import HELD_ENV, LOCK_ENV, BenchmarkLockedError, benchmark_lock
from tests.helpers.paths import REPO_ROOT, SHARED_DATA

HOLD = textwrap.dedent("""
    import sys
    from benchmarks.bench_lock import benchmark_lock
    with benchmark_lock("benchmarks.holder", ["--iters", "9"]):
        print("held", flush=True)
        sys.stdin.read()  # until the test closes stdin
""")


@pytest.fixture
def lock_file(tmp_path, monkeypatch):
    path = tmp_path / "bench.lock"
    monkeypatch.setenv(LOCK_ENV, str(path))
    monkeypatch.delenv(HELD_ENV, raising=False)
    return path


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != HELD_ENV}
    return {**env, "PYTHONPATH": str(REPO_ROOT), **extra}


@pytest.fixture
def other_holder(lock_file):
    """A separate process holding the lock until the test ends."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD], cwd=REPO_ROOT, env=_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()


def test_default_lock_is_in_the_temp_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(LOCK_ENV, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    bench_lock.tempfile.tempdir = None  # re-read TMPDIR
    try:
        assert bench_lock.lock_path() == tmp_path / "knet_d2_benchmark.lock"
    finally:
        bench_lock.tempfile.tempdir = None


def test_second_start_is_refused_naming_file_pid_and_command(other_holder, lock_file):
    with pytest.raises(BenchmarkLockedError) as err:
        with benchmark_lock("benchmarks.bench_train"):
            pytest.fail("entered a lock another process holds")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("benchmarks.bench_train: another timed benchmark is running")
    assert f"lock file {lock_file} is held by PID {other_holder.pid}: " in msg
    assert "python -m benchmarks.holder --iters 9" in msg


def test_script_refused_as_a_user_sees_it(other_holder, lock_file):
    """The real command line: exit status 1, one line on stderr, no traceback, nothing run."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_train", "--threads", "1", "--data-root",
         str(lock_file.parent / "no_data")],
        cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("benchmarks.bench_train: another timed benchmark is running")
    assert f"held by PID {other_holder.pid}: python -m benchmarks.holder" in lines[-1]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("script,argv", [
    (bench_inference, ["--threads", "1"]),
    (bench_train, ["--threads", "1"]),
    (bench_scaling, ["--threads", "1"]),
    (bench_sections, ["--threads", "1"]),
    (bench_demo_folder, ["--threads", "1"]),
    (bench_resize, ["--threads", "1"]),
    (bench_onnx_runtime, ["--threads", "1"]),
    (fit_real_images, ["--data-root", str(SHARED_DATA), "--output", "{tmp}"]),
    (train_synthetic, ["--task", "panoptic"]),
    (quickstart, []),
    (timed_series, ["{tmp}"]),
], ids=["bench_inference", "bench_train", "bench_scaling", "bench_sections", "bench_demo_folder",
        "bench_resize", "bench_onnx_runtime", "fit_real_images", "train_synthetic", "quickstart",
        "timed_series"])
def test_every_benchmark_script_takes_the_lock(script, argv, other_holder, monkeypatch,
                                               tmp_path):
    # a fresh output folder: an earlier run's results in the default one are refused first
    argv = [str(tmp_path / "out") if a == "{tmp}" else a for a in argv]
    def run_anyway(*a, **k):
        raise AssertionError(f"{script.__name__} ran while another benchmark held the lock")

    monkeypatch.setattr(script, "run", run_anyway)
    monkeypatch.setattr(sys, "argv", [script.__name__, *argv])
    with pytest.raises(BenchmarkLockedError, match=rf"^{script.__name__}: another timed "
                                                   rf"benchmark .* PID {other_holder.pid}"):
        takes_argv = script not in (train_synthetic, quickstart)
        script.main(argv) if takes_argv else script.main()


def test_descendants_run_under_the_holders_lock_others_do_not(lock_file):
    child = ("from benchmarks.bench_lock import benchmark_lock\n"
             "with benchmark_lock('benchmarks.child'):\n    print('child ran')")
    with benchmark_lock("benchmarks.parent", ["--x"]):
        assert lock_file.read_text() == f"{os.getpid()} python -m benchmarks.parent --x\n"
        with benchmark_lock("benchmarks.nested"):  # the holder itself: no dead-lock
            pass
        assert os.environ[HELD_ENV] == str(os.getpid())
        handed = subprocess.run([sys.executable, "-c", child], cwd=REPO_ROOT, env=_env(**{
            HELD_ENV: str(os.getpid())}), capture_output=True, text=True, timeout=60)
        assert handed.returncode == 0 and handed.stdout == "child ran\n", handed.stderr
        # through a wrapper process (a shell that stays to run a second command): a grandchild
        wrapped = subprocess.run(["sh", "-c", f'"{sys.executable}" -c "{child}"; true'],
                                 cwd=REPO_ROOT, env=_env(**{HELD_ENV: str(os.getpid())}),
                                 capture_output=True, text=True, timeout=60)
        assert wrapped.stdout == "child ran\n", wrapped.stderr
        stranger = subprocess.run([sys.executable, "-c", child], cwd=REPO_ROOT, env=_env(),
                                  capture_output=True, text=True, timeout=60)
        assert stranger.returncode == 1 and "child ran" not in stranger.stdout
        assert f"held by PID {os.getpid()}: python -m benchmarks.parent" in stranger.stderr
    assert HELD_ENV not in os.environ and lock_file.read_text() == ""


def test_lock_is_free_once_its_holder_ends(lock_file):
    holder = subprocess.Popen([sys.executable, "-c", HOLD], cwd=REPO_ROOT, env=_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()  # no clean-up code runs: the kernel releases the flock
    holder.wait(timeout=30)
    holder.stdin.close()
    holder.stdout.close()
    with benchmark_lock("benchmarks.bench_inference", ["--iters", "1"]) as path:
        assert path == lock_file
        assert lock_file.read_text().startswith(f"{os.getpid()} python -m benchmarks.bench_inf")


def test_run_locked_parses_first_then_runs_under_the_lock(lock_file, monkeypatch):
    seen = []

    def run(args, argv):
        seen.append((args, argv, lock_file.read_text()))
        return "result"

    monkeypatch.setattr(sys, "argv", ["prog", "--x", "1"])
    assert bench_lock.run_locked("benchmarks.demo", lambda a: {"parsed": a}, run) == "result"
    assert seen == [({"parsed": ["--x", "1"]}, ["--x", "1"],
                     f"{os.getpid()} python -m benchmarks.demo --x 1\n")]

    def bad_args(argv):
        raise SystemExit(2)  # what argparse does: no lock taken, run never called

    with pytest.raises(SystemExit):
        bench_lock.run_locked("benchmarks.demo", bad_args, run, ["--bad"])
    assert len(seen) == 1

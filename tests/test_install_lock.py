"""The dependency lock: its file, the install decisions, the stamp, and this environment.

``test_environment_matches_lock`` is the check that an install from the lock got exactly the
locked versions; it runs whenever the interpreter was installed by ``tools/install_deps.sh``
(``make test`` always is).
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from knet_d2.collect_env import TESTED_MATRIX, matrix_warnings
from knet_d2.install_lock import (
    InstallPlan,
    LockError,
    compare_with_pins,
    installed_versions,
    newest_local_build,
    parse_lock,
    plan_constraints,
    read_stamp,
    stamp_matches_lock,
    write_stamp,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCK = REPO_ROOT / "requirements" / "lock.txt"
INSTALL_SCRIPT = REPO_ROOT / "tools" / "install_deps.sh"

LOCK_SAMPLE = {
    "torch": "2.13.0+cpu",
    "torchvision": "0.28.0",
    "numpy": "1.26.4",
    "fvcore": "0.1.5.post20221221",
    "sympy": "1.14.0",
    "sal-detectron2": "0.7.2",
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---- the lock file ----------------------------------------------------------------------------

def test_parse_lock_reads_exact_pins_and_normalizes_names(tmp_path):
    lock = _write(tmp_path / "lock.txt", "# header\n\nPillow==13.0.0\nml_dtypes==0.5.4  # why\n"
                                         "torch==2.13.0+cpu\n")
    assert parse_lock(lock) == {"pillow": "13.0.0", "ml-dtypes": "0.5.4", "torch": "2.13.0+cpu"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("numpy==1.26.4\ntorch>=2.1\n", r"lock\.txt:2: expected an exact pin .*'torch>=2\.1'"),
        ("numpy==1.26.4\nNumPy==1.26.3\n", r"lock\.txt:2: numpy is pinned twice"),
        ("# only a comment\n", r"lock\.txt: the lock file pins no package"),
    ],
)
def test_parse_lock_rejects_what_is_not_a_lock(tmp_path, text, message):
    with pytest.raises(LockError, match=message):
        parse_lock(_write(tmp_path / "lock.txt", text))


def test_parse_lock_names_a_missing_file(tmp_path):
    with pytest.raises(LockError, match=r"nope\.txt: cannot read the lock file"):
        parse_lock(tmp_path / "nope.txt")


def test_repo_lock_covers_what_the_install_script_installs():
    lock = parse_lock(LOCK)
    script = INSTALL_SCRIPT.read_text()
    for name in ["torch", "torchvision", "numpy", "opencv-python-headless", "setuptools",
                 "fvcore", "pycocotools", "scipy", "omegaconf", "sal-detectron2",
                 "panopticapi-lite", "onnx", "onnxruntime", "pytest", "pytest-xdist", "ruff",
                 "hypothesis", "scikit-image"]:
        assert name in lock, f"{name} is installed by tools/install_deps.sh but not locked"
        assert name in script.lower()
    # one build of the torch family: PyPI's torchvision does not load with a +cpu torch
    torch_build = lock["torch"].partition("+")[2]
    assert lock["torchvision"].partition("+")[2] == torch_build
    if torch_build == "cpu":
        assert not [n for n in lock if n.startswith("nvidia-")], "a CPU lock needs no CUDA libs"
    assert "pip" not in lock and "knet-d2" not in lock


def test_repo_lock_lies_inside_the_tested_matrix():
    lock = parse_lock(LOCK)
    python = re.search(r"Python (\d+\.\d+\.\d+)", LOCK.read_text()).group(1)
    versions = {"python": python, "torch": lock["torch"], "torchvision": lock["torchvision"],
                "detectron2": lock["sal-detectron2"], "numpy": lock["numpy"]}
    assert matrix_warnings(versions) == []  # update TESTED_MATRIX and README with the lock


def test_every_installing_pip_call_applies_the_constraints():
    calls = [line.strip() for line in INSTALL_SCRIPT.read_text().splitlines()
             if re.search(r'"\$\{pip(c)?\[@\]\}"', line)]
    plain = [c for c in calls if c.startswith('"${pip[@]}" install')]
    # Only the two pip calls that install from the lock itself / the checkout skip `-c`.
    assert plain == ['"${pip[@]}" install --no-deps "${drift[@]}"',
                     '"${pip[@]}" install --no-deps --no-build-isolation -e "$here"']
    assert len([c for c in calls if c.startswith('"${pipc[@]}"')]) >= 6


# ---- install decisions --------------------------------------------------------------------------

def test_fresh_venv_gets_the_whole_lock():
    plan = plan_constraints(LOCK_SAMPLE, {"torch": "2.14.1", "pip": "23.2"}, user_env=False)
    assert plan.pins == LOCK_SAMPLE and plan.kept == {}


def test_user_env_keeps_the_users_torch_and_detectron2_and_pins_only_what_is_missing():
    installed = {"torch": "2.5.1+cu121", "detectron2": "0.6", "numpy": "1.24.4",
                 "sympy": "1.13.1", "pip": "24.0"}
    plan = plan_constraints(LOCK_SAMPLE, installed, user_env=True, detectron2_elsewhere=True)
    # the user's torch is held at its own version, never the lock's; torchvision follows it
    assert plan.pins["torch"] == "2.5.1+cu121"
    assert "torchvision" not in plan.pins
    assert "numpy" not in plan.pins and "sympy" not in plan.pins  # already there: kept
    assert "sal-detectron2" not in plan.pins  # their detectron2 is used, the wheel not installed
    assert plan.pins["fvcore"] == LOCK_SAMPLE["fvcore"]  # missing: installed at the lock version
    assert plan.kept == {"detectron2": "0.6", "numpy": "1.24.4", "sympy": "1.13.1",
                         "torch": "2.5.1+cu121"}


def test_user_env_without_torch_gets_the_locked_torch_family():
    plan = plan_constraints(LOCK_SAMPLE, {"numpy": "1.24.4"}, user_env=True)
    assert plan.pins["torch"] == "2.13.0+cpu" and plan.pins["torchvision"] == "0.28.0"
    assert plan.pins["sal-detectron2"] == "0.7.2"
    assert plan.kept == {"numpy": "1.24.4"}


def test_user_env_reinstall_moves_what_the_script_installed_itself():
    # First install: the user had torch only; the script installed numpy 1.26.3 (an older lock).
    installed = {"torch": "2.5.1+cu121", "torchvision": "0.20.1+cu121", "numpy": "1.26.3"}
    plan = plan_constraints(LOCK_SAMPLE, installed, user_env=True, user_owned=["torch"])
    assert plan.pins["numpy"] == "1.26.4"  # not the user's: follows the new lock
    # torch / torchvision are installed, so they stay the user's whatever the stamp says
    assert plan.pins["torch"] == "2.5.1+cu121" and plan.pins["torchvision"] == "0.20.1+cu121"
    assert set(plan.kept) == {"torch", "torchvision"}


def test_compare_with_pins_reports_each_difference():
    pins = {"torch": "2.13.0+cpu", "numpy": "1.26.4", "ruff": "0.17.6"}
    installed = {"torch": "2.14.1", "numpy": "1.26.4"}
    assert compare_with_pins(pins, installed) == [
        "ruff: locked 0.17.6, not installed", "torch: locked 2.13.0+cpu, installed 2.14.1"]
    assert compare_with_pins(pins, installed, require_all=False) == [
        "torch: locked 2.13.0+cpu, installed 2.14.1"]


def test_plan_command_runs_by_path_before_knet_d2_is_installed(tmp_path):
    """install_deps.sh runs the module as a file with the bare target interpreter."""
    installed = installed_versions()
    have_torch = installed["torch"]
    lock = _write(tmp_path / "lock.txt", "torch==0.0.1\nknet-no-such-package==1.0\n")
    out = tmp_path / "constraints.txt"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "knet_d2" / "install_lock.py"), "plan",
         "--lock", str(lock), "--out", str(out), "--user-env"],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stderr
    # this environment's torch / torchvision / detectron2 are held at their installed versions
    held = [f"{n}=={installed[n]}\n" for n in ("detectron2", "torch", "torchvision")
            if n in installed]
    assert out.read_text() == "".join(["knet-no-such-package==1.0\n"] + held)
    assert f"keeping your torch {have_torch}" in result.stdout


def test_plan_command_reports_a_bad_lock_by_file_and_line(tmp_path):
    lock = _write(tmp_path / "lock.txt", "torch>=2.1\n")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "knet_d2" / "install_lock.py"), "plan",
         "--lock", str(lock), "--out", str(tmp_path / "c.txt")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert f"{lock}:1: expected an exact pin" in result.stderr


# ---- the stamp ----------------------------------------------------------------------------------

def test_stamp_records_the_lock_and_goes_stale_when_the_lock_changes(tmp_path):
    lock = _write(tmp_path / "lock.txt", "numpy==1.26.4\n")
    stamp = tmp_path / ".knet_installed"
    write_stamp(stamp, lock, InstallPlan({"numpy": "1.26.4"}, {"torch": "2.5.1"}), user_env=True)
    record = read_stamp(stamp)
    assert record["pins"] == {"numpy": "1.26.4"} and record["kept"] == {"torch": "2.5.1"}
    assert stamp_matches_lock(stamp, lock)
    lock.write_text("numpy==1.26.3\n")
    assert not stamp_matches_lock(stamp, lock)
    assert not stamp_matches_lock(stamp, None)  # KNET_LOCK=none after a locked install


def test_stamp_of_an_install_before_the_lock_does_not_match(tmp_path):
    stamp = _write(tmp_path / ".knet_installed", "")
    lock = _write(tmp_path / "lock.txt", "numpy==1.26.4\n")
    assert read_stamp(stamp) is None and not stamp_matches_lock(stamp, lock)
    _write(stamp, "{not json")
    with pytest.raises(LockError, match=r"\.knet_installed: not a knet_d2 install stamp"):
        read_stamp(stamp)


def test_newest_cpu_build_is_chosen_numerically():
    available = ["2.15.0", "2.10.0+cpu", "2.9.1+cpu", "2.16.0rc1+cpu", "2.14.1", "2.2.0+cu121"]
    assert newest_local_build(available) == "2.10.0+cpu"
    assert newest_local_build(["2.14.1", "2.13.0"]) is None


# ---- this environment ---------------------------------------------------------------------------

def _stamp_of_this_interpreter():
    for stamp in (Path(sys.prefix) / ".knet_installed", REPO_ROOT / ".knet_install_stamp"):
        if stamp.is_file():
            record = read_stamp(stamp)
            if record is not None and record["prefix"] == sys.prefix:
                return stamp, record
    return None, None


def test_environment_matches_lock():
    """Every version the install pinned is the one installed (make test: after install_deps.sh)."""
    stamp, record = _stamp_of_this_interpreter()
    if record is None:
        pytest.skip(f"{sys.prefix} was not installed by tools/install_deps.sh with a lock")
    if record["lock"] is None:
        pytest.skip("installed with KNET_LOCK=none (version ranges only)")
    if Path(record["lock"]) == LOCK.resolve():
        assert stamp_matches_lock(stamp, LOCK), (
            f"{LOCK} changed after this environment was installed: run `make install`")
        lock = parse_lock(LOCK)
        # the stamp's pins are the lock, less the user's own packages (user environments)
        assert {n: v for n, v in lock.items() if n not in record["kept"]}.items() <= (
            record["pins"].items())
    problems = compare_with_pins(record["pins"], installed_versions(),
                                 require_all=not record["user_env"])
    assert problems == [], f"installed versions differ from {record['lock']}: {problems}"


def test_stamp_file_is_json_with_the_interpreter_prefix(tmp_path):
    stamp = tmp_path / "s"
    write_stamp(stamp, None, None, user_env=False)
    record = json.loads(stamp.read_text())
    assert record["prefix"] == sys.prefix and record["lock"] is None and record["pins"] == {}


# ---- collect_env's tested matrix ----------------------------------------------------------------

def test_collect_env_warns_outside_the_tested_matrix_naming_package_and_range():
    low, high = TESTED_MATRIX["torch"]
    warnings = matrix_warnings({"torch": "2.5.1+cu121", "numpy": "2.0.1", "torchvision": None,
                                "python": "3.11.7", "detectron2": "0.7.2"})
    assert len(warnings) == 2
    assert f"torch 2.5.1+cu121 is outside the tested range torch>={low},<{high}" in warnings[0]
    assert "numpy 2.0.1 is outside the tested range numpy>=" in warnings[1]
    assert matrix_warnings({"torch": f"{low}.0+cpu", "detectron2": "0.7.2"}) == []
    assert matrix_warnings({"detectron2": "0.6"})[0].startswith("WARNING: detectron2 0.6 ")

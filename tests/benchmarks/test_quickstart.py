"""Tests of benchmarks/quickstart.py: its command line (``--config TASK=FILE``) and the training
command it hands to benchmarks.train_synthetic for each task."""
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.quickstart import (
    RECIPES,
    ROOT,
    TASKS,
    config_datasets,
    task_configs,
    train_command,
)

RECIPE = "configs/synthetic/semantic/knet_upernet_tiny_16k_bf16_keep_freed.yaml"


def test_task_configs_maps_each_task_to_its_recipe_or_the_named_file():
    assert task_configs([]) == RECIPES
    base = "configs/synthetic/instance/knet_R18_tiny.yaml"
    assert task_configs([f"instance={base}"]) == {**RECIPES, "instance": base}
    absolute = str(ROOT / base)
    assert task_configs([f"instance={absolute}"], tasks=["instance"]) == {"instance": absolute}
    assert task_configs([], tasks=["semantic", "panoptic"]) == {
        "semantic": RECIPES["semantic"], "panoptic": RECIPES["panoptic"]}


@pytest.mark.parametrize("task", TASKS)
def test_each_recipe_is_a_config_of_its_task_on_the_large_split(task):
    """The quickstart's recipes exist, train on the 16 000-image split (so the quickstart
    generates it first) and differ from the short base configs, which do not."""
    assert (ROOT / RECIPES[task]).is_file()
    assert f"/{task}/" in RECIPES[task]
    prefix = {"panoptic": "knet_synth_panoptic", "instance": "knet_synth_instance",
              "semantic": "knet_synth_sem_seg"}[task]
    assert config_datasets(RECIPES[task]) == [f"{prefix}_train16k", f"{prefix}_val"]
    base = {"panoptic": "configs/synthetic/panoptic/knet_R18_tiny.yaml",
            "instance": "configs/synthetic/instance/knet_R18_tiny.yaml",
            "semantic": "configs/synthetic/semantic/knet_upernet_tiny.yaml"}[task]
    assert config_datasets(base) == [f"{prefix}_train", f"{prefix}_val"]


@pytest.mark.parametrize("spec, message", [
    ("semantic", "expected TASK=FILE"),
    ("detection=configs/x.yaml", "expected TASK=FILE"),
    ("semantic=", "expected TASK=FILE"),
    ("semantic=configs/synthetic/semantic/missing.yaml", "no such config file: .*missing.yaml"),
])
def test_task_configs_refuses_bad_specs_by_name(spec, message):
    with pytest.raises(ValueError, match=message):
        task_configs([spec])


def test_task_configs_refuses_a_task_that_does_not_run():
    with pytest.raises(ValueError, match="--config for semantic, which --tasks does not run"):
        task_configs([f"semantic={RECIPE}"], tasks=["panoptic"])


def test_task_configs_refuses_a_task_given_twice():
    base = "configs/synthetic/semantic/knet_upernet_tiny.yaml"
    with pytest.raises(ValueError, match="semantic given twice"):
        task_configs([f"semantic={RECIPE}", f"semantic={base}"])


def test_train_command_passes_the_task_config_and_overwrite():
    out, baselines = Path("o/semantic"), Path("o/baselines.json")
    plain = train_command("semantic", out, baselines, overwrite=False, config=RECIPE)
    assert plain[1:] == ["-m", "benchmarks.train_synthetic", "--task", "semantic", "--output",
                         "o/semantic", "--baselines", "o/baselines.json", "--config-file", RECIPE]
    cmd = train_command("semantic", out, baselines, overwrite=True, config=RECIPE)
    assert cmd[cmd.index("--config-file") + 1] == RECIPE
    assert cmd[-1] == "--overwrite"


@pytest.mark.parametrize("args, message", [
    (["--config", "semantic=nope.yaml"], "no such config file"),
    (["--tasks", "panoptic", "--config", f"semantic={RECIPE}"],
     "--config for semantic, which --tasks does not run"),
])
def test_quickstart_command_line_refuses_before_any_work(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.quickstart",
                           "--output", str(tmp_path / "qs"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "qs").exists()

"""knet_d2/collect_env.py --short: the one-line machine description benchmark results record."""
import os
import subprocess
import sys

import detectron2
import numpy as np
import torch

from knet_d2 import collect_env
from tests.helpers.paths import REPO_ROOT


def test_short_line_names_cpu_cores_memory_and_versions(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = collect_env.machine_line()
    assert line.startswith(f"CPU {collect_env.cpu_model()} ({os.cpu_count()} cores), ")
    assert f"{collect_env.memory_gib():.0f} GiB RAM, no GPU; " in line
    assert line.endswith(f"; python {sys.version.split()[0]}, torch {torch.__version__}, "
                         f"detectron2 {detectron2.__version__}, numpy {np.__version__}")
    assert "\n" not in line and collect_env.cpu_model() != "unknown CPU"


def test_short_line_counts_gpus_by_name(monkeypatch):
    names = ["H100", "H100", "A10"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(names))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: names[i])
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    assert " RAM, GPU H100 x2, A10 x1 (CUDA 13.0); python " in collect_env.machine_line()


def test_memory_is_plausible():
    assert 0.5 < collect_env.memory_gib() < 1e5


def test_module_prints_one_line_with_short():
    proc = subprocess.run([sys.executable, "-m", "knet_d2.collect_env", "--short"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("CPU ") and "no GPU" in lines[0]
    assert f"torch {torch.__version__}" in lines[0]

"""``train_net.py --eval-only`` as a user runs it: a checkpoint trained in the test, evaluated
by the command line in a separate process, prints the metrics of the in-process evaluation
(same config, same evaluators, same split)."""
import os
import subprocess
import sys

import pytest
import torch

from knet_d2.data.datasets.register_synthetic import synthetic_split_paths
from knet_d2.data.synthetic import generate_synthetic_dataset
from tests.helpers.catalogs import unregister_datasets
from tests.helpers.paths import REPO_ROOT
from tests.helpers.tiny_training import CONFIG, tiny_train_opts

NAME = "knet_test_eval_only_tiny"
MAX_ITER = 400  # enough for non-zero PQ on the 8 training images (generator v2)


def _copypaste_metrics(log: str) -> dict:
    """``{task: {metric: printed value}}`` from D2's ``copypaste:`` lines
    (``print_csv_format``)."""
    lines = [line.split("copypaste: ", 1)[1] for line in log.splitlines() if "copypaste: " in line]
    out = {}
    for i, line in enumerate(lines):
        if line.startswith("Task: "):
            keys, values = lines[i + 1].split(","), lines[i + 2].split(",")
            out[line[len("Task: "):]] = dict(zip(keys, values))
    return out


def _printed_form(results: dict) -> dict:
    """The in-process results as ``print_csv_format`` prints them: 4 decimals (``nan`` for a
    metric without data), no per-class ("-") metrics."""
    return {task: {k: f"{v:.4f}" for k, v in res.items() if "-" not in k}
            for task, res in results.items()}


@pytest.fixture
def tiny_split(tmp_path):
    """The 8-image synthetic split on disk, registered by its ``--dataset`` spec."""
    p = synthetic_split_paths(generate_synthetic_dataset(tmp_path / "synth", "tiny", 8, 64))
    spec = (f"{NAME}=coco_panoptic:{p['panoptic_json']}:{p['panoptic_root']}:"
            f"{p['image_root']}:{p['sem_seg_root']}:{p['instances_json']}")
    yield spec
    unregister_datasets([NAME])


def test_eval_only_command_prints_the_in_process_metrics(tiny_split, tmp_path):
    import train_net

    opts = [*tiny_train_opts(tmp_path / "train", max_iter=MAX_ITER, period=10 * MAX_ITER),
            "DATASETS.TRAIN", f"('{NAME}',)", "DATASETS.TEST", f"('{NAME}',)",
            "DATALOADER.NUM_WORKERS", "0"]
    args = train_net.argument_parser().parse_args(
        ["--config-file", str(CONFIG), "--dataset", tiny_split, *opts])
    cfg = train_net.setup(args)
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    expected = _printed_form(train_net.Trainer.test(cfg, trainer.model))
    assert float(expected["panoptic_seg"]["PQ"]) > 0  # trained: the comparison means something
    weights = tmp_path / "train" / "model_final.pth"
    assert weights.is_file()

    proc = subprocess.run(
        [sys.executable, "train_net.py", "--config-file", str(CONFIG), "--eval-only",
         "--dataset", tiny_split, *opts, "OUTPUT_DIR", str(tmp_path / "eval"),
         "MODEL.WEIGHTS", str(weights)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT),
                 OMP_NUM_THREADS=str(torch.get_num_threads())),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = _copypaste_metrics(proc.stdout + proc.stderr)
    assert set(printed) == set(expected) and "panoptic_seg" in printed
    assert printed == expected

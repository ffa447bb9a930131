"""``train_net.py --check-data`` / ``DATASETS.CHECK_DATA``: all file problems at once."""
from __future__ import annotations

import json
import shutil

import pytest

from knet_d2.data.check_data import check_datasets
from knet_d2.data.datasets.cli import register_dataset_spec
from tests.helpers.paths import REPO_ROOT

SYNTH_INSTANCE = REPO_ROOT / "configs/synthetic/instance/knet_R18_tiny.yaml"


def _broken_copy(shared_data, tmp_path, name):
    """coco_tiny val reduced to 4 images in tmp_path: one missing, one truncated, one whose
    annotation says a wrong size, one good."""
    src = shared_data / "coco_tiny"
    data = json.loads((src / "annotations" / "instances_val2017.json").read_text())
    keep = data["images"][:4]
    ids = {img["id"] for img in keep}
    data["images"] = keep
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    images = tmp_path / f"{name}_images"
    images.mkdir()
    for img in keep[1:]:
        shutil.copy(src / "val2017" / img["file_name"], images / img["file_name"])
    truncated = images / keep[1]["file_name"]
    truncated.write_bytes(truncated.read_bytes()[:2000])
    keep[2]["height"] += 7
    json_file = tmp_path / f"{name}.json"
    json_file.write_text(json.dumps(data))
    register_dataset_spec(f"{name}=coco_instance:{json_file}:{images}")
    return keep, images


def test_check_datasets_reports_every_problem(shared_data, tmp_path):
    keep, images = _broken_copy(shared_data, tmp_path, "own_check_lib")
    result = check_datasets(["own_check_lib"], num_threads=2, progress=False)
    assert result.num_samples == 4 and result.num_files == 4
    assert len(result.problems) == 3, result.problems
    text = result.summary()
    assert f"{images / keep[0]['file_name']}: FileNotFoundError" in text
    assert f"{images / keep[1]['file_name']}: ImageReadError" in text
    assert f"{images / keep[2]['file_name']}: image is" in text and "annotation says" in text
    assert keep[3]["file_name"] not in text


def test_train_net_check_data_exits_with_all_problems(shared_data, tmp_path):
    import train_net

    keep, _ = _broken_copy(shared_data, tmp_path, "own_check_cli")
    base = ["--config-file", str(SYNTH_INSTANCE), "DATASETS.TRAIN", "('own_check_cli',)",
            "DATASETS.TEST", "()", "MODEL.KNET.NUM_THING_CLASSES", "80",
            "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(tmp_path / "out")]
    for argv in (["--check-data"] + base, base + ["DATASETS.CHECK_DATA", "True"]):
        with pytest.raises(SystemExit) as e:
            train_net.main(train_net.argument_parser().parse_args(argv))
        msg = str(e.value)
        assert msg.startswith("train_net.py: data check failed: checked 4 sample(s)")
        assert "3 problem(s)" in msg and all(k["file_name"] in msg for k in keep[:3])
    assert not (tmp_path / "out" / "model_final.pth").exists()


def test_train_net_check_data_passes_and_does_not_train(shared_data, tmp_path):
    import train_net

    root = shared_data / "coco_panoptic_sample"
    register_dataset_spec(
        f"own_check_pan=coco_panoptic:{root / 'panoptic_examples.json'}:"
        f"{root / 'panoptic_examples'}:{root / 'input_images'}"
    )
    argv = ["--check-data", "--config-file", str(SYNTH_INSTANCE),
            "DATASETS.TRAIN", "('own_check_pan',)", "DATASETS.TEST", "()",
            "OUTPUT_DIR", str(tmp_path / "out")]
    assert train_net.main(train_net.argument_parser().parse_args(argv)) is None
    assert not (tmp_path / "out" / "model_final.pth").exists()
    result = check_datasets(["own_check_pan"], progress=False)
    assert result.ok and result.num_samples == 2 and result.num_files == 4

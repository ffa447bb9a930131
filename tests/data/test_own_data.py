"""Own COCO-format data from the command line: ``--dataset`` specs and ``DATASETS.REGISTER``."""
from __future__ import annotations

import importlib.util
import json

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from knet_d2 import get_knet_cfg
from knet_d2.config import ConfigError
from knet_d2.data.datasets.cli import DatasetSpecError, parse_dataset_spec, register_dataset_spec
from tests.helpers.paths import REPO_ROOT

SYNTH_INSTANCE = REPO_ROOT / "configs/synthetic/instance/knet_R18_tiny.yaml"
CPU_SMALL = REPO_ROOT / "configs/custom/knet_R50_cpu_small.yaml"


def _coco_tiny(shared_data):
    root = shared_data / "coco_tiny"
    return root / "annotations" / "instances_val2017.json", root / "val2017"


def _small_coco(shared_data, tmp_path, n: int = 3):
    """A COCO instance JSON with the first ``n`` images of coco_tiny val (all 80 categories)."""
    json_file, images = _coco_tiny(shared_data)
    data = json.loads(json_file.read_text())
    keep = data["images"][:n]
    ids = {img["id"] for img in keep}
    data["images"] = keep
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    out = tmp_path / "small.json"
    out.write_text(json.dumps(data))
    return out, images


# ------------------------------------------------------------------------------------ parsing
def test_parse_every_kind_with_optional_fields():
    s = parse_dataset_spec("a=coco_instance:x.json:imgs")
    assert (s.name, s.kind, s.field("INSTANCES_JSON"), s.field("IMAGE_DIR")) == (
        "a", "coco_instance", "x.json", "imgs")
    p = parse_dataset_spec("b=coco_panoptic:p.json:png:img")
    assert p.field("SEMSEG_PNG_DIR") is None and p.field("INSTANCES_JSON") is None
    p = parse_dataset_spec("b=coco_panoptic:p.json:png:img::ins.json")
    assert p.field("SEMSEG_PNG_DIR") is None and p.field("INSTANCES_JSON") == "ins.json"
    m = parse_dataset_spec("c=sem_seg:img:lab:sky,road:png")
    assert m.field("CLASSES") == "sky,road" and m.field("IMAGE_EXT") == "png"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("coco_instance:x.json:imgs", "expected NAME=KIND"),
        ("a=coco:x.json:imgs", "unknown kind 'coco'"),
        ("a=coco_instance:x.json", "takes NAME=coco_instance:INSTANCES_JSON:IMAGE_DIR"),
        ("a=coco_instance:x.json:imgs:extra", "3 field(s) given"),
        ("a=coco_panoptic::png:img", "PANOPTIC_JSON is empty"),
        ("a=sem_seg:img:lab", "CLASSES"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(DatasetSpecError) as e:
        parse_dataset_spec(spec)
    assert message in str(e.value) and spec in str(e.value)


# ------------------------------------------------------------------------------------ registering
def test_config_list_and_option_register_with_json_metadata(shared_data):
    json_file, images = _coco_tiny(shared_data)
    spec = f"own_cfg_val=coco_instance:{json_file}:{images}"
    cfg = get_knet_cfg(
        str(SYNTH_INSTANCE), ["DATASETS.REGISTER", f"['{spec}']"],
        datasets=[f"own_opt_val=coco_instance:{json_file}:{images}"],
    )
    assert list(cfg.DATASETS.REGISTER) == [spec, f"own_opt_val=coco_instance:{json_file}:{images}"]
    names = json.loads(json_file.read_text())["categories"]
    for name in ("own_cfg_val", "own_opt_val"):
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == [c["name"] for c in sorted(names, key=lambda c: c["id"])]
        assert meta.evaluator_type == "coco" and meta.json_file == str(json_file)
    assert len(DatasetCatalog.get("own_opt_val")) == 80
    # same spec again (another launch() worker, a second get_knet_cfg): no error
    get_knet_cfg(str(SYNTH_INSTANCE), datasets=[spec])
    with pytest.raises(ConfigError, match="'own_cfg_val' is already registered"):
        get_knet_cfg(str(SYNTH_INSTANCE), datasets=[f"own_cfg_val=coco_instance:{json_file}:."])
    with pytest.raises(ConfigError, match="'coco_2017_val' is already registered"):
        get_knet_cfg(str(SYNTH_INSTANCE), datasets=[f"coco_2017_val=coco_instance:{json_file}:."])


def test_missing_files_are_named(shared_data, tmp_path):
    json_file, images = _coco_tiny(shared_data)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.json")):
        get_knet_cfg(str(SYNTH_INSTANCE),
                     datasets=[f"own_missing=coco_instance:{tmp_path / 'nope.json'}:{images}"])
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "imgs")):
        register_dataset_spec(f"own_missing=coco_instance:{json_file}:{tmp_path / 'imgs'}")
    assert "own_missing" not in DatasetCatalog.list()


def test_panoptic_and_semantic_forms(shared_data, tmp_path):
    pan = shared_data / "coco_panoptic_sample"
    register_dataset_spec(
        f"own_pan=coco_panoptic:{pan / 'panoptic_examples.json'}:{pan / 'panoptic_examples'}:"
        f"{pan / 'input_images'}"
    )
    meta = MetadataCatalog.get("own_pan")
    assert meta.evaluator_type == "coco_panoptic_seg" and len(meta.stuff_classes) == 133
    dicts = DatasetCatalog.get("own_pan")
    assert len(dicts) == 2 and all(d["pan_seg_file_name"].endswith(".png") for d in dicts)

    ade = shared_data / "ade20k_sceneparsing_sample"
    classes = tmp_path / "classes.txt"
    classes.write_text("wall\nbuilding\n\nsky\n")
    register_dataset_spec(f"own_sem=sem_seg:{ade / 'images'}:{ade / 'annotations'}:{classes}")
    assert MetadataCatalog.get("own_sem").stuff_classes == ["wall", "building", "sky"]
    assert len(DatasetCatalog.get("own_sem")) == 3
    register_dataset_spec(f"own_sem2=sem_seg:{ade / 'images'}:{ade / 'annotations'}:a, b")
    assert MetadataCatalog.get("own_sem2").stuff_classes == ["a", "b"]
    with pytest.raises(FileNotFoundError, match="class name file not found"):
        register_dataset_spec(
            f"own_sem3=sem_seg:{ade / 'images'}:{ade / 'annotations'}:{tmp_path / 'c.txt'}")


# ------------------------------------------------------------------------------------ train_net
def _train_net_args(*argv):
    import train_net

    return train_net, train_net.argument_parser().parse_args(list(argv))


def test_train_net_class_count_check_sees_own_data(shared_data, tmp_path):
    json_file, images = _small_coco(shared_data, tmp_path)
    train_net, args = _train_net_args(
        "--config-file", str(CPU_SMALL),
        "--dataset", f"my_dataset_train=coco_instance:{json_file}:{images}",
        "--dataset", f"my_dataset_val=coco_instance:{json_file}:{images}",
        "MODEL.WEIGHTS", "", "MODEL.KNET.NUM_THING_CLASSES", "3", "SOLVER.MAX_ITER", "1",
        "OUTPUT_DIR", str(tmp_path / "o"),
    )
    with pytest.raises(SystemExit) as e:
        train_net.main(args)
    assert "set MODEL.KNET.NUM_THING_CLASSES 80" in str(e.value)


def test_train_net_unregistered_name_is_a_start_up_error(tmp_path):
    train_net, args = _train_net_args(
        "--config-file", str(SYNTH_INSTANCE), "DATASETS.TRAIN", "('own_never_registered',)",
        "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(tmp_path / "o"),
    )
    with pytest.raises(SystemExit) as e:
        train_net.main(args)
    msg = str(e.value)
    assert "DATASETS.TRAIN names unregistered dataset(s) ['own_never_registered']" in msg
    assert "--dataset NAME=KIND" in msg


def test_train_net_trains_on_own_data(shared_data, tmp_path):
    json_file, images = _small_coco(shared_data, tmp_path, n=2)
    out = tmp_path / "run"
    train_net, args = _train_net_args(
        "--config-file", str(SYNTH_INSTANCE),
        "--dataset", f"own_train_run=coco_instance:{json_file}:{images}",
        "DATASETS.TRAIN", "('own_train_run',)", "DATASETS.TEST", "()",
        "MODEL.KNET.NUM_THING_CLASSES", "80", "SOLVER.MAX_ITER", "1", "SOLVER.IMS_PER_BATCH", "2",
        "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96", "OUTPUT_DIR", str(out),
    )
    train_net.main(args)
    assert (out / "model_final.pth").is_file()
    saved = (out / "config.yaml").read_text()
    assert f"own_train_run=coco_instance:{json_file}:{images}" in saved  # reproducible run


# ------------------------------------------------------------------------------------ tools
def test_visualize_data_with_dataset_option(shared_data, tmp_path, capsys):
    json_file, images = _small_coco(shared_data, tmp_path, n=2)
    spec = importlib.util.spec_from_file_location(
        "knet_visualize_data", REPO_ROOT / "tools/visualize_data.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rc = tool.main(
        ["--source", "annotation", "--config-file", str(CPU_SMALL),
         "--output-dir", str(tmp_path / "vis"),
         "--dataset", f"my_vis_train=coco_instance:{json_file}:{images}",
         "--opts", "DATASETS.TRAIN", "('my_vis_train',)", "DATASETS.TEST", "()"]
    )
    assert rc == 0
    assert len(list((tmp_path / "vis").glob("*.jpg"))) == 2
    rc = tool.main(["--source", "annotation", "--config-file", str(CPU_SMALL),
                    "--output-dir", str(tmp_path / "vis2"),
                    "--opts", "DATASETS.TRAIN", "('my_vis_unregistered',)"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "['my_vis_unregistered']" in err and "--dataset NAME=KIND" in err

"""knet_onnx, the torch-free runtime of exported models, against the PyTorch model.

Same models, images and tolerances as export/test_knet_export.py: random-init tiny synthetic models
(seed 0), raw graph outputs within 1e-3 (+ 1e-5 relative), final outputs identical except at
pixels that are numerical ties in PyTorch itself. Here the inputs are image files: a real
photo (shrunk by the test resize), a synthetic image (not resized) and a small crop of the
photo (enlarged), so the runtime's own decoding and resizing are part of the comparison. The
command-line runner is also run in a subprocess where torch, detectron2 and knet_d2 cannot be
imported. The runtime's numpy building blocks alone: test_onnx_building_blocks.py.
"""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image as d2_read_image
from detectron2.modeling import build_model
from detectron2.modeling.postprocessing import sem_seg_postprocess

from tests.helpers.paths import REPO_ROOT, load_config
from tests.helpers.requirements import require_module

ort = require_module("onnxruntime", "tools/install_deps.sh installs it (ONNX export)")
require_module("onnx", "tools/install_deps.sh installs it (ONNX export)")

from knet_d2.data.synthetic import render_sample, split_default_seed  # noqa: E402
from knet_d2.export import (  # noqa: E402
    class_table,
    export_onnx,
    preprocess_batch,
    preprocess_params,
    reference_outputs,
)
from knet_d2.modeling import postprocessing as torch_post  # noqa: E402
from knet_onnx import ExportSpec, KNetOnnxModel, SpecError  # noqa: E402
from knet_onnx import postprocess as np_post  # noqa: E402
from knet_onnx.cli import main as runner_main  # noqa: E402
from knet_onnx.formats import rgb_to_id_map, rle_encode  # noqa: E402
from knet_onnx.image_ops import (  # noqa: E402
    read_image,
)
from knet_onnx.model import available_cpus  # noqa: E402
from knet_onnx.spec import METADATA_KEY  # noqa: E402
from tests.helpers.export_checks import (  # noqa: E402
    ATOL,
    CONFIGS,
    RTOL,
    assert_argmax_equal_up_to_ties,
    get_model,
    max_diff,
    run_cli,
    top2_gap,
)

PHOTO = "ade20k_sceneparsing_sample/images/ADE_val_00000001.jpg"


def session_options():
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return so


@pytest.fixture(scope="module")
def image_files(tmp_path_factory, shared_data):
    """photo.jpg (512 x 683, shrunk to 128 x 171), synthetic.png (128 x 128, kept) and
    crop.png (90 x 120 of the photo, enlarged to 128 x 171)."""
    folder = tmp_path_factory.mktemp("images")
    shutil.copy(shared_data / PHOTO, folder / "photo.jpg")
    # Image 2 of the val split: on image 0 of generator v2 one hard-mask pixel of the random-init
    # instance model sits 5e-6 from the sigmoid 0.5 threshold, where float noise between the
    # runtimes flips it and moves cls_logits by 1e-2 (beyond the raw-output tolerance, which
    # models float noise, not threshold flips); image 2's closest pixel is 40x farther.
    synthetic = render_sample(2, seed=split_default_seed("val")).image  # RGB
    cv2.imwrite(str(folder / "synthetic.png"), synthetic[:, :, ::-1])
    photo = cv2.imread(str(shared_data / PHOTO))
    cv2.imwrite(str(folder / "crop.png"), photo[200:290, 300:420])
    return [folder / "photo.jpg", folder / "synthetic.png", folder / "crop.png"]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    """``get(task) -> KNetOnnxModel`` of get_model(task), exported (dynamic) with its config."""
    cache = {}
    root = tmp_path_factory.mktemp("runtime")

    def get(task):
        if task not in cache:
            model = get_model(task)
            cfg = load_config(REPO_ROOT / CONFIGS[task], ["MODEL.DEVICE", "cpu"])
            images = torch.zeros(1, 3, 128, 160)
            export_onnx(model, images, root / f"{task}.onnx", dynamic=True, cfg=cfg)
            cache[task] = KNetOnnxModel.load(root / f"{task}.onnx",
                                             session_options=session_options())
        return cache[task]

    return get


def pytorch_input(task, path):
    """The D2 input dict ``DefaultPredictor`` builds for ``path``: D2's ``read_image`` in
    ``INPUT.FORMAT`` and ``ResizeShortestEdge`` (MIN_SIZE_TEST, MAX_SIZE_TEST)."""
    cfg = load_config(REPO_ROOT / CONFIGS[task])
    image = d2_read_image(str(path), format=cfg.INPUT.FORMAT)
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    resized = aug.get_transform(image).apply_image(image)
    return {"image": torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1))),
            "height": image.shape[0], "width": image.shape[1]}


def torch_raw_and_outputs(model, x):
    """The padded batch, the graph outputs and the final outputs of ``model([x])``, with one
    network pass: the rest of the model's ``forward`` after its network (KNet.inference, or
    D2's sem_seg_postprocess for a SemanticSegmentor)."""
    images = preprocess_batch([x], **preprocess_params(model))
    raw = reference_outputs(model, images.tensor)
    with torch.no_grad():
        if "cls_logits" in raw:
            out = model.inference(raw, [x], images)[0]
        else:
            out = {"sem_seg": sem_seg_postprocess(raw["sem_seg_logits"][0],
                                                  images.image_sizes[0], x["height"],
                                                  x["width"])}
    return images, raw, out


def assert_knet_match(model, x, ref, got, images, ref_raw, got_raw):
    """Runtime outputs ``got`` (numpy, D2 keys; ``sem_seg`` may be replaced by labels
    ``sem_seg_labels``) against PyTorch's ``ref``; returns the number of tie pixels."""
    np_, t = model.num_proposals, model.num_thing_classes
    padded, size = tuple(images.tensor.shape[-2:]), images.image_sizes[0]
    out = (x["height"], x["width"])
    prob_r = torch_post.rescale_masks(ref_raw["mask_logits"][0], padded, size, out)
    prob_g = np_post.rescale_masks(got_raw["mask_logits"][0], padded, size, out)
    dp = max_diff(prob_r, torch.from_numpy(prob_g))
    cls_r = ref_raw["cls_logits"][0].sigmoid()
    cls_g = torch.from_numpy(np_post.sigmoid(got_raw["cls_logits"][0]))
    flips = 0
    if "instances" in ref:
        a, b = ref["instances"], got["instances"]
        assert len(a) == len(b["scores"]) > 0
        assert np.array_equal(a.pred_classes.numpy(), b["pred_classes"])
        assert max_diff(a.scores, torch.from_numpy(b["scores"])) <= 1e-4
        kernel = cls_r[:np_, :t].flatten().topk(len(a)).indices // t
        diff = a.pred_masks.numpy() != b["pred_masks"]
        tie = ((prob_r[kernel] - model.mask_threshold).abs() <= dp).numpy()
        assert bool(tie[diff].all()), "instance mask pixels differ away from the threshold"
        assert diff.sum() <= 1e-3 * diff.size
        same = ~diff.reshape(len(a), -1).any(1)
        assert np.array_equal(a.pred_boxes.tensor.numpy()[same], b["pred_boxes"][same])
        flips += int(diff.sum())
    if "panoptic_seg" in ref:
        (ids_r, info_r), (ids_g, info_g) = ref["panoptic_seg"], got["panoptic_seg"]
        assert len(info_r) > 0
        key = [(d["id"], d["category_id"], d["isthing"]) for d in info_r]
        assert key == [(d["id"], d["category_id"], d["isthing"]) for d in info_g]
        assert all(abs(r["score"] - g["score"]) <= 1e-4 for r, g in zip(info_r, info_g))

        def products(cls, probs):
            score = torch.cat([cls[:np_, :t].max(1).values, cls[np_:, t:].diagonal()])
            return score[:, None, None] * probs

        prod_r, prod_g = products(cls_r, prob_r), products(cls_g, torch.from_numpy(prob_g))
        assert ids_g.shape == out
        flips += assert_argmax_equal_up_to_ties(
            ids_r, torch.from_numpy(ids_g.astype(np.int32)), top2_gap(prod_r),
            2 * max_diff(prod_r, prod_g),
        )
    if "sem_seg" in ref:
        sem_r = ref["sem_seg"]
        sem_g = torch.from_numpy(np_post.semantic_inference(got_raw["cls_logits"][0], prob_g))
        labels = got.get("sem_seg_labels")
        if labels is None:
            assert max_diff(sem_r, torch.from_numpy(got["sem_seg"])) <= ATOL
            labels = got["sem_seg"].argmax(0)
        flips += assert_argmax_equal_up_to_ties(
            sem_r.argmax(0), torch.from_numpy(labels.astype(np.int64)), top2_gap(sem_r),
            2 * max_diff(sem_r, sem_g),
        )
    return flips


# ----------------------------------------------------------------------- runtime vs PyTorch
@pytest.mark.parametrize("task", ["instance", "semantic"])
def test_runtime_matches_pytorch_on_image_files(task, runtime, image_files):
    """(The panoptic model, which has all three outputs, is compared in the runner test.)"""
    model, rt = get_model(task), runtime(task)
    flips, worst = 0, {}
    # semantic: the shrunk photo and the enlarged crop (the resize cases) suffice
    for path in image_files if task == "instance" else image_files[::2]:
        x = pytorch_input(task, path)
        prepared = rt.prepare(read_image(path))
        # decode, channel order and test resize: bit-identical to D2's (PIL) path
        assert np.array_equal(prepared, x["image"].numpy().transpose(1, 2, 0)), path.name
        images, ref_raw, ref = torch_raw_and_outputs(model, x)
        batch, sizes = rt.pad_batch([prepared])
        assert batch.shape == tuple(images.tensor.shape) and sizes == images.image_sizes
        assert max_diff(torch.from_numpy(batch), images.tensor) <= 1e-5
        got_raw = rt.run_graph(batch)
        for name, value in ref_raw.items():
            diff = max_diff(value, torch.from_numpy(got_raw[name]))
            assert diff <= ATOL + RTOL * value.abs().max().item(), name
            worst[name] = max(worst.get(name, 0.0), diff)
        got = rt.predict(read_image(path))
        assert set(got) == set(ref)
        if task == "semantic":
            a, b = ref["sem_seg"], torch.from_numpy(got["sem_seg"])
            assert a.shape == b.shape == (a.shape[0], x["height"], x["width"])
            assert max_diff(a, b) <= ATOL + RTOL * a.abs().max().item()
            flips += assert_argmax_equal_up_to_ties(a.argmax(0), b.argmax(0), top2_gap(a),
                                                    2 * max_diff(a, b))
        else:
            flips += assert_knet_match(model, x, ref, got, images, ref_raw, got_raw)
    print(f"{task}: {flips} tie pixels differ; worst raw diffs {worst}")


# --------------------------------------------------------------- the runner without torch
HIDE_TORCH = textwrap.dedent("""
    import sys

    HIDDEN = ("torch", "torchvision", "detectron2", "knet_d2")

    class HideTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                raise ImportError(f"{name} is hidden in this process")

    sys.meta_path.insert(0, HideTorch())
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("torch is still importable")
    from knet_onnx.cli import main

    status = main(sys.argv[1:])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in HIDDEN)
    if loaded:
        raise SystemExit(f"imported {loaded}")
    sys.exit(status)
""")


def run_without_torch(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", HIDE_TORCH, *map(str, args)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory):
    """tools/export_model.py's panoptic export (random init, seed SEED) and its model."""
    out = tmp_path_factory.mktemp("cli_export") / "panoptic"
    res = run_cli("--config-file", CONFIGS["panoptic"], "--output", str(out), "--dynamic",
                  "--input-size", "128", "160")
    assert res.returncode == 0, res.stdout + res.stderr
    cfg = load_config(REPO_ROOT / CONFIGS["panoptic"], ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(cfg.SEED)  # what export_model.py does for empty MODEL.WEIGHTS
    return out, build_model(cfg).eval(), cfg


def test_runner_without_torch_writes_files_matching_pytorch(cli_export, image_files, tmp_path):
    export_dir, model, cfg = cli_export
    out = tmp_path / "out"
    res = run_without_torch(image_files[0].parent, "--model", export_dir, "--output", out,
                            "--threads", "2", "--task", "instances",
                            "--confidence-threshold", "0.99")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "wrote 3 image(s)" in res.stdout
    assert "none scores >= 0.99 (best 0.0" in res.stdout  # untrained model: says what to try

    meta = MetadataCatalog.get(cfg.DATASETS.TEST[0])
    panoptic = json.loads((out / "panoptic.json").read_text())
    assert [c["name"] for c in panoptic["categories"]] == meta.stuff_classes
    assert {c["id"]: i for i, c in enumerate(panoptic["categories"])} == (
        meta.stuff_dataset_id_to_contiguous_id)
    contiguous = meta.stuff_dataset_id_to_contiguous_id
    results = json.loads((out / "instances.json").read_text())
    rt = KNetOnnxModel.load(export_dir, session_options=session_options())
    flips, worst = 0, {}
    for path in image_files:
        stem = path.stem
        original = cv2.imread(str(path))
        assert cv2.imread(str(out / "vis" / f"{stem}.jpg")).shape == original.shape
        # the files, read back into the runtime's output format
        ids = rgb_to_id_map(cv2.imread(str(out / "panoptic" / f"{stem}.png"))[:, :, ::-1])
        (entry,) = [a for a in panoptic["annotations"] if a["image_id"] == stem]
        assert entry["file_name"] == f"{stem}.png"
        info = [{"id": s["id"], "category_id": contiguous[s["category_id"]],
                 "isthing": s["isthing"], "score": s["score"]} for s in entry["segments_info"]]
        for s in entry["segments_info"]:
            assert s["area"] == int((ids == s["id"]).sum()) > 0
        arrays = np.load(out / "instances" / f"{stem}.npz")
        mine = [r for r in results if r["image_id"] == stem]
        assert len(mine) == len(arrays["scores"]) == min(
            cfg.TEST.DETECTIONS_PER_IMAGE, model.num_proposals * model.num_thing_classes)
        for r, mask in zip(mine[:5], arrays["masks"]):
            assert r["segmentation"] == rle_encode(mask)
        got = {
            "panoptic_seg": (ids.astype(np.int32), info),
            "instances": {
                "pred_masks": arrays["masks"], "scores": arrays["scores"],
                "pred_classes": np.array([meta.thing_dataset_id_to_contiguous_id[c]
                                          for c in arrays["category_ids"]]),
                "pred_boxes": arrays["boxes"],
            },
            "sem_seg_labels": cv2.imread(str(out / "sem_seg" / f"{stem}.png"),
                                         cv2.IMREAD_UNCHANGED),
        }
        # ... against the PyTorch model on the same file
        x = pytorch_input("panoptic", path)
        images, ref_raw, ref = torch_raw_and_outputs(model, x)
        batch, _ = rt.pad_batch([rt.prepare(original)])
        got_raw = rt.run_graph(batch)
        for name, value in ref_raw.items():
            diff = max_diff(value, torch.from_numpy(got_raw[name]))
            assert diff <= ATOL + RTOL * value.abs().max().item(), name
            worst[name] = max(worst.get(name, 0.0), diff)
        flips += assert_knet_match(model, x, ref, got, images, ref_raw, got_raw)
    print(f"runner without torch: {flips} tie pixels differ over {len(image_files)} images; "
          f"worst raw diffs {worst}")


def test_post_processing_threads_change_no_output(cli_export, image_files, monkeypatch):
    """The panoptic model's outputs (all three kinds) with the rescaling and the merge split
    into one mask / one row per piece over 3 threads equal those of one thread in one piece."""
    export_dir, _, _ = cli_export
    assert KNetOnnxModel.load(export_dir).threads == available_cpus() >= 1
    one = KNetOnnxModel.load(export_dir, session_options=session_options(), threads=1)
    three = KNetOnnxModel.load(export_dir, session_options=session_options(), threads=3)
    for path in image_files:
        image = read_image(path)
        monkeypatch.setattr(np_post, "RESCALE_CHUNK_BYTES", 2**40)
        monkeypatch.setattr(np_post, "MERGE_BAND_BYTES", 2**40)
        a = one.predict(image)
        monkeypatch.setattr(np_post, "RESCALE_CHUNK_BYTES", 1)
        monkeypatch.setattr(np_post, "MERGE_BAND_BYTES", 1)
        b = three.predict(image)
        assert sorted(a) == sorted(b) == ["instances", "panoptic_seg", "sem_seg"]
        assert np.array_equal(a["panoptic_seg"][0], b["panoptic_seg"][0])
        assert a["panoptic_seg"][1] == b["panoptic_seg"][1] and a["panoptic_seg"][1]
        assert np.array_equal(a["sem_seg"], b["sem_seg"])
        for key, value in a["instances"].items():
            assert np.array_equal(value, b["instances"][key]), (path.name, key)


# ------------------------------------------------------------------ runner errors and safety
def test_runner_refuses_to_overwrite_and_names_bad_inputs(runtime, image_files, tmp_path,
                                                          capsys):
    rt = runtime("instance")
    model_path = rt.spec.path
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(image_files[1], folder / "a.png")
    (folder / "b.jpg").write_text("not an image")
    out = tmp_path / "out"
    assert runner_main([str(folder), "--model", model_path, "--output", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"skipped {folder / 'b.jpg'}: {folder / 'b.jpg'}: not an image" in captured.err
    assert (out / "instances" / "a.npz").is_file() and not (out / "panoptic.json").exists()
    stamp = (out / "instances.json").stat().st_mtime_ns

    assert runner_main([str(folder / "a.png"), "--model", model_path,
                        "--output", str(out)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (out / "instances.json").stat().st_mtime_ns == stamp

    cases = [
        ([str(folder), "--model", str(tmp_path / "nope")], "exported model not found"),
        ([str(tmp_path / "missing.jpg"), "--model", model_path], "input not found"),
        ([str(folder), str(folder / "a.png"), "--model", model_path], "the same output files"),
        ([str(folder), "--model", model_path, "--task", "panoptic"],
         "the model produces only instances"),
    ]
    for argv, message in cases:
        assert runner_main(argv + ["--output", str(tmp_path / "o2")]) == 2
        assert message in capsys.readouterr().err


def test_old_or_incomplete_metadata_is_refused_with_a_clear_error(runtime):
    rt = runtime("instance")
    meta = json.loads(
        rt.session.get_modelmeta().custom_metadata_map[METADATA_KEY]
    )
    assert meta["version"] == 2 and meta["input"]["format"] == "RGB"
    old = {k: v for k, v in meta.items() if k not in ("input", "dataset", "classes")}
    with pytest.raises(SpecError, match="version 1 does not record the input channel order.*"
                       "re-export"):
        ExportSpec.from_json(json.dumps(dict(old, version=1)), "old.onnx")
    with pytest.raises(SpecError, match="3 classes in the metadata, the model has 4"):
        ExportSpec.from_json(json.dumps(dict(meta, classes=meta["classes"][:3])), "m.onnx")
    with pytest.raises(SpecError, match="unsupported input format 'L'"):
        ExportSpec.from_json(json.dumps(dict(meta, input=dict(meta["input"], format="L"))),
                             "m.onnx")
    # a static graph: the runtime names the shape it needs before ONNX Runtime fails
    static = KNetOnnxModel(rt.session, dataclasses.replace(
        rt.spec, dynamic=False, input_shape=[1, 3, 64, 64]))
    with pytest.raises(ValueError, match="static input shape \\(1, 3, 64, 64\\).*--dynamic"):
        static.predict(np.zeros((100, 100, 3), np.uint8))


# ------------------------------------------------ a semantic model, class names for the export
def test_runner_on_a_semantic_model_writes_label_maps(runtime, image_files, tmp_path, capsys):
    rt = runtime("semantic")
    out = tmp_path / "out"
    assert runner_main([str(image_files[0]), "--model", rt.spec.path, "--output", str(out)]) == 0
    assert "photo: " in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["sem_seg", "vis"]  # no panoptic/instances
    image = read_image(image_files[0])
    labels = cv2.imread(str(out / "sem_seg" / "photo.png"), cv2.IMREAD_UNCHANGED)
    assert labels.dtype == np.uint8
    assert np.array_equal(labels, rt.predict(image)["sem_seg"].argmax(0))
    assert cv2.imread(str(out / "vis" / "photo.jpg")).shape == image.shape


def test_class_table_reads_dataset_metadata_or_says_it_is_missing(caplog):
    table = class_table("knet_synth_instance_val", 4, 4)  # instance: the thing classes
    assert [c["name"] for c in table] == ["circle", "square", "triangle", "star"]
    assert [c["dataset_id"] for c in table] == [1, 3, 5, 7] and all(c["isthing"] for c in table)
    panoptic = class_table("knet_synth_panoptic_val", 8, 4)  # panoptic: all classes
    assert [c["dataset_id"] for c in panoptic][4:] == [101, 103, 105, 107]
    assert [c["isthing"] for c in panoptic] == [True] * 4 + [False] * 4
    assert panoptic[4]["color"] == list(MetadataCatalog.get("knet_synth_panoptic_val")
                                        .stuff_colors[4])
    with caplog.at_level("WARNING"):
        unnamed = class_table(None, 3, 1)
    assert "has no metadata listing 3 classes" in caplog.text
    assert [(c["name"], c["dataset_id"], c["isthing"]) for c in unnamed] == [
        ("class 0", 0, True), ("class 1", 1, False), ("class 2", 2, False)]

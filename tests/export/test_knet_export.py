"""ONNX / TorchScript export (knet_d2.export, tools/export_model.py) against PyTorch.

Small random-init models (fixed seed) of the synthetic configs, inputs = 3 synthetic val images
and one real ADE20K photo. Raw graph outputs must match PyTorch within 1e-3; final D2 outputs
must be identical except at pixels that are numerical ties in PyTorch itself (a decision whose
two sides differ by less than the measured float difference of the two runtimes).
"""
import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.data.detection_utils import read_image
from detectron2.modeling import build_model
from torch import nn

from tests.helpers.paths import REPO_ROOT
from tests.helpers.requirements import require_module

ort = require_module("onnxruntime", "tools/install_deps.sh installs it (ONNX export)")
onnx = require_module("onnx", "tools/install_deps.sh installs it (ONNX export)")

from knet_d2.data.synthetic import render_sample, split_default_seed  # noqa: E402
from knet_d2.export import (  # noqa: E402
    ExportableAdaptiveAvgPool2d,
    ExportedKNetPredictor,
    UnsupportedModelError,
    build_export_wrapper,
    export_onnx,
    export_torchscript,
    make_onnx_exportable,
    preprocess_batch,
    preprocess_params,
    read_onnx_metadata,
    reference_outputs,
)
from knet_d2.modeling.postprocessing import rescale_masks  # noqa: E402
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
from tests.helpers.tiny_knet import tiny_cfg  # noqa: E402

KNET_TASKS = ("panoptic", "instance")


def ort_options():
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return so


def synthetic_input(i: int) -> dict:
    image = render_sample(i, seed=split_default_seed("val")).image
    return {"image": torch.as_tensor(image.transpose(2, 0, 1).copy()), "height": 128,
            "width": 128}


@pytest.fixture(scope="module")
def batch(shared_data):
    """3 synthetic val images (128x128) and one real photo resized to 128 x 171 (output at
    its original 512 x 683), i.e. mixed sizes in one padded batch."""
    path = shared_data / "ade20k_sceneparsing_sample/images/ADE_val_00000001.jpg"
    photo = read_image(str(path), format="RGB")
    resized = T.ResizeShortestEdge([128, 128], 512).get_transform(photo).apply_image(photo)
    real = {"image": torch.as_tensor(resized.transpose(2, 0, 1).copy()),
            "height": photo.shape[0], "width": photo.shape[1]}
    return [synthetic_input(i) for i in range(3)] + [real]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``get(task, fmt, dynamic) -> (path, meta, predictor)``, each exported once, traced on
    synthetic val image 0 (1, 3, 128, 128)."""
    cache = {}
    root = tmp_path_factory.mktemp("export")

    def get(task: str, fmt: str = "onnx", dynamic: bool = True):
        key = (task, fmt, dynamic)
        if key not in cache:
            model = get_model(task)
            images = preprocess_batch([synthetic_input(0)], **preprocess_params(model))
            path = root / f"{task}_{dynamic}.{'onnx' if fmt == 'onnx' else 'ts'}"
            if fmt == "onnx":
                meta = export_onnx(model, images.tensor, path, dynamic=dynamic)
            else:
                meta = export_torchscript(model, images.tensor, path)
            predictor = ExportedKNetPredictor.load(path, session_options=ort_options())
            cache[key] = (path, meta, predictor)
        return cache[key]

    return get


def assert_raw_close(ref: dict, got: dict, atol: float = ATOL, rtol: float = RTOL) -> dict:
    assert set(ref) == set(got)
    diffs = {}
    for name in ref:
        d = max_diff(ref[name], got[name])
        bound = atol + rtol * ref[name].abs().max().item()
        assert d <= bound, f"{name}: max abs diff {d} > {bound}"
        diffs[name] = d
    return diffs


# ---------------------------------------------------------------- final-output comparison


def knet_probs(model, raw: dict, i: int, images, x: dict):
    size = images.image_sizes[i]
    out = (x.get("height", size[0]), x.get("width", size[1]))
    probs = rescale_masks(raw["mask_logits"][i], tuple(images.tensor.shape[-2:]), size, out)
    return raw["cls_logits"][i].sigmoid(), probs


def assert_knet_outputs_match(model, batch, ref_out, got_out, ref_raw, got_raw, images):
    np_, t, s = model.num_proposals, model.num_thing_classes, model.num_stuff_classes
    flips = 0
    for i, (x, ref, got) in enumerate(zip(batch, ref_out, got_out)):
        assert set(ref) == set(got)
        cls_r, prob_r = knet_probs(model, ref_raw, i, images, x)
        cls_g, prob_g = knet_probs(model, got_raw, i, images, x)
        dp = max_diff(prob_r, prob_g)
        if "instances" in ref:
            a, b = ref["instances"], got["instances"]
            assert len(a) == len(b) > 0 and a.image_size == b.image_size
            assert torch.equal(a.pred_classes, b.pred_classes)
            assert max_diff(a.scores, b.scores) <= 1e-4
            # probability of each reference detection (same top-k as instance_inference)
            sc = cls_r[:np_, :t].flatten()
            kernel = sc.topk(len(a)).indices // t
            p_det = prob_r[kernel]
            diff = a.pred_masks != b.pred_masks
            tie = (p_det - model.mask_threshold).abs() <= dp
            assert bool(tie[diff].all()), "instance mask pixels differ away from the threshold"
            assert int(diff.sum()) <= 1e-3 * diff.numel()
            same = ~diff.flatten(1).any(1)
            assert torch.equal(a.pred_boxes.tensor[same], b.pred_boxes.tensor[same])
            flips += int(diff.sum())
        if "panoptic_seg" in ref:
            (ids_r, info_r), (ids_g, info_g) = ref["panoptic_seg"], got["panoptic_seg"]
            key = [(d["id"], d["category_id"], d["isthing"]) for d in info_r]
            assert key == [(d["id"], d["category_id"], d["isthing"]) for d in info_g]
            assert len(info_r) > 0
            for d_r, d_g in zip(info_r, info_g):
                assert abs(d_r["score"] - d_g["score"]) <= 1e-4
            def products(cls, probs):  # noqa: E306  the score * mask map panoptic merges
                score = torch.cat([cls[:np_, :t].max(1).values, cls[np_:, t:].diagonal()])
                return score[:, None, None] * probs
            prod_r, prod_g = products(cls_r, prob_r), products(cls_g, prob_g)
            eps = 2 * max_diff(prod_r, prod_g)
            flips += assert_argmax_equal_up_to_ties(ids_r, ids_g, top2_gap(prod_r), eps)
            assert ids_r.shape == (x["height"], x["width"]) and ids_r.dtype == ids_g.dtype
        if "sem_seg" in ref:
            a, b = ref["sem_seg"], got["sem_seg"]
            assert a.shape == b.shape == (t + s, x["height"], x["width"])
            eps = 2 * max_diff(a, b)
            flips += assert_argmax_equal_up_to_ties(a.argmax(0), b.argmax(0), top2_gap(a), eps)
    return flips


def assert_semantic_outputs_match(batch, ref_out, got_out):
    flips = 0
    for x, ref, got in zip(batch, ref_out, got_out):
        a, b = ref["sem_seg"], got["sem_seg"]
        assert a.shape == b.shape and a.shape[1:] == (x["height"], x["width"])
        assert max_diff(a, b) <= ATOL + RTOL * a.abs().max().item()
        eps = 2 * max_diff(a, b)
        flips += assert_argmax_equal_up_to_ties(a.argmax(0), b.argmax(0), top2_gap(a), eps)
    return flips


def check_final_outputs(task, predictor, batch):
    model = get_model(task)
    with torch.no_grad():
        ref_out = model(batch)
    got_out = predictor(batch)
    assert len(ref_out) == len(got_out) == len(batch)
    if task in KNET_TASKS:
        images = predictor.preprocess(batch)
        ref_raw = reference_outputs(model, images.tensor)
        got_raw = predictor.run_raw(images.tensor)
        return assert_knet_outputs_match(model, batch, ref_out, got_out, ref_raw, got_raw,
                                         images)
    return assert_semantic_outputs_match(batch, ref_out, got_out)


# ----------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("task", ["panoptic", "instance", "semantic", "semantic_fcn"])
def test_onnx_outputs_match_pytorch_on_a_mixed_batch(task, exported, batch):
    """Dynamic graph traced on one 128x128 image, run on the 4-image batch (padded 128 x 192
    for K-Net, 128 x 171 semantic): every output within tolerance of PyTorch."""
    path, meta, predictor = exported(task)
    model = get_model(task)
    images = predictor.preprocess(batch)
    assert tuple(images.tensor.shape) != tuple(meta["input_shape"])  # another size and batch
    ref = reference_outputs(model, images.tensor)
    got = predictor.run_raw(images.tensor)
    diffs = assert_raw_close(ref, got)
    if task in KNET_TASKS:
        n = model.num_proposals + model.num_stuff_classes
        h, w = images.tensor.shape[-2:]
        assert got["mask_logits"].shape == (4, n, h // 4, w // 4)
        assert got["cls_logits"].shape == (4, n, model.num_thing_classes
                                           + model.num_stuff_classes)
        assert diffs["mask_logits"] <= ATOL and diffs["cls_logits"] <= ATOL
    print(f"{task}: {diffs}")


@pytest.mark.parametrize("task", ["panoptic", "instance", "semantic"])
def test_onnx_final_d2_outputs_equal_pytorch(task, exported, batch):
    _, _, predictor = exported(task)
    flips = check_final_outputs(task, predictor, batch)
    print(f"{task}: {flips} tie pixels differ")


@pytest.mark.parametrize("task", ["panoptic", "semantic"])
def test_onnx_graph_is_self_describing(task, exported):
    path, meta, _ = exported(task)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert {o.domain: o.version for o in proto.opset_import}.get("", 0) == 17
    assert {o.domain for o in proto.opset_import} <= {"", "ai.onnx"}  # standard ops only
    assert read_onnx_metadata(path) == meta
    (inp,) = proto.graph.input
    assert inp.name == "images"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert [o.name for o in proto.graph.output] == meta["output_names"]
    assert meta["pixel_mean"] == pytest.approx([123.675, 116.28, 103.53])
    if task == "panoptic":
        post = meta["postprocess"]
        assert post["num_stuff_classes"] == 4 and post["panoptic_on"] and post["instance_on"]
        assert meta["size_divisibility"] == 32


@pytest.mark.parametrize("task", ["panoptic", "semantic"])
def test_static_onnx_graph_rejects_other_sizes(task, exported, batch):
    path, meta, predictor = exported(task, dynamic=False)
    assert meta["dynamic"] is False and meta["input_shape"] == [1, 3, 128, 128]
    x = batch[:1]  # the traced size works ...
    assert_raw_close(reference_outputs(get_model(task), predictor.preprocess(x).tensor),
                     predictor.run_raw(predictor.preprocess(x).tensor))
    with pytest.raises(ValueError, match="static input shape.*--dynamic"):
        predictor(batch)  # ... the padded mixed batch does not
    with pytest.raises(Exception):  # noqa: B017  ONNX Runtime refuses it on its own too
        predictor.backend.run(None, {"images": np.zeros((2, 3, 160, 192), np.float32)})


@pytest.mark.parametrize("task", ["panoptic", "instance", "semantic"])
def test_torchscript_trace_matches_pytorch(task, exported, batch):
    path, meta, predictor = exported(task, fmt="torchscript")
    assert not predictor.is_onnx and isinstance(predictor.backend, torch.jit.ScriptModule)
    assert meta["format"] == "torchscript" and meta["dynamic"] is True
    model = get_model(task)
    images = predictor.preprocess(batch)
    diffs = assert_raw_close(reference_outputs(model, images.tensor),
                             predictor.run_raw(images.tensor), atol=1e-4)
    print(f"{task} torchscript: {diffs}")
    check_final_outputs(task, predictor, batch)


def test_exportable_adaptive_pool_equals_pytorch_and_exports(tmp_path):
    g = torch.Generator().manual_seed(0)
    for size in [(4, 5), (7, 3), (6, 6), (13, 17), (1, 9)]:
        x = torch.randn(2, 3, *size, generator=g)
        for out in [1, 2, 3, 6, (2, 5)]:
            ref = nn.AdaptiveAvgPool2d(out)(x)
            got = ExportableAdaptiveAvgPool2d(out)(x)
            assert got.shape == ref.shape
            assert max_diff(got, ref) <= 1e-6, (size, out)
    with pytest.raises(ValueError, match="output_size"):
        ExportableAdaptiveAvgPool2d((None, 3))
    # the pool follows the input size inside a dynamic ONNX graph
    module = nn.Sequential(ExportableAdaptiveAvgPool2d(6), nn.Flatten())
    torch.onnx.export(module, (torch.randn(1, 2, 8, 8),), str(tmp_path / "pool.onnx"),
                      dynamo=False, opset_version=17, input_names=["x"],
                      dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}})
    sess = ort.InferenceSession(str(tmp_path / "pool.onnx"), ort_options(),
                                providers=["CPUExecutionProvider"])
    for size in [(8, 8), (4, 5), (11, 7)]:
        x = torch.randn(2, 2, *size, generator=g)
        (got,) = sess.run(None, {"x": x.numpy()})
        assert max_diff(torch.from_numpy(got), nn.AdaptiveAvgPool2d(6)(x).flatten(1)) <= 1e-5


def test_make_onnx_exportable_copies_and_swaps_only_non_global_pools():
    model = get_model("semantic")
    pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    assert len(pools) == 4  # UPerNet PPM scales 1, 2, 3, 6
    copy = make_onnx_exportable(model)
    assert copy is not model and not copy.training
    kept = [m.output_size for m in copy.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    swapped = [m.output_size for m in copy.modules()
               if isinstance(m, ExportableAdaptiveAvgPool2d)]
    assert kept == [1] and swapped == [(2, 2), (3, 3), (6, 6)]
    assert len([m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]) == 4
    x = torch.randn(1, 3, 96, 160, generator=torch.Generator().manual_seed(1))
    assert_raw_close(reference_outputs(model, x), reference_outputs(copy, x))


def test_dynamic_trace_at_a_pool_sized_feature_map_is_refused(tmp_path):
    """UPerNet traced at 192 x 192 (stride-32 map 6 x 6 = PPM scale 6) would lose a resize."""
    model = get_model("semantic")
    x = torch.zeros(1, 3, 192, 192)
    for export in (lambda p: export_onnx(model, x, p, dynamic=True),
                   lambda p: export_torchscript(model, x, p)):
        with pytest.raises(ValueError, match="output size 6x6 gets an input of that same size"):
            export(tmp_path / "m")
    assert not any(tmp_path.iterdir())
    export_onnx(model, x, tmp_path / "static.onnx", dynamic=False)  # a static graph is fine


def test_unsupported_models_and_options_raise_clear_errors():
    with pytest.raises(UnsupportedModelError, match="KNet, SemanticSegmentor"):
        build_export_wrapper(nn.Conv2d(3, 3, 1))
    x = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match="opset must be in"):
        export_onnx(get_model("instance"), x, "unused.onnx", opset=16)
    with pytest.raises(ValueError, match="float32 \\(B, 3, H, W\\)"):
        export_onnx(get_model("instance"), x[0], "unused.onnx")
    assert not os.path.exists("unused.onnx")


def test_cli_exports_checks_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "export"
    args = ["--config-file", CONFIGS["instance"], "--output", str(out), "--dynamic",
            "--check", "--input-size", "96", "128"]
    res = run_cli(*args)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "[check] PASSED" in res.stdout
    assert "second input (2, 3, 128, 192)" in res.stdout  # --dynamic: another size checked
    meta = json.loads((out / "model.onnx.json").read_text())
    assert meta["input_shape"] == [1, 3, 96, 128] and meta["dynamic"] is True
    assert meta == read_onnx_metadata(out / "model.onnx")
    before = (out / "model.onnx").stat().st_mtime_ns

    res = run_cli(*args)
    assert res.returncode == 2
    assert "refusing to overwrite" in res.stderr and "model.onnx" in res.stderr
    assert (out / "model.onnx").stat().st_mtime_ns == before


def test_cli_errors_without_traceback(tmp_path, capsys):
    tool = REPO_ROOT / "tools" / "export_model.py"
    spec = importlib.util.spec_from_file_location("export_model", tool)
    export_model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export_model)
    out = str(tmp_path / "o")
    cfg = CONFIGS["instance"]
    cases = [
        (["--config-file", "missing.yaml", "--output", out], "config file not found"),
        (["--config-file", cfg, "--output", out, "MODEL.META_ARCHITECTURE", "GeneralizedRCNN"],
         "'GeneralizedRCNN' cannot be exported"),
        (["--config-file", cfg, "--output", out, "--sample-image", "nope.jpg"],
         "--sample-image not found"),
        (["--config-file", cfg, "--output", out, "--opset", "13"], "--opset must be in"),
    ]
    for argv, message in cases:
        assert export_model.main(argv) == 2
        assert message in capsys.readouterr().err
    assert not os.path.exists(os.path.join(out, "model.onnx"))


def test_soft_grouping_model_exports_with_its_grouping(tmp_path, batch):
    """MODEL.KNET.SOFT_GROUPING is part of the traced kernel path: the ONNX graph of such a
    model matches its PyTorch outputs, and not those of the same weights with hard grouping."""
    torch.manual_seed(0)
    hard = build_model(tiny_cfg()).eval()
    cfg = tiny_cfg()
    cfg.MODEL.KNET.SOFT_GROUPING = True
    soft = build_model(cfg).eval()
    soft.load_state_dict(hard.state_dict())
    images = preprocess_batch(batch[:2], **preprocess_params(soft))
    export_onnx(soft, images.tensor, tmp_path / "soft.onnx", dynamic=True)
    predictor = ExportedKNetPredictor.load(tmp_path / "soft.onnx", session_options=ort_options())
    got = predictor.run_raw(images.tensor)
    assert_raw_close(reference_outputs(soft, images.tensor), got)
    hard_ref = reference_outputs(hard, images.tensor)
    assert max_diff(hard_ref["cls_logits"], got["cls_logits"]) > 10 * ATOL

"""The KNet meta-architecture end to end on CPU: shapes, D2 output formats, edge cases, learning."""
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes

from knet_d2.config import ConfigError
from knet_d2.modeling.thing_softmax import thing_probabilities
from tests.helpers.tiny_knet import make_input, tiny_cfg


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_cfg())


@pytest.mark.parametrize(
    "sizes", [[(64, 64)], [(61, 77), (64, 50)], [(33, 65), (70, 40), (64, 64)]]
)
def test_train_losses_finite_for_odd_sizes_and_batches(model, sizes):
    model.train()
    batch = [make_input(h, w, [0, 1, 3][: 1 + i], seed=i) for i, (h, w) in enumerate(sizes)]
    losses = model(batch)
    expected = {"loss_rpn_mask", "loss_rpn_dice", "loss_rpn_seg", "loss_rpn_rank"}
    for s in range(2):
        expected |= {f"s{s}_loss_{k}" for k in ("cls", "mask", "dice", "rank")}
    assert set(losses) == expected
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for n, p in model.named_parameters() if "update_heads.1.fc_cls" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    model.zero_grad()


def test_images_without_ground_truth(model):
    model.train()
    losses = model([make_input(64, 64, []), make_input(48, 64, [])])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()  # graph-connected even with zero positives
    model.zero_grad()


def test_inference_outputs_follow_d2_formats(model):
    model.eval()
    batch = [make_input(61, 77, [0]), make_input(64, 50, [1])]
    batch[0]["height"], batch[0]["width"] = 122, 154  # output at the original size
    with torch.no_grad():
        out = model(batch)
    assert len(out) == 2
    r = out[0]
    assert set(r) == {"instances", "panoptic_seg", "sem_seg"}
    inst = r["instances"]
    assert inst.image_size == (122, 154)
    assert inst.pred_masks.shape[1:] == (122, 154) and inst.pred_masks.dtype == torch.bool
    # top-k (kernel, class) pairs over thing kernels and thing classes only
    assert len(inst) == min(100, 6 * 3)
    assert inst.pred_classes.max() < 3
    assert isinstance(inst.pred_boxes, Boxes)
    assert torch.all(inst.scores[:-1] >= inst.scores[1:])
    seg, info = r["panoptic_seg"]
    assert seg.shape == (122, 154)
    ids = set(seg.unique().tolist()) - {0}
    assert ids == {s["id"] for s in info}
    for s in info:
        assert s["isthing"] == (s["category_id"] < 3)
    assert r["sem_seg"].shape == (5, 122, 154)
    assert out[1]["sem_seg"].shape == (5, 64, 50)


def test_task_flags_select_outputs():
    m = build_model(tiny_cfg(panoptic_on=False, semantic_on=False)).eval()
    with torch.no_grad():
        out = m([make_input(64, 64, [0])])
    assert set(out[0]) == {"instances"}


def test_all_task_flags_off_is_a_startup_error():
    with pytest.raises(ValueError, match="INSTANCE_ON"):
        build_model(tiny_cfg(panoptic_on=False, semantic_on=False, instance_on=False))


def test_custom_dataset_one_thing_class_no_stuff():
    """The official code hard-codes 80/53 classes; here 1 thing + 0 stuff must just work."""
    cfg = tiny_cfg(num_thing=1, num_stuff=0, panoptic_on=False, semantic_on=False)
    m = build_model(cfg)
    m.train()
    losses = m([make_input(64, 64, [0, 0]), make_input(64, 64, [])])
    assert "loss_rpn_rank" not in losses and "s0_loss_rank" not in losses
    assert all(torch.isfinite(v) for v in losses.values())
    m.eval()
    with torch.no_grad():
        inst = m([make_input(64, 64, [0])])[0]["instances"]
    assert len(inst) == 6 and set(inst.pred_classes.tolist()) == {0}


def test_class_count_mismatch_with_metadata_fails_at_startup():
    from detectron2.data import MetadataCatalog

    MetadataCatalog.get("knet_test_meta_mismatch").set(thing_classes=["a", "b"])
    cfg = tiny_cfg(num_thing=3, num_stuff=0, panoptic_on=False, semantic_on=False)
    cfg.DATASETS.TRAIN = ("knet_test_meta_mismatch",)
    with pytest.raises(ValueError, match="NUM_THING_CLASSES 2"):
        build_model(cfg)


def test_class_counts_on_d2_coco_panoptic_metadata():
    """D2's coco_2017_*_panoptic metadata lists all 133 classes as thing_classes; the check must
    count the 80 mapped thing ids instead (the official 80 + 53 configs build), and still fail
    on a wrong split."""
    from knet_d2.data.class_layout import check_class_counts
    from tests.helpers.paths import load_config

    cfg = load_config("configs/coco/panoptic-segmentation/knet_R50_1x.yaml")
    check_class_counts(cfg, 80, 53)
    with pytest.raises(ValueError, match="NUM_THING_CLASSES 80"):
        check_class_counts(cfg, 79, 54)
    with pytest.raises(ValueError, match="NUM_STUFF_CLASSES 53"):
        check_class_counts(cfg, 80, 52)


def test_overfit_loss_falls():
    """A few AdamW steps on two fixed images must reduce the total loss substantially."""
    torch.manual_seed(0)
    m = build_model(tiny_cfg())
    m.train()
    batch = [make_input(64, 64, [0, 1, 3], seed=1), make_input(64, 64, [2, 4], seed=2)]
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    first = None
    for _ in range(30):
        loss = sum(m(batch).values())
        if first is None:
            first = loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.6 * first


def test_channels_last_inference_on_cpu_equals_nchw():
    """MODEL.KNET.TEST.CHANNELS_LAST: "auto" feeds the backbone an NHWC-strided batch in CPU
    inference only (never in training, never with "off"); outputs equal NCHW's up to rounding."""
    torch.manual_seed(0)
    models = {mode: build_model(tiny_cfg(channels_last=mode)) for mode in ("auto", "off")}
    models["off"].load_state_dict(models["auto"].state_dict())
    seen = {}

    def record(mode):
        def hook(module, inputs):
            seen[mode] = inputs[0].is_contiguous(memory_format=torch.channels_last)
        return hook

    for mode, m in models.items():
        m.backbone.register_forward_pre_hook(record(mode))
    batch = [make_input(61, 77, [0, 2]), make_input(64, 50, [1])]
    out = {}
    with torch.no_grad():
        for mode, m in models.items():
            out[mode] = m.eval()(batch)
    assert seen == {"auto": True, "off": False}
    for a, b in zip(out["auto"], out["off"]):
        ia, ib = a["instances"], b["instances"]
        assert torch.equal(ia.pred_classes, ib.pred_classes)
        assert (ia.scores - ib.scores).abs().max() <= 1e-5
        assert (ia.pred_masks != ib.pred_masks).float().mean() <= 1e-3
        assert (a["sem_seg"] - b["sem_seg"]).abs().max() <= 1e-4
    models["auto"].train()
    models["auto"](batch)
    assert seen["auto"] is False  # training stays NCHW
    with pytest.raises(ValueError, match="CHANNELS_LAST"):
        build_model(tiny_cfg(channels_last="yes"))


def test_split_batch_runs_a_cpu_batch_image_by_image():
    """MODEL.KNET.TEST.SPLIT_BATCH: "auto" runs a CPU inference batch one image at a time (each
    padded to its own size: outputs equal single-image calls exactly); "off" runs one padded
    forward; training always sees the whole batch."""
    torch.manual_seed(0)
    models = {mode: build_model(tiny_cfg(split_batch=mode)) for mode in ("auto", "off")}
    models["off"].load_state_dict(models["auto"].state_dict())
    seen = {mode: [] for mode in models}
    for mode, m in models.items():
        m.backbone.register_forward_pre_hook(
            lambda module, inputs, mode=mode: seen[mode].append(tuple(inputs[0].shape)))
    batch = [make_input(61, 77, [0, 2]), make_input(64, 50, [1], seed=1)]
    with torch.no_grad():
        auto = models["auto"].eval()(batch)
        alone = [models["auto"]([x])[0] for x in batch]
        models["off"].eval()(batch)
    assert seen["auto"][:2] == [(1, 3, 64, 96), (1, 3, 64, 64)]
    assert seen["off"] == [(2, 3, 64, 96)]
    for a, b in zip(auto, alone):
        assert torch.equal(a["instances"].pred_masks, b["instances"].pred_masks)
        assert torch.equal(a["instances"].scores, b["instances"].scores)
        assert torch.equal(a["sem_seg"], b["sem_seg"])
    seen["auto"].clear()
    models["auto"].train()
    models["auto"](batch)
    assert seen["auto"] == [(2, 3, 64, 96)]
    with pytest.raises(ValueError, match="SPLIT_BATCH"):
        build_model(tiny_cfg(split_batch="yes"))


@pytest.mark.parametrize("assign_stride,grid", [(4, 16), (2, 32)])
def test_neck_out_stride_4_predicts_masks_on_the_finer_grid(assign_stride, grid):
    """MODEL.KNET.NECK.OUT_STRIDE 4: kernels group stride-4 features, so a 64-px image has
    16 x 16 mask logits per kernel, upsampled to the targets' stride only where it is finer."""
    cfg = tiny_cfg()
    cfg.MODEL.KNET.NECK.OUT_STRIDE = 4
    cfg.MODEL.KNET.MASK_ASSIGN_STRIDE = assign_stride
    torch.manual_seed(0)
    m = build_model(cfg)
    assert m.neck.out_stride == 4
    m.train()
    batch = [make_input(64, 64, [0, 3], seed=1), make_input(64, 48, [1], seed=2)]
    images = m.preprocess_image(batch)
    rpn, stages = m.forward_kernels(images)
    assert rpn["mask_logits"].shape[-2:] == stages[-1]["mask_logits"].shape[-2:] == (grid, grid)
    losses = m(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    m.eval()
    with torch.no_grad():
        inst = m([make_input(64, 48, [1])])[0]["instances"]
    assert inst.pred_masks.shape[1:] == (64, 48)


@pytest.mark.parametrize("out_stride,assign_stride,message", [
    (16, 4, "OUT_STRIDE must be 8 or 4, got 16"),
    (4, 8, "MASK_ASSIGN_STRIDE 8 must divide MODEL.KNET.NECK.OUT_STRIDE 4"),
    (8, 3, "MASK_ASSIGN_STRIDE 3 must divide"),
])
def test_mask_strides_that_do_not_fit_are_config_errors(out_stride, assign_stride, message):
    cfg = tiny_cfg()
    cfg.MODEL.KNET.NECK.OUT_STRIDE = out_stride
    cfg.MODEL.KNET.MASK_ASSIGN_STRIDE = assign_stride
    with pytest.raises(ConfigError, match=message):
        build_model(cfg)


def test_soft_grouping_switch_reaches_every_grouping_and_keeps_the_state_dict():
    torch.manual_seed(0)
    hard = build_model(tiny_cfg())
    cfg = tiny_cfg()
    cfg.MODEL.KNET.SOFT_GROUPING = True
    soft = build_model(cfg)
    soft.load_state_dict(hard.state_dict())  # same keys and shapes
    assert soft.kernel_head.soft_grouping and not hard.kernel_head.soft_grouping
    assert {h.mask_act for h in soft.update_heads} == {"sigmoid"}
    assert {h.mask_act for h in hard.update_heads} == {"hard_sigmoid"}
    soft.train()
    losses = soft([make_input(64, 64, [0, 1, 3], seed=1)])
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())


def test_image_proposals_train_and_infer_end_to_end():
    """MODEL.KNET.IMAGE_PROPOSALS: the image slots get gradients (their projection through the
    losses), and inference returns the same formats with Np thing kernels."""
    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg.MODEL.KNET.IMAGE_PROPOSALS = 4
    model = build_model(cfg)
    np_ = cfg.MODEL.KNET.NUM_PROPOSALS
    assert model.kernel_head.init_kernels.weight.shape[0] == np_ - 4
    model.train()
    losses = model([make_input(64, 64, [0, 1, 3], seed=1), make_input(48, 64, [2], seed=2)])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grad = model.kernel_head.image_proposals.proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model([make_input(61, 77, [0])])
    inst = out[0]["instances"]
    assert len(inst) == min(100, np_ * cfg.MODEL.KNET.NUM_THING_CLASSES)
    assert set(out[0]) == {"instances", "panoptic_seg", "sem_seg"}


def test_crop_classifier_trains_and_infers_end_to_end():
    """MODEL.KNET.CROP_CLASSIFIER: the last stage's thing logits get the crop logits (zero at
    init, so the losses equal the plain model's), its classifier gets gradients, and
    inference returns the usual formats."""
    torch.manual_seed(0)
    plain = build_model(tiny_cfg())
    cfg = tiny_cfg()
    cfg.MODEL.KNET.CROP_CLASSIFIER.ENABLED = True
    model = build_model(cfg)
    missing = model.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("crop_classifier.") for k in missing)
    batch = [make_input(64, 64, [0, 1, 3], seed=1)]
    plain.train()
    model.train()
    torch.manual_seed(1)
    expected = plain(batch)
    torch.manual_seed(1)
    losses = model(batch)
    for k, v in expected.items():
        torch.testing.assert_close(losses[k], v)
    sum(losses.values()).backward()
    assert model.crop_classifier.fc.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model([make_input(61, 77, [0])])
    assert set(out[0]) == {"instances", "panoptic_seg", "sem_seg"}


def test_thing_softmax_trains_and_hands_out_sigmoid_logits_of_its_probabilities():
    """MODEL.KNET.THING_SOFTMAX: training runs with the cross-entropy, and in eval mode the
    last stage's thing logits are converted so that their sigmoid is the softmax probability;
    the stuff kernels and the thing kernels' stuff columns are left as they are."""
    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg.MODEL.KNET.THING_SOFTMAX = True
    model = build_model(cfg)
    model.train()
    losses = model([make_input(64, 64, [0, 1, 3], seed=1), make_input(48, 64, [2], seed=2)])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.update_heads[-1].fc_cls.weight.grad.abs().sum() > 0
    model.eval()
    raw = {}
    model.update_heads[-1].register_forward_hook(lambda m, i, o: raw.update(cls=o[2]))
    with torch.no_grad():
        out = model([make_input(61, 77, [0])])
        images = model.preprocess_image([make_input(64, 64, [0], seed=3)])
        cls = model.forward_kernels(images)[1][-1]["cls_logits"]  # raw: this forward's
    np_, t = cfg.MODEL.KNET.NUM_PROPOSALS, cfg.MODEL.KNET.NUM_THING_CLASSES
    torch.testing.assert_close(
        cls[:, :np_, :t].sigmoid(), thing_probabilities(raw["cls"][:, :np_, :t])
    )
    torch.testing.assert_close(cls[:, :np_, t:], raw["cls"][:, :np_, t:])
    torch.testing.assert_close(cls[:, np_:], raw["cls"][:, np_:])
    assert set(out[0]) == {"instances", "panoptic_seg", "sem_seg"}

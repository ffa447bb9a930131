"""knet_onnx's numpy building blocks against their references: image_ops (PIL's bilinear resize,
D2's shortest-edge size, PyTorch's bilinear interpolation), postprocess (knet_d2's PyTorch
post-processing) and formats (pycocotools' RLE). The runtime itself: test_onnx_runtime.py."""
import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import transforms as T

from tests.helpers.requirements import require_module

require_module("onnxruntime", "tools/install_deps.sh installs it (ONNX export)")
require_module("onnx", "tools/install_deps.sh installs it (ONNX export)")

from knet_d2.modeling import postprocessing as torch_post  # noqa: E402
from knet_onnx import postprocess as np_post  # noqa: E402
from knet_onnx.formats import rle_encode  # noqa: E402
from knet_onnx.image_ops import (  # noqa: E402
    bilinear_resize,
    pil_bilinear_resize,
    shortest_edge_size,
)
from tests.helpers.export_checks import max_diff  # noqa: E402


def test_pil_bilinear_resize_is_bit_exact():
    from PIL import Image

    rng = np.random.default_rng(0)
    cases = [((37, 53), (20, 31)), ((100, 80), (250, 190)), ((480, 640), (128, 171)),
             ((7, 9), (7, 30)), ((5, 5), (1, 1)), ((64, 64), (64, 64))]
    for (h, w), (oh, ow) in cases:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = np.asarray(Image.fromarray(image).resize((ow, oh), Image.BILINEAR))
        assert np.array_equal(pil_bilinear_resize(image, (oh, ow)), ref), ((h, w), (oh, ow))
    for h, w in [(512, 683), (683, 512), (100, 3000), (128, 128), (17, 23)]:
        for short, longest in [(128, 256), (800, 1333), (640, 640)]:
            assert shortest_edge_size(h, w, short, longest) == (
                T.ResizeShortestEdge.get_output_shape(h, w, short, longest))


def test_bilinear_resize_and_postprocessing_equal_pytorch():
    g = torch.Generator().manual_seed(0)
    for (h, w), (oh, ow) in [((32, 48), (128, 192)), ((50, 37), (211, 283)),
                             ((128, 171), (64, 90))]:
        x = torch.randn(3, h, w, generator=g)
        ref = F.interpolate(x[None], (oh, ow), mode="bilinear", align_corners=False)[0]
        assert max_diff(ref, torch.from_numpy(bilinear_resize(x.numpy(), (oh, ow)))) <= 1e-5
    # one image of a padded batch: probabilities, instances, panoptic merge, semantic
    n, t, s, np_ = 12, 3, 4, 8
    logits = torch.randn(n, 24, 32, generator=g) - 6  # kernel k: a blob in cell k of a grid
    for k in range(n):
        y, x = divmod(k, 4)
        logits[k, 8 * y: 8 * y + 8, 8 * x: 8 * x + 8] += 12
    cls = torch.randn(n, t + s, generator=g) * 2
    prob_r = torch_post.rescale_masks(logits, (96, 128), (90, 120), (180, 240))
    prob_g = np_post.rescale_masks(logits.numpy(), (96, 128), (90, 120), (180, 240))
    assert max_diff(prob_r, torch.from_numpy(prob_g)) <= 1e-6
    prob_g = prob_r.numpy()  # from here on: the same probabilities on both sides
    inst_r = torch_post.instance_inference(cls[:np_], prob_r[:np_], t, max_per_image=10)
    inst_g = np_post.instance_inference(cls[:np_].numpy(), prob_g[:np_], t, max_per_image=10)
    assert np.array_equal(inst_r.pred_classes.numpy(), inst_g["pred_classes"])
    assert np.array_equal(inst_r.pred_masks.numpy(), inst_g["pred_masks"])
    assert np.array_equal(inst_r.pred_boxes.tensor.numpy(), inst_g["pred_boxes"])
    assert max_diff(inst_r.scores, torch.from_numpy(inst_g["scores"])) <= 1e-6
    ids_r, info_r = torch_post.panoptic_inference(cls, prob_r, t, s, np_, 0.3, 0.6)
    ids_g, info_g = np_post.panoptic_inference(cls.numpy(), prob_g, t, s, np_, 0.3, 0.6)
    assert np.array_equal(ids_r.numpy(), ids_g) and len(info_r) >= 3
    assert [(d["id"], d["category_id"], d["isthing"]) for d in info_r] == [
        (d["id"], d["category_id"], d["isthing"]) for d in info_g]
    sem_r = torch_post.semantic_inference(cls, prob_r)
    assert max_diff(sem_r, torch.from_numpy(np_post.semantic_inference(cls.numpy(), prob_g))) \
        <= 1e-5


def test_rescale_masks_in_chunks_equals_all_at_once(monkeypatch):
    """Chunking changes which masks are resized together, never a value (bit-identical)."""
    g = np.random.default_rng(0)
    logits = g.standard_normal((7, 24, 32)).astype(np.float32) * 4
    args = ((96, 128), (90, 120), (180, 240))
    monkeypatch.setattr(np_post, "RESCALE_CHUNK_BYTES", 2**40)  # all 7 in one chunk
    whole = np_post.rescale_masks(logits, *args)
    for budget in (1, 4 * 90 * 120 * 3):  # one mask per chunk; three, then a last one
        monkeypatch.setattr(np_post, "RESCALE_CHUNK_BYTES", budget)
        assert np.array_equal(np_post.rescale_masks(logits, *args), whole)
    assert whole.shape == (7, 180, 240) and whole.dtype == np.float32
    monkeypatch.setattr(np_post, "RESCALE_CHUNK_BYTES", 2**40)
    assert np_post.rescale_masks(logits[:0], *args).shape == (0, 180, 240)


def test_rle_encoding_is_cocos():
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(0)
    for shape in [(5, 7), (128, 171), (1, 1)]:
        for p in (0.0, 0.02, 0.5, 1.0):
            mask = rng.random(shape) < p
            ref = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            assert rle_encode(mask) == {"size": list(shape), "counts": ref["counts"].decode()}

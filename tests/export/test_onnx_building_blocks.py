"""knet_onnx's numpy building blocks against their references: image_ops (PIL's bilinear resize,
D2's shortest-edge size, PyTorch's bilinear interpolation), postprocess (knet_d2's PyTorch
post-processing) and formats (pycocotools' RLE). The runtime itself: test_onnx_runtime.py."""
import numpy as np
import pytest
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
    _linear_taps,
    bilinear_enlarge,
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


def test_rescale_masks_in_chunks_and_threads_equals_all_at_once(monkeypatch):
    """Chunks and threads change which masks are resized together and by whom, never a value
    (bit-identical), through OpenCV (a power-of-two enlargement) and through numpy."""
    g = np.random.default_rng(0)
    logits = g.standard_normal((7, 24, 32)).astype(np.float32) * 4
    for padded in ((96, 128), (97, 130)):  # x4: OpenCV first; not a power of two: numpy
        args = (padded, (90, 120), (180, 240))
        monkeypatch.setattr(np_post, "RESCALE_CHUNK_BYTES", 2**40)  # all 7 in one chunk
        whole = np_post.rescale_masks(logits, *args)
        for budget in (1, 4 * 90 * 120 * 3):  # one mask per chunk; three, then a last one
            monkeypatch.setattr(np_post, "RESCALE_CHUNK_BYTES", budget)
            for threads in (1, 2, 3):
                assert np.array_equal(np_post.rescale_masks(logits, *args, threads=threads),
                                      whole), (padded, budget, threads)
        monkeypatch.setattr(np_post, "RESCALE_CHUNK_BYTES", 2**40)
        assert np.array_equal(np_post.rescale_masks(logits, *args, threads=3), whole)
        assert whole.shape == (7, 180, 240) and whole.dtype == np.float32
        assert np_post.rescale_masks(logits[:0], *args, threads=2).shape == (0, 180, 240)


def test_bilinear_enlarge_agrees_with_pytorch_and_refuses_other_ratios():
    """OpenCV's enlargement by powers of two: PyTorch's values within two float32 rounding
    steps (a wrong tap or weight is off by far more); other ratios and shrinking refused."""
    g = torch.Generator().manual_seed(1)
    cases = [((24, 32), (4, 4), (90, 120)), ((13, 7), (2, 8), None), ((5, 9), (1, 1), None),
             ((50, 76), (4, 4), (197, 300)), ((1, 6), (4, 2), None)]
    for (h, w), (fy, fx), crop in cases:
        for x in (torch.rand(3, h, w, generator=g), torch.randn(3, h, w, generator=g) * 8):
            ref = F.interpolate(x[None], scale_factor=(fy, fx), mode="bilinear",
                                align_corners=False)[0]
            if crop is not None:
                ref = ref[:, :crop[0], :crop[1]]
            got = bilinear_enlarge(x.numpy(), (h * fy, w * fx), crop=crop)
            assert got.shape == tuple(ref.shape) and got.dtype == np.float32
            tol = 2 * float(np.spacing(np.float32(x.abs().max())))
            assert max_diff(ref, torch.from_numpy(got)) <= tol, ((h, w), (fy, fx))
    x = np.zeros((2, 24, 32), np.float32)
    for size in ((72, 96), (12, 16), (48, 100), (48, 32 * 3)):
        with pytest.raises(ValueError, match="not a power-of-two enlargement"):
            bilinear_enlarge(x, size)


def _bilinear_by_fancy_indexing(x, size, crop=None, scale=None):
    """The gather of knet_onnx's bilinear_resize before np.take: the same taps, weights and
    float operations in the same order, written with fancy indexing."""
    (out_h, out_w), (keep_h, keep_w) = size, crop or size
    y0, y1, ly0, ly1 = _linear_taps(x.shape[-2], out_h, None if scale is None else scale[0])
    x0, x1, lx0, lx1 = _linear_taps(x.shape[-1], out_w, None if scale is None else scale[1])
    y0, y1, ly0, ly1 = y0[:keep_h], y1[:keep_h], ly0[:keep_h, None], ly1[:keep_h, None]
    x0, x1, lx0, lx1 = x0[:keep_w], x1[:keep_w], lx0[:keep_w], lx1[:keep_w]
    cols = x[..., x0] * lx0 + x[..., x1] * lx1
    return cols[..., y0, :] * ly0 + cols[..., y1, :] * ly1


@pytest.mark.parametrize("shape, size, crop, scale", [
    ((1, 80, 119), (48, 72), None, None),  # shrink by a non-integer ratio
    ((3, 80, 119), (107, 160), None, None),  # enlarge
    ((2, 20, 30), (80, 120), (77, 113), None),  # enlarge, then crop
    ((2, 3, 17, 33), (40, 50), None, (0.4, 0.6)),  # leading dims, explicit scale
])
def test_bilinear_resize_is_bit_identical_to_the_fancy_index_form(shape, size, crop, scale):
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    expected = _bilinear_by_fancy_indexing(x, size, crop, scale)
    assert np.array_equal(bilinear_resize(x, size, crop=crop, scale=scale), expected)
    out = np.full(expected.shape, np.nan, dtype=np.float32)
    assert bilinear_resize(x, size, crop=crop, scale=scale, out=out) is out
    assert np.array_equal(out, expected)


def test_sigmoid_equals_the_two_sided_formula_without_warnings():
    x = np.array([0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 17.0, -17.0, 88.7, -88.7, 104.0, -104.0,
                  1e30, -1e30, 3e38, -3e38], dtype=np.float32)
    x = np.concatenate([x, np.random.default_rng(0).normal(0, 20, 1000).astype(np.float32)])
    expected = np.empty_like(x)
    pos = x >= 0
    expected[pos] = np.float32(1) / (np.float32(1) + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    expected[~pos] = e / (np.float32(1) + e)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        got = np_post.sigmoid(x.reshape(4, -1))
    assert got.dtype == np.float32 and got.shape == (4, len(x) // 4)
    assert np.array_equal(got.reshape(-1), expected)
    assert max_diff(torch.sigmoid(torch.from_numpy(x)), torch.from_numpy(got.reshape(-1))) <= 1e-6


def test_panoptic_merge_in_bands_and_threads_equals_one_pass(monkeypatch):
    """Bands of rows and threads change who merges which pixels, never an id, an area or a
    segment; the ids are the first maximum of score * probability, as in one pass."""
    g = np.random.default_rng(3)
    n, t, s, np_ = 10, 3, 4, 6
    probs = g.random((n, 37, 23)).astype(np.float32) ** 3
    probs[:, :8] = probs[0, :8]  # ties: the first maximum wins
    cls = g.standard_normal((n, t + s)).astype(np.float32) * 3
    monkeypatch.setattr(np_post, "MERGE_BAND_BYTES", 2**40)
    ids, info = np_post.panoptic_inference(cls, probs, t, s, np_, 0.1, 0.2)
    scores = np.concatenate([np_post.sigmoid(cls[:np_, :t]).max(1),
                             np.diagonal(np_post.sigmoid(cls[np_:, t:]))])
    first_max = (scores[:, None, None] * probs).argmax(0)
    kernel_of_id = {d["id"]: k for d in info
                    for k in np.unique(first_max[ids == d["id"]]).tolist()}
    assert len(info) >= 2 and len(kernel_of_id) == len(info)  # one kernel per segment
    for budget in (1, 4 * n * 23 * 5):  # one row per band; five rows, then a last band
        monkeypatch.setattr(np_post, "MERGE_BAND_BYTES", budget)
        for threads in (1, 2, 3):
            got_ids, got_info = np_post.panoptic_inference(cls, probs, t, s, np_, 0.1, 0.2,
                                                           threads=threads)
            assert np.array_equal(got_ids, ids) and got_info == info, (budget, threads)


def test_rle_encoding_is_cocos():
    from pycocotools import mask as mask_util

    rng = np.random.default_rng(0)
    for shape in [(5, 7), (128, 171), (1, 1)]:
        for p in (0.0, 0.02, 0.5, 1.0):
            mask = rng.random(shape) < p
            ref = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            assert rle_encode(mask) == {"size": list(shape), "counts": ref["counts"].decode()}

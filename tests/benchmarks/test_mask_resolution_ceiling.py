"""The mask-resolution ceiling (benchmarks/mask_resolution_ceiling.py): grid decoding, the fitted
grids, and oracle AP through D2's COCOEvaluator on a small generated split."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog

import knet_d2  # noqa: F401  (registers the dataset names)
from benchmarks import mask_resolution_ceiling as mc
from benchmarks.report import format_cell
from knet_d2.knet_model import downsample_masks
from knet_d2.modeling.criterion import dice_loss
from tests.helpers.catalogs import registered_synthetic_splits, unregister_datasets
from tests.helpers.tables import table_row

PREFIX = "knet_test_ceiling"


def _disc(size: int, cx: float, cy: float, r: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_decode_and_soft_grid_shapes_and_values():
    masks = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
    masks[0, :, :16, :16] = True  # cell-aligned block: cell means exactly 0 or 1
    grid = mc.soft_grid(masks, 8)
    assert grid.shape == (2, 1, 4, 4)
    assert grid[0, 0, :2, :2].min() > 5 and grid[0, 0, 2:, 2:].max() < -5
    assert grid[1].max() < -5  # an empty mask stays empty
    assert mc.decode_grid(grid, (32, 32)).shape == (2, 1, 32, 32)
    out = mc.oracle_masks(masks[:, 0], 8, "soft")
    assert out.dtype == torch.bool and out.shape == (2, 32, 32)
    assert out[0, 2:14, 2:14].all() and not out[0, 20:, 20:].any() and not out[1].any()
    assert torch.equal(mc.oracle_masks(masks[:, 0], 8, "exact"), masks[:, 0])
    with pytest.raises(ValueError, match="unknown decoder 'nearest'"):
        mc.oracle_masks(masks[:, 0], 8, "nearest")


def test_fitted_grids_improve_what_they_fit():
    """A small disc at stride 8: the fitted grid draws it better (IoU) than the soft grid, and
    the K-Net-loss grid has a lower K-Net mask loss than the soft grid it starts from."""
    mask = _disc(64, 30.3, 33.7, 6.5)[None, None]
    soft = mc.oracle_masks(mask[:, 0], 8, "soft")
    fitted = mc.oracle_masks(mask[:, 0], 8, "fitted")

    def iou(pred):
        return float((pred & mask[:, 0]).sum() / (pred | mask[:, 0]).sum())

    assert iou(fitted) > iou(soft) and iou(fitted) > 0.8
    # K-Net's loss against full-resolution targets draws the disc better than against stride 4
    assert iou(mc.oracle_masks(mask[:, 0], 8, "knet_loss_assign1")) > iou(
        mc.oracle_masks(mask[:, 0], 8, "knet_loss"))

    target = downsample_masks(mask[:, 0], (16, 16))

    mask_weight, dice_weight = mc.knet_mask_loss_weights()
    assert (mask_weight, dice_weight) == (1.0, 4.0)  # the official weights

    def knet_loss(grid):
        out = F.interpolate(grid, scale_factor=2, mode="bilinear", align_corners=False)[:, 0]
        return float(mask_weight * F.binary_cross_entropy_with_logits(out, target)
                     + dice_weight * dice_loss(out, target).mean())

    assert knet_loss(mc.fit_knet_loss_grid(mask, 8, steps=100)) < 0.8 * knet_loss(
        mc.soft_grid(mask, 8))


@pytest.fixture(scope="module")
def small_split(tmp_path_factory):
    root = tmp_path_factory.mktemp("ceiling")
    with registered_synthetic_splits(root, {"val": 5}, PREFIX) as names:
        yield names


def test_oracle_ap_exact_is_full_marks_and_coarser_grids_score_less(small_split, tmp_path):
    res = mc.evaluate_ceiling(f"{PREFIX}_instance_val", [("exact", 1), ("soft", 4), ("soft", 8)],
                              str(tmp_path))
    assert set(res) == {f"{n}{suffix}" for n in ("exact_s1", "soft_s4", "soft_s8")
                        for suffix in ("", "_iou_scored")}
    assert res["exact_s1"]["AP"] == pytest.approx(100.0)
    assert res["exact_s1_iou_scored"]["AP"] == pytest.approx(100.0)
    assert 0.0 <= res["soft_s8"]["AP"] < res["soft_s4"]["AP"] < 100.0
    # ranked by their quality, the same coarse masks score more than tied at score 1
    assert res["soft_s8_iou_scored"]["AP"] > res["soft_s8"]["AP"]


def test_cli_writes_the_header_and_table(small_split, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mc, "VARIANTS", (("soft", 8),))
    out = tmp_path / "cli"
    assert mc.main(["--dataset", f"{PREFIX}_instance_val", "--output", str(out),
                    "--threads", "1"]) == 0
    saved = json.loads((out / "mask_ceiling.json").read_text())
    assert set(saved["results"]) == {"exact_s1", "soft_s8", "exact_s1_iou_scored",
                                     "soft_s8_iou_scored"}
    assert saved["command"].startswith("python -m benchmarks.mask_resolution_ceiling --dataset")
    assert {"date", "commit", "machine"} <= set(saved)
    row = table_row(capsys.readouterr().out, "soft_s8")
    assert row == table_row("\n".join(saved["table"]), "soft_s8")
    assert row[1] == format_cell(saved["results"]["soft_s8"]["AP"])


def test_cli_image_size_generates_and_scores_a_split_of_that_side(tmp_path, monkeypatch):
    monkeypatch.setattr(mc, "VARIANTS", (("soft", 8),))
    out = tmp_path / "cli64"
    assert mc.main(["--image-size", "64", "--num-images", "2", "--root", str(tmp_path / "data"),
                    "--output", str(out), "--threads", "1"]) == 0
    saved = json.loads((out / "mask_ceiling.json").read_text())
    assert saved["dataset"] == "knet_synth_64px_instance_val" and saved["image_size"] == 64
    assert saved["results"]["exact_s1"]["AP"] == pytest.approx(100.0)
    info = json.loads((tmp_path / "data" / "64px" / "val" / "info.json").read_text())
    assert info["image_size"] == 64 and info["num_images"] == 2
    unregister_datasets([n for n in DatasetCatalog.list() if n.startswith("knet_synth_64px_")])

"""The one table of knet_d2's model zoo: config -> official release (URL, metric).

Every knet_d2 config with an official counterpart is listed once. ``url`` is the checkpoint
released with the official code (None where the config was never released); ``metric`` is the
official number on the validation set. ``MODEL_ZOO.md`` shows the same rows (a test checks that
the two agree), and the checkpoints load as they are released (converted on load).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

__all__ = ["ModelZooEntry", "MODEL_ZOO"]

# Release folders: ZwwWayne/K-Net (mmdet, COCO) and mmsegmentation configs/knet (ADE20K).
_MMDET = "https://download.openmmlab.com/mim-example/knet/det/knet/"
_MMSEG = "https://download.openmmlab.com/mmsegmentation/v0.5/knet/"


def _release(root: str, name: str, stamp: str) -> str:
    """Official file URL: ``<root><name>/<name>_<stamp>.pth``."""
    return f"{root}{name}/{name}_{stamp}.pth"


@dataclass(frozen=True)
class ModelZooEntry:
    """One model of the zoo.

    Attributes:
        config: knet_d2 config, relative to the repository's ``configs/`` folder (the zoo name).
        official_config: the official config file the release was trained with (ZwwWayne/K-Net
            ``configs/det/knet`` or mmsegmentation ``configs/knet``).
        url: the released checkpoint, or None when none was released.
        metric: the official validation metric, e.g. "PQ 44.3".
    """

    config: str
    official_config: str
    url: Optional[str]
    metric: str


MODEL_ZOO: Tuple[ModelZooEntry, ...] = (
    ModelZooEntry(
        "coco/panoptic-segmentation/knet_R50_1x.yaml",
        official_config="knet_s3_r50_fpn_1x_coco-panoptic.py",
        url=_release(_MMDET, "knet_s3_r50_fpn_1x_coco-panoptic", "20211017_151750-395fbcba"),
        metric="PQ 44.3",
    ),
    ModelZooEntry(
        "coco/panoptic-segmentation/knet_R50_ms3x.yaml",
        official_config="knet_s3_r50_fpn_ms-3x_coco-panoptic.py",
        url=_release(_MMDET, "knet_s3_r50_fpn_ms-3x_coco-panoptic", "20211017_054613-4375b8be"),
        metric="PQ 47.1",
    ),
    ModelZooEntry(
        "coco/panoptic-segmentation/knet_R101_ms3x.yaml",
        official_config="knet_s3_r101_fpn_ms-3x_coco-panoptic.py",
        url=_release(_MMDET, "knet_s3_r101_fpn_ms-3x_coco-panoptic", "20211017_054501-9c600b0c"),
        metric="PQ 48.4",
    ),
    ModelZooEntry(
        "coco/panoptic-segmentation/knet_R101_dcn_ms3x.yaml",
        official_config="knet_s3_r101_dcn-c3-c5_fpn_ms-3x_coco-panoptic.py",
        url=_release(
            _MMDET,
            "knet_s3_r101_dcn-c3-c5_fpn_ms-3x_coco-panoptic",
            "20211019_191549-6d13fab7",
        ),
        metric="PQ 49.6",
    ),
    ModelZooEntry(
        "coco/panoptic-segmentation/swin/knet_swin_L_ms3x.yaml",
        official_config="knet_s3_swin-l_fpn_ms-3x_16x2_coco-panoptic.py",
        url=_release(
            _MMDET,
            "knet_s3_swin-l_fpn_ms-3x_16x2_coco-panoptic",
            "20211020_062341-62f3bbff",
        ),
        metric="PQ 54.6 (55.2 test-dev)",
    ),
    ModelZooEntry(
        "coco/instance-segmentation/knet_R50_1x.yaml",
        official_config="knet_s3_r50_fpn_1x_coco.py",
        url=_release(_MMDET, "knet_s3_r50_fpn_1x_coco", "20211016_113017-8a8645d4"),
        metric="mask AP 34.0",
    ),
    ModelZooEntry(
        "coco/instance-segmentation/knet_R50_ms3x.yaml",
        official_config="knet_s3_r50_fpn_ms-3x_coco.py",
        url=None,
        metric="mask AP 37.8",
    ),
    ModelZooEntry(
        "coco/instance-segmentation/knet_R101_ms3x.yaml",
        official_config="knet_s3_r101_fpn_ms-3x_coco.py",
        url=None,
        metric="mask AP 39.2",
    ),
    ModelZooEntry(
        "coco/instance-segmentation/knet_R101_dcn_ms3x.yaml",
        official_config="knet_s3_r101_dcn-c3-c5_fpn_ms-3x_coco.py",
        url=_release(_MMDET, "knet_s3_r101_dcn-c3-c5_fpn_ms-3x_coco", "20211017_054515-163a3126"),
        metric="mask AP 40.5",
    ),
    ModelZooEntry(
        "ade20k/semantic-segmentation/knet_fcn_R50_512x512_80k.yaml",
        official_config="knet-s3_r50-d8_fcn_8xb2-adamw-80k_ade20k-512x512.py",
        url=_release(
            _MMSEG,
            "knet_s3_fcn_r50-d8_8x2_512x512_adamw_80k_ade20k",
            "20220228_043751-abcab920",
        ),
        metric="mIoU 43.60",
    ),
    ModelZooEntry(
        "ade20k/semantic-segmentation/knet_pspnet_R50_512x512_80k.yaml",
        official_config="knet-s3_r50-d8_pspnet_8xb2-adamw-80k_ade20k-512x512.py",
        url=_release(
            _MMSEG,
            "knet_s3_pspnet_r50-d8_8x2_512x512_adamw_80k_ade20k",
            "20220228_054634-d2c72240",
        ),
        metric="mIoU 44.18",
    ),
    ModelZooEntry(
        "ade20k/semantic-segmentation/knet_deeplabv3_R50_512x512_80k.yaml",
        official_config="knet-s3_r50-d8_deeplabv3_8xb2-adamw-80k_ade20k-512x512.py",
        url=_release(
            _MMSEG,
            "knet_s3_deeplabv3_r50-d8_8x2_512x512_adamw_80k_ade20k",
            "20220228_041642-00c8fbeb",
        ),
        metric="mIoU 45.06",
    ),
    ModelZooEntry(
        "ade20k/semantic-segmentation/knet_upernet_R50_512x512_80k.yaml",
        official_config="knet-s3_r50-d8_upernet_8xb2-adamw-80k_ade20k-512x512.py",
        url=_release(
            _MMSEG,
            "knet_s3_upernet_r50-d8_8x2_512x512_adamw_80k_ade20k",
            "20220304_125657-215753b0",
        ),
        metric="mIoU 43.45",
    ),
    ModelZooEntry(
        "ade20k/semantic-segmentation/swin/knet_upernet_swin_T_512x512_80k.yaml",
        official_config="knet-s3_swin-t_upernet_8xb2-adamw-80k_ade20k-512x512.py",
        url=_release(
            _MMSEG,
            "knet_s3_upernet_swin-t_8x2_512x512_adamw_80k_ade20k",
            "20220303_133059-7545e1dc",
        ),
        metric="mIoU 45.84",
    ),
    ModelZooEntry(
        "ade20k/semantic-segmentation/swin/knet_upernet_swin_L_512x512_80k.yaml",
        official_config="knet-s3_swin-l_upernet_8xb2-adamw-80k_ade20k-512x512.py",
        url=_release(
            _MMSEG,
            "knet_s3_upernet_swin-l_8x2_512x512_adamw_80k_ade20k",
            "20220303_154559-d8da9a90",
        ),
        metric="mIoU 52.05",
    ),
    ModelZooEntry(
        "ade20k/semantic-segmentation/swin/knet_upernet_swin_L_640x640_80k.yaml",
        official_config="knet-s3_swin-l_upernet_8xb2-adamw-80k_ade20k-640x640.py",
        url=_release(
            _MMSEG,
            "knet_s3_upernet_swin-l_8x2_640x640_adamw_80k_ade20k",
            "20220301_220747-8787fc71",
        ),
        metric="mIoU 52.21",
    ),
)

"""The tables of knet_d2's known weights: the model zoo (config -> official release: URL,
metric) and the ImageNet backbones the configs start from (file -> original release, converter).

Every knet_d2 config with an official counterpart is listed once in :data:`MODEL_ZOO`. ``url``
is the checkpoint released with the official code (None where the config was never released);
``metric`` is the official number on the validation set. ``MODEL_ZOO.md`` shows the same rows
(a test checks that the two agree), and the checkpoints load as they are released (converted on
load).
:data:`PRETRAINED_BACKBONES` lists the ``MODEL.WEIGHTS`` files of the configs; the start-up
check of ``MODEL.WEIGHTS`` tells a user without the file where to get it from these rows.

This module is data only: it imports nothing from knet_d2.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Tuple

__all__ = [
    "ModelZooEntry", "MODEL_ZOO", "PretrainedBackbone", "PRETRAINED_BACKBONES",
    "find_pretrained_backbone",
]

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


# ---------------------------------------------------------------- ImageNet backbones
_TORCHVISION = "https://download.pytorch.org/models/"
_OPENMMLAB = "https://download.openmmlab.com/pretrain/third_party/"
_SWIN = "https://github.com/SwinTransformer/storage/releases/download/v1.0.0/"
_D2_IMAGENET = "ImageNetPretrained/torchvision/"  # under detectron2:// = the URL below
_D2_FILES = "https://dl.fbaipublicfiles.com/detectron2/"


@dataclass(frozen=True)
class PretrainedBackbone:
    """ImageNet weights that configs name in ``MODEL.WEIGHTS``.

    Attributes:
        file_pattern: regular expression for the file name (e.g. ``R-50.pkl``); its named
            groups fill the ``{...}`` fields of ``source_url``.
        description: what the file is, e.g. "torchvision's ImageNet ResNet-50 in D2 format".
        source_url: the original release that ``converter`` turns into the file.
        converter: the repository's script that converts ``source_url`` into the file
            (``python <converter> <source> <file>``).
        d2_path: where D2 serves the converted file itself (``detectron2://<d2_path>``), or
            None.
    """

    file_pattern: str
    description: str
    source_url: str
    converter: str
    d2_path: Optional[str] = None

    @property
    def d2_name(self) -> Optional[str]:
        return f"detectron2://{self.d2_path}" if self.d2_path else None

    @property
    def d2_url(self) -> Optional[str]:
        return f"{_D2_FILES}{self.d2_path}" if self.d2_path else None


def _torchvision_resnet(depth: int, file: str) -> PretrainedBackbone:
    return PretrainedBackbone(
        rf"R-{depth}\.pkl", f"torchvision's ImageNet ResNet-{depth} in D2 format",
        _TORCHVISION + file, "tools/convert-torchvision-to-d2.py", f"{_D2_IMAGENET}R-{depth}.pkl",
    )


def _mmcv_resnet_v1c(depth: int, file: str) -> PretrainedBackbone:
    return PretrainedBackbone(
        rf"resnet{depth}_v1c(_d2)?\.pkl", f"OpenMMLab's ImageNet ResNetV1c-{depth}",
        _OPENMMLAB + file, "tools/convert-mmcv-resnet-v1c-to-d2.py",
    )


PRETRAINED_BACKBONES: Tuple[PretrainedBackbone, ...] = (
    _torchvision_resnet(50, "resnet50-0676ba61.pth"),
    _torchvision_resnet(101, "resnet101-63fe2227.pth"),
    _mmcv_resnet_v1c(50, "resnet50_v1c-2cccc1ad.pth"),
    _mmcv_resnet_v1c(101, "resnet101_v1c-e67eebb6.pth"),
    PretrainedBackbone(
        r"(?P<name>swin_\w+)\.pkl", "an official Swin Transformer ImageNet checkpoint",
        _SWIN + "{name}.pth", "tools/convert-pretrained-swin-model-to-d2.py",
    ),
)


def find_pretrained_backbone(file_name: str) -> Optional[Tuple[PretrainedBackbone, str]]:
    """The row of :data:`PRETRAINED_BACKBONES` matching ``file_name`` and its source URL, or
    None for a file that is not in the table."""
    for row in PRETRAINED_BACKBONES:
        m = re.fullmatch(row.file_pattern, file_name)
        if m:
            return row, row.source_url.format(**m.groupdict())
    return None

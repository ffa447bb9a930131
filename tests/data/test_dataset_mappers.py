"""knet_d2.data.dataset_mappers itself: the mapper registry and builder (__init__.py) and the
shared base (base.py: augmentations from the config, mask boxes, evaluation mode). The mappers
are tested in test_panoptic_mapper.py, test_instance_mapper.py and test_semantic_mapper.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.structures import BitMasks

from knet_d2.data.dataset_mappers import (
    MAPPER_REGISTRY,
    KNetInstanceDatasetMapper,
    KNetPanopticDatasetMapper,
    build_knet_train_mapper,
    register_mapper,
)
from knet_d2.data.dataset_mappers.base import mask_boxes
from tests.helpers.mapper_samples import H, W, make_cfg


# ----------------------------------------------------------------------------- registry
def test_registry_and_builder():
    assert MAPPER_REGISTRY["knet_panoptic"] is KNetPanopticDatasetMapper
    assert MAPPER_REGISTRY["knet_instance"] is KNetInstanceDatasetMapper
    assert isinstance(build_knet_train_mapper(make_cfg("knet_panoptic")), KNetPanopticDatasetMapper)
    m = build_knet_train_mapper(make_cfg("knet_instance"))
    assert isinstance(m, KNetInstanceDatasetMapper) and m.is_train
    with pytest.raises(KeyError, match="knet_instance.*knet_panoptic"):
        build_knet_train_mapper(make_cfg("no_such_mapper"))
    with pytest.raises(KeyError, match="already registered"):
        register_mapper("knet_panoptic")(type("Other", (), {}))
    assert register_mapper("knet_panoptic")(KNetPanopticDatasetMapper) is KNetPanopticDatasetMapper


def test_augmentations_from_config():
    augs = build_knet_train_mapper(
        make_cfg(MIN_SIZE_TRAIN=(640, 800), MIN_SIZE_TRAIN_SAMPLING="range")
    ).augmentations.augs
    assert [type(a) for a in augs] == [T.ResizeShortestEdge, T.RandomFlip]
    assert tuple(augs[0].short_edge_length) == (640, 800) and augs[0].is_range
    assert augs[0].max_size == 1333 and augs[1].horizontal
    cfg = make_cfg(RANDOM_FLIP="none")
    cfg.INPUT.CROP.ENABLED = True
    augs = build_knet_train_mapper(cfg).augmentations.augs
    assert [type(a) for a in augs] == [T.RandomCrop, T.ResizeShortestEdge]


def test_mask_boxes_match_bitmasks():
    rng = np.random.default_rng(0)
    m = rng.random((5, 9, 11)) > 0.8
    m[2] = False
    ref = BitMasks(torch.as_tensor(m)).get_bounding_boxes().tensor.numpy()
    np.testing.assert_array_equal(mask_boxes(m), ref)


# ----------------------------------------------------------------------------- evaluation mode
def test_eval_mode_drops_annotations(fake_pan):
    d, _, _ = fake_pan
    cfg = make_cfg(MIN_SIZE_TEST=40, MAX_SIZE_TEST=1000)
    for cls in (KNetPanopticDatasetMapper, KNetInstanceDatasetMapper):
        out = cls(cfg, is_train=False)(dict(d, annotations=[]))
        assert tuple(out["image"].shape) == (3, 40, 60)
        assert not {"instances", "sem_seg", "segments_info", "annotations",
                    "pan_seg_file_name"} & set(out)
        assert (out["height"], out["width"], out["image_id"]) == (H, W, 42)

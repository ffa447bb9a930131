"""ClassLayout: dataset contiguous ids <-> K-Net's things-first ids, read from D2 metadata."""
from __future__ import annotations

import re

import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Instances

import knet_d2  # noqa: F401  (registers the dataset names)
from knet_d2.data.class_layout import ClassLayout, class_layout_of_datasets


def test_layouts_of_d2_metadata():
    cs = ClassLayout.from_metadata(MetadataCatalog.get("cityscapes_fine_panoptic_val"))
    assert cs.knet_to_dataset == tuple(range(11, 19)) + tuple(range(11))
    assert cs.num_things == 8 and not cs.is_identity
    assert cs.thing_dataset_ids == frozenset(range(11, 19))
    assert ClassLayout.from_metadata(MetadataCatalog.get("coco_2017_val_panoptic")).is_identity
    # instance metadata without id maps: ids used as they are
    instance_meta = MetadataCatalog.get("cityscapes_fine_instance_seg_val")
    assert ClassLayout.from_metadata(instance_meta) is None


def test_conversions_are_inverse_and_reorder_channels():
    layout = ClassLayout((2, 0, 1), num_things=1)  # dataset id 2 is the only thing
    ids = torch.tensor([[0, 1], [2, 2]])
    assert torch.equal(layout.to_dataset(layout.to_knet(ids)), ids)
    assert layout.to_knet(torch.tensor([2, 0, 1])).tolist() == [0, 1, 2]
    scores = torch.arange(3.0)[:, None, None].expand(3, 2, 2)  # channel k = K-Net class k
    inst = Instances((2, 2))
    inst.pred_classes = torch.tensor([0, 0])
    out = layout.outputs_to_dataset({
        "sem_seg": scores,
        "instances": inst,
        "panoptic_seg": (torch.zeros(2, 2), [{"id": 1, "category_id": 2, "isthing": False}]),
    })
    # dataset channel d holds K-Net channel dataset_to_knet[d]
    assert out["sem_seg"][:, 0, 0].tolist() == [1.0, 2.0, 0.0]
    assert out["instances"].pred_classes.tolist() == [2, 2]
    assert out["panoptic_seg"][1][0]["category_id"] == 1
    assert ClassLayout.from_json(layout.to_json()) == layout


def test_bad_metadata_and_mixed_datasets_are_errors():
    class Meta:
        thing_dataset_id_to_contiguous_id = {1: 0}
        stuff_dataset_id_to_contiguous_id = {2: 2}

    with pytest.raises(ValueError, match=r"mine: the contiguous ids .* are \[0, 2\], not 0..1"):
        ClassLayout.from_metadata(Meta(), "mine")
    with pytest.raises(ValueError, match="not a permutation"):
        ClassLayout((0, 0), num_things=1)
    with pytest.raises(ValueError, match="'coco_2017_val_panoptic' and "
                       "'cityscapes_fine_panoptic_val' number their classes differently"):
        class_layout_of_datasets(["coco_2017_val_panoptic", "cityscapes_fine_panoptic_val"])


def test_instance_models_compare_the_things_only():
    """An instance dataset (things only) and the instance view of a panoptic dataset with the
    same things fit one instance model; different things, or any difference for a panoptic
    model, are errors that say how the two differ."""
    MetadataCatalog.get("knet_test_layout_things").set(
        thing_dataset_id_to_contiguous_id={1: 0, 3: 1, 5: 2, 7: 3})
    MetadataCatalog.get("knet_test_layout_panoptic").set(
        thing_dataset_id_to_contiguous_id={1: 0, 3: 1, 5: 2, 7: 3},
        stuff_dataset_id_to_contiguous_id={1: 0, 3: 1, 5: 2, 7: 3, 2: 4, 4: 5})
    MetadataCatalog.get("knet_test_layout_other_things").set(
        thing_dataset_id_to_contiguous_id={1: 1, 3: 2, 5: 3, 7: 4},
        stuff_dataset_id_to_contiguous_id={1: 1, 3: 2, 5: 3, 7: 4, 2: 0})
    names = ["knet_test_layout_things", "knet_test_layout_panoptic"]
    layout = class_layout_of_datasets(names, things_only=True)
    assert layout is not None and layout.knet_to_dataset == (0, 1, 2, 3)
    with pytest.raises(ValueError, match=re.escape(
            "number their classes differently: 4 things at contiguous ids [0, 1, 2, 3], no "
            "stuff vs 4 things at contiguous ids [0, 1, 2, 3] and 2 stuff classes at [4, 5]")):
        class_layout_of_datasets(names)
    with pytest.raises(ValueError, match=re.escape(
            "'knet_test_layout_things' and 'knet_test_layout_other_things' number their "
            "classes differently: 4 things at contiguous ids [0, 1, 2, 3], no stuff vs 4 things "
            "at contiguous ids [1, 2, 3, 4] and 1 stuff class at [0]")):
        class_layout_of_datasets(
            ["knet_test_layout_things", "knet_test_layout_other_things"], things_only=True)


def test_check_fits_panoptic_and_instance_models():
    cs = ClassLayout.from_metadata(MetadataCatalog.get("cityscapes_fine_panoptic_val"))
    cs.check_fits(8, 11)
    cs.check_fits(8, 0)  # an instance model uses the things only
    with pytest.raises(ValueError, match="8 thing classes of 19, but the model has "
                       "num_thing_classes=8, num_stuff_classes=10"):
        cs.check_fits(8, 10)
    with pytest.raises(ValueError, match="num_thing_classes=19"):
        cs.check_fits(19, 0)


def test_exported_model_metadata_keeps_the_layout():
    """export_metadata writes the layout and ExportedKNetPredictor post-processes with it."""
    from knet_d2.export.knet_export import EXPORT_META_VERSION
    from knet_d2.export.predictor import ExportedKNetPredictor

    layout = ClassLayout.from_metadata(MetadataCatalog.get("cityscapes_fine_panoptic_val"))
    post = {"num_thing_classes": 8, "num_stuff_classes": 11, "num_proposals": 10,
            "semantic_on": True, "instance_on": True, "panoptic_on": True,
            "mask_threshold": 0.5, "detections_per_image": 100, "instance_score_thresh": 0.3,
            "overlap_threshold": 0.6}
    meta = {"version": EXPORT_META_VERSION, "output_names": ["mask_logits", "cls_logits"],
            "meta_architecture": "KNet", "postprocess": dict(post, class_layout=layout.to_json())}
    assert ExportedKNetPredictor(object(), meta)._post.class_layout == layout
    meta["postprocess"] = post  # exports of things-first data carry no layout
    assert ExportedKNetPredictor(object(), meta)._post.class_layout is None

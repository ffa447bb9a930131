"""K-Net's class axis versus a dataset's contiguous category ids.

K-Net needs **things first**: class ids ``0..T-1`` are things and ``T..T+S-1`` stuff (the stuff
kernels are rows ``T:`` of the semantic classifier). Detectron2 datasets number their contiguous
ids their own way:

* COCO panoptic and knet_d2's own registrations: things first already (the identity);
* D2's ``cityscapes_fine_panoptic_*``: the 19 Cityscapes trainIds, stuff ``0..10`` (road ...
  sky) before things ``11..18`` (person ... bicycle);
* ADE20K panoptic: the 150 SceneParsing classes in their own order, things and stuff mixed.

:class:`ClassLayout` is the permutation between the two, read from the dataset metadata
(things = the values of ``thing_dataset_id_to_contiguous_id``, every other contiguous id of
``stuff_dataset_id_to_contiguous_id`` is stuff; each group keeps its dataset order). Mappers and
evaluators keep the dataset's ids (D2's convention); the model converts its targets to K-Net ids
and its outputs back (:class:`knet_d2.KNet`).

:func:`check_class_counts` / :func:`check_semantic_class_count` compare a config's class counts
with the datasets' metadata (when the model is built, and as start-up checks).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch
from detectron2.data import MetadataCatalog

from ..config import ConfigError

__all__ = [
    "ClassLayout", "class_layout_of_datasets", "check_class_counts", "check_semantic_class_count",
]


@dataclass(frozen=True)
class ClassLayout:
    """A permutation of C = T + S classes between K-Net ids and dataset contiguous ids.

    Attributes:
        knet_to_dataset: index = K-Net class id, value = dataset contiguous id (length C).
        num_things: T; K-Net ids ``0..T-1`` are the things.
    """

    knet_to_dataset: Tuple[int, ...]
    num_things: int

    def __post_init__(self) -> None:
        c = len(self.knet_to_dataset)
        if sorted(self.knet_to_dataset) != list(range(c)):
            raise ValueError(
                f"knet_to_dataset {self.knet_to_dataset} is not a permutation of 0..{c - 1}"
            )
        if not 0 <= self.num_things <= c:
            raise ValueError(f"num_things {self.num_things} outside [0, {c}]")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_metadata(cls, metadata, name: str = "dataset") -> Optional[ClassLayout]:
        """The layout of a D2 ``Metadata`` (or any object with the same attributes).

        Returns ``None`` when the metadata has no ``thing_dataset_id_to_contiguous_id`` (an
        instance or semantic dataset without id maps: its ids are used as they are).
        Raises ``ValueError`` naming ``name`` when the contiguous ids are not ``0..C-1``.
        """
        thing_map = getattr(metadata, "thing_dataset_id_to_contiguous_id", None)
        if thing_map is None:
            return None
        stuff_map = getattr(metadata, "stuff_dataset_id_to_contiguous_id", None) or {}
        things = sorted({int(v) for v in thing_map.values()})
        every = set(things) | {int(v) for v in stuff_map.values()}
        if sorted(every) != list(range(len(every))):
            raise ValueError(
                f"{name}: the contiguous ids of thing_dataset_id_to_contiguous_id and "
                f"stuff_dataset_id_to_contiguous_id are {sorted(every)[:20]}"
                f"{' ...' if len(every) > 20 else ''}, not 0..{len(every) - 1}"
            )
        stuff = sorted(every - set(things))
        return cls(tuple(things + stuff), len(things))

    # ------------------------------------------------------------------ queries
    @property
    def num_classes(self) -> int:
        """C = T + S."""
        return len(self.knet_to_dataset)

    @property
    def dataset_to_knet(self) -> Tuple[int, ...]:
        """Index = dataset contiguous id, value = K-Net id (the inverse permutation)."""
        inverse = [0] * self.num_classes
        for knet_id, dataset_id in enumerate(self.knet_to_dataset):
            inverse[dataset_id] = knet_id
        return tuple(inverse)

    @property
    def is_identity(self) -> bool:
        return self.knet_to_dataset == tuple(range(self.num_classes))

    @property
    def thing_dataset_ids(self) -> frozenset:
        """Dataset contiguous ids of the thing classes."""
        return frozenset(self.knet_to_dataset[: self.num_things])

    def check_fits(self, num_thing: int, num_stuff: int) -> None:
        """Raise ``ValueError`` unless a model with T things and S stuff classes can use this
        layout: T things and, for panoptic models (S > 0), T + S classes (instance models
        use only the things)."""
        if self.num_things != num_thing or (
            num_stuff > 0 and self.num_classes != num_thing + num_stuff
        ):
            raise ValueError(
                f"the dataset metadata has {self.num_things} thing classes of "
                f"{self.num_classes}, but the model has num_thing_classes={num_thing}, "
                f"num_stuff_classes={num_stuff}"
            )

    # ------------------------------------------------------------------ conversion
    def to_knet(self, dataset_ids: torch.Tensor) -> torch.Tensor:
        """Dataset contiguous ids (any shape, int) -> K-Net ids, same shape and device."""
        lut = torch.as_tensor(self.dataset_to_knet, dtype=torch.long, device=dataset_ids.device)
        return lut[dataset_ids.long()]

    def to_dataset(self, knet_ids: torch.Tensor) -> torch.Tensor:
        """K-Net ids (any shape, int) -> dataset contiguous ids, same shape and device."""
        lut = torch.as_tensor(self.knet_to_dataset, dtype=torch.long, device=knet_ids.device)
        return lut[knet_ids.long()]

    def scores_to_dataset(self, scores: torch.Tensor) -> torch.Tensor:
        """Per-class maps ``(C, H, W)`` indexed by K-Net id -> indexed by dataset id."""
        if scores.shape[0] != self.num_classes:
            raise ValueError(
                f"sem_seg has {scores.shape[0]} class channels; the dataset's layout has "
                f"{self.num_classes} classes (semantic output needs a panoptic model)"
            )
        index = torch.as_tensor(self.dataset_to_knet, dtype=torch.long, device=scores.device)
        return scores.index_select(0, index)

    def segments_to_dataset(self, segments_info: List[dict]) -> List[dict]:
        """Panoptic ``segments_info`` with K-Net ``category_id`` -> dataset ids (new dicts)."""
        return [dict(s, category_id=self.knet_to_dataset[s["category_id"]]) for s in segments_info]

    def outputs_to_dataset(self, outputs: Dict[str, Any]) -> Dict[str, Any]:
        """One image's model outputs with K-Net ids -> dataset ids (``outputs`` is updated):
        ``instances.pred_classes``, the ``category_id`` of ``panoptic_seg``'s segments and the
        channel order of ``sem_seg`` (C, H, W)."""
        if "instances" in outputs:
            inst = outputs["instances"]
            inst.pred_classes = self.to_dataset(inst.pred_classes)
        if "panoptic_seg" in outputs:
            panoptic_seg, segments_info = outputs["panoptic_seg"]
            outputs["panoptic_seg"] = (panoptic_seg, self.segments_to_dataset(segments_info))
        if "sem_seg" in outputs:
            outputs["sem_seg"] = self.scores_to_dataset(outputs["sem_seg"])
        return outputs

    def to_json(self) -> Dict[str, Any]:
        """A JSON-serialisable form (export metadata); :meth:`from_json` reads it back."""
        return {"knet_to_dataset": list(self.knet_to_dataset), "num_things": self.num_things}

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> ClassLayout:
        return cls(tuple(int(v) for v in data["knet_to_dataset"]), int(data["num_things"]))


def class_layout_of_datasets(
    names: Iterable[str], things_only: bool = False
) -> Optional[ClassLayout]:
    """The one layout shared by the datasets ``names`` (``None`` if none has id maps).

    Args:
        names: dataset names (their ``MetadataCatalog`` entries are read).
        things_only: compare only the things (their contiguous ids, in K-Net order). For models
            without stuff classes: an instance dataset and the instance view of a panoptic one
            with the same things then fit together (the first layout found is returned).

    Raises ``ValueError`` naming two datasets whose layouts differ, and how: one model has one
    class axis, so its training and test sets must number their classes the same way.
    """
    found: Optional[ClassLayout] = None
    found_in = ""
    for name in names:
        layout = ClassLayout.from_metadata(MetadataCatalog.get(name), name)
        if layout is None:
            continue
        if found is None:
            found, found_in = layout, name
        elif _key(layout, things_only) != _key(found, things_only):
            raise ValueError(
                f"datasets '{found_in}' and '{name}' number their classes differently: "
                f"{_describe(found)} vs {_describe(layout)}; train and test one K-Net model on "
                "datasets with the same metadata"
            )
    return found


def _key(layout: ClassLayout, things_only: bool) -> Tuple[int, ...]:
    """What two layouts must share: every class, or the things only."""
    if things_only:
        return layout.knet_to_dataset[: layout.num_things]
    return layout.knet_to_dataset


def _describe(layout: ClassLayout) -> str:
    """E.g. ``4 things at contiguous ids [0, 1, 2, 3] and 4 stuff classes at [4, 5, 6, 7]``."""
    things = list(layout.knet_to_dataset[: layout.num_things])
    stuff = list(layout.knet_to_dataset[layout.num_things:])

    def ids(values: List[int]) -> str:
        return f"{values[:10]}"[:-1] + (", ...]" if len(values) > 10 else "]")

    text = f"{len(things)} thing{'s' * (len(things) != 1)} at contiguous ids {ids(things)}"
    if not stuff:
        return text + ", no stuff"
    return text + f" and {len(stuff)} stuff class{'es' * (len(stuff) != 1)} at {ids(stuff)}"


def check_class_counts(cfg, num_thing: int, num_stuff: int) -> None:
    """K-Net's ``MODEL.KNET.NUM_*_CLASSES`` (``num_thing``, ``num_stuff``) vs. the metadata of
    ``DATASETS.TRAIN`` / ``TEST``; a mismatch raises :class:`ConfigError` saying what to set."""
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        meta = MetadataCatalog.get(name)
        stuff = getattr(meta, "stuff_classes", None)
        # Count things by their dataset-id mapping when there is one: D2's
        # "coco_panoptic_standard" metadata (coco_2017_*_panoptic) lists all 133 classes in
        # thing_classes, but maps only the 80 thing ids in thing_dataset_id_to_contiguous_id.
        thing_ids = getattr(meta, "thing_dataset_id_to_contiguous_id", None)
        things = getattr(meta, "thing_classes", None)
        n_things = len(thing_ids) if thing_ids is not None else (
            len(things) if things is not None else None
        )
        if n_things is not None and n_things != num_thing:
            raise ConfigError(
                f"MODEL.KNET.NUM_THING_CLASSES is {num_thing} but dataset '{name}' has "
                f"{n_things} thing classes: set MODEL.KNET.NUM_THING_CLASSES {n_things}"
            )
        # Panoptic metadata lists every class in stuff_classes (things first).
        if num_stuff > 0 and stuff is not None and len(stuff) != num_thing + num_stuff:
            raise ConfigError(
                f"MODEL.KNET.NUM_THING_CLASSES + NUM_STUFF_CLASSES is {num_thing + num_stuff} but "
                f"dataset '{name}' has {len(stuff)} classes in stuff_classes: set "
                f"MODEL.KNET.NUM_STUFF_CLASSES {len(stuff) - num_thing}"
            )


def check_semantic_class_count(cfg) -> None:
    """``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` vs. the ``stuff_classes`` of ``DATASETS.TRAIN`` /
    ``TEST``; a mismatch raises :class:`ConfigError` saying what to set."""
    n = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
    for name in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        classes = getattr(MetadataCatalog.get(name), "stuff_classes", None)
        if classes is not None and len(classes) != n:
            raise ConfigError(
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {n} but dataset '{name}' has "
                f"{len(classes)} classes (stuff_classes): set "
                f"MODEL.SEM_SEG_HEAD.NUM_CLASSES {len(classes)}"
            )

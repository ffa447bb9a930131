"""Register your own datasets from the command line (``--dataset``) or ``DATASETS.REGISTER``.

One spec registers one dataset name through :mod:`.register_custom`, so the class metadata,
the class-count start-up check, the evaluators and the visualizers work as for built-in names::

    NAME=coco_instance:INSTANCES_JSON:IMAGE_DIR
    NAME=coco_panoptic:PANOPTIC_JSON:PANOPTIC_PNG_DIR:IMAGE_DIR[:SEMSEG_PNG_DIR[:INSTANCES_JSON]]
    NAME=sem_seg:IMAGE_DIR:LABEL_PNG_DIR:CLASSES[:IMAGE_EXT]

``CLASSES`` is a comma-separated list of class names (label value ``i`` is the ``i``-th name)
or a text file with one name per line. An empty optional field is skipped
(``...:IMAGE_DIR::instances.json``). Paths are used as given (relative to the working
directory, ``~`` expanded) and must not contain ``:``.

``train_net.py``, ``demo/demo.py`` and ``tools/visualize_data.py`` take ``--dataset SPEC``
(repeatable); :func:`knet_d2.get_knet_cfg` appends those specs to ``DATASETS.REGISTER`` (so the
``config.yaml`` a run writes records them) and registers every entry of that list. Registering
the same spec twice (e.g. in every ``launch()`` worker) is a no-op; a name that is already
registered otherwise is an error.
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from detectron2.data import DatasetCatalog

from .register_custom import (
    register_instance_dataset,
    register_panoptic_dataset,
    register_sem_seg_dataset,
)

__all__ = [
    "DatasetSpecError",
    "DatasetSpec",
    "DATASET_KINDS",
    "parse_dataset_spec",
    "register_dataset_spec",
    "register_dataset_specs",
    "add_dataset_argument",
    "check_datasets_registered",
]

#: kind -> (required fields, optional fields), in spec order
DATASET_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "coco_instance": (("INSTANCES_JSON", "IMAGE_DIR"), ()),
    "coco_panoptic": (
        ("PANOPTIC_JSON", "PANOPTIC_PNG_DIR", "IMAGE_DIR"), ("SEMSEG_PNG_DIR", "INSTANCES_JSON")
    ),
    "sem_seg": (("IMAGE_DIR", "LABEL_PNG_DIR", "CLASSES"), ("IMAGE_EXT",)),
}

SPEC_HELP = (
    "register a dataset: NAME=coco_instance:INSTANCES_JSON:IMAGE_DIR, "
    "NAME=coco_panoptic:PANOPTIC_JSON:PANOPTIC_PNG_DIR:IMAGE_DIR[:SEMSEG_PNG_DIR"
    "[:INSTANCES_JSON]] or NAME=sem_seg:IMAGE_DIR:LABEL_PNG_DIR:CLASSES[:IMAGE_EXT] "
    "(CLASSES: 'a,b,c' or a file with one name per line); repeatable; then use NAME in "
    "DATASETS.TRAIN / DATASETS.TEST"
)

# name -> spec registered by this module in this process (makes re-registration a no-op)
_REGISTERED: dict[str, DatasetSpec] = {}


class DatasetSpecError(ValueError):
    """A malformed ``--dataset`` / ``DATASETS.REGISTER`` entry or an unusable dataset name."""


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed spec: the dataset name, its kind and the fields of that kind (``None`` for an
    optional field that was left out)."""

    name: str
    kind: str
    fields: tuple[str | None, ...]

    def field(self, key: str) -> str | None:
        required, optional = DATASET_KINDS[self.kind]
        return self.fields[(required + optional).index(key)]


def _usage(kind: str) -> str:
    required, optional = DATASET_KINDS[kind]
    text = f"NAME={kind}:" + ":".join(required)
    for key in optional:
        text += f"[:{key}"
    return text + "]" * len(optional)


def parse_dataset_spec(spec: str) -> DatasetSpec:
    """Parse ``NAME=KIND:FIELD[:FIELD...]`` (see the module docstring).

    Raises:
        DatasetSpecError: naming the spec and what is wrong with it.
    """
    name, sep, rest = str(spec).partition("=")
    name = name.strip()
    if not sep or not name:
        raise DatasetSpecError(
            f"dataset spec {spec!r}: expected NAME=KIND:..., e.g. "
            "my_train=coco_instance:annotations/train.json:images/train"
        )
    kind, _, tail = rest.partition(":")
    if kind not in DATASET_KINDS:
        raise DatasetSpecError(
            f"dataset spec {spec!r}: unknown kind {kind!r}; use one of {sorted(DATASET_KINDS)}"
        )
    required, optional = DATASET_KINDS[kind]
    parts = tail.split(":") if tail else []
    if not len(required) <= len(parts) <= len(required) + len(optional):
        raise DatasetSpecError(
            f"dataset spec {spec!r}: {kind} takes {_usage(kind)} ({len(parts)} field(s) given; "
            "paths must not contain ':')"
        )
    empty = [required[i] for i, p in enumerate(parts[: len(required)]) if not p.strip()]
    if empty:
        raise DatasetSpecError(f"dataset spec {spec!r}: {', '.join(empty)} is empty")
    fields = [p.strip() or None for p in parts]
    fields += [None] * (len(required) + len(optional) - len(fields))
    return DatasetSpec(name, kind, tuple(fields))


def _path(value: str | None) -> str | None:
    return None if value is None else os.path.expanduser(value)


def _class_names(value: str, spec: DatasetSpec) -> list[str]:
    """``CLASSES`` of a sem_seg spec: a text file (one name per line) or ``a,b,c``."""
    path = os.path.expanduser(value)
    if os.path.isfile(path):
        with open(path) as f:
            names = [line.strip() for line in f if line.strip()]
        if not names:
            raise DatasetSpecError(f"dataset {spec.name!r}: class file {path} has no names")
        return names
    names = [n.strip() for n in value.split(",")]
    if len(names) == 1 and (os.sep in value or value.endswith(".txt")):
        raise FileNotFoundError(f"dataset {spec.name!r}: class name file not found: {path}")
    if any(not n for n in names):
        raise DatasetSpecError(f"dataset {spec.name!r}: empty class name in {value!r}")
    return names


def register_dataset_spec(spec: str | DatasetSpec) -> DatasetSpec:
    """Register one spec with the ``register_custom`` helpers (inputs are checked now).

    Returns:
        The parsed spec.

    Raises:
        DatasetSpecError: malformed spec, or the name is already registered by something else.
        FileNotFoundError / ValueError: from the helpers, naming the missing or bad file.
    """
    parsed = spec if isinstance(spec, DatasetSpec) else parse_dataset_spec(spec)
    if _REGISTERED.get(parsed.name) == parsed:
        return parsed
    if parsed.name in DatasetCatalog.list():
        raise DatasetSpecError(
            f"dataset name {parsed.name!r} is already registered (by Detectron2, knet_d2 or "
            "another spec); choose another name for your dataset"
        )
    f = parsed.field
    if parsed.kind == "coco_instance":
        register_instance_dataset(parsed.name, _path(f("INSTANCES_JSON")), _path(f("IMAGE_DIR")))
    elif parsed.kind == "coco_panoptic":
        register_panoptic_dataset(
            parsed.name,
            image_root=_path(f("IMAGE_DIR")),
            panoptic_root=_path(f("PANOPTIC_PNG_DIR")),
            panoptic_json=_path(f("PANOPTIC_JSON")),
            sem_seg_root=_path(f("SEMSEG_PNG_DIR")),
            instances_json=_path(f("INSTANCES_JSON")),
        )
    else:
        register_sem_seg_dataset(
            parsed.name,
            _path(f("IMAGE_DIR")),
            _path(f("LABEL_PNG_DIR")),
            _class_names(f("CLASSES"), parsed),
            image_ext=(f("IMAGE_EXT") or "jpg").lstrip("."),
        )
    _REGISTERED[parsed.name] = parsed
    return parsed


def register_dataset_specs(specs: Iterable[str]) -> list[str]:
    """Register every spec (see :func:`register_dataset_spec`); returns the dataset names."""
    return [register_dataset_spec(s).name for s in specs]


def add_dataset_argument(parser: argparse.ArgumentParser) -> None:
    """Add the repeatable ``--dataset SPEC`` option (collected in ``args.dataset``)."""
    parser.add_argument(
        "--dataset", action="append", default=[], metavar="NAME=KIND:...", help=SPEC_HELP
    )


def check_datasets_registered(names: Sequence[str], key: str) -> None:
    """Every name must be registered; ``key`` (e.g. ``DATASETS.TEST``) is named in the error.

    Raises:
        DatasetSpecError: listing the unknown names and how to register them.
    """
    known = set(DatasetCatalog.list())
    missing = [n for n in names if n not in known]
    if missing:
        raise DatasetSpecError(
            f"{key} names unregistered dataset(s) {missing}: register your data with "
            "--dataset NAME=KIND:... or the config list DATASETS.REGISTER (see README, "
            "'Train on your own data'), or fix the name"
        )

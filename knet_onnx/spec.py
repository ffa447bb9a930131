"""The export metadata of a knet_d2 ONNX file, read and checked for the runtime.

``tools/export_model.py`` stores one JSON document inside the ``.onnx`` file
(``metadata_props["knet_d2_export"]``) and next to it (``model.onnx.json``). The runtime reads
the copy inside the model through onnxruntime, so that the graph and its description cannot
get separated. Version 2 of the document added what is needed to use the graph on an image
file: ``input`` (channel order, test resize) and ``classes`` (names, colours, dataset ids).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

__all__ = ["METADATA_KEY", "ExportSpec", "SpecError"]

METADATA_KEY = "knet_d2_export"
_SUPPORTED_VERSION = 2
_ARCHITECTURES = ("KNet", "SemanticSegmentor")
_CHANNEL_ORDERS = ("RGB", "BGR")


class SpecError(ValueError):
    """The model file's metadata is missing, too old or inconsistent."""


@dataclass(frozen=True)
class ExportSpec:
    """Everything around the graph: input handling, output names, post-processing, classes.

    ``classes[c]`` describes contiguous class id ``c`` of the model output: ``name``,
    ``color`` ([r, g, b]), ``dataset_id`` and ``isthing``.
    """

    path: str
    architecture: str
    input_name: str
    output_names: List[str]
    channel_order: str
    min_size_test: int
    max_size_test: int
    pixel_mean: List[float]
    pixel_std: List[float]
    size_divisibility: int
    padding_constraints: Optional[dict]
    dynamic: bool
    input_shape: List[int]
    postprocess: Dict[str, Any]
    dataset: Optional[str]
    classes: List[dict]

    @property
    def is_knet(self) -> bool:
        return self.architecture == "KNet"

    @property
    def tasks(self) -> List[str]:
        """Outputs this model produces: a subset of panoptic, instances, semantic."""
        if not self.is_knet:
            return ["semantic"]
        post = self.postprocess
        names = (("panoptic_on", "panoptic"), ("instance_on", "instances"),
                 ("semantic_on", "semantic"))
        return [task for key, task in names if post[key]]

    @classmethod
    def from_json(cls, text: str, path: str) -> ExportSpec:
        """Parse and check the metadata JSON of the model file ``path`` (named in errors)."""
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(
                f"{path}: the '{METADATA_KEY}' metadata is not valid JSON: {e}"
            ) from None
        version = meta.get("version")
        if version != _SUPPORTED_VERSION or "input" not in meta or "classes" not in meta:
            raise SpecError(
                f"{path}: export metadata version {version!r} does not record the input channel "
                f"order, test resize and classes (version {_SUPPORTED_VERSION} does); re-export "
                "the model with tools/export_model.py"
            )
        if meta.get("format") != "onnx":
            raise SpecError(f"{path}: not an ONNX export (format {meta.get('format')!r})")
        if meta["meta_architecture"] not in _ARCHITECTURES:
            raise SpecError(f"{path}: unsupported meta_architecture {meta['meta_architecture']!r}")
        inp = meta["input"]
        if inp["format"] not in _CHANNEL_ORDERS or inp.get("resize") != "shortest_edge":
            raise SpecError(
                f"{path}: unsupported input format {inp['format']!r} / resize "
                f"{inp.get('resize')!r} (supported: RGB or BGR, shortest_edge)"
            )
        num_classes = _num_classes(meta)
        if len(meta["classes"]) != num_classes:
            raise SpecError(
                f"{path}: {len(meta['classes'])} classes in the metadata, the model has "
                f"{num_classes}"
            )
        return cls(
            path=path,
            architecture=meta["meta_architecture"],
            input_name=meta["input_name"],
            output_names=list(meta["output_names"]),
            channel_order=inp["format"],
            min_size_test=int(inp["min_size_test"]),
            max_size_test=int(inp["max_size_test"]),
            pixel_mean=[float(v) for v in meta["pixel_mean"]],
            pixel_std=[float(v) for v in meta["pixel_std"]],
            size_divisibility=int(meta["size_divisibility"]),
            padding_constraints=meta.get("padding_constraints"),
            dynamic=bool(meta["dynamic"]),
            input_shape=[int(v) for v in meta["input_shape"]],
            postprocess=dict(meta["postprocess"]),
            dataset=meta.get("dataset"),
            classes=list(meta["classes"]),
        )

    @classmethod
    def from_session(cls, session: Any, path: str) -> ExportSpec:
        """Metadata of an ``onnxruntime.InferenceSession`` opened on ``path``."""
        text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if text is None:
            raise SpecError(
                f"{path}: no '{METADATA_KEY}' metadata; not exported by tools/export_model.py"
            )
        return cls.from_json(text, path)


def _num_classes(meta: dict) -> int:
    post = meta["postprocess"]
    if meta["meta_architecture"] == "KNet":
        return int(post["num_thing_classes"]) + int(post["num_stuff_classes"])
    return int(post["num_classes"])

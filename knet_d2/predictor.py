"""``knet_d2.Predictor``: a K-Net model for Python code outside the command-line tools.

>>> from knet_d2 import Predictor
>>> predictor = Predictor("coco/panoptic-segmentation/knet_R50_1x.yaml")  # official weights
>>> outputs = predictor("photo.jpg")            # {"panoptic_seg": ..., "instances": ...}
>>> outputs = predictor([bgr_array, pil_image])  # a list of output dicts
>>> fast = Predictor("coco/panoptic-segmentation/knet_R50_1x.yaml", batch_size=4,
...                  precision="bf16", compile=True)

It runs what Detectron2's ``DefaultPredictor`` runs (test-time ``ResizeShortestEdge``, outputs at
the input resolution) and gives the same results; a list of images runs in batches of up to
``batch_size`` consecutive images that the model pads to the same size (each image is resized
on its own; a batch ends where the padded size changes, so batched results equal per-image
results), and precision / ``torch.compile`` options apply to the model's kernel path
(:mod:`knet_d2.inference_options`). It also loads the weights
through :class:`~knet_d2.engine.KNetCheckpointer` (official K-Net releases are converted on
load) and refuses weights that leave model parameters random
(:func:`~knet_d2.engine.check_inference_weights`, ``MODEL.WEIGHTS_STRICT``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from PIL import Image, ImageOps

from . import model_zoo
from .data.image_io import read_image
from .engine.checkpointer import KNetCheckpointer
from .engine.defaults import get_knet_cfg
from .engine.weights_report import check_inference_weights
from .inference_options import check_precision, install_inference_options

__all__ = ["Predictor", "ImageInput"]

#: one input image: a file path, an (H, W, 3) uint8 array or a PIL image
ImageInput = Union[str, os.PathLike, np.ndarray, Image.Image]
_CHANNEL_ORDERS = ("BGR", "RGB")


def _config(config_or_zoo_name: Union[str, os.PathLike, CfgNode]) -> tuple:
    """(config not frozen, zoo name or None) from a CfgNode, a YAML file or a zoo name."""
    if isinstance(config_or_zoo_name, CfgNode):
        cfg = config_or_zoo_name.clone()
        cfg.defrost()
        return cfg, None
    text = str(config_or_zoo_name)
    if os.path.isfile(text):
        return get_knet_cfg(text, freeze=False), None
    try:
        path = model_zoo.get_config_file(text)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{text!r} is neither a config file nor a knet_d2 model zoo name ({e})"
        ) from None
    return get_knet_cfg(path, freeze=False), text


class Predictor:
    """Run a K-Net model on images: ``predictor(image)`` or ``predictor([images])``.

    Input images:

    * a **path** (``str`` / ``Path``): read with EXIF orientation applied (16-bit and CMYK files
      converted, unreadable files named);
    * a **numpy array** (H, W, 3) ``uint8`` in ``channel_order`` (default "BGR", what
      ``cv2.imread`` returns and what D2's ``DefaultPredictor`` takes; pass
      ``channel_order="RGB"`` for arrays from PIL / imageio / matplotlib);
    * a **PIL image** (any mode; converted to RGB, EXIF orientation applied as for paths).

    Outputs: D2's output dicts (``"panoptic_seg"``, ``"instances"``, ``"sem_seg"`` by task) at
    the input image's size, on the model's device; one dict for one image, a list for a list.
    """

    def __init__(
        self,
        config_or_zoo_name: Union[str, os.PathLike, CfgNode],
        weights: Optional[str] = None,
        device: Optional[str] = None,
        *,
        channel_order: str = "BGR",
        strict: Optional[bool] = None,
        batch_size: int = 1,
        mixed_size_batches: bool = False,
        precision: Optional[str] = None,
        compile: Optional[bool] = None,
    ) -> None:
        """
        Args:
            config_or_zoo_name: a config (``CfgNode``, not modified), a YAML file, or a model
                zoo name such as ``"coco/panoptic-segmentation/knet_R50_1x.yaml"``.
            weights: checkpoint path / URL (official releases are converted on load). Default:
                for a zoo name its official checkpoint, else the config's ``MODEL.WEIGHTS``.
            device: e.g. "cpu", "cuda:0"; default: the config's (CPU without CUDA).
            channel_order: "BGR" or "RGB", the channel order of numpy array inputs.
            strict: refuse weights that leave parameters missing or of another shape;
                default: the config's ``MODEL.WEIGHTS_STRICT`` (True).
            batch_size: at most this many images per forward when called with a list (outputs
                stay in input order).
            mixed_size_batches: also batch consecutive images of different padded sizes
                (padded to the largest): fuller batches on folders of mixed sizes, but K-Net's
                results for the padded images then differ from per-image results (README,
                "Batched inference"). Default False: a batch ends where the size changes.
            precision: "fp32", "bf16" (autocast) or "fp16" (CUDA only) for the kernel path;
                default: the config's ``TEST.PRECISION``.
            compile: ``torch.compile`` the kernel path; default: the config's ``TEST.COMPILE``.

        Raises:
            ValueError: bad ``channel_order`` / ``batch_size`` / ``precision``, or "fp16" on
                the CPU.
            FileNotFoundError: unknown config / zoo name.
            knet_d2.engine.IncompatibleWeightsError: the weights do not fit the model.
        """
        if channel_order not in _CHANNEL_ORDERS:
            raise ValueError(
                f"channel_order must be one of {_CHANNEL_ORDERS}, got {channel_order!r}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        cfg, zoo_name = _config(config_or_zoo_name)
        if weights is not None:
            cfg.MODEL.WEIGHTS = str(weights)
        elif zoo_name is not None:
            cfg.MODEL.WEIGHTS = model_zoo.get_checkpoint_url(zoo_name)
        if device is not None:
            cfg.MODEL.DEVICE = device
        elif not torch.cuda.is_available() and cfg.MODEL.DEVICE.startswith("cuda"):
            cfg.MODEL.DEVICE = "cpu"
        if precision is not None:
            cfg.TEST.PRECISION = precision
        if compile is not None:
            cfg.TEST.COMPILE = bool(compile)
        cfg.freeze()
        check_precision(cfg.TEST.PRECISION, cfg.MODEL.DEVICE)  # before building the model
        self.batch_size = batch_size
        self.mixed_size_batches = mixed_size_batches
        self.cfg = cfg
        self.channel_order = channel_order
        self.model = build_model(cfg).eval()
        checkpointer = KNetCheckpointer(self.model)
        checkpointer.load(cfg.MODEL.WEIGHTS)
        check_inference_weights(
            checkpointer.last_load_report,
            strict=cfg.MODEL.WEIGHTS_STRICT if strict is None else strict,
            weights=cfg.MODEL.WEIGHTS,
        )
        install_inference_options(self.model, cfg.TEST.PRECISION, cfg.TEST.COMPILE)
        self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0]) if cfg.DATASETS.TEST else None
        self.aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = cfg.INPUT.FORMAT  # what the model takes: "BGR" or "RGB"

    def _to_model_format(self, image: ImageInput) -> np.ndarray:
        """(H, W, 3) uint8 in the model's ``INPUT.FORMAT``."""
        if isinstance(image, (str, os.PathLike)):
            return read_image(str(Path(image).expanduser()), format=self.input_format)
        if isinstance(image, Image.Image):
            rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
            return rgb if self.input_format == "RGB" else rgb[:, :, ::-1]
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(
                    f"expected an (H, W, 3) uint8 array in {self.channel_order} order, got "
                    f"shape {image.shape} dtype {image.dtype}"
                )
            same = self.channel_order == self.input_format
            return image if same else image[:, :, ::-1]
        raise TypeError(
            f"expected an image path, numpy array or PIL image, got {type(image).__name__}"
        )

    def _model_input(self, image: ImageInput) -> dict:
        """D2's input dict: ``image`` (3, h, w) float32 resized, ``height`` / ``width`` of the
        original (the size of the outputs)."""
        original = self._to_model_format(image)
        height, width = original.shape[:2]
        resized = self.aug.get_transform(original).apply_image(original)
        tensor = torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))
        return {"image": tensor.to(self.cfg.MODEL.DEVICE), "height": height, "width": width}

    def _padded_size(self, model_input: dict) -> tuple:
        """(Hp, Wp) the model pads this input to when it is alone in a batch."""
        model = self.model
        divisor = getattr(model, "size_divisibility", None)
        if divisor is None:  # D2's SemanticSegmentor pads to its backbone's divisibility
            divisor = getattr(getattr(model, "backbone", None), "size_divisibility", 0)
        divisor = max(int(divisor), 1)
        height, width = model_input["image"].shape[-2:]
        return (-(-height // divisor) * divisor, -(-width // divisor) * divisor)

    @torch.no_grad()
    def _forward(self, model_inputs: List[dict]) -> List[dict]:
        return self.model(model_inputs)

    def predict_batch(self, images: Sequence[ImageInput]) -> List[dict]:
        """The model's output dicts for ``images`` in one forward (in input order), padded to
        the largest of them."""
        return self._forward([self._model_input(image) for image in images])

    def predict_one(self, image: ImageInput) -> dict:
        """The model's output dict for one image (see the class docstring for inputs)."""
        return self.predict_batch([image])[0]

    def __call__(
        self, images: Union[ImageInput, Sequence[ImageInput]]
    ) -> Union[dict, List[dict]]:
        """One output dict for one image; a list of them, in order, for a list / tuple (run in
        batches of ``batch_size``)."""
        if isinstance(images, (list, tuple)):
            outputs: List[dict] = []
            batch: List[dict] = []
            for image in images:
                model_input = self._model_input(image)
                if batch and not self.mixed_size_batches and (
                    self._padded_size(model_input) != self._padded_size(batch[0])
                ):
                    outputs += self._forward(batch)
                    batch = []
                batch.append(model_input)
                if len(batch) == self.batch_size:
                    outputs += self._forward(batch)
                    batch = []
            if batch:
                outputs += self._forward(batch)
            return outputs
        return self.predict_one(images)

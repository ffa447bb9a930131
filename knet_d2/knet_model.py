"""The K-Net meta-architecture for instance and panoptic segmentation (and ``sem_seg`` scores).

Data flow (B images, padded to a multiple of 32 into ``(Hp, Wp)``)::

    backbone (ResNet + FPN)        -> p2..p5                      strides 4..32
    neck (LocalizationFPN)         -> loc, sem  (B, C, Hp/8, Wp/8)
    kernel_head                    -> F (B, C, Hp/8, Wp/8), kernels K0 (B, Np, C),
                                      masks M0 (B, Np, Hp/8, Wp/8), semantic logits
    [panoptic] append stuff kernels conv_seg.weight[T:] and masks seg_logits[:, T:]
    update_heads[0..S-1]           -> K_i (B, N, C), M_i (B, N, Hp/8, Wp/8), cls_i (B, N, T+S)
    losses at stride 4 (x2 bilinear), inference from the last stage.

Training inputs are D2 dicts with ``image`` and ``instances`` (``gt_classes`` contiguous,
``gt_masks``), as produced by the knet_d2 dataset mappers. Inference returns per image any
of ``instances``, ``panoptic_seg`` and ``sem_seg``, switched by ``MODEL.KNET.TEST.*_ON``.
Internally classes are things first (``0..T-1``); datasets numbered otherwise (D2's Cityscapes
trainIds, ADE20K) are converted with a :class:`~knet_d2.data.class_layout.ClassLayout` read
from the dataset metadata: targets on the way in, all outputs on the way out.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import BitMasks, ImageList
from detectron2.utils.memory import retry_if_cuda_oom
from torch import nn

from .config import check_mask_strides, check_task_flags
from .data.class_layout import ClassLayout, check_class_counts, class_layout_of_datasets
from .modeling.criterion import KNetCriterion
from .modeling.crop_classifier import CropClassifier, build_crop_classifier
from .modeling.kernel_head import KernelGenerationHead
from .modeling.kernel_update_head import build_kernel_update_head, upsample_masks
from .modeling.mask_denoising import MaskDenoising
from .modeling.neck import build_knet_neck
from .modeling.postprocessing import (
    instance_inference,
    panoptic_inference,
    rescale_masks,
    semantic_inference,
)
from .modeling.thing_softmax import as_sigmoid_logits

__all__ = ["KNet"]

logger = logging.getLogger(__name__)

#: values of ``MODEL.KNET.TEST.CHANNELS_LAST`` and ``MODEL.KNET.TEST.SPLIT_BATCH``: "auto" (in
#: CPU inference), "on" (in inference on every device), "off"
INFERENCE_MODES = ("auto", "on", "off")


def _float32(outputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The prediction maps of one stage in float32 (unchanged when they are already)."""
    return {k: v.float() for k, v in outputs.items()}


def _check_inference_mode(key: str, value: str) -> str:
    """``value`` of the config key ``MODEL.KNET.TEST.<key>``, or a ValueError naming it."""
    if value not in INFERENCE_MODES:
        raise ValueError(f"MODEL.KNET.TEST.{key} must be one of {INFERENCE_MODES}, got {value!r}")
    return value


def downsample_masks(masks: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(masks[:, None].float(), size, "bilinear", align_corners=False)[:, 0]``.

    Exact shortcut for bool masks whose size is an integer multiple ``(sh, sw)`` of ``size``:
    at scale ``1/s`` output pixel ``i`` samples source position ``s*i + (s-1)/2``, i.e. the
    mean of pixels ``s/2 - 1`` and ``s/2`` of its ``s``-block for even ``s`` (weights 1/2) and
    pixel ``(s-1)/2`` for odd ``s`` (weights 1, 0). On 0/1 inputs these means are exact in
    float32, so the result is bit-identical to the interpolation while reading only 1-byte
    masks and 1/4 (s even) of their pixels.

    Args:
        masks: (M, H, W) bool or float masks.
        size: (h, w) output size.

    Returns:
        (M, h, w) float32.
    """
    m, h, w = masks.shape
    oh, ow = size
    if m == 0:
        return masks.new_zeros((0, oh, ow), dtype=torch.float32)
    if masks.dtype != torch.bool or h % oh or w % ow:
        return F.interpolate(
            masks[:, None].float(), size=(oh, ow), mode="bilinear", align_corners=False
        )[:, 0]
    sh, sw = h // oh, w // ow
    rows = slice(sh // 2 - 1, sh // 2 + 1) if sh % 2 == 0 else slice((sh - 1) // 2, (sh + 1) // 2)
    cols = slice(sw // 2 - 1, sw // 2 + 1) if sw % 2 == 0 else slice((sw - 1) // 2, (sw + 1) // 2)
    picked = masks.view(m, oh, sh, ow, sw)[:, :, rows, :, cols]
    weight = 1.0 / (picked.shape[2] * picked.shape[4])  # 1, 1/2 or 1/4: exact
    return picked.sum(dim=(2, 4), dtype=torch.float32) * weight


@META_ARCH_REGISTRY.register()
class KNet(nn.Module):
    """K-Net: learnable kernels for instance, panoptic and semantic outputs, trained by matching."""

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        neck: nn.Module,
        kernel_head: KernelGenerationHead,
        update_heads: nn.ModuleList,
        criterion: KNetCriterion,
        num_thing_classes: int,
        num_stuff_classes: int,
        num_proposals: int,
        mask_assign_stride: int,
        size_divisibility: int,
        pixel_mean: Tuple[float, ...],
        pixel_std: Tuple[float, ...],
        semantic_on: bool,
        instance_on: bool,
        panoptic_on: bool,
        mask_threshold: float = 0.5,
        detections_per_image: int = 100,
        instance_score_thresh: float = 0.3,
        overlap_threshold: float = 0.6,
        class_layout: Optional[ClassLayout] = None,
        channels_last: str = "auto",
        split_batch: str = "auto",
        denoising: Optional[MaskDenoising] = None,
        crop_classifier: Optional[CropClassifier] = None,
    ):
        """
        Args:
            backbone: D2 backbone returning the FPN levels the neck reads (p2..p5).
            neck: localization FPN, ``(features) -> (loc, sem)`` at stride ``neck.out_stride``
                (8, or 4 with ``MODEL.KNET.NECK.OUT_STRIDE 4``).
            kernel_head: kernel generation head (proposal kernels, M0, semantic logits).
            update_heads: one :class:`KernelUpdateHead` per stage (weights not shared).
            criterion: matching + losses.
            num_thing_classes / num_stuff_classes: T and S; contiguous ids things first.
            num_proposals: Np learned thing kernels.
            mask_assign_stride: stride of the ground truth used for matching and losses (4).
            size_divisibility: pad images to a multiple of this.
            pixel_mean / pixel_std: normalisation in ``INPUT.FORMAT`` channel order.
            semantic_on / instance_on / panoptic_on: which outputs inference returns.
            mask_threshold: binarisation of instance masks and the panoptic "original area".
            detections_per_image: top-k (kernel, class) pairs kept per image.
            instance_score_thresh / overlap_threshold: panoptic merge thresholds.
            class_layout: dataset contiguous ids <-> the things-first ids used inside;
                ``None`` when the dataset's ids are things first already.
            channels_last: memory format of the image batch in inference: "auto" (channels-last
                on the CPU), "on" (every device) or "off".
            split_batch: run an inference batch one image at a time: "auto" (on the CPU, where
                no stage gains from batching and padding to the widest image costs time;
                docs/INFERENCE.md), "on" (every device) or "off" (whole batch, padded).
            denoising: training-only mask-denoising groups (``MODEL.KNET.DENOISING``), or None.
            crop_classifier: last stage's crop logits (``MODEL.KNET.CROP_CLASSIFIER``), or None.
        """
        super().__init__()
        check_task_flags(semantic_on, instance_on, panoptic_on)
        if panoptic_on and num_stuff_classes == 0:
            logger.info("PANOPTIC_ON with 0 stuff classes: panoptic output contains things only")
        self.backbone = backbone
        self.neck = neck
        self.kernel_head = kernel_head
        self.update_heads = update_heads
        self.criterion = criterion
        self.num_thing_classes = num_thing_classes
        self.num_stuff_classes = num_stuff_classes
        self.num_proposals = num_proposals
        self.mask_assign_stride = mask_assign_stride
        self.size_divisibility = size_divisibility
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self.semantic_on = semantic_on
        self.instance_on = instance_on
        self.panoptic_on = panoptic_on
        self.mask_threshold = mask_threshold
        self.detections_per_image = detections_per_image
        self.instance_score_thresh = instance_score_thresh
        self.overlap_threshold = overlap_threshold
        if class_layout is not None and class_layout.is_identity:
            class_layout = None
        if class_layout is not None:
            class_layout.check_fits(num_thing_classes, num_stuff_classes)
        self.class_layout = class_layout
        self.channels_last = _check_inference_mode("CHANNELS_LAST", channels_last)
        self.split_batch = _check_inference_mode("SPLIT_BATCH", split_batch)
        self.denoising = denoising
        self.crop_classifier = crop_classifier

    @classmethod
    def from_config(cls, cfg):
        k = cfg.MODEL.KNET
        check_mask_strides(k.NECK.OUT_STRIDE, k.MASK_ASSIGN_STRIDE)
        backbone = build_backbone(cfg)
        neck = build_knet_neck(cfg, backbone.output_shape())
        check_class_counts(cfg, k.NUM_THING_CLASSES, k.NUM_STUFF_CLASSES)
        layout = class_layout_of_datasets(  # an instance model uses the things only
            list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST),
            things_only=k.NUM_STUFF_CLASSES == 0,
        )
        size_div = k.SIZE_DIVISIBILITY if k.SIZE_DIVISIBILITY > 0 else backbone.size_divisibility
        return {
            "backbone": backbone,
            "neck": neck,
            "kernel_head": KernelGenerationHead(cfg),
            "update_heads": nn.ModuleList(
                [build_kernel_update_head(cfg) for _ in range(k.NUM_STAGES)]
            ),
            "criterion": KNetCriterion(cfg),
            "num_thing_classes": k.NUM_THING_CLASSES,
            "num_stuff_classes": k.NUM_STUFF_CLASSES,
            "num_proposals": k.NUM_PROPOSALS,
            "mask_assign_stride": k.MASK_ASSIGN_STRIDE,
            "size_divisibility": max(size_div, 32),
            "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": tuple(cfg.MODEL.PIXEL_STD),
            "semantic_on": k.TEST.SEMANTIC_ON,
            "instance_on": k.TEST.INSTANCE_ON,
            "panoptic_on": k.TEST.PANOPTIC_ON,
            "mask_threshold": k.TEST.MASK_THRESHOLD,
            "detections_per_image": k.TEST.DETECTIONS_PER_IMAGE,
            "instance_score_thresh": k.TEST.INSTANCE_SCORE_THRESH,
            "overlap_threshold": k.TEST.OVERLAP_THRESHOLD,
            "class_layout": layout,
            "channels_last": k.TEST.CHANNELS_LAST,
            "split_batch": k.TEST.SPLIT_BATCH,
            "denoising": MaskDenoising(cfg) if k.DENOISING.ENABLED else None,
            "crop_classifier": build_crop_classifier(cfg),
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ forward
    def preprocess_image(self, batched_inputs: List[dict]) -> ImageList:
        """Normalise and pad the images of a batch into an ImageList (B, 3, Hp, Wp).

        In inference the batch is made channels-last (NHWC strides, same shape) where
        ``channels_last`` asks for it: the convolutions then keep that layout and run
        oneDNN's direct NHWC kernels on the CPU instead of reordering every activation.
        """
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std
                  for x in batched_inputs]
        image_list = ImageList.from_tensors(images, self.size_divisibility)
        if self._inference_mode_applies(self.channels_last):
            image_list.tensor = image_list.tensor.contiguous(memory_format=torch.channels_last)
        return image_list

    def _inference_mode_applies(self, mode: str) -> bool:
        """Whether an :data:`INFERENCE_MODES` setting is in effect for this forward."""
        if self.training or mode == "off":
            return False
        return mode == "on" or self.device.type == "cpu"

    def forward_kernels(
        self, images: ImageList, denoise_targets: Optional[List[dict]] = None
    ) -> Tuple[dict, List[dict]]:
        """Run backbone, neck, kernel head and all update stages.

        Args:
            denoise_targets: training targets (:meth:`prepare_targets`) when the update stages
                also run the mask-denoising groups (:mod:`knet_d2.modeling.mask_denoising`).

        Returns:
            rpn: ``{"mask_logits": (B, Np, h4, w4), "seg_logits": (B, T+S, h4, w4)}`` (stage 0,
                thing kernels only, upsampled to stride 4); empty in eval mode (only the
                losses use it).
            stages: per stage ``{"mask_logits": (B, N, h4, w4), "cls_logits": (B, N, T+S)}``
                with N = Np + S; with ``denoise_targets`` also the denoising groups'
                ``"dn_mask_logits"`` and ``"dn_cls_logits"`` of the same shapes. In eval mode
                the last stage's sigmoid(cls_logits) is the class probability (also of a
                softmax thing classifier, :mod:`knet_d2.modeling.thing_softmax`).
        """
        features = self.backbone(images.tensor)
        loc, sem = self.neck(features)
        head_out = self.kernel_head(loc, sem)
        feats = head_out["features"]
        up = max(self.neck.out_stride // self.mask_assign_stride, 1)
        # Stage-0 losses see the thing kernels only; stuff kernels join before stage 1.
        # Only the losses read them: inference skips their upsampling. They come from
        # convolutions, so a channels-last backbone (SOLVER.CHANNELS_LAST) leaves them NHWC;
        # the losses run on the standard layout.
        rpn = {}
        if self.training:
            rpn = {
                "mask_logits": upsample_masks(head_out["mask_logits"], up).contiguous(),
                "seg_logits": upsample_masks(head_out["seg_logits"], up).contiguous(),
            }
        kernels, masks = self.kernel_head.append_stuff(head_out)
        b = feats.shape[0]
        if denoise_targets is not None:  # the groups run as extra batch entries
            dn_kernels, dn_masks = self.denoising.queries(denoise_targets, feats, self.kernel_head)
            dn_kernels, dn_masks = self.kernel_head.append_stuff(
                {**head_out, "kernels": dn_kernels, "mask_logits": dn_masks}
            )
            kernels, masks = torch.cat([kernels, dn_kernels]), torch.cat([masks, dn_masks])
            feats = torch.cat([feats, feats])
        stages = []
        for i, head in enumerate(self.update_heads):
            kernels, masks, cls_logits = head(feats, kernels, masks)
            if self.crop_classifier is not None and i == len(self.update_heads) - 1:
                cls_logits = self.crop_classifier.add_logits(images.tensor, masks, cls_logits)
            # Losses need every stage at stride 4; inference only the last one.
            if self.training or i == len(self.update_heads) - 1:
                up_masks = upsample_masks(masks, up)
                stage = {"mask_logits": up_masks[:b], "cls_logits": cls_logits[:b]}
                if denoise_targets is not None:
                    stage.update(dn_mask_logits=up_masks[b:], dn_cls_logits=cls_logits[b:])
                stages.append(stage)
        if not self.training and self.criterion.thing_softmax:  # sigmoid = class probability
            cls, np_, t = stages[-1]["cls_logits"], self.num_proposals, self.num_thing_classes
            things = [as_sigmoid_logits(cls[:, :np_, :t]).to(cls.dtype), cls[:, :np_, t:]]
            stages[-1]["cls_logits"] = torch.cat([torch.cat(things, 2), cls[:, np_:]], 1)
        return rpn, stages

    def forward(self, batched_inputs: List[dict]):
        """
        Args:
            batched_inputs: D2 dicts with ``image`` (3, H, W) and, in training, ``instances``.
        Returns:
            training: dict of weighted scalar losses.
            inference: list of dicts with ``instances`` / ``panoptic_seg`` / ``sem_seg``; a batch
                runs one image at a time where ``split_batch`` asks for it (each image then
                padded only to its own size, as when it comes alone).
        """
        if len(batched_inputs) > 1 and self._inference_mode_applies(self.split_batch):
            return [out for x in batched_inputs for out in self.forward([x])]
        images = self.preprocess_image(batched_inputs)
        if not self.training:
            return self.inference(self.forward_kernels(images)[1][-1], batched_inputs, images)
        targets = self.prepare_targets(batched_inputs, images)
        dn_targets = targets if self.denoising is not None else None
        rpn, stages = self.forward_kernels(images, dn_targets)
        # Matching and losses in float32, also under a mixed-precision trainer's autocast.
        with torch.autocast(images.tensor.device.type, enabled=False):
            stages = [_float32(s) for s in stages]
            losses = self.criterion(_float32(rpn), stages, targets)
            if self.denoising is not None:
                groups = [{"mask_logits": s["dn_mask_logits"], "cls_logits": s["dn_cls_logits"]}
                          for s in stages]
                losses.update(self.denoising.losses(self.criterion, groups, targets))
        return losses

    # ------------------------------------------------------------------ targets
    def prepare_targets(self, batched_inputs: List[dict], images: ImageList) -> List[dict]:
        """Soft stride-4 targets from the padded ground-truth masks (docs/reference.md §2.1).

        Masks of every image are padded to the batch size ``(Hp, Wp)`` and bilinearly
        downsampled to ``(Hp/4, Wp/4)`` in one call; values stay soft (not re-binarised).
        Boolean masks (BitMasks) travel to the device as 1-byte masks and take the exact
        shortcut of :func:`downsample_masks`; things are split from stuff by the classes on
        the host (no device synchronisation).

        Returns:
            per image: ``labels`` (M,), ``masks`` (M, h4, w4) float for things; ``stuff_labels``
            (S_b,), ``stuff_masks`` (S_b, h4, w4) for stuff (empty for instance models).
        """
        hp, wp = images.tensor.shape[-2:]
        out_size = (hp // self.mask_assign_stride, wp // self.mask_assign_stride)
        masks_per_image, classes, num_things = [], [], []
        for x in batched_inputs:
            inst = x["instances"]
            gt_masks = inst.gt_masks
            m = gt_masks.tensor if isinstance(gt_masks, BitMasks) else torch.as_tensor(gt_masks)
            labels = inst.gt_classes.to("cpu")
            layout = getattr(self, "class_layout", None)  # absent on stand-in parameter objects
            if layout is not None:
                labels = layout.to_knet(labels)
            is_thing = labels < self.num_thing_classes
            n_thing = int(is_thing.sum())
            if not bool(is_thing[:n_thing].all()):  # things first, keeping their order
                order = torch.argsort((~is_thing).to(torch.uint8), stable=True)
                m, labels = m[order.to(m.device)], labels[order]
            masks_per_image.append(m.to(self.device))
            classes.append(labels.to(self.device))
            num_things.append(n_thing)
        binary = all(m.dtype == torch.bool for m in masks_per_image)
        full = torch.zeros(
            (sum(m.shape[0] for m in masks_per_image), hp, wp),
            dtype=torch.bool if binary else torch.float32,
            device=self.device,
        )
        start = 0
        for m in masks_per_image:
            full[start : start + m.shape[0], : m.shape[-2], : m.shape[-1]] = m
            start += m.shape[0]
        all_masks = downsample_masks(full, out_size)
        targets = []
        counts = [m.shape[0] for m in masks_per_image]
        for masks, labels, n in zip(all_masks.split(counts), classes, num_things):
            targets.append({"labels": labels[:n], "masks": masks[:n],
                            "stuff_labels": labels[n:], "stuff_masks": masks[n:]})
        return targets

    # ------------------------------------------------------------------ inference
    def inference(
        self, last: dict, batched_inputs: List[dict], images: ImageList
    ) -> List[Dict[str, object]]:
        """Post-process the last stage (docs/reference.md §3) into D2's output format per image."""
        padded_size = tuple(images.tensor.shape[-2:])
        results = []
        np_, t = self.num_proposals, self.num_thing_classes
        for i, x in enumerate(batched_inputs):
            image_size = images.image_sizes[i]
            out_h = x.get("height", image_size[0])
            out_w = x.get("width", image_size[1])
            probs = retry_if_cuda_oom(rescale_masks)(
                last["mask_logits"][i], padded_size, image_size, (out_h, out_w)
            )
            cls_logits = last["cls_logits"][i]
            res: Dict[str, object] = {}
            if self.instance_on:
                res["instances"] = retry_if_cuda_oom(instance_inference)(
                    cls_logits[:np_],
                    probs[:np_],
                    t,
                    max_per_image=self.detections_per_image,
                    mask_threshold=self.mask_threshold,
                )
            if self.panoptic_on:
                res["panoptic_seg"] = retry_if_cuda_oom(panoptic_inference)(
                    cls_logits,
                    probs,
                    num_things=t,
                    num_stuff=self.num_stuff_classes,
                    num_proposals=np_,
                    instance_score_thresh=self.instance_score_thresh,
                    overlap_thresh=self.overlap_threshold,
                    mask_threshold=self.mask_threshold,
                )
            if self.semantic_on:
                res["sem_seg"] = retry_if_cuda_oom(semantic_inference)(cls_logits, probs)
            if self.class_layout is not None:
                res = self.class_layout.outputs_to_dataset(res)
            results.append(res)
        return results

    def extra_repr(self) -> str:
        return (
            f"things={self.num_thing_classes}, stuff={self.num_stuff_classes}, "
            f"proposals={self.num_proposals}, stages={len(self.update_heads)}"
        )

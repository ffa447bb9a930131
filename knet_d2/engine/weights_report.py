"""What a checkpoint filled in a model, and the refusal of a checkpoint that does not fit.

:class:`~knet_d2.engine.KNetCheckpointer` records a :class:`WeightsLoadReport` for every file it
loads (``checkpointer.last_load_report``). Inference (``train_net.py --eval-only``, the demo,
``tools/export_model.py``, :class:`knet_d2.Predictor`) calls :func:`check_inference_weights`,
which raises :class:`IncompatibleWeightsError` when any model tensor is missing from the
checkpoint or has another shape: running such a model would silently use randomly initialised
parts. ``MODEL.WEIGHTS_STRICT False`` turns the error into a warning. Training from ImageNet
weights (heads missing by design) only logs :meth:`WeightsLoadReport.summary`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import AbstractSet, List, Optional, Sequence, Tuple

from ..modeling.thing_softmax import MARKER as _SOFTMAX_MARKER

__all__ = [
    "IncompatibleWeightsError",
    "WeightsLoadReport",
    "check_inference_weights",
    "report_from_incompatible_keys",
]

logger = logging.getLogger(__name__)

#: how many parameter names an error message lists
MAX_LISTED_NAMES = 10
# Model tensors that a checkpoint need not provide: set from the config (pixel statistics) or
# not used at inference (BatchNorm step counters).
_NOT_REQUIRED_SUFFIXES = ("num_batches_tracked", "pixel_mean", "pixel_std")
_BACKBONE_PREFIX = "backbone."
_BOTTOM_UP_PREFIX = "backbone.bottom_up."

Shape = Tuple[int, ...]


def _is_softmax_marker(name: str) -> bool:
    """Whether a state-dict name is the marker of a THING_SOFTMAX model."""
    return name.endswith(_SOFTMAX_MARKER)


class IncompatibleWeightsError(ValueError):
    """A checkpoint that leaves model tensors missing or of another shape (named in the text)."""


@dataclass
class WeightsLoadReport:
    """How the tensors of one checkpoint matched the model.

    Attributes:
        filename: the checkpoint as given (path, URL or ``detectron2://`` name).
        total: model tensors that a checkpoint must provide (``state_dict`` entries except
            ``pixel_mean`` / ``pixel_std`` / BatchNorm ``num_batches_tracked``).
        missing: model tensors the checkpoint does not have.
        mismatched: ``(name, checkpoint shape, model shape)`` of tensors with another shape
            (not loaded).
        unexpected: checkpoint tensors the model has no place for (not loaded).
        source: what the file was converted from ("" when it was loaded as it is).
        backbone_prefix: names of the backbone proper (for :meth:`likely_causes`).
    """

    filename: str
    total: int
    missing: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, Shape, Shape]] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    source: str = ""
    backbone_prefix: str = _BACKBONE_PREFIX

    @property
    def matched(self) -> int:
        """Model tensors filled from the checkpoint."""
        return self.total - len(self.missing) - len(self.mismatched)

    @property
    def softmax_marker_unused(self) -> bool:
        """The checkpoint was trained with the softmax thing classifier
        (``MODEL.KNET.THING_SOFTMAX``), the model has the sigmoid one."""
        return any(map(_is_softmax_marker, self.unexpected))

    @property
    def softmax_marker_missing(self) -> bool:
        """The model has the softmax thing classifier, the checkpoint was trained without."""
        return any(map(_is_softmax_marker, self.missing))

    @property
    def complete(self) -> bool:
        """Every required model tensor was filled, and the checkpoint's class logits are of
        the model's kind (sigmoid or softmax thing classes)."""
        return not self.missing and not self.mismatched and not self.softmax_marker_unused

    def summary(self) -> str:
        """One line: the file, what it was converted from, and the counts."""
        what = f" (converted from {self.source})" if self.source else ""
        return (
            f"{self.filename}{what}: {self.matched} of {self.total} model tensors matched, "
            f"{len(self.missing)} missing, {len(self.mismatched)} with another shape, "
            f"{len(self.unexpected)} checkpoint tensors unused"
        )

    def likely_causes(self) -> List[str]:
        """Sentences naming what probably went wrong (empty when :attr:`complete`)."""
        if self.complete:
            return []
        causes = []
        if self.softmax_marker_unused or self.softmax_marker_missing:
            trained, model = ("True", "False") if self.softmax_marker_unused else ("False", "True")
            causes.append(
                f"a checkpoint trained with MODEL.KNET.THING_SOFTMAX {trained} in a model with "
                f"{model}: its class scores would be misread; set MODEL.KNET.THING_SOFTMAX "
                f"{trained}"
            )
            if all(map(_is_softmax_marker, self.missing)) and not self.mismatched:
                return causes
        prefix = self.backbone_prefix
        head_mismatch = [m for m in self.mismatched if not m[0].startswith(prefix)]
        backbone_missing = [k for k in self.missing if k.startswith(prefix)]
        backbone_mismatch = [m for m in self.mismatched if m[0].startswith(prefix)]
        head_missing = [k for k in self.missing
                        if not k.startswith(prefix) and not _is_softmax_marker(k)]
        matched_fraction = self.matched / max(self.total, 1)
        if matched_fraction < 0.1:
            causes.append(
                f"an unconverted file of an unknown layout or another model: only "
                f"{self.matched} of the model's {self.total} tensors have a name in it "
                "(official K-Net releases of mmdet / mmseg are converted automatically; "
                "other files need converting to knet_d2 names first)"
            )
            return causes
        if head_mismatch:
            name, ckpt, model = head_mismatch[0]
            causes.append(
                f"a checkpoint of another task or class count: {name} is "
                f"{list(ckpt)} in the checkpoint but {list(model)} in this config (e.g. an "
                "instance model (80 classes) for a panoptic config (133), or a model trained on "
                "another dataset)"
            )
        if backbone_missing or backbone_mismatch:
            causes.append(
                "a checkpoint of another backbone (e.g. ResNet-101 weights in a ResNet-50 "
                "config, or with / without DCN): check MODEL.BACKBONE, MODEL.RESNETS and "
                "MODEL.SWIN against the checkpoint"
            )
        if head_missing and not backbone_missing and not self.mismatched:
            causes.append(
                "an ImageNet-only (backbone) file: the backbone matched but "
                f"{len(head_missing)} head tensors are missing; inference needs trained K-Net "
                "weights (MODEL_ZOO.md, or a model_final.pth of your own run)"
            )
        if not causes:
            causes.append("a checkpoint written for another configuration of this model")
        return causes

    def error_message(self, what: str = "MODEL.WEIGHTS") -> str:
        """The text of :class:`IncompatibleWeightsError`; ``what`` names the checkpoint's role."""
        listed: List[str] = [
            f"{k} (checkpoint {list(c)}, model {list(m)})" for k, c, m in self.mismatched
        ]
        listed += [f"{k} (missing)" for k in self.missing]
        listed += [f"{k} (in the checkpoint only)" for k in filter(_is_softmax_marker,
                                                                   self.unexpected)]
        shown = ", ".join(listed[:MAX_LISTED_NAMES])
        extra = len(listed) - MAX_LISTED_NAMES
        more = f" and {extra} more" if extra > 0 else ""
        return (
            f"{what} {self.summary()}. Parameters not filled: {shown}{more}. "
            f"Likely cause: {'; or '.join(self.likely_causes())}. The model would run with "
            "randomly initialised parameters. Use the checkpoint released for this config "
            "(MODEL_ZOO.md) or one trained with it; set MODEL.WEIGHTS_STRICT False to run anyway."
        )


def _required(name: str) -> bool:
    return not name.endswith(_NOT_REQUIRED_SUFFIXES)


def report_from_incompatible_keys(
    filename: str,
    model_keys: Sequence[str],
    missing_keys: Sequence[str],
    unexpected_keys: Sequence[str],
    incorrect_shapes: Sequence[Tuple[str, Shape, Shape]],
    source: str = "",
    provided_keys: Optional[AbstractSet[str]] = None,
) -> WeightsLoadReport:
    """A report from fvcore's ``_IncompatibleKeys`` (whose ``missing_keys`` also hold the
    tensors skipped for their shape).

    ``provided_keys`` (the checkpoint's names, when they were not renamed by D2's matching
    heuristics) decide what is missing: ``missing_keys`` alone misses D2's ``FrozenBatchNorm2d``
    statistics, which it fills with 0 / 1 when a checkpoint lacks them.
    """
    mismatched = [(k, tuple(c), tuple(m)) for k, c, m in incorrect_shapes if _required(k)]
    skipped = {k for k, _, _ in mismatched}
    if provided_keys is not None:
        missing_keys = [k for k in model_keys if k not in provided_keys]
    backbone = _BACKBONE_PREFIX
    if any(k.startswith(_BOTTOM_UP_PREFIX) for k in model_keys):  # FPN models: not the FPN
        backbone = _BOTTOM_UP_PREFIX
    return WeightsLoadReport(
        filename=filename,
        total=sum(1 for k in model_keys if _required(k)),
        missing=[k for k in missing_keys if _required(k) and k not in skipped],
        mismatched=mismatched,
        unexpected=list(unexpected_keys),
        source=source,
        backbone_prefix=backbone,
    )


def check_inference_weights(
    report: Optional[WeightsLoadReport],
    *,
    strict: bool = True,
    weights: str = "",
    what: str = "MODEL.WEIGHTS",
) -> None:
    """Refuse weights that do not fill the whole model, for inference.

    Args:
        report: the checkpointer's ``last_load_report``; None = nothing was loaded.
        strict: raise (True, ``MODEL.WEIGHTS_STRICT``) or only log a warning (False).
        weights: ``MODEL.WEIGHTS``, for the message when nothing was loaded.
        what: the checkpoint's role, first word of the message (e.g. "--resume checkpoint").

    Raises:
        IncompatibleWeightsError: with ``strict``, when no checkpoint was loaded or a model
            tensor is missing from it or has another shape. The message names the file, the
            counts, up to :data:`MAX_LISTED_NAMES` parameters and the likely cause.
    """
    if report is None:
        msg = (
            f"no checkpoint was loaded (MODEL.WEIGHTS {weights!r}): inference would run a "
            "randomly initialised model. Set MODEL.WEIGHTS to trained weights (MODEL_ZOO.md), "
            "or MODEL.WEIGHTS_STRICT False to run anyway."
        )
    elif report.complete:
        logger.info(f"Loaded {report.summary()}.")
        return
    else:
        msg = report.error_message(what)
    if strict:
        raise IncompatibleWeightsError(msg)
    logger.warning(f"MODEL.WEIGHTS_STRICT is False, going on: {msg}")

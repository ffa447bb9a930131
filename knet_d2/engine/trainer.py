"""K-Net's Detectron2 trainer: D2's ``DefaultTrainer`` with K-Net's mappers, evaluators and
optimizer, atomic checkpoints, exact resume and a named non-finite-loss stop.

``train_net.py`` parses the command line and calls :func:`detectron2.engine.launch`; everything
that trains or evaluates lives here so that it can be imported (tests, notebooks, launchers).
"""
from __future__ import annotations

import functools
import logging
import os
import re
from collections import OrderedDict
from contextlib import contextmanager
from typing import Dict, List, Optional

import torch
from detectron2.config import CfgNode
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer
from detectron2.engine import defaults as d2_defaults
from detectron2.engine.defaults import default_writers
from detectron2.engine.hooks import EvalHook, PeriodicCheckpointer
from detectron2.evaluation import (
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
    verify_results,
)
from detectron2.utils import comm

from ..data.dataset_mappers import build_knet_test_mapper, build_knet_train_mapper
from ..data.image_io import ImageReadError
from ..data.skip_bad_samples import SkipBadSamples
from ..inference_options import inference_options
from ..solver import build_knet_optimizer
from .benchmark_evaluators import benchmark_evaluators
from .channels_last import train_in_channels_last
from .checkpointer import KNetCheckpointer
from .hooks import (
    IterationRNGHook,
    LossCapture,
    TrainerCheckpointHook,
    non_finite_loss_message,
)
from .mixed_precision import MixedPrecisionTrainer
from .preemption import PreemptionHook, children_take_default_signals
from .resumable_sampler import build_resumable_train_loader, resumable_sampler_of
from .time_budget import (
    EvalTimingHook,
    TimeBudgetHook,
    periodic_evaluations,
    train_adjustable,
)
from .weights_report import check_inference_weights
from .worker_failure import WatchedLoader, worker_failure_message

__all__ = ["Trainer", "build_knet_evaluator", "EvaluationDataError"]

logger = logging.getLogger("knet_d2")


class EvaluationDataError(RuntimeError):
    """An evaluation image is missing or unreadable; the message is one line naming it."""


def _original_message(error: BaseException) -> str:
    """The error's own message; for one re-raised from a DataLoader worker (whose text is
    "Caught X in DataLoader worker ... Original Traceback ...") its last line, without the
    exception name."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return re.sub(r"^[A-Za-z_][\w.]*(Error|Exception): ", "", lines[-1].strip())


def _task_flags(cfg: CfgNode) -> Dict[str, bool]:
    t = cfg.MODEL.KNET.TEST
    if cfg.MODEL.META_ARCHITECTURE != "KNet":  # semantic K-Net runs in D2's SemanticSegmentor
        return {"semantic": True, "instance": False, "panoptic": False}
    return {"semantic": t.SEMANTIC_ON, "instance": t.INSTANCE_ON, "panoptic": t.PANOPTIC_ON}


def build_knet_evaluator(
    cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None
) -> DatasetEvaluator:
    """D2 evaluators for ``dataset_name``, chosen by its ``evaluator_type`` and the task flags."""
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    meta = MetadataCatalog.get(dataset_name)
    evaluator_type = getattr(meta, "evaluator_type", None)
    flags = _task_flags(cfg)
    evaluators: List[DatasetEvaluator] = []
    if evaluator_type == "sem_seg" or (
        evaluator_type == "coco_panoptic_seg" and flags["semantic"]
        and getattr(meta, "sem_seg_root", None)
    ):
        evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
    if evaluator_type == "coco_panoptic_seg" and flags["panoptic"]:
        evaluators.append(COCOPanopticEvaluator(dataset_name, output_folder))
    if evaluator_type == "coco" or (evaluator_type == "coco_panoptic_seg" and flags["instance"]
                                    and getattr(meta, "json_file", None)):
        evaluators.append(
            COCOEvaluator(dataset_name, tasks=("bbox", "segm"), output_dir=output_folder)
        )
    # Cityscapes (PQ / AP / mIoU) and ADE20K panoptic (PQ / mIoU)
    evaluators += benchmark_evaluators(dataset_name, evaluator_type, flags, output_folder)
    if not evaluators:
        raise NotImplementedError(
            f"No evaluator for dataset '{dataset_name}' (evaluator_type={evaluator_type!r}) with "
            f"task flags {flags}: register the dataset with an evaluator_type of 'sem_seg', "
            "'coco', 'coco_panoptic_seg', 'cityscapes_panoptic_seg', 'cityscapes_instance', "
            "'cityscapes_sem_seg' or 'ade20k_panoptic_seg', or enable the matching "
            "MODEL.KNET.TEST.*_ON flag."
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)


@contextmanager
def _replacing_d2_default(name: str, replacement):
    """While ``DefaultTrainer.__init__`` runs: ``detectron2.engine.defaults.<name>``, which it
    calls, is ``replacement``."""
    original = getattr(d2_defaults, name)
    setattr(d2_defaults, name, replacement)
    try:
        yield
    finally:
        setattr(d2_defaults, name, original)


def _ddp_for_cpu_models(create):
    """D2's ``create_ddp_model`` passes ``device_ids=[local rank]``, which DDP refuses for a
    model on the CPU (multi-process CPU training, gloo); give such a model ``device_ids=None``."""

    def create_ddp_model(model, **kwargs):
        if not any(p.is_cuda for p in model.parameters()):
            kwargs.setdefault("device_ids", None)
        return create(model, **kwargs)

    return create_ddp_model


def _mixed_precision_trainer(cfg: CfgNode):
    """What D2 builds as its CUDA-only fp16 ``AMPTrainer`` with ``SOLVER.AMP.ENABLED``: a
    :class:`MixedPrecisionTrainer` for ``MODEL.DEVICE`` and ``SOLVER.AMP.PRECISION``."""
    return functools.partial(
        MixedPrecisionTrainer,
        device_type=torch.device(cfg.MODEL.DEVICE).type,
        precision=cfg.SOLVER.AMP.PRECISION,
    )


class Trainer(DefaultTrainer):
    """DefaultTrainer with K-Net's mappers, evaluators and optimizer, plus:

    * checkpoints written atomically and loaded safely (:class:`KNetCheckpointer`);
    * ``EXACT_RESUME``: a resumable data stream and per-iteration RNG seeds, so ``--resume``
      continues exactly where the interrupted run was;
    * a non-finite loss stops the run naming the iteration and the NaN/Inf loss terms;
    * ``PREEMPTION.SIGNALS`` stop the run after the current iteration with one checkpoint and
      exit code 75 (:class:`PreemptionHook`); a dead data-loader worker is named;
    * ``SOLVER.AMP``: fp16 on CUDA or bf16 on CUDA and the CPU (:class:`MixedPrecisionTrainer`);
    * ``SOLVER.CHANNELS_LAST``: channels-last image batches in training
      (:func:`~knet_d2.engine.channels_last.train_in_channels_last`);
    * ``SOLVER.TIME_BUDGET.SECONDS``: the schedule's length fitted to a wall-clock budget
      (:class:`~knet_d2.engine.time_budget.TimeBudgetHook`).
    """

    def __init__(self, cfg: CfgNode):
        ddp = _ddp_for_cpu_models(d2_defaults.create_ddp_model)
        with _replacing_d2_default("create_ddp_model", ddp), \
                _replacing_d2_default("AMPTrainer", _mixed_precision_trainer(cfg)):
            super().__init__(cfg)
        # The atomic checkpointer replaces the DetectionCheckpointer DefaultTrainer creates (same
        # model, directory and checkpointables); the checkpoint hook always saves through
        # ``self.checkpointer`` (TrainerCheckpointHook).
        self.checkpointer = KNetCheckpointer.from_checkpointer(self.checkpointer)
        sampler = resumable_sampler_of(self.data_loader)
        if sampler is not None:
            self.checkpointer.add_checkpointable("data_sampler", sampler)
        self._loss_capture = LossCapture(self.model)

    def build_hooks(self):
        hooks = [
            TrainerCheckpointHook.replacing(h) if isinstance(h, PeriodicCheckpointer) else h
            for h in super().build_hooks()
        ]
        if self._time_budget() > 0:
            hooks = self._budget_hooks(hooks)
        sampler = resumable_sampler_of(self.data_loader)
        if sampler is not None:
            hooks.insert(0, IterationRNGHook(lambda: sampler.seed))
        if self.cfg.PREEMPTION.SIGNALS:  # last: after the LR scheduler stepped, as checkpoints
            hooks.append(PreemptionHook(self.cfg.PREEMPTION.SIGNALS))
        return hooks

    def _time_budget(self) -> float:
        return float(self.cfg.SOLVER.TIME_BUDGET.SECONDS)

    def _budget_hooks(self, hooks: List) -> List:
        """D2's evaluation hook replaced by one whose period can follow the fitted schedule and
        which times its evaluations, followed by the :class:`TimeBudgetHook`."""
        (i,) = [k for k, h in enumerate(hooks) if isinstance(h, EvalHook)]
        period = self.cfg.TEST.EVAL_PERIOD
        evaluation = EvalTimingHook(
            period, self._test_and_keep_results,
            periodic_total=periodic_evaluations(self.cfg.SOLVER.MAX_ITER, period),
        )
        checkpoint = next((h for h in hooks if isinstance(h, PeriodicCheckpointer)), None)
        budget = TimeBudgetHook(
            self.cfg, self._time_budget(), self.cfg.SOLVER.TIME_BUDGET.FIT_PERIOD, evaluation,
            checkpoint_hook=checkpoint,
        )
        return hooks[:i] + [evaluation, budget] + hooks[i + 1:]

    def _test_and_keep_results(self):
        """What D2's evaluation hook runs: evaluate, keep the results (``last_eval_results``)
        for ``train()``'s ``TEST.EXPECTED_RESULTS`` check."""
        self.last_eval_results = self.test(self.cfg, self.model)
        return self.last_eval_results

    def build_writers(self):
        """D2's writers; with a time budget the console line has no ETA (the budget is it:
        each fit that changes the length is logged)."""
        if self._time_budget() > 0:
            return default_writers(self.cfg.OUTPUT_DIR, None)
        return super().build_writers()

    def train(self):
        try:
            if self._time_budget() > 0:  # D2's DefaultTrainer.train with an adjustable loop
                train_adjustable(self, self.start_iter, self.max_iter)
                if len(self.cfg.TEST.EXPECTED_RESULTS) and comm.is_main_process():
                    assert hasattr(self, "last_eval_results"), (
                        "No evaluation results obtained during training!"  # as D2's train()
                    )
                    verify_results(self.cfg, self.last_eval_results)
                    return self.last_eval_results
                return None
            return super().train()
        except (RuntimeError, OSError, EOFError) as e:
            message = worker_failure_message(
                self.iter, e, getattr(self.data_loader, "iterator", None)
            )
            if message is None:
                raise
            raise RuntimeError(message) from e

    def resume_or_load(self, resume: bool = True) -> None:
        if resume:  # temporary files of a save that was killed (never used, see checkpointer)
            self.checkpointer.remove_stale_temporary_files()
        resuming = resume and self.checkpointer.has_checkpoint()
        super().resume_or_load(resume=resume)
        report = self.checkpointer.last_load_report
        if resuming:  # our own checkpoint of this run: every parameter must fit
            check_inference_weights(
                report, strict=self.cfg.MODEL.WEIGHTS_STRICT, what="--resume checkpoint"
            )
        elif report is not None:  # initial weights (ImageNet: heads missing by design)
            logger.info(f"Initial weights {report.summary()}.")
        sampler = resumable_sampler_of(self.data_loader)
        if sampler is not None:  # the loader's iterator is created lazily, at the first step
            sampler.set_start_iter(self.start_iter)

    def run_step(self):
        try:
            super().run_step()
        except FloatingPointError as e:
            raise FloatingPointError(
                non_finite_loss_message(self.iter, self._loss_capture.last)
            ) from e

    @classmethod
    def build_model(cls, cfg):
        """D2's model; with ``SOLVER.CHANNELS_LAST`` its backbone gets channels-last image
        batches while it trains (evaluation and ``--eval-only`` are not affected)."""
        model = super().build_model(cfg)
        if cfg.SOLVER.CHANNELS_LAST:
            train_in_channels_last(model)
        return model

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_knet_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg):
        """K-Net's training mapper (bad samples skipped with ``DATALOADER.SKIP_BAD_SAMPLES``), the
        resumable loader with ``EXACT_RESUME``, wrapped so that a dead worker can be named."""
        mapper = build_knet_train_mapper(cfg)
        if cfg.DATALOADER.SKIP_BAD_SAMPLES:
            mapper = SkipBadSamples(mapper)
        if cfg.EXACT_RESUME and cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler":
            return WatchedLoader(build_resumable_train_loader(cfg, mapper))
        if cfg.EXACT_RESUME:
            logger.warning(
                f"EXACT_RESUME needs DATALOADER.SAMPLER_TRAIN 'TrainingSampler' (got "
                f"'{cfg.DATALOADER.SAMPLER_TRAIN}'): using D2's loader; --resume will not "
                "replay the same data order."
            )
        return WatchedLoader(build_detection_train_loader(cfg, mapper=mapper))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        """D2's test loader with the K-Net mapper in evaluation mode (same image reading as
        in training: 16-bit / CMYK images converted, unreadable files named), batches of
        ``TEST.IMS_PER_BATCH`` images."""
        return build_detection_test_loader(
            cfg, dataset_name, mapper=build_knet_test_mapper(cfg),
            batch_size=cfg.TEST.IMS_PER_BATCH,
        )

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """D2's ``test``; a missing / unreadable image raises :class:`EvaluationDataError`
        naming the file, instead of a data-loader worker traceback. The model's kernel path
        runs in ``TEST.PRECISION`` and through ``torch.compile`` with ``TEST.COMPILE``
        (:mod:`knet_d2.inference_options`; the model is restored afterwards). Processes the
        evaluation forks (e.g. panopticapi's pool) take the default action for the preemption
        signals (:func:`~knet_d2.engine.preemption.children_take_default_signals`)."""
        try:
            with inference_options(model, cfg.TEST.PRECISION, cfg.TEST.COMPILE), \
                    children_take_default_signals():
                return super().test(cfg, model, evaluators)
        except (FileNotFoundError, ImageReadError) as e:
            raise EvaluationDataError(
                f"evaluation stopped: {_original_message(e)} (train_net.py --check-data lists "
                "every missing or unreadable file of the configured datasets)"
            ) from None

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_knet_optimizer(cfg, model)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        from ..test_time_augmentation import SemanticSegmentorWithTTA

        logger.info("Running inference with test-time augmentation ...")
        model = SemanticSegmentorWithTTA(cfg, model)
        evaluators = [
            cls.build_evaluator(
                cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA")
            )
            for name in cfg.DATASETS.TEST
        ]
        res = cls.test(cfg, model, evaluators)
        return OrderedDict({k + "_TTA": v for k, v in res.items()})

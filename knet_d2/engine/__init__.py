"""Training infrastructure: crash-safe checkpoints, exactly resumable data, start-up checks.

* :class:`KNetCheckpointer` — atomic checkpoint writes, ``weights_only`` / restricted loading.
* :func:`build_resumable_train_loader` + :class:`IterationRNGHook` — ``EXACT_RESUME``.
* :mod:`.startup_checks` — configuration mistakes reported before training starts.
* :mod:`.defaults` — what the command-line tools run around the Trainer: the config with its
  datasets registered (:func:`knet_d2.get_knet_cfg`), the argument parser, the output setup.
* :class:`MixedPrecisionTrainer` — ``SOLVER.AMP``: fp16 on CUDA, bf16 on CUDA or the CPU.
* :func:`train_in_channels_last` — ``SOLVER.CHANNELS_LAST``: NHWC image batches in training.
* :func:`keep_freed_host_memory` — ``KEEP_FREED_HOST_MEMORY``: malloc keeps freed memory.
* :mod:`.weights_report` — what a checkpoint filled; :func:`check_inference_weights` refuses
  one that leaves model parameters missing or of another shape.
"""
from .channels_last import train_in_channels_last
from .checkpointer import KNetCheckpointer
from .hooks import IterationRNGHook, LossCapture, non_finite_loss_message
from .host_memory import keep_freed_host_memory
from .mixed_precision import MixedPrecisionTrainer
from .resumable_sampler import (
    ResumableTrainingSampler,
    SeededMapDataset,
    build_resumable_train_loader,
    resumable_sampler_of,
)
from .startup_checks import (
    apply_determinism,
    check_model_weights,
    check_num_classes,
    check_output_dir,
    run_startup_checks,
)
from .weights_report import (
    IncompatibleWeightsError,
    WeightsLoadReport,
    check_inference_weights,
)

__all__ = [
    "train_in_channels_last",
    "KNetCheckpointer",
    "IterationRNGHook",
    "LossCapture",
    "non_finite_loss_message",
    "MixedPrecisionTrainer",
    "keep_freed_host_memory",
    "ResumableTrainingSampler",
    "SeededMapDataset",
    "build_resumable_train_loader",
    "resumable_sampler_of",
    "apply_determinism",
    "check_model_weights",
    "check_num_classes",
    "check_output_dir",
    "run_startup_checks",
    "IncompatibleWeightsError",
    "WeightsLoadReport",
    "check_inference_weights",
]

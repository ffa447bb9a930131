"""Mixed-precision training (``SOLVER.AMP``) on CUDA and on the CPU.

Detectron2's ``AMPTrainer`` autocasts to fp16 on CUDA only (on a CPU it stops at its first step).
:class:`MixedPrecisionTrainer` takes its place in :class:`knet_d2.engine.Trainer`:

* ``SOLVER.AMP.PRECISION "fp16"`` (Detectron2's behaviour): CUDA autocast to float16 with a
  gradient scaler (its state is saved in the checkpoints, as D2's is);
* ``"bf16"``: autocast to bfloat16 on CUDA or on the CPU (oneDNN's bf16 kernels on CPUs with
  AVX512-BF16 / AMX), without a scaler: bfloat16 has float32's exponent range.

Only the forward runs under autocast. K-Net computes its matching and losses in float32 even
then (:meth:`knet_d2.KNet.forward`); the optimizer keeps float32 weights.
"""
from __future__ import annotations

import time
from typing import Dict, Optional

import torch
from detectron2.engine import SimpleTrainer

from ..config import ConfigError

__all__ = ["AMP_PRECISIONS", "MixedPrecisionTrainer", "check_mixed_precision"]

#: ``SOLVER.AMP.PRECISION`` -> autocast dtype
AMP_PRECISIONS: Dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16}


def check_mixed_precision(enabled: bool, precision: str, device: str) -> None:
    """Raise :class:`ConfigError` for a ``SOLVER.AMP`` setting the device cannot train with."""
    if not enabled:
        return
    if precision not in AMP_PRECISIONS:
        raise ConfigError(
            f"SOLVER.AMP.PRECISION must be one of {sorted(AMP_PRECISIONS)}, got {precision!r}"
        )
    device_type = torch.device(device).type
    if device_type not in ("cuda", "cpu"):
        raise ConfigError(f"SOLVER.AMP: mixed-precision training runs on cuda or cpu, not {device}")
    if device_type == "cpu" and precision == "fp16":
        raise ConfigError(
            "SOLVER.AMP.ENABLED with PRECISION 'fp16' needs CUDA; on the CPU set "
            "SOLVER.AMP.PRECISION bf16 (or SOLVER.AMP.ENABLED False)"
        )


class MixedPrecisionTrainer(SimpleTrainer):
    """D2's ``SimpleTrainer`` step with the forward under ``torch.autocast``.

    Same arguments as ``SimpleTrainer``, plus ``device_type`` ("cuda" or "cpu") and ``precision``
    (a key of :data:`AMP_PRECISIONS`). fp16 scales the loss (``torch.amp.GradScaler``; its
    ``step`` unscales the gradients before the optimizer's, so the gradient clipping inside
    K-Net's optimizer sees their true norm); bf16 does not scale.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        data_loader,
        optimizer: torch.optim.Optimizer,
        gather_metric_period: int = 1,
        zero_grad_before_forward: bool = False,
        async_write_metrics: bool = False,
        *,
        device_type: str,
        precision: str,
    ):
        check_mixed_precision(True, precision, device_type)
        super().__init__(
            model, data_loader, optimizer, gather_metric_period, zero_grad_before_forward,
            async_write_metrics,
        )
        self.device_type = device_type
        self.precision = precision
        self.grad_scaler: Optional[torch.amp.GradScaler] = (
            torch.amp.GradScaler(device_type) if precision == "fp16" else None
        )

    def run_step(self) -> None:
        assert self.model.training, "[MixedPrecisionTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast(self.device_type, dtype=AMP_PRECISIONS[self.precision]):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses = loss_dict
                loss_dict = {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        if self.grad_scaler is not None:
            self.grad_scaler.scale(losses).backward()
        else:
            losses.backward()
        self.after_backward()
        if self.async_write_metrics:
            self.concurrent_executor.submit(
                self._write_metrics, loss_dict, data_time, iter=self.iter
            )
        else:
            self._write_metrics(loss_dict, data_time)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()

    def state_dict(self) -> dict:
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])

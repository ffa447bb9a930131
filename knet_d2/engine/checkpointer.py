"""Crash-safe saving and code-free loading of checkpoints (:class:`KNetCheckpointer`).

Saving (D2's ``DetectionCheckpointer`` writes ``model_XXXXXXX.pth`` in place, so a process killed
mid-write leaves a torn file that ``--resume`` then picks up):

1. the checkpoint is written to ``.<name>.pth.<random>.tmp`` in the same directory, flushed and
   ``fsync``-ed;
2. it is renamed onto ``<name>.pth`` with ``os.replace`` (atomic on POSIX and Windows), then the
   directory is ``fsync``-ed;
3. only then is ``last_checkpoint`` rewritten, through the same temp-file + rename steps.

So ``last_checkpoint`` always names a complete file, and a temporary file is never loaded
(its name does not end in ``.pth``). :meth:`KNetCheckpointer.remove_stale_temporary_files`
deletes the leftovers of a killed save (``train_net.Trainer`` calls it when a run resumes; an
``--eval-only`` run leaves them alone, since a training run may be writing into the directory).

Loading: ``.pth`` files through ``torch.load(weights_only=True)``, ``.pkl`` files through a
restricted unpickler; a file that needs full unpickling loads with a warning
(``knet_d2/checkpoint/loading.py``). Official K-Net releases are converted on load.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
from typing import IO, Any, Callable, Dict, List, Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..checkpoint.io import TEMP_SUFFIX, atomic_write
from ..checkpoint.loading import (
    CorruptCheckpointError,
    read_d2_pickle,
    strip_prefix,
    torch_load_weights_first,
)
from ..checkpoint.official_loading import convert_if_official
from .weights_report import WeightsLoadReport, report_from_incompatible_keys

__all__ = ["KNetCheckpointer", "CorruptCheckpointError"]

logger = logging.getLogger(__name__)

# The temporary files a KNetCheckpointer writes: ".<name>.pth.<8 hex>.tmp" and the tag's.
_TEMP_NAME = re.compile(r"\.(?:.+\.pth|last_checkpoint)\.[0-9a-f]{8}" + re.escape(TEMP_SUFFIX))


def _atomic_write_or_explain_disk_full(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """:func:`~knet_d2.checkpoint.io.atomic_write`; a full disk (ENOSPC / EDQUOT) is re-raised
    as an ``OSError(ENOSPC)`` that names the directory, its free space and what to do."""
    try:
        atomic_write(path, write)
    except BaseException as e:
        if _is_disk_full(e):
            directory = os.path.dirname(os.path.abspath(path))
            raise OSError(errno.ENOSPC, _disk_full_message(path, directory)) from e
        raise


def _is_disk_full(err: BaseException) -> bool:
    """``err`` or an error it wraps (``torch.save`` turns a failed write into a RuntimeError)
    is ENOSPC / EDQUOT."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        err = err.__cause__ or err.__context__
    return False


def _disk_full_message(path: str, directory: str) -> str:
    try:
        usage = shutil.disk_usage(directory)
        free = f"{usage.free / 2**20:.1f} MiB free of {usage.total / 2**30:.1f} GiB"
    except OSError:
        free = "free space unknown"
    return (
        f"No space left on the device of {directory} ({free}) while writing {path}. The "
        "incomplete file was removed; the previous checkpoints and last_checkpoint are "
        "unchanged. Free some space (e.g. delete old model_*.pth) or set another OUTPUT_DIR, "
        "then continue with --resume."
    )


def _is_local_dir(path: str) -> bool:
    return bool(path) and "://" not in path


class KNetCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with atomic saves and safe loading (see the module docstring).

    Same constructor, ``save`` / ``load`` / ``resume_or_load`` contract and file names as D2's;
    a non-local ``save_dir`` (a PathManager URL) falls back to D2's plain writes.

    As D2's checkpointer converts Caffe2 / pycls files on load, this one converts official K-Net
    releases (mmdet / mmseg layout, :func:`knet_d2.checkpoint.convert_if_official`) in memory,
    so a downloaded release (local path, ``https://`` URL or ``detectron2://`` name) can be
    ``MODEL.WEIGHTS`` directly. D2's own ``DetectionCheckpointer`` (used inside
    ``DefaultPredictor``) does not: build models through this class, ``knet_d2.Predictor`` or
    ``knet_d2.model_zoo.get``, or convert the file once with ``tools/convert_knet_to_d2.py``.

    Attributes:
        last_load_report: :class:`WeightsLoadReport` of the last :meth:`load` (None when it
            loaded nothing); pass it to :func:`~knet_d2.engine.check_inference_weights`.
    """

    last_load_report: Optional[WeightsLoadReport] = None

    @classmethod
    def from_checkpointer(cls, other: DetectionCheckpointer) -> KNetCheckpointer:
        """A ``KNetCheckpointer`` with ``other``'s model, directory, rank setting and
        checkpointables (e.g. to replace the one ``DefaultTrainer.__init__`` creates)."""
        new = cls(other.model, other.save_dir, save_to_disk=other.save_to_disk)
        for key, obj in other.checkpointables.items():
            new.add_checkpointable(key, obj)
        return new

    # ------------------------------------------------------------------ saving
    def save(self, name: str, **kwargs: Any) -> None:
        """Write ``<save_dir>/<name>.pth`` (model, checkpointables, ``kwargs``) atomically, then
        point ``last_checkpoint`` at it. Does nothing on non-saving ranks."""
        if not self.save_dir or not self.save_to_disk:
            return
        if not _is_local_dir(self.save_dir):
            super().save(name, **kwargs)
            return
        data: Dict[str, Any] = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        if os.path.basename(path) != basename:
            raise ValueError(f"checkpoint name must be a plain file name, got {name!r}")
        self.logger.info(f"Saving checkpoint to {path}")
        _atomic_write_or_explain_disk_full(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically make ``<save_dir>/last_checkpoint`` name ``last_filename_basename``."""
        if not _is_local_dir(self.save_dir):
            super().tag_last_checkpoint(last_filename_basename)
            return
        text = last_filename_basename.encode("utf-8")
        _atomic_write_or_explain_disk_full(
            os.path.join(self.save_dir, "last_checkpoint"), lambda f: f.write(text)
        )

    # ------------------------------------------------------------------ resuming
    def stale_temporary_files(self) -> List[str]:
        """Temporary files of saves that never completed (a process killed mid-save)."""
        if not _is_local_dir(self.save_dir) or not os.path.isdir(self.save_dir):
            return []
        return sorted(
            os.path.join(self.save_dir, f) for f in os.listdir(self.save_dir)
            if _TEMP_NAME.fullmatch(f) and os.path.isfile(os.path.join(self.save_dir, f))
        )

    def remove_stale_temporary_files(self) -> List[str]:
        """Delete :meth:`stale_temporary_files` (on the saving rank only); returns them."""
        if not self.save_to_disk:
            return []
        removed = []
        for path in self.stale_temporary_files():
            logger.warning(
                f"Removing {path}: the incomplete temporary file of a checkpoint save that was "
                "interrupted; it was never used."
            )
            try:
                os.remove(path)
                removed.append(path)
            except FileNotFoundError:
                pass
        return removed

    def get_checkpoint_file(self) -> str:
        """The checkpoint named by ``last_checkpoint`` ("" if there is no tag file).

        Raises ``FileNotFoundError`` when the tag names a file that does not exist, instead of
        failing later with a bare assertion.
        """
        path = super().get_checkpoint_file()
        if path and _is_local_dir(self.save_dir) and not os.path.isfile(path):
            others = sorted(os.path.basename(p) for p in self.get_all_checkpoint_files())
            raise FileNotFoundError(
                f"{os.path.join(self.save_dir, 'last_checkpoint')} names {path}, which does not "
                f"exist (checkpoints present: {others or 'none'}). Write the name of the "
                "checkpoint to resume from into last_checkpoint, or start a new run without "
                "--resume."
            )
        return path

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """D2's ``resume_or_load``; when resuming, a ``last_checkpoint`` that names an
        unreadable (truncated / corrupt) file is reported by name and the newest readable
        checkpoint in ``save_dir`` is loaded instead. No readable checkpoint at all raises
        :class:`CorruptCheckpointError` (never a silent restart from iteration 0)."""
        if not (resume and self.has_checkpoint()):
            return super().resume_or_load(path, resume=resume)
        tagged = self.get_checkpoint_file()
        others = [p for p in self.get_all_checkpoint_files() if p != tagged]
        others.sort(key=lambda p: (os.path.getmtime(p), p), reverse=True)  # newest first
        bad: List[str] = []
        first_error = ""
        for candidate in [tagged] + others:
            try:
                # A file is read completely before any state is loaded from it.
                checkpoint = self.load(candidate)
            except CorruptCheckpointError as e:
                logger.error(f"--resume: {e}")
                bad.append(candidate)
                first_error = first_error or str(e)
                # D2's load() resets this URL state only when it returns.
                if getattr(self, "_parsed_url_during_load", None) is not None:
                    self._parsed_url_during_load = None
                continue
            if bad:
                logger.warning(
                    f"--resume: last_checkpoint names {tagged}, which cannot be read; resumed "
                    f"from {candidate} instead, the newest complete checkpoint (unreadable: "
                    f"{', '.join(bad)})."
                )
            return checkpoint
        raise CorruptCheckpointError(
            f"--resume: no readable checkpoint in {self.save_dir} (unreadable: {', '.join(bad)}). "
            f"{first_error} Resume from a copy of a good checkpoint (write its file name into "
            "last_checkpoint) or start a new run in another OUTPUT_DIR."
        )

    # ------------------------------------------------------------------ loading
    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> Dict[str, Any]:
        """D2's ``load``; afterwards :attr:`last_load_report` says what the file filled (None
        when ``path`` is empty). Official K-Net releases are converted on load."""
        self.last_load_report = None
        self._loading = path
        try:
            return super().load(path, checkpointables)
        finally:
            self._loading = None

    def _load_file(self, filename: str) -> Dict[str, Any]:
        if filename.endswith(".pkl"):
            return self._load_pkl(filename)
        loaded = super()._load_file(filename)
        converted = convert_if_official(loaded, getattr(self, "_loading", None) or filename)
        return loaded if converted is None else converted

    def _load_model(self, checkpoint: Dict[str, Any]) -> Any:
        """D2's ``_load_model``, recording a :class:`WeightsLoadReport` (before the tensors are
        consumed, for the model's key list)."""
        model_keys = list(self.model.state_dict())
        source = checkpoint.get("knet_source", "")
        provided = None  # names renamed by D2's matching heuristics: trust its missing_keys
        if not checkpoint.get("matching_heuristics", False):
            provided = set(strip_prefix(dict.fromkeys(checkpoint["model"]), "module."))
        incompatible = super()._load_model(checkpoint)
        if source:
            self._warn_if_neck_differs(source)
        self.last_load_report = report_from_incompatible_keys(
            getattr(self, "_loading", None) or "<checkpoint>",
            model_keys,
            incompatible.missing_keys,
            incompatible.unexpected_keys,
            incompatible.incorrect_shapes,
            source=source,
            provided_keys=provided,
        )
        return incompatible

    def _warn_if_neck_differs(self, source: str) -> None:
        """The official releases were trained with the stride-8 neck; their tensors also fit a
        ``MODEL.KNET.NECK.OUT_STRIDE 4`` model, whose outputs then differ from the release's."""
        model = self.model.module if hasattr(self.model, "module") else self.model
        out_stride = getattr(getattr(model, "neck", None), "out_stride", 8)
        if out_stride != 8:
            self.logger.warning(
                f"{getattr(self, '_loading', None) or '<checkpoint>'}: the official K-Net "
                f"weights ({source}) were trained with the stride-8 neck; this model's neck "
                f"fuses at stride {out_stride} (MODEL.KNET.NECK.OUT_STRIDE): every tensor "
                "loads, but the outputs will differ from the release's until it is fine-tuned"
            )

    def _torch_load(self, f: str) -> Any:
        """``torch.load(weights_only=True)``; full unpickling only with a warning."""
        return torch_load_weights_first(f)

    def _load_pkl(self, filename: str) -> Dict[str, Any]:
        """A D2 model-zoo (``{"model": ..., "__author__": ...}``) or Caffe2 (``{"blobs": ...}``
        or a bare name -> array dict) pickle, as D2's ``DetectionCheckpointer`` reads it."""
        with self.path_manager.open(filename, "rb") as f:
            raw = f.read()
        return read_d2_pickle(raw, filename)

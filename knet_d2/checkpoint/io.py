"""Writing checkpoint files: the one atomic writer of knet_d2 and the converter outputs.

:func:`atomic_write` is used for every file knet_d2 writes that a crash must not tear: training
checkpoints and ``last_checkpoint`` (:class:`knet_d2.engine.KNetCheckpointer`) and the outputs
of the layout converters (``tools/convert*.py``), which are never allowed to replace an existing
file. Converter outputs are either Detectron2 pickles ``{"model": {name: numpy array},
"__author__": ..., "matching_heuristics": True}`` (:func:`write_d2_pickle`, ImageNet backbones)
or ``torch.save`` files (:func:`save_new_torch_file`, converted K-Net releases).
"""
from __future__ import annotations

import os
import pickle
import secrets
from typing import IO, Any, Callable, Mapping, Optional

import torch

__all__ = [
    "TEMP_SUFFIX",
    "atomic_write",
    "check_paths",
    "save_new_torch_file",
    "write_d2_pickle",
]

#: suffix of the temporary files written by :func:`atomic_write`
TEMP_SUFFIX = ".tmp"


def _fsync_dir(path: str) -> None:
    """Make a rename in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _publish_new(tmp: str, path: str) -> None:
    """Give the complete file ``tmp`` the name ``path``, failing if ``path`` exists."""
    try:
        os.link(tmp, path)  # atomic and never replaces: EEXIST when path exists
    except FileExistsError:
        raise FileExistsError(f"refusing to overwrite existing file: {path}") from None
    except OSError:  # a file system without hard links: check, then rename
        if os.path.lexists(path):
            raise FileExistsError(f"refusing to overwrite existing file: {path}") from None
        os.replace(tmp, path)
        return
    os.remove(tmp)


def atomic_write(
    path: str, write: Callable[[IO[bytes]], None], *, overwrite: bool = True
) -> None:
    """Write a file so that ``path`` is either its old content or the complete new one.

    ``write(f)`` fills a binary file ``<dir>/.<basename>.<random>.tmp``; the temporary file is
    flushed, fsync-ed and renamed onto ``path`` (``os.replace``), then the directory is
    fsync-ed. On any error the temporary file is removed and the error re-raised. A process
    killed in between leaves only the temporary file behind, never a torn ``path``.

    Args:
        path: the file to write; its directory is created when missing.
        write: fills the open binary file.
        overwrite: False = raise ``FileExistsError`` (nothing written) when ``path`` exists,
            also when another process creates it while ``write`` runs.
    """
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"refusing to overwrite existing file: {path}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(
        directory, f".{os.path.basename(path)}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    )
    # O_EXCL: never reuse a file; mode 0o666 (minus umask) as a plain open() would create.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(directory)


def check_paths(src: str, dst: str) -> Optional[str]:
    """The message to print (exit status 2) when ``src`` is missing or ``dst`` exists, else None."""
    if not os.path.isfile(src):
        return f"input checkpoint not found: {src}"
    if os.path.exists(dst):
        return f"refusing to overwrite existing file: {dst}"
    return None


def write_d2_pickle(tensors: Mapping[str, torch.Tensor], dst: str, author: str) -> None:
    """Write ``tensors`` as a D2 pickle (matching heuristics on) to ``dst``, atomically.

    Raises:
        FileExistsError: when ``dst`` exists (never overwritten).
    """
    payload = {
        "model": {k: v.detach().cpu().numpy() for k, v in tensors.items()},
        "__author__": author,
        "matching_heuristics": True,
    }
    atomic_write(dst, lambda f: pickle.dump(payload, f), overwrite=False)


def save_new_torch_file(payload: Any, dst: str) -> None:
    """``torch.save(payload)`` to the new file ``dst``, atomically.

    Raises:
        FileExistsError: when ``dst`` exists (never overwritten).
    """
    atomic_write(dst, lambda f: torch.save(payload, f), overwrite=False)

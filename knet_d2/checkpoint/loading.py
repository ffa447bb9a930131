"""Reading checkpoint files without running code, and finding the state dict inside them.

* ``.pth`` files (knet_d2's, D2's, released ones) go through ``torch.load(weights_only=True)``,
  which rebuilds only tensors and plain containers (:func:`torch_load_weights_first`). A file
  that needs full unpickling is loaded with a warning that unpickling can execute code (only
  load files you trust).
* ``.pkl`` files (D2 / Caffe2 model zoo, ``tools/convert-*.py`` outputs) are read by a
  restricted unpickler that accepts only numpy arrays/scalars and plain containers
  (:func:`load_pickle_restricted`, :func:`read_d2_pickle`); any other object in the file
  triggers the same warning before a full ``pickle`` load.
* :func:`unwrap_state_dict` / :func:`strip_prefix` find the tensors in what was loaded (mmcv
  ``state_dict`` / D2 ``model`` wrappers, the ``module.`` prefix of DDP).
"""
from __future__ import annotations

import io
import logging
import pickle
from typing import IO, Any, Dict, Mapping

import torch
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

__all__ = [
    "ConversionError",
    "CorruptCheckpointError",
    "DisallowedPickleGlobal",
    "load_pickle_restricted",
    "load_state_dict_file",
    "read_d2_pickle",
    "strip_prefix",
    "torch_load_weights_first",
    "unwrap_state_dict",
]

logger = logging.getLogger(__name__)

# Globals a model-zoo pickle (dicts of numpy arrays) may reference: numpy array/scalar/dtype
# reconstruction (numpy 1.x and 2.x module names), OrderedDict, and ``_codecs.encode`` which
# Python 3 uses for ``bytes`` in protocol-2 pickles.
_SAFE_PICKLE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # arrays in protocol-5 pickles
    ("numpy._core.numeric", "_frombuffer"),
}

_CODE_EXECUTION_WARNING = (
    "%s needs full unpickling (%s), which can execute arbitrary code: load only files from a "
    "source you trust."
)


class CorruptCheckpointError(ValueError):
    """A checkpoint file that cannot be read (truncated, torn or not a checkpoint)."""


class ConversionError(ValueError):
    """A converter input that cannot be converted; the message names the file."""


class DisallowedPickleGlobal(pickle.UnpicklingError):
    """:func:`load_pickle_restricted` met a global outside its allow-list (message: its name)."""


def _corrupt(filename: str, err: BaseException) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"Cannot read checkpoint {filename}: the file is incomplete or corrupt "
        f"({type(err).__name__}: {err}). Delete it, or resume from an earlier checkpoint by "
        "writing its file name into last_checkpoint."
    )


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_PICKLE_GLOBALS or (
            module.startswith("numpy.dtypes") and name.endswith("DType")
        ):
            return super().find_class(module, name)
        raise DisallowedPickleGlobal(f"{module}.{name}")


def load_pickle_restricted(f: IO[bytes], **kwargs: Any) -> Any:
    """``pickle.load`` that only rebuilds numpy arrays/scalars and plain Python containers.

    Raises :class:`DisallowedPickleGlobal` (a ``pickle.UnpicklingError``; message: the refused
    ``module.name``) when the file references any other global.
    """
    return _RestrictedUnpickler(f, **kwargs).load()


def _weights_only_reason(err: BaseException) -> str:
    """The line of torch's weights_only error that names the refused object."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for ln in lines:
        if "WeightsUnpickler error" in ln:
            return "torch.load(weights_only=True) refused it: " + ln.split(":", 1)[1].strip()
    return "torch.load(weights_only=True) refused it" + (f": {lines[0]}" if lines else "")


def torch_load_weights_first(filename: str) -> Any:
    """``torch.load(filename, weights_only=True)`` on the CPU; full unpickling only with a
    warning (naming the refused object) when the file needs it.

    Raises:
        CorruptCheckpointError: naming ``filename``, when it is not a readable torch file.
    """
    try:
        return torch.load(filename, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" not in str(e) and "Weights only" not in str(e):
            raise _corrupt(filename, e) from e
        logger.warning(_CODE_EXECUTION_WARNING, filename, _weights_only_reason(e))
    except (RuntimeError, EOFError) as e:
        raise _corrupt(filename, e) from e
    try:
        return torch.load(filename, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise _corrupt(filename, e) from e


def read_d2_pickle(raw: bytes, filename: str) -> Dict[str, Any]:
    """The checkpoint in the bytes ``raw`` of a ``.pkl`` file, as D2's ``DetectionCheckpointer``
    reads it: a D2 model-zoo file (``{"model": ..., "__author__": ...}``) as it is, a Caffe2 file
    (``{"blobs": ...}`` or a bare name -> array dict) as ``{"model": weights, "__author__":
    "Caffe2", "matching_heuristics": True}`` without its ``*_momentum`` blobs.

    Raises:
        CorruptCheckpointError: ``raw`` is not a pickle.
        ValueError: the pickle is not a dict; both name ``filename``.
    """
    try:
        data = load_pickle_restricted(io.BytesIO(raw), encoding="latin1")
    except DisallowedPickleGlobal as e:
        logger.warning(_CODE_EXECUTION_WARNING, filename, f"it contains a {e} object")
        data = pickle.loads(raw, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise _corrupt(filename, e) from e
    if not isinstance(data, dict):
        raise ValueError(
            f"{filename}: expected a pickled dict of weights, got {type(data).__name__}"
        )
    if "model" in data and "__author__" in data:
        logger.info(f"Reading a file from '{data['__author__']}'")
        return data
    weights = data.get("blobs", data)
    weights = {k: v for k, v in weights.items() if not k.endswith("_momentum")}
    return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}


def strip_prefix(state_dict: Mapping[str, Any], prefix: str = "module.") -> Dict[str, Any]:
    """A copy of ``state_dict`` with ``prefix`` (DDP's ``module.``) removed from every key that
    starts with it (``torch.nn.modules.utils.consume_prefix_in_state_dict_if_present``)."""
    out = dict(state_dict)
    consume_prefix_in_state_dict_if_present(out, prefix)
    return out


def unwrap_state_dict(checkpoint: Any) -> Dict[str, Any]:
    """The state dict inside a loaded checkpoint.

    Accepts an mmcv checkpoint ``{"meta": ..., "state_dict": ..., ["optimizer": ...]}``, a
    ``{"model": ...}`` checkpoint or a bare state dict, and strips a leading ``module.`` (DDP)
    from every key that has one.

    Raises:
        ValueError: ``checkpoint`` is not a dict, or has a non-string key.
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"expected a dict, got a {type(checkpoint).__name__}")
    sd = checkpoint
    for name in ("state_dict", "model"):
        if isinstance(checkpoint.get(name), Mapping):
            sd = checkpoint[name]
            break
    for k in sd:
        if not isinstance(k, str):
            raise ValueError(f"state dict key {k!r} is not a string")
    return strip_prefix(sd)


def load_state_dict_file(src: str) -> Dict[str, torch.Tensor]:
    """The tensors of checkpoint ``src``: a bare state dict or one under ``state_dict``/``model``
    (:func:`unwrap_state_dict`), loaded with ``torch.load(weights_only=True)`` (no code runs).

    Raises:
        ConversionError: naming ``src``, when it is not a readable torch file of tensors.
    """
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise ConversionError(f"{src}: not a readable torch checkpoint ({e})") from e
    try:
        state_dict = unwrap_state_dict(obj)
    except ValueError:
        state_dict = {}
    if not state_dict or not all(torch.is_tensor(v) for v in state_dict.values()):
        raise ConversionError(
            f"{src}: expected a state dict of tensors, got {type(obj).__name__}"
        )
    return state_dict


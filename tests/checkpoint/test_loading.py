"""knet_d2.checkpoint.loading: code-free reading, unwrapping and prefix stripping."""
import io
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from knet_d2.checkpoint.loading import (
    ConversionError,
    CorruptCheckpointError,
    load_pickle_restricted,
    load_state_dict_file,
    read_d2_pickle,
    strip_prefix,
    torch_load_weights_first,
    unwrap_state_dict,
)


class _CallsAFunction:
    def __reduce__(self):
        return (os.getpid, ())


def test_restricted_unpickler_refuses_callables():
    raw = pickle.dumps({"model": {"w": np.ones(2)}, "x": _CallsAFunction()})
    with pytest.raises(pickle.UnpicklingError, match="getpid"):
        load_pickle_restricted(io.BytesIO(raw))
    ok = load_pickle_restricted(io.BytesIO(pickle.dumps({"w": np.arange(3), "s": np.float32(2)})))
    assert ok["w"].tolist() == [0, 1, 2] and ok["s"] == 2.0


def test_strip_prefix_removes_only_leading_prefixes_and_keeps_the_input():
    sd = OrderedDict([("module.a.weight", 1), ("b.module.c", 2)])
    assert strip_prefix(sd) == {"a.weight": 1, "b.module.c": 2}
    assert list(sd) == ["module.a.weight", "b.module.c"]  # the input is not changed
    assert list(strip_prefix({"module.x": 1, "module.y": 2})) == ["x", "y"]  # order kept


def test_unwrap_state_dict_wrappers_and_errors():
    t = torch.zeros(1)
    assert unwrap_state_dict({"meta": {}, "state_dict": {"module.w": t}}) == {"w": t}
    assert unwrap_state_dict({"model": {"w": t}}) == {"w": t}
    assert unwrap_state_dict({"w": t}) == {"w": t}
    with pytest.raises(ValueError, match="expected a dict, got a list"):
        unwrap_state_dict([t])
    with pytest.raises(ValueError, match="key 3 is not a string"):
        unwrap_state_dict({3: t})


def test_load_state_dict_file_names_the_file(tmp_path):
    src = tmp_path / "ok.pth"
    torch.save({"state_dict": {"module.w": torch.ones(2)}}, src)
    assert list(load_state_dict_file(str(src))) == ["w"]
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match="garbage.pth: not a readable torch checkpoint"):
        load_state_dict_file(str(garbage))
    listing = tmp_path / "list.pth"
    torch.save([torch.ones(1)], listing)
    with pytest.raises(ConversionError, match="list.pth: expected a state dict of tensors"):
        load_state_dict_file(str(listing))


def test_read_d2_pickle_formats(tmp_path):
    caffe2 = pickle.dumps({"blobs": {"w": np.ones(2), "w_momentum": np.zeros(2)}})
    data = read_d2_pickle(caffe2, "c2.pkl")
    assert data["__author__"] == "Caffe2" and list(data["model"]) == ["w"]
    zoo = {"model": {"w": np.ones(1)}, "__author__": "zoo"}
    assert read_d2_pickle(pickle.dumps(zoo), "zoo.pkl")["__author__"] == "zoo"
    with pytest.raises(ValueError, match="odd.pkl: expected a pickled dict of weights, got list"):
        read_d2_pickle(pickle.dumps([1]), "odd.pkl")
    with pytest.raises(CorruptCheckpointError, match="torn.pkl"):
        read_d2_pickle(caffe2[:10], "torn.pkl")


def test_torch_load_of_a_truncated_file_is_a_corrupt_checkpoint(tmp_path):
    path = tmp_path / "model_0000009.pth"
    torch.save({"model": {"w": torch.ones(100)}}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CorruptCheckpointError, match="model_0000009.pth: the file is incomplete"):
        torch_load_weights_first(str(path))

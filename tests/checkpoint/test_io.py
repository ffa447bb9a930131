"""knet_d2.checkpoint.io: the atomic writer and the converter outputs (never overwritten)."""
import pickle

import pytest
import torch

from knet_d2.checkpoint import atomic_write, save_new_torch_file, write_d2_pickle


def _temps(d):
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_is_all_or_nothing(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write(str(target), lambda f: f.write(b"old"))
    with pytest.raises(RuntimeError, match="disk full"):

        def failing(f):
            f.write(b"partial new content")
            raise RuntimeError("disk full")

        atomic_write(str(target), failing)
    assert target.read_bytes() == b"old" and _temps(tmp_path) == []
    atomic_write(str(target), lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new" and _temps(tmp_path) == []
    # same permissions as a file created by open() (not mkstemp's 0600)
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_atomic_write_without_overwrite_keeps_an_existing_file(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    atomic_write(str(target), lambda f: f.write(b"first"), overwrite=False)  # creates sub/
    assert target.read_bytes() == b"first"
    with pytest.raises(FileExistsError, match=r"refusing to overwrite existing file: .*f\.bin"):
        atomic_write(str(target), lambda f: f.write(b"second"), overwrite=False)
    assert target.read_bytes() == b"first" and _temps(target.parent) == []


def test_existing_file_created_during_the_write_is_not_replaced(tmp_path):
    target = tmp_path / "f.bin"

    def racing(f):  # another process creates the file while this one writes
        target.write_bytes(b"theirs")
        f.write(b"ours")

    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        atomic_write(str(target), racing, overwrite=False)
    assert target.read_bytes() == b"theirs" and _temps(tmp_path) == []


def test_d2_pickle_and_torch_outputs(tmp_path):
    tensors = {"res2.0.conv1.weight": torch.arange(6.0).reshape(2, 3)}
    dst = tmp_path / "w.pkl"
    write_d2_pickle(tensors, str(dst), author="unit")
    with open(dst, "rb") as f:
        data = pickle.load(f)
    assert data["__author__"] == "unit" and data["matching_heuristics"] is True
    assert data["model"]["res2.0.conv1.weight"].tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(FileExistsError):
        write_d2_pickle(tensors, str(dst), author="other")

    pth = tmp_path / "w.pth"
    save_new_torch_file({"model": tensors}, str(pth))
    loaded = torch.load(pth, weights_only=True)
    assert torch.equal(loaded["model"]["res2.0.conv1.weight"], tensors["res2.0.conv1.weight"])
    before = pth.read_bytes()
    with pytest.raises(FileExistsError):
        save_new_torch_file({"model": {}}, str(pth))
    assert pth.read_bytes() == before

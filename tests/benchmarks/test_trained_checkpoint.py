"""benchmarks/trained_checkpoint.py: the arguments of the checkpoint-scoring scripts (the
model loading is exercised by the breakdown scripts' command-line tests)."""
import argparse

import pytest

from benchmarks.trained_checkpoint import add_checkpoint_args


def test_arguments_defaults_and_trailing_config_overrides():
    ap = argparse.ArgumentParser()
    add_checkpoint_args(ap, "output/somewhere")
    a = ap.parse_args(["--config-file", "c.yaml", "--weights", "w.pth",
                       "MODEL.KNET.IMAGE_PROPOSALS", "10"])
    assert (a.config_file, a.weights, a.dataset, a.output, a.threads) == \
        ("c.yaml", "w.pth", None, "output/somewhere", 2)
    assert a.opts == ["MODEL.KNET.IMAGE_PROPOSALS", "10"]
    with pytest.raises(SystemExit):  # the checkpoint is required
        ap.parse_args(["--config-file", "c.yaml"])

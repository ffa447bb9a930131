"""Tests of knet_d2/utils/io_paths.py: input expansion and the output-path policy."""
from __future__ import annotations

import pytest

from knet_d2.utils.io_paths import expand_inputs, image_output_paths
from tests.helpers.photos import small_photo, write_image


def test_expand_inputs_and_name_clashes(tmp_path):
    a = write_image(tmp_path / "x" / "img.jpg", small_photo(16, 16))
    b = write_image(tmp_path / "y" / "img.jpg", small_photo(16, 16))
    write_image(tmp_path / "y" / "other.png", small_photo(16, 16))
    files = expand_inputs([str(a), str(tmp_path / "y"), str(tmp_path / "*" / "*.jpg")])
    assert files == [a, b, tmp_path / "y" / "other.png"]
    outs = image_output_paths([a, b], tmp_path / "o")
    assert [p.name for p in outs] == ["img.jpg", "img_1.jpg"]
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        expand_inputs([str(tmp_path / "nothing_here*.jpg")])
    with pytest.raises(ValueError, match="is a file"):
        image_output_paths([a, b], a)
    # a dotted name ending with '/' is a directory; without it, a file OpenCV cannot write
    dotted = image_output_paths([a], f"{tmp_path / 'v1.d'}/")
    assert dotted == [tmp_path / "v1.d" / "img.jpg"]
    with pytest.raises(ValueError, match="end --output with '/'"):
        image_output_paths([a], tmp_path / "v2.d")


def test_output_onto_input_is_refused(tmp_path):
    a = write_image(tmp_path / "in" / "a.jpg", small_photo())
    with pytest.raises(ValueError, match="one of the inputs"):
        image_output_paths([a], a.parent)

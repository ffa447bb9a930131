"""Fixtures of the tests in tests/data: the hand-built panoptic sample of the mapper tests."""
import pytest

from tests.helpers.mapper_samples import SEGMENTS, H, W, fake_ids, write_image, write_pan


@pytest.fixture
def fake_pan(tmp_path):
    img = write_image(tmp_path / "img.png", H, W)
    ids = fake_ids()
    write_pan(tmp_path / "pan.png", ids)
    d = {
        "file_name": str(tmp_path / "img.png"), "pan_seg_file_name": str(tmp_path / "pan.png"),
        "height": H, "width": W, "image_id": 42, "segments_info": [dict(s) for s in SEGMENTS],
    }
    return d, img, ids

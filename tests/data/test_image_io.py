"""knet_d2.data.image_io on unusual and bad image files: PIL modes, EXIF, 16-bit and float images,
colour label maps, PIL's pixel limit. Every file is made with PIL in ``tmp_path``."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from knet_d2.data.image_io import ImageReadError, read_image, read_label_map
from tests.helpers.image_files import IMAGE_KINDS, make_image_mode, rgb
from tests.helpers.mapper_samples import identity_instance_mapper, identity_semantic_mapper


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_image_modes_read_as_8bit_rgb(tmp_path, kind):
    path, expected = make_image_mode(tmp_path, kind)
    tol = 6 if kind == "cmyk" else 0  # lossy JPEG
    got = read_image(path, format="RGB")
    assert got.dtype == np.uint8 and got.shape == expected.shape
    assert np.abs(got.astype(int) - expected).max() <= tol
    bgr = read_image(path, format="BGR")
    np.testing.assert_array_equal(bgr, got[:, :, ::-1])
    # the instance mapper without augmentation returns exactly these pixels as (3, H, W)
    h, w = expected.shape[:2]
    d = {"file_name": str(path), "height": h, "width": w, "annotations": []}
    out = identity_instance_mapper()(d)
    np.testing.assert_array_equal(out["image"].permute(1, 2, 0).numpy(), got)


def test_sixteen_bit_integer_and_float_images(tmp_path):
    big = tmp_path / "int32.tif"
    Image.fromarray(np.full((4, 4), 70000, np.int32)).save(big)
    with pytest.raises(ImageReadError, match=r"int32\.tif.*outside the 16-bit range"):
        read_image(big, format="RGB")
    ok = tmp_path / "int32_small.tif"
    Image.fromarray(np.full((4, 4), 0x1234, np.int32)).save(ok)
    assert (read_image(ok, format="RGB") == 0x12).all()
    flt = tmp_path / "float.tif"
    Image.fromarray(np.zeros((4, 4), np.float32)).save(flt)
    with pytest.raises(ImageReadError, match=r"float\.tif.*mode F"):
        read_image(flt, format="RGB")
    # format=None keeps the stored values (D2 semantics), e.g. for label maps
    assert read_image(ok).dtype == np.int32


def test_colour_label_map_is_refused_grey_rgb_accepted(tmp_path):
    lab = np.zeros((20, 30), np.uint8)
    lab[5:, :] = 3
    Image.fromarray(np.dstack([lab] * 3)).save(tmp_path / "grey_rgb.png")
    np.testing.assert_array_equal(read_label_map(tmp_path / "grey_rgb.png"), lab)
    Image.fromarray(rgb(20, 30)).save(tmp_path / "colour.png")
    with pytest.raises(ImageReadError, match=r"colour\.png is a colour image"):
        read_label_map(tmp_path / "colour.png")
    Image.fromarray(rgb(20, 30)).save(tmp_path / "img.png")
    d = {"file_name": str(tmp_path / "img.png"), "sem_seg_file_name": str(tmp_path / "colour.png")}
    with pytest.raises(ImageReadError, match=r"semantic label PNG .*colour\.png"):
        identity_semantic_mapper()(d)


def test_pil_pixel_limit_is_a_clear_error(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    Image.fromarray(rgb(20, 30)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 250)  # 600 px > 2 x limit: "bomb"
    with pytest.raises(ImageReadError, match=r"big\.png.*MAX_IMAGE_PIXELS"):
        read_image(p, format="RGB")

"""The demo (knet_d2.rendering.run_on_images) reads images like the training mappers: 16-bit
images scaled to 8 bits, unreadable files reported by name and skipped."""
from __future__ import annotations

import numpy as np

from tests.helpers.image_files import make_image_mode, write_valid_jpeg


def test_demo_reads_images_like_the_mappers(tmp_path):
    from knet_d2.rendering import run_on_images

    seen = []

    class StubDemo:
        def predictor(self, image):
            seen.append(image.copy())
            return {}

        def prepare(self, predictions):
            return "none", None

        def draw(self, image_rgb, key, payload):
            from detectron2.utils.visualizer import VisImage

            return VisImage(image_rgb)

        def describe(self, key, payload):
            return "nothing"

    p16, expected = make_image_mode(tmp_path, "16bit")
    good = write_valid_jpeg(tmp_path / "ok.jpg")
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(good[: len(good) // 2])
    summary = run_on_images(
        StubDemo(), [p16, trunc], [tmp_path / "o1.png", tmp_path / "o2.png"], progress=False
    )
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], expected[:, :, ::-1])  # BGR, scaled 16 -> 8 bit
    assert [p.name for p, _ in summary.failed] == ["trunc.jpg"]
    assert "trunc.jpg" in summary.failed[0][1] and "truncated" in summary.failed[0][1]

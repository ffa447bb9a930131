"""knet_d2.modeling.crop_classifier: boxes of masks, crops that see only the box, logits added
to the thing kernels only (MODEL.KNET.CROP_CLASSIFIER)."""
import pytest
import torch

from knet_d2.modeling.crop_classifier import CropClassifier, mask_boxes

pytestmark = pytest.mark.usefixtures("seed_torch")  # torch.manual_seed(0) before each test


def test_mask_boxes_extents_and_empty_masks():
    probs = torch.zeros(3, 6, 8)
    probs[0, 1:3, 2:7] = 0.9
    probs[1, 5, 0] = 0.6
    probs[2, 2, 2] = 0.5  # not above the threshold: empty
    boxes = mask_boxes(probs)
    assert boxes.tolist() == [[2, 1, 7, 3], [0, 5, 1, 6], [0, 0, 8, 6]]


def _head(**kw):
    head = CropClassifier(num_classes=5, num_proposals=2, size=8, channels=8, **kw)
    torch.nn.init.normal_(head.fc.weight)  # zero at init: give it something to say
    return head


def test_starts_at_zero_and_sees_only_the_widened_box():
    head = CropClassifier(num_classes=5, num_proposals=2, size=8, channels=8)
    images = torch.randn(1, 3, 64, 64)
    masks = torch.full((1, 2, 8, 8), -10.0)
    masks[0, 0, 1:3, 1:3] = 10.0  # image pixels 8..24, widened by 25%: 4..28
    masks[0, 1, 5:7, 5:7] = 10.0  # image pixels 40..56
    assert torch.equal(head(images, masks), torch.zeros(1, 2, 5))
    head = _head()
    before = head(images, masks)
    changed = images.clone()
    changed[..., 40:56, 40:56] += 5.0  # inside kernel 1's box only
    after = head(changed, masks)
    torch.testing.assert_close(after[0, 0], before[0, 0])
    assert not torch.allclose(after[0, 1], before[0, 1])


def test_mask_is_detached_and_the_convs_learn():
    head = _head()
    masks = torch.randn(2, 2, 8, 8, requires_grad=True)
    head(torch.randn(2, 3, 64, 64), masks).sum().backward()
    assert masks.grad is None
    assert head.convs[0].weight.grad.abs().sum() > 0


def test_add_logits_touches_the_thing_kernels_only_and_follows_denoising_groups():
    head = _head()
    images = torch.randn(2, 3, 64, 64)
    masks = torch.randn(4, 3, 8, 8)  # 2 groups x 2 images, 2 thing + 1 stuff kernels
    cls = torch.randn(4, 3, 5)
    out = head.add_logits(images, masks, cls)
    assert out.shape == (4, 3, 5)
    torch.testing.assert_close(out[:, 2], cls[:, 2])  # stuff kernel unchanged
    crop = head(torch.cat([images, images]), masks[:, :2])
    torch.testing.assert_close(out[:, :2], cls[:, :2] + crop)
    # the second group's crops come from the same images
    torch.testing.assert_close(head(images, masks[2:, :2]), crop[2:])


def test_bad_settings_name_the_config_key():
    with pytest.raises(ValueError, match="MODEL.KNET.CROP_CLASSIFIER"):
        CropClassifier(num_classes=3, num_proposals=2, size=2)

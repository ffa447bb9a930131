"""The synthetic panoptic K-Net config narrowed to millisecond forwards, and random inputs."""
import torch
from detectron2.structures import BitMasks, Instances

from tests.helpers.paths import REPO_ROOT, load_config

SYNTH = REPO_ROOT / "configs/synthetic/panoptic/knet_R18_tiny.yaml"


def tiny_cfg(num_thing=3, num_stuff=2, **test_flags):
    """The synthetic config, narrowed further so each forward takes milliseconds."""
    opts = [
        "DATASETS.TRAIN", "()", "DATASETS.TEST", "()",
        "MODEL.KNET.NUM_THING_CLASSES", str(num_thing),
        "MODEL.KNET.NUM_STUFF_CLASSES", str(num_stuff),
        "MODEL.KNET.NUM_PROPOSALS", "6",
        "MODEL.KNET.HIDDEN_DIM", "32", "MODEL.KNET.NECK.CONV_DIM", "32",
        "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.KNET.FFN_DIM", "64", "MODEL.KNET.NUM_HEADS", "4",
        "MODEL.KNET.NUM_STAGES", "2",
    ]
    for k, v in test_flags.items():
        opts += [f"MODEL.KNET.TEST.{k.upper()}", str(v)]
    cfg = load_config(SYNTH, opts)
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def make_input(h, w, classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(classes)
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n):
        y0 = int(torch.randint(0, max(h - 16, 1), (1,), generator=g))
        x0 = int(torch.randint(0, max(w - 16, 1), (1,), generator=g))
        masks[i, y0:y0 + 16, x0:x0 + 16] = True
    inst = Instances((h, w))
    inst.gt_masks = BitMasks(masks)
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    return {"image": image, "instances": inst, "height": h, "width": w}


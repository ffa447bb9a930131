#!/usr/bin/env python
"""Convert mmcv's ImageNet ResNetV1c weights (``open-mmlab://resnet50_v1c``) for knet_d2.

    python tools/convert-mmcv-resnet-v1c-to-d2.py resnet50_v1c-2cccc1ad.pth \
        pretrained/resnet50_v1c_d2.pkl

The semantic ADE20K configs (``configs/ade20k/semantic-segmentation/``) name the output file in
``MODEL.WEIGHTS``. The weights are downloaded from OpenMMLab, e.g.
https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth . The output is a
D2 ``.pkl`` with ``matching_heuristics`` on, so ``res2...`` keys map onto
``backbone.res2...`` when loaded by DetectionCheckpointer. An existing output is never
overwritten.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from knet_d2.checkpoint.io import check_paths, load_state_dict_file, write_d2_pickle  # noqa: E402
from knet_d2.modeling.semantic.resnet_v1c import convert_mmcv_resnet_v1c_state_dict  # noqa: E402


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print(__doc__)
        return 2
    src, dst = argv
    problem = check_paths(src, dst)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    print(f"{src}: loading with torch.load(weights_only=True)")
    try:
        converted = convert_mmcv_resnet_v1c_state_dict(load_state_dict_file(src))
    except ValueError as e:
        print(str(e), file=sys.stderr)
        return 1
    if not converted:
        print(f"{src}: no ResNetV1c backbone weights found", file=sys.stderr)
        return 1
    write_d2_pickle(converted, dst, author="mmcv-resnet-v1c")
    print(f"wrote {len(converted)} tensors to {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

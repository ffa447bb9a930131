"""Config keys of knet_d2, and reading a config file into them.

Call :func:`add_knet_config` on a fresh ``get_cfg()`` *before* merging a YAML file, exactly as
Mask2Former's ``add_maskformer2_config``: unknown keys in a YAML file raise ``KeyError``.
Defaults follow the official K-Net R50 COCO configs (docs/reference.md §1, §2, §3).

* :func:`load_knet_cfg` — D2 + DeepLab + K-Net keys, then a YAML file and ``KEY VALUE`` options.
* :func:`merge_config` — unknown keys, wrong value types, missing ``_BASE_`` files and YAML
  syntax errors name the config file (or command-line option) and the key, with the closest
  known keys; every mistake is a :class:`ConfigError`.
* :func:`check_task_flags` — at least one ``MODEL.KNET.TEST.*_ON`` output.

This module is the bottom layer of knet_d2: it imports nothing else from the package.
"""
from __future__ import annotations

import difflib
import os
import re
from typing import Any, List, Optional, Sequence

import torch
import yaml
from detectron2.config import CfgNode, get_cfg
from detectron2.config import CfgNode as CN
from detectron2.projects.deeplab import add_deeplab_config

__all__ = [
    "add_knet_config", "load_knet_cfg", "merge_config", "ConfigError", "check_task_flags",
]


def add_knet_config(cfg: CN) -> None:
    """Add the ``MODEL.KNET.*``, ``MODEL.SWIN.*``, ``SOLVER.*`` and ``INPUT.*`` keys in place."""
    # ---------------------------------------------------------------- data
    # Dataset mapper picked by train_net.py: "knet_panoptic", "knet_instance", "knet_semantic".
    cfg.INPUT.DATASET_MAPPER_NAME = "knet_panoptic"
    # Pad images (and ground truth) to a multiple of this; -1 = use the backbone's.
    cfg.INPUT.SIZE_DIVISIBILITY = 32
    # Semantic training: random crop that keeps one category below this area share.
    cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA = 1.0
    # Semantic training: mmseg-style photometric distortion (also the "knet_panoptic" and
    # "knet_instance" mappers when True: the Cityscapes recipe).
    cfg.INPUT.COLOR_AUG_SSD = False
    # "knet_panoptic" / "knet_instance" training: crop after the resize (Cityscapes / ADE20K
    # recipe: scale then a fixed-size crop) instead of before it (D2's default DatasetMapper).
    cfg.INPUT.CROP.AFTER_RESIZE = False
    # Training: skip (and count) samples that fail to load instead of stopping the run.
    cfg.DATALOADER.SKIP_BAD_SAMPLES = True
    # Your own datasets, registered by knet_d2.get_knet_cfg: "NAME=KIND:FIELD:..." entries as for
    # the --dataset option (knet_d2/data/datasets/cli.py), e.g.
    # ["my_train=coco_instance:data/train.json:data/train_images"].
    cfg.DATASETS.REGISTER = []
    # train_net.py: check that every image / annotation file of DATASETS.TRAIN and TEST exists
    # and decodes before the run starts (as --check-data, which checks and exits).
    cfg.DATASETS.CHECK_DATA = False

    # ---------------------------------------------------------------- runs (knet_d2.engine)
    # A run resumed with --resume replays exactly the batches, augmentations and random masks
    # of the uninterrupted run: resumable sampler (DATALOADER.SAMPLER_TRAIN "TrainingSampler"),
    # per-sample augmentation seeds, per-iteration model RNG seeds. Costs nothing measurable.
    cfg.EXACT_RESUME = True
    # Deterministic cuDNN/cuBLAS + torch.use_deterministic_algorithms(warn_only=True).
    cfg.DETERMINISTIC = False
    # Allow a new run (no --resume) to overwrite the checkpoints already in OUTPUT_DIR.
    cfg.OUTPUT_OVERWRITE = False
    # Inference (--eval-only, demo, export, knet_d2.Predictor) and --resume refuse MODEL.WEIGHTS
    # / the resumed checkpoint when a model tensor is missing from it or has another shape
    # (knet_d2.engine.check_inference_weights). False: warn and run with those parts random.
    cfg.MODEL.WEIGHTS_STRICT = True
    # Signals that stop training after the current iteration with one checkpoint and exit code
    # 75 (knet_d2.engine.preemption); SLURM sends SIGTERM before preemption. () = off.
    cfg.PREEMPTION = CN()
    cfg.PREEMPTION.SIGNALS = ("SIGTERM", "SIGUSR1")
    # Host memory (knet_d2.engine.host_memory): glibc's malloc keeps freed memory for reuse
    # instead of unmapping every large block, so a CPU training step stops paying page faults
    # for its large tensors again and again. Faster CPU training, at the cost of the process
    # keeping its peak memory (benchmarks/RESULTS.md). Linux / glibc only; warns elsewhere.
    cfg.KEEP_FREED_HOST_MEMORY = False

    # ---------------------------------------------------------------- inference options
    # Images per inference batch of train_net.py --eval-only / evaluation during training (D2's
    # test loader; 1 = D2's behaviour). Images of a batch are padded to the largest one.
    cfg.TEST.IMS_PER_BATCH = 1
    # Kernel-path precision of inference (knet_d2.inference_options): "fp32", "bf16" (autocast;
    # CPU or CUDA) or "fp16" (CUDA only). Post-processing always runs in fp32.
    cfg.TEST.PRECISION = "fp32"
    # Run the kernel path through torch.compile (CPU: needs a C++ compiler).
    cfg.TEST.COMPILE = False

    # ---------------------------------------------------------------- solver
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.BACKBONE_MULTIPLIER = 0.25
    # Mixed-precision training (SOLVER.AMP.ENABLED, D2's switch): "fp16" (D2's: CUDA, with a
    # gradient scaler) or "bf16" (CUDA or CPU, no scaler); knet_d2.engine.mixed_precision.
    cfg.SOLVER.AMP.PRECISION = "fp16"
    # Channels-last training: the backbone gets its image batch in NHWC memory layout while the
    # model trains (knet_d2.engine.channels_last); inference follows MODEL.KNET.TEST.CHANNELS_LAST.
    cfg.SOLVER.CHANNELS_LAST = False
    # Training fitted to a wall-clock budget (knet_d2.engine.time_budget): with SECONDS > 0,
    # MAX_ITER, STEPS and TEST.EVAL_PERIOD give the schedule's shape and the budget its length,
    # refitted to the measured pace every FIT_PERIOD iterations and after each evaluation.
    # Evaluations during training count in the budget. 0 = off (MAX_ITER as configured).
    cfg.SOLVER.TIME_BUDGET = CN()
    cfg.SOLVER.TIME_BUDGET.SECONDS = 0  # whole seconds
    cfg.SOLVER.TIME_BUDGET.FIT_PERIOD = 100
    # Weight decay for Swin position tables (relative_position_bias_table, absolute_pos_embed).
    cfg.SOLVER.WEIGHT_DECAY_EMBED = 0.0
    # SOLVER.CLIP_GRADIENTS.CLIP_TYPE may also be "full_model": one L2 norm over all parameters.

    # ---------------------------------------------------------------- K-Net
    cfg.MODEL.KNET = CN()
    k = cfg.MODEL.KNET
    # Class layout: contiguous ids 0..NUM_THING_CLASSES-1 are things, the next NUM_STUFF_CLASSES
    # are stuff (D2's COCO panoptic order). Instance models have NUM_STUFF_CLASSES = 0. Datasets
    # numbered otherwise (Cityscapes trainIds, ADE20K) are reordered from their metadata
    # (knet_d2/data/class_layout.py).
    k.NUM_THING_CLASSES = 80
    k.NUM_STUFF_CLASSES = 53
    k.NUM_PROPOSALS = 100
    k.NUM_STAGES = 3
    k.HIDDEN_DIM = 256
    k.NUM_HEADS = 8
    k.FFN_DIM = 2048
    k.NUM_FFN_FCS = 2
    k.NUM_CLS_FCS = 1
    k.NUM_MASK_FCS = 1
    k.DROPOUT = 0.0
    # std of the normal init of the learned proposal kernels (the official value is 1.0).
    k.KERNEL_INIT_STD = 1.0
    # Group-feature masks of the detection stages: sigmoid(mask) > HARD_MASK_THR.
    k.HARD_MASK_THR = 0.5
    # Group with the soft masks sigmoid(mask) instead (K0 and every detection update stage; not in
    # the official K-Net, off by default; docs/reference.md §1.4). In the synthetic 10-minute
    # recipes it learned the things more slowly (benchmarks/RESULTS.md).
    k.SOFT_GROUPING = False
    # How many of the NUM_PROPOSALS thing proposals start from the image instead of a learned
    # kernel: the localization features at the peaks of the stage-0 thing scores (not in the
    # official K-Net; 0 = official; knet_d2/modeling/image_proposals.py, docs/reference.md §1.3).
    k.IMAGE_PROPOSALS = 0
    # Ground-truth masks are downsampled (bilinear, soft) to this stride for matching and losses.
    k.MASK_ASSIGN_STRIDE = 4
    # Pad images to a multiple of this inside the model (0 = backbone's size_divisibility).
    k.SIZE_DIVISIBILITY = 32

    # Localization semantic FPN ("neck"), output stride 8.
    k.NECK = CN()
    k.NECK.NAME = "LocalizationFPN"
    k.NECK.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    k.NECK.CONV_DIM = 256
    k.NECK.NORM = "GN"
    # Index into IN_FEATURES of the level that gets the sine positional encoding (P5).
    k.NECK.POS_ENCODING_LEVEL = 3
    # Stride of the neck's outputs, i.e. of the kernels' features and masks: 8 (official) or 4
    # (P2's stride: finer masks, more compute in the neck and the kernel stages).
    k.NECK.OUT_STRIDE = 8

    # Losses (weights of the official configs) and focal-loss parameters.
    k.CLASS_WEIGHT = 2.0
    k.MASK_WEIGHT = 1.0
    k.DICE_WEIGHT = 4.0
    k.SEG_WEIGHT = 1.0
    # Not in the official recipe: a softmax cross-entropy on the stage-0 semantic logits, over
    # the pixels the semantic target labels (stuff and matched things; instance models: the
    # things), added to the official focal loss with this weight. 0 = off. In the synthetic
    # 10-minute recipes it did not help the things (benchmarks/RESULTS.md, 2026-12-06).
    k.SEG_CE_WEIGHT = 0.0
    k.RANK_WEIGHT = 0.1
    k.FOCAL_ALPHA = 0.25
    k.FOCAL_GAMMA = 2.0
    # Not in the official K-Net: the thing kernels' classes as a softmax over the thing classes
    # and "no object" (logit fixed at 0), trained with a cross-entropy whose "no object" targets
    # weigh NO_OBJECT_WEIGHT; the matcher's class cost is then -probability. False = official
    # sigmoid focal loss (knet_d2/modeling/thing_softmax.py, docs/reference.md §2.3).
    k.THING_SOFTMAX = False
    k.NO_OBJECT_WEIGHT = 0.1

    # Hungarian matcher costs.
    k.MATCHER = CN()
    k.MATCHER.COST_CLASS = 2.0
    k.MATCHER.COST_MASK = 1.0
    k.MATCHER.COST_DICE = 4.0
    # One-to-many training (not in the official K-Net, off by default): in the losses of the
    # first ONE_TO_MANY_STAGES update stages (with them the stage-0 masks, which share update
    # stage 0's assignment) every thing target may take up to ONE_TO_MANY_COPIES kernels. The
    # later stages stay one-to-one, so inference still needs no NMS (docs/reference.md §2.2).
    k.MATCHER.ONE_TO_MANY_COPIES = 1
    k.MATCHER.ONE_TO_MANY_STAGES = 0
    # Mask-denoising groups (not in the official K-Net, off by default; training only): the
    # update stages also refine jittered ground-truth thing masks, with a fixed assignment
    # (knet_d2/modeling/mask_denoising.py, docs/reference.md §2.2). SHIFT: largest shift as a
    # fraction of a mask's extent; SCALE: largest relative change of its size.
    k.DENOISING = CN()
    k.DENOISING.ENABLED = False
    k.DENOISING.SHIFT = 0.2
    k.DENOISING.SCALE = 0.2
    k.DENOISING.LOSS_WEIGHT = 1.0

    # Class logits of the last stage's thing kernels from image crops around their masks (not in
    # the official K-Net, off by default; knet_d2/modeling/crop_classifier.py, docs/reference.md
    # §1.4): SIZE x SIZE crops of the image and the mask, NUM_CONVS 3x3 convs of CHANNELS, the
    # mask's box widened by MARGIN of its size on each side.
    k.CROP_CLASSIFIER = CN()
    k.CROP_CLASSIFIER.ENABLED = False
    k.CROP_CLASSIFIER.SIZE = 16
    k.CROP_CLASSIFIER.CHANNELS = 32
    k.CROP_CLASSIFIER.NUM_CONVS = 4
    k.CROP_CLASSIFIER.MARGIN = 0.25

    # Inference (every key is described in docs/INFERENCE.md).
    k.TEST = CN()
    # Which outputs the model returns: "sem_seg", "instances", "panoptic_seg".
    k.TEST.SEMANTIC_ON = False
    k.TEST.INSTANCE_ON = True
    k.TEST.PANOPTIC_ON = True
    # Mask probability above which a pixel belongs to an instance / counts as mask area.
    k.TEST.MASK_THRESHOLD = 0.5
    # Instances: the top-k (kernel, class) pairs by class probability, no score threshold.
    k.TEST.DETECTIONS_PER_IMAGE = 100
    # Panoptic merge only (instance outputs are NOT filtered by it, so that COCO AP sees the
    # low-score detections it needs): thing segments need score >= INSTANCE_SCORE_THRESH and
    # (visible area / mask area) >= OVERLAP_THRESHOLD.
    k.TEST.INSTANCE_SCORE_THRESH = 0.3
    k.TEST.OVERLAP_THRESHOLD = 0.6
    # Memory format of the image batch in inference: "auto" = channels-last (NHWC) on the CPU
    # (oneDNN's fast convolutions; outputs equal up to float rounding), "on" = on every
    # device, "off" = never. Training is not affected.
    k.TEST.CHANNELS_LAST = "auto"
    # Inference batches one image at a time: "auto" = on the CPU (no stage runs faster per
    # image in a batch there, and a batch pads every image to the widest), "on" = on every
    # device, "off" = never (the whole batch in one forward). Training is not affected.
    k.TEST.SPLIT_BATCH = "auto"

    # ---------------------------------------------------------------- semantic K-Net (ADE20K)
    # Used with MODEL.SEM_SEG_HEAD.NAME = "KNetSemSegHead".
    k.SEM = CN()
    # Kernel-generation head: "FCN", "PSP", "ASPP" or "UPerNet".
    k.SEM.GENERATE_HEAD = "UPerNet"
    k.SEM.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    # Channels of the generation head and update heads (official FCN/PSP/ASPP: 512).
    k.SEM.CHANNELS = 512
    # Channels of the KernelUpdator; < CHANNELS reproduces the official split-halves quirk.
    k.SEM.UPDATOR_CHANNELS = 256
    k.SEM.DROPOUT = 0.1
    # FCN generation head: number of 3x3 convs and whether to concat the input (mmseg concat_input).
    k.SEM.FCN_NUM_CONVS = 2
    k.SEM.FCN_CONCAT_INPUT = True
    k.SEM.PSP_POOL_SCALES = [1, 2, 3, 6]
    k.SEM.ASPP_DILATIONS = [1, 12, 24, 36]
    # Auxiliary FCN head on res4 (0 weight disables it).
    k.SEM.AUX_IN_FEATURE = "res4"
    k.SEM.AUX_CHANNELS = 256
    k.SEM.AUX_LOSS_WEIGHT = 0.4
    k.SEM.LOSS_WEIGHT = 1.0
    # "knet_semantic" mapper: mmseg Resize(img_scale=(INPUT.MAX_SIZE_TRAIN,
    # INPUT.MIN_SIZE_TRAIN[0]), ratio_range=this); [] = D2 ResizeShortestEdge instead.
    k.SEM.TRAIN_RESIZE_RATIO_RANGE = [0.5, 2.0]

    # ---------------------------------------------------------------- Swin backbone
    cfg.MODEL.SWIN = CN()
    s = cfg.MODEL.SWIN
    s.PRETRAIN_IMG_SIZE = 224
    s.PATCH_SIZE = 4
    s.EMBED_DIM = 96
    s.DEPTHS = [2, 2, 6, 2]
    s.NUM_HEADS = [3, 6, 12, 24]
    s.WINDOW_SIZE = 7
    s.MLP_RATIO = 4.0
    s.QKV_BIAS = True
    s.QK_SCALE = None
    s.DROP_RATE = 0.0
    s.ATTN_DROP_RATE = 0.0
    s.DROP_PATH_RATE = 0.3
    s.APE = False
    s.PATCH_NORM = True
    s.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    s.USE_CHECKPOINT = False


def load_knet_cfg(config_file: str, opts: Sequence[str] = ()) -> CfgNode:
    """D2 defaults, DeepLab keys (poly LR, deep stem), K-Net keys, then ``config_file`` and the
    ``KEY VALUE`` ``opts`` (not frozen; nothing registered). Falls back to ``MODEL.DEVICE cpu``
    when CUDA is not available.

    Raises:
        FileNotFoundError: ``config_file`` does not exist.
        ConfigError: unknown keys / bad values, naming the file (or option) and the key.

    Scripts call :func:`knet_d2.get_knet_cfg`, which also registers ``DATASETS.REGISTER``.
    """
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"config file not found: {config_file}")
    cfg = get_cfg()
    add_deeplab_config(cfg)
    add_knet_config(cfg)
    merge_config(cfg, config_file, opts)
    if not torch.cuda.is_available() and cfg.MODEL.DEVICE.startswith("cuda"):
        cfg.MODEL.DEVICE = "cpu"
    return cfg


# --------------------------------------------------------------------------- merging
class ConfigError(ValueError):
    """A configuration mistake found before training; the message says what to change."""


def _all_keys(node: CfgNode, prefix: str = "") -> List[str]:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, CfgNode):
            keys += _all_keys(v, full + ".")
    return keys


def _suggest(cfg: CfgNode, key: str) -> str:
    keys = _all_keys(cfg)
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.85)
    if not close:  # a right leaf name under a wrong parent, e.g. MODEL.NUM_PROPOSALS
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in keys if k.rsplit(".", 1)[-1] == leaf][:3]
    return f" Did you mean {' or '.join(close)}?" if close else ""


def _yaml_chain(config_file: str) -> List[tuple]:
    """``[(file, safe-loaded dict or None)]`` for ``config_file`` and its ``_BASE_`` files,
    the file itself first."""
    out, todo, seen = [], [config_file], set()
    while todo:
        f = todo.pop(0)
        if f in seen:
            continue
        seen.add(f)
        try:
            with open(f) as fh:
                data = yaml.safe_load(fh)
        except (OSError, yaml.YAMLError):
            data = None
        out.append((f, data))
        bases = (data or {}).get("_BASE_") if isinstance(data, dict) else None
        for b in [bases] if isinstance(bases, str) else (bases or []):
            b = os.path.expanduser(b)
            if not b.startswith(("/", "http://", "https://")):
                b = os.path.join(os.path.dirname(f), b)
            todo.append(b)
    return out


def _files_setting(config_file: str, key: str) -> List[str]:
    files = []
    for f, data in _yaml_chain(config_file):
        node: Any = data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                node = KeyError
                break
            node = node[part]
        if node is not KeyError:
            files.append(f)
    return files


def _key_in(message: str) -> Optional[str]:
    m = re.search(r"(?:key|config key):\s*([A-Za-z0-9_.]+)", message)
    return m.group(1) if m else None


def merge_config(cfg: CfgNode, config_file: str, opts: Sequence[str] = ()) -> None:
    """``cfg.merge_from_file(config_file)`` then ``cfg.merge_from_list(opts)``; any mistake
    raises :class:`ConfigError` naming the file / option, the key and what to do."""
    try:
        cfg.merge_from_file(config_file)
    except (KeyError, ValueError, AssertionError) as e:
        msg = str(e.args[0]) if e.args else str(e)
        key = _key_in(msg)
        where = _files_setting(config_file, key) if key else []
        src = where[0] if where else config_file
        if key and "Non-existent" in msg:
            raise ConfigError(
                f"{src}: unknown config key {key}.{_suggest(cfg, key)} Fix or remove it "
                f"(loading {config_file})."
            ) from None
        raise ConfigError(f"{src}: {msg} (loading {config_file})") from None
    except FileNotFoundError as e:
        missing = [f for f, _ in _yaml_chain(config_file) if not os.path.isfile(f)]
        what = f"base config {missing[0]} not found" if missing else str(e)
        raise ConfigError(f"{config_file}: {what} (check its _BASE_ entries)") from None
    except yaml.YAMLError as e:
        raise ConfigError(
            f"{config_file} (or one of its _BASE_ files): invalid YAML: {e}"
        ) from None

    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(
            f"command-line options must be KEY VALUE pairs; got an odd number: {opts}"
        )
    for key, value in zip(opts[0::2], opts[1::2]):
        try:
            cfg.merge_from_list([key, value])
        except (KeyError, ValueError, AssertionError) as e:
            msg = str(e.args[0]) if e.args else str(e)
            if "Non-existent" in msg:
                raise ConfigError(
                    f"command-line option {key}: unknown config key.{_suggest(cfg, key)}"
                ) from None
            raise ConfigError(f"command-line option {key} {value}: {msg}") from None


# --------------------------------------------------------------------------- values
def check_mask_strides(neck_out_stride: int, mask_assign_stride: int) -> None:
    """The masks are predicted at ``MODEL.KNET.NECK.OUT_STRIDE`` (8 or 4) and upsampled by an
    integer factor to ``MODEL.KNET.MASK_ASSIGN_STRIDE``, the stride of the targets."""
    if neck_out_stride not in (4, 8):
        raise ConfigError(f"MODEL.KNET.NECK.OUT_STRIDE must be 8 or 4, got {neck_out_stride}")
    if mask_assign_stride < 1 or neck_out_stride % mask_assign_stride:
        raise ConfigError(
            f"MODEL.KNET.MASK_ASSIGN_STRIDE {mask_assign_stride} must divide "
            f"MODEL.KNET.NECK.OUT_STRIDE {neck_out_stride} (masks are predicted at the neck's "
            "stride and upsampled to the targets' stride)"
        )


def check_task_flags(semantic_on: bool, instance_on: bool, panoptic_on: bool) -> None:
    """A K-Net model must return at least one output (``MODEL.KNET.TEST.*_ON``)."""
    if not (semantic_on or instance_on or panoptic_on):
        raise ConfigError(
            "All of MODEL.KNET.TEST.SEMANTIC_ON / INSTANCE_ON / PANOPTIC_ON are False: inference "
            "would return nothing. Turn at least one on."
        )

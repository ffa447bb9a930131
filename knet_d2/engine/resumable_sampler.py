"""A training data stream that a resumed run continues exactly (``EXACT_RESUME``).

D2's stock train loader cannot be resumed exactly: ``TrainingSampler`` restarts its index stream
on every launch, the mapper's augmentations draw from the global numpy RNG of whichever loader
worker maps the sample, and aspect-ratio grouping keeps samples across iterations. Here:

* :class:`ResumableTrainingSampler` yields, per process, whole batches of
  ``(sample_seed, dataset_index)``. The k-th batch depends only on ``(seed, k, rank,
  world_size)``: global stream position ``p`` holds ``perm_e[p % N]`` with ``e = p // N`` and
  ``perm_e`` a permutation drawn from ``(seed, e)``; process ``r`` of ``W`` takes the positions
  ``p = r, r + W, r + 2W, ...`` (as D2 shards), and batches them in order, or per orientation
  group (``w > h``) when aspect-ratio grouping is on. ``set_start_iter(k)`` skips the first ``k``
  batches without loading anything.
* :class:`SeededMapDataset` maps each sample with the ``random`` / ``numpy`` / ``torch`` global
  RNGs seeded from ``(seed, p)`` (and restored afterwards), so augmentations do not depend on the
  worker, the number of workers or what was mapped before.
* The loader is a map-style ``DataLoader`` over batches: batches come out in sampler order
  whatever ``DATALOADER.NUM_WORKERS`` is.

:class:`knet_d2.engine.hooks.IterationRNGHook` reseeds the model's RNG (dropout, drop-path)
from ``(seed, rank, iteration)`` before every step, and the sampler's seed is stored in the
checkpoint (``"data_sampler"``), so a run resumed with ``--resume`` replays the same batches,
augmentations and random masks as the uninterrupted run.
"""
from __future__ import annotations

import contextlib
import logging
import random
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import get_detection_dataset_dicts
from detectron2.data.common import DatasetFromList
from detectron2.utils import comm
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = [
    "derive_seed",
    "seeded_rngs",
    "ResumableTrainingSampler",
    "SeededMapDataset",
    "build_resumable_train_loader",
    "resumable_sampler_of",
]

logger = logging.getLogger(__name__)

# Sub-stream tags of derive_seed, so that the different uses never share a seed.
STREAM_SAMPLE, STREAM_MODEL, STREAM_EPOCH, STREAM_RETRY = 0, 1, 2, 3

#: a batch key: ``[(sample_seed, dataset_index), ...]``
BatchKey = List[Tuple[int, int]]


def derive_seed(*keys: int) -> int:
    """A 32-bit seed that is a fixed function of the non-negative integers ``keys``."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


@contextlib.contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Seed Python's ``random``, numpy's global and torch's CPU RNG; restore them on exit."""
    py_state, np_state = random.getstate(), np.random.get_state()
    torch_state = torch.random.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.random.set_rng_state(torch_state)


class ResumableTrainingSampler(Sampler):
    """Infinite stream of this process's training batches ``[(sample_seed, index), ...]``.

    Args:
        size: number of dataset dicts N.
        batch_size: images per batch on this process.
        seed: the stream's seed (checkpointed through :meth:`state_dict`).
        shuffle: draw a new permutation per epoch (else ``0..N-1`` every epoch).
        group_ids: optional (N,) int array; when given, a batch only holds samples of one
            group (D2's aspect-ratio grouping: 0 for ``width > height``, else 1).
        rank / world_size: default to the current process group's.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        seed: int,
        shuffle: bool = True,
        group_ids: Optional[Sequence[int]] = None,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ):
        if size <= 0:
            raise ValueError(f"ResumableTrainingSampler needs a non-empty dataset, got {size}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.size = int(size)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.rank = comm.get_rank() if rank is None else int(rank)
        self.world_size = comm.get_world_size() if world_size is None else int(world_size)
        self.group_ids = None
        if group_ids is not None:
            group_ids = np.asarray(group_ids, dtype=np.int64)
            if group_ids.shape != (self.size,):
                raise ValueError(f"group_ids has shape {group_ids.shape}, expected ({size},)")
            if len(np.unique(group_ids)) > 1:
                self.group_ids = group_ids
        self.start_iter = 0

    def set_start_iter(self, start_iter: int) -> None:
        """Make the next ``iter()`` begin at batch ``start_iter`` (= the iteration number)."""
        if start_iter < 0:
            raise ValueError(f"start_iter must be >= 0, got {start_iter}")
        self.start_iter = int(start_iter)

    def state_dict(self) -> Dict[str, int]:
        """What a checkpoint needs; the position follows from the trainer's iteration."""
        return {"seed": self.seed}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        seed = int(state["seed"])
        if seed != self.seed:
            logger.info(f"Data order: using the checkpoint's seed {seed} (config gave {self.seed})")
        self.seed = seed

    def _permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.size)
        rng = np.random.default_rng(derive_seed(self.seed, STREAM_EPOCH, epoch))
        return rng.permutation(self.size)

    def _positions(self, first: int) -> Iterator[Tuple[int, int]]:
        """``(global position, dataset index)`` of this rank's stream from its ``first``-th."""
        epoch, perm = -1, None
        p = first * self.world_size + self.rank
        while True:
            e = p // self.size
            if e != epoch:
                epoch, perm = e, self._permutation(e)
            yield p, int(perm[p - e * self.size])
            p += self.world_size

    def _position_batches(self) -> Iterator[List[Tuple[int, int]]]:
        """This rank's batches of ``(position, index)``, from batch ``start_iter`` on."""
        b = self.batch_size
        if self.group_ids is None:  # batch k = the rank's positions k*b .. k*b+b-1: no replay
            stream = self._positions(self.start_iter * b)
            while True:
                yield [next(stream) for _ in range(b)]
        # Grouped: a batch's content depends on the leftovers of earlier ones, so replay the
        # (cheap, integer-only) stream from the start and drop the batches already trained on.
        buckets: Dict[int, List[Tuple[int, int]]] = {}
        emitted = 0
        for item in self._positions(0):
            bucket = buckets.setdefault(int(self.group_ids[item[1]]), [])
            bucket.append(item)
            if len(bucket) == b:
                if emitted >= self.start_iter:
                    yield list(bucket)
                emitted += 1
                bucket.clear()

    def __iter__(self) -> Iterator[BatchKey]:
        for batch in self._position_batches():
            yield [(derive_seed(self.seed, STREAM_SAMPLE, p), idx) for p, idx in batch]


class SeededMapDataset(Dataset):
    """``dataset[batch_key]`` -> list of mapped dicts, each mapped under its own seeded RNGs.

    A sample whose mapper returns ``None`` (e.g. :class:`SkipBadSamples` skipping a bad file)
    is replaced by a dataset index drawn from the sample's seed, so replacements are
    reproducible too; ``max_attempts`` failures in a row raise ``RuntimeError``.
    """

    def __init__(
        self,
        dataset: Sequence[dict],
        mapper: Callable[[dict], Optional[dict]],
        max_attempts: int = 100,
    ):
        self.dataset = dataset
        self.mapper = mapper
        self.max_attempts = int(max_attempts)

    def __len__(self) -> int:
        return len(self.dataset)

    def map_one(self, sample_seed: int, index: int) -> dict:
        """Map ``dataset[index]`` with all global RNGs seeded by ``sample_seed``."""
        first = index
        for attempt in range(self.max_attempts):
            with seeded_rngs(sample_seed if attempt == 0 else
                             derive_seed(sample_seed, STREAM_SAMPLE, attempt)):
                out = self.mapper(self.dataset[index])
            if out is not None:
                return out
            rng = np.random.default_rng(derive_seed(sample_seed, STREAM_RETRY, attempt))
            index = int(rng.integers(len(self.dataset)))
        raise RuntimeError(
            f"{self.max_attempts} training samples in a row could not be loaded (starting at "
            f"dataset index {first}); see the warnings above for the files and errors."
        )

    def __getitem__(self, batch: BatchKey) -> List[dict]:
        return [self.map_one(seed, index) for seed, index in batch]


def _as_is(batch: List[dict]) -> List[dict]:
    return batch


def build_resumable_train_loader(
    cfg: CfgNode, mapper: Callable[[dict], Optional[dict]]
) -> DataLoader:
    """The training loader of ``cfg`` (``DATASETS.TRAIN``, ``SOLVER.IMS_PER_BATCH``,
    ``DATALOADER.*``, ``SEED``) built from the parts above; yields lists of mapped dicts.

    ``SEED < 0`` draws one seed shared by all processes (every process must call this, as
    for D2's loader); it is saved in checkpoints and restored on resume.
    """
    dicts = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE
        if cfg.MODEL.KEYPOINT_ON else 0,
        proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
    )
    world = comm.get_world_size()
    total = cfg.SOLVER.IMS_PER_BATCH
    if total <= 0 or total % world:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({total}) must be a positive multiple of the number of "
            f"processes ({world})"
        )
    seed = cfg.SEED if cfg.SEED >= 0 else int(comm.shared_random_seed())
    group_ids = None
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        group_ids = [0 if d.get("width", 0) > d.get("height", 0) else 1 for d in dicts]
    sampler = ResumableTrainingSampler(len(dicts), total // world, seed=seed, group_ids=group_ids)
    logger.info(
        f"Resumable training loader: {len(dicts)} images, {total // world} per batch and "
        f"process, seed {seed}"
    )
    generator = torch.Generator()  # the loader's own: creating it never draws from torch's RNG
    generator.manual_seed(seed)
    return DataLoader(
        SeededMapDataset(DatasetFromList(dicts, copy=False), mapper),
        sampler=sampler,
        batch_size=None,
        collate_fn=_as_is,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        generator=generator,
    )


def resumable_sampler_of(data_loader: Any) -> Optional[ResumableTrainingSampler]:
    """The :class:`ResumableTrainingSampler` of a loader from
    :func:`build_resumable_train_loader` (also inside a wrapper with a ``loader`` attribute,
    e.g. :class:`~knet_d2.engine.worker_failure.WatchedLoader`), else ``None``."""
    loader = getattr(data_loader, "loader", data_loader)
    sampler = getattr(loader, "sampler", None)
    return sampler if isinstance(sampler, ResumableTrainingSampler) else None

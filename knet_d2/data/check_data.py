"""Check a run's data before it starts: every file exists and decodes (``--check-data``).

:func:`check_datasets` loads the dataset dicts of the given names (which parses their
annotation JSONs) and then reads, in parallel threads, every file the dicts point to:

* ``file_name`` (the image): decoded with :func:`knet_d2.data.image_io.read_image`, the reader
  of the mappers, and its size compared with the dict's ``height`` / ``width``;
* ``pan_seg_file_name`` (panoptic PNG) and ``sem_seg_file_name`` (semantic label PNG): decoded,
  and their size compared with the image's;
* the metadata's ``json_file`` / ``panoptic_json`` (used by the evaluators): must exist.

All problems are collected and returned together (one line each), so a broken dataset is
fixed in one pass instead of one crash per file hours into a run.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from detectron2.data import DatasetCatalog, MetadataCatalog
from tqdm import tqdm

from .image_io import read_image, read_label_map

__all__ = ["DataCheckResult", "check_dataset_dict", "check_datasets"]

logger = logging.getLogger(__name__)


@dataclass
class DataCheckResult:
    """Outcome of :func:`check_datasets`: numbers checked and one line per problem."""

    num_samples: int = 0
    num_files: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        head = (
            f"checked {self.num_samples} sample(s), {self.num_files} file(s): "
            f"{len(self.problems)} problem(s)"
        )
        return head + "".join(f"\n  {p}" for p in self.problems)


def _hw(array) -> tuple[int, int]:
    return int(array.shape[0]), int(array.shape[1])


def check_dataset_dict(dataset_dict: dict) -> tuple[int, list[str]]:
    """Read every file of one dataset dict.

    Returns:
        ``(number of files read, problems)``; each problem is one line naming the file.
    """
    problems: list[str] = []
    image_file = dataset_dict.get("file_name")
    if not image_file:
        return 0, [f"dataset dict without 'file_name' (image_id {dataset_dict.get('image_id')})"]
    num = 1
    image_hw = None
    try:
        image_hw = _hw(read_image(image_file))
    except Exception as e:  # (every reading error is a problem to report)
        problems.append(f"{image_file}: {type(e).__name__}: {e}")
    expected = (dataset_dict.get("height"), dataset_dict.get("width"))
    if image_hw is not None and None not in expected and tuple(expected) != image_hw:
        problems.append(
            f"{image_file}: image is {image_hw[1]}x{image_hw[0]} (WxH) but the annotation says "
            f"{expected[1]}x{expected[0]}"
        )
    for key, what in (("pan_seg_file_name", "panoptic PNG"), ("sem_seg_file_name", "label PNG")):
        path = dataset_dict.get(key)
        if not path:
            continue
        num += 1
        try:
            arr = read_image(path, "RGB") if key == "pan_seg_file_name" else read_label_map(path)
        except Exception as e:
            problems.append(f"{path} ({what} of {image_file}): {type(e).__name__}: {e}")
            continue
        if image_hw is not None and _hw(arr) != image_hw:
            problems.append(
                f"{path} ({what} of {image_file}): {arr.shape[1]}x{arr.shape[0]} but the image "
                f"is {image_hw[1]}x{image_hw[0]}"
            )
    return num, problems


def _metadata_files(name: str) -> list[str]:
    meta = MetadataCatalog.get(name)
    problems = []
    for key in ("json_file", "panoptic_json"):
        path = meta.get(key, None)
        if path and "://" not in str(path) and not os.path.isfile(path):
            problems.append(f"dataset {name!r}: {key} not found: {path} (used by evaluation)")
    return problems


def check_datasets(
    names: Sequence[str], num_threads: int | None = None, progress: bool = True
) -> DataCheckResult:
    """Check every file of the registered datasets ``names`` (see the module docstring).

    Args:
        names: registered dataset names (duplicates are checked once).
        num_threads: reader threads (default: the number of CPUs).
        progress: show a tqdm progress bar.

    Returns:
        The :class:`DataCheckResult`; the check never stops at the first problem.
    """
    result = DataCheckResult()
    dicts: list[dict] = []
    for name in dict.fromkeys(names):
        result.problems += _metadata_files(name)
        try:
            loaded = DatasetCatalog.get(name)
        except Exception as e:  # (a bad JSON / unregistered name is reported)
            result.problems.append(f"dataset {name!r}: cannot load: {type(e).__name__}: {e}")
            continue
        if not loaded:
            result.problems.append(f"dataset {name!r}: no samples")
        dicts += loaded
    result.num_samples = len(dicts)
    threads = max(1, num_threads or os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        outcomes = pool.map(check_dataset_dict, dicts)
        for num, problems in tqdm(
            outcomes, total=len(dicts), desc="checking data", unit="sample", disable=not progress
        ):
            result.num_files += num
            result.problems += problems
    return result

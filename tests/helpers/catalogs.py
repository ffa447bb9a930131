"""Clean-up of D2's dataset catalogs for tests that register datasets."""
from contextlib import contextmanager
from typing import Dict, Iterator, List


def unregister_datasets(names) -> None:
    """Remove ``names`` from D2's DatasetCatalog and MetadataCatalog (tests that re-register)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)


@contextmanager
def registered_synthetic_splits(root, split_sizes: Dict[str, int], prefix: str,
                                **kwargs) -> Iterator[List[str]]:
    """Register synthetic splits under ``root`` with dataset names ``<prefix>_<task>_<split>``
    (``register_synthetic_datasets``), generate them, yield the names, unregister them after."""
    from knet_d2.data.datasets.register_synthetic import (
        ensure_synthetic_for_datasets,
        register_synthetic_datasets,
    )

    names = register_synthetic_datasets(root, split_sizes, prefix=prefix, **kwargs)
    try:
        ensure_synthetic_for_datasets(names)
        yield names
    finally:
        unregister_datasets(names)

"""Datasets (registered on import) and dataset mappers."""
from . import (
    dataset_mappers,  # noqa: F401
    datasets,  # noqa: F401  (registers the dataset names)
)

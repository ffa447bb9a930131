"""Clean-up of D2's dataset catalogs for tests that register datasets."""


def unregister_datasets(names) -> None:
    """Remove ``names`` from D2's DatasetCatalog and MetadataCatalog (tests that re-register)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)

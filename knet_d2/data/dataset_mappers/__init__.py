"""Dataset mappers, one per kind of ground truth (picked by INPUT.DATASET_MAPPER_NAME)."""

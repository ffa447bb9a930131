"""Datasets (registered on import) and dataset mappers."""

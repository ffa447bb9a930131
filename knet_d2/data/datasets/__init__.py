"""Dataset registration; importing this package registers the project's dataset names."""

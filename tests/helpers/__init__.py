"""Helpers shared by several test files (fixtures live in tests/conftest.py)."""

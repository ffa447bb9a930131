"""Helpers shared by several test files (fixtures live in tests/conftest.py and in the
conftest.py of a test folder)."""

"""Fixtures of the tests in tests/modeling."""
import pytest
import torch


@pytest.fixture
def seed_torch():
    """``torch.manual_seed(0)`` before the test (modules applying it: ``pytestmark``)."""
    torch.manual_seed(0)

"""Fixtures shared by every test folder; helpers live in ``instances.py``."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from instances import make_instance


@pytest.fixture
def instance() -> Dataset:
    """A small CT instance with PHI in standard, nested, private and overlay elements."""
    return make_instance()

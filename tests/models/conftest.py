"""Fixtures for the model tests."""

from typing import Any

import pytest

from .reference_data import FIXTURES, load_fixture


@pytest.fixture(params=FIXTURES)
def fixture(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load_fixture(request.param)

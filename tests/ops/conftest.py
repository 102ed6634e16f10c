"""The op tests' helper module as a fixture."""
import pytest

import opkit as _opkit


@pytest.fixture
def opkit():
    return _opkit

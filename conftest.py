"""Test tiers for the whole repository: the fast tier is ``pytest -m "not slow"``.

Slow, besides the tests marked ``@pytest.mark.slow``: every nbval item (a notebook executed end to end) and
every test that needs a profile's full run (the ``smoke`` and ``rehearsal`` fixtures).
"""
import pytest

PROFILE_RUNS = {"smoke", "rehearsal"}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.suffix == ".ipynb" or PROFILE_RUNS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

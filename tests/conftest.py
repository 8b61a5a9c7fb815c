"""Shared test settings.

Hypothesis draws new random examples on every run, which is how it finds bugs on a developer's machine; CI
(``CI`` set in the environment, as ``.ci/run`` does) uses the ``ci`` profile instead: derandomized, so that
a red CI run is reproducible and caused by the change under test, not by a new draw.
"""
import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a test module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    the models under test are tiny, and on a shared 2-core box extra threads only add overhead (standard
    AutoAttack went from about 50 s to 7 s on the loaded test box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

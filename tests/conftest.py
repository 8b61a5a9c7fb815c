"""Shared test settings.

Hypothesis draws new random examples on every run, which is how it finds bugs on a developer's machine; CI
(``CI`` set in the environment, as ``.ci/run`` does) uses the ``ci`` profile instead: derandomized, so that
a red CI run is reproducible and caused by the change under test, not by a new draw.
"""
import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

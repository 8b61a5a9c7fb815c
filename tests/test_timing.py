"""nblib.perf.timing.time_calls against a scripted clock: the median of the timed calls, after the warm-up,
within the budget."""
import pytest

from nblib.perf import timing


@pytest.fixture
def scripted(monkeypatch):
    """A clock that only moves when ``fn`` runs: call k takes ``durations[k]`` seconds."""
    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])

    def make(durations):
        it = iter(durations)
        return lambda: now.__setitem__(0, now[0] + next(it))

    return make


def test_median_after_warmup(scripted):
    # warm-up 50 s is not counted; a 100 s load spike does not move the median of (1, 2, 100, 3, 4)
    assert timing.time_calls(scripted([50, 1, 2, 100, 3, 4]), runs=5) == (3, 5)
    assert timing.time_calls(scripted([50, 60, 1, 2]), runs=2, warmup=2) == (1.5, 2)


def test_budget_stops_early_but_times_one_call(scripted):
    assert timing.time_calls(scripted([0, 4, 4, 4, 4]), runs=4, budget_s=7) == (4, 2)  # 8 s >= 7 s after two
    assert timing.time_calls(scripted([0, 9, 9]), runs=3, budget_s=0) == (9, 1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="runs >= 1"):
        timing.time_calls(lambda: None, runs=0)

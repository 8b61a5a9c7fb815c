"""The comparison of a fresh smoke run with the committed one (``smoke_reference``) fails when it should."""
import copy
import json
from pathlib import Path

import pytest

import smoke_reference as ref

METRICS = Path(__file__).resolve().parents[1] / "outputs" / "smoke" / "metrics"


def committed(name):
    return json.loads((METRICS / f"{name}.json").read_text())["verdicts"]


@pytest.mark.parametrize("name,n", [("03_table2", 100), ("04_adversarial_norms", 20)])
def test_the_reference_passes_against_itself(name, n):
    verdicts = committed(name)
    loose = ref.check_against_reference(verdicts, verdicts, n)
    assert len(loose) < len(verdicts)  # some outcomes are decided beyond the tolerances


def recombine(verdicts):
    """Each combined claim's counts and outcome made consistent with its parts again."""
    for i, parts in ref.combined_parts(verdicts).items():
        outcomes = [verdicts[j]["outcome"] for j in parts]
        verdicts[i]["numbers"].update({o.replace(" ", "_"): outcomes.count(o) for o in ref.OUTCOMES})
        verdicts[i]["outcome"] = ("does not hold" if "does not hold" in outcomes else
                                  "holds" if set(outcomes) == {"holds"} else "not testable")


@pytest.mark.parametrize("name,n", [("03_table2", 100), ("04_adversarial_norms", 20)])
def test_a_flipped_decided_outcome_fails(name, n):
    verdicts = committed(name)
    loose = set(ref.check_against_reference(verdicts, verdicts, n))
    i = next(i for i, v in enumerate(verdicts) if v["claim"] not in loose and "n_parts" not in v["numbers"])
    flipped = copy.deepcopy(verdicts)
    flipped[i]["outcome"] = next(o for o in ref.OUTCOMES if o != verdicts[i]["outcome"])
    recombine(flipped)  # so that only the comparison with the reference can fail
    ref.check_combined(flipped)
    with pytest.raises(AssertionError, match="beyond the tolerances"):
        ref.check_against_reference(flipped, verdicts, n)


def test_another_claim_set_or_outcome_or_combination_fails():
    verdicts = committed("04_adversarial_norms")
    with pytest.raises(AssertionError, match="another set of claims"):
        ref.check_against_reference(verdicts[:-1], verdicts, 20)
    odd = copy.deepcopy(verdicts)
    odd[0]["outcome"] = "maybe"
    with pytest.raises(AssertionError):
        ref.check_against_reference(odd, verdicts, 20)
    wrong = copy.deepcopy(verdicts)
    i = next(i for i, v in enumerate(verdicts) if "n_parts" in v["numbers"])  # a claim combining its parts
    wrong[i]["outcome"] = next(o for o in ref.OUTCOMES if o != verdicts[i]["outcome"])
    with pytest.raises(AssertionError):
        ref.check_against_reference(wrong, verdicts, 20)


def test_accuracy_tolerance():
    """4 standard errors of a difference of two proportions; a 100 % keeps the spread of one point."""
    assert ref.accuracy_tol(0.5, 100) == pytest.approx(4 * (2 * 0.25 / 100) ** 0.5)
    assert ref.accuracy_tol(1.0, 100) == ref.accuracy_tol(0.99, 100) > 0
    ref.check_accuracy(0.80, 0.76, 100, "ok")
    with pytest.raises(AssertionError, match="tolerance"):
        ref.check_accuracy(0.40, 0.76, 100, "too far")
    ref.check_accuracy(0.35, 0.83, 360, "a run that did not converge", converged=False)
    with pytest.raises(AssertionError, match="not an accuracy"):
        ref.check_accuracy(1.5, 0.83, 360, "not a fraction", converged=False)


def test_relation_by_scipy_wilson():
    assert ref.relation(0.95, 20, 0.65, 20) == "overlap" and ref.relation(1.0, 20, 0.65, 20) == "higher"
    assert ref.relation(0.17, 100, 0.76, 100) == "lower"
    assert ref.relation_fragile(0.95, 20, 0.65, 20) and not ref.relation_fragile(0.02, 1000, 0.98, 1000)


def test_paired_comparisons_are_checked_from_the_stored_outcomes():
    """The hand decoder reads what the package stores; discordant counts and p-values must match them."""
    from nblib.results import pack_outcomes

    run = [True] * 30 + [False] * 10 + [True] * 60
    plain = [True] * 30 + [True] * 2 + [False] * 8 + [True] * 60
    assert ref.unpack(pack_outcomes(run)) == run and ref.unpack(pack_outcomes(plain)) == plain
    case = dict(n_run_only=0, n_base_only=10, p_higher=1.0, p_lower=0.5 ** 10)
    with pytest.raises(AssertionError):
        ref.check_paired(case, run, plain)  # 2 of the 10 discordant points favour the run, not 0
    with pytest.raises(AssertionError):  # the right counts, a p-value that is not the exact binomial one
        ref.check_paired(dict(n_run_only=2, n_base_only=8, p_higher=0.5, p_lower=0.5), run, plain)
    ref.check_paired(dict(n_run_only=0, n_base_only=8, p_higher=1.0, p_lower=0.5 ** 8),
                     [True] * 30 + [False] * 8 + [True] * 62, [True] * 100)


def test_a_paired_comparison_is_decided_only_beyond_its_margin():
    assert not ref.case_fragile(0.98, 0.10, 360, "paired")  # far apart: the sign cannot change
    assert ref.case_fragile(0.80, 0.76, 100, "paired")  # within the tolerances: may flip
    assert ref.case_fragile(0.98, 0.10, 360, "missing")

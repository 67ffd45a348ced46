"""The one-run audit's bound: the paper's printed values, no false alarms on null scores, sound and
increasingly tight on a mechanism of known epsilon, and monotone in the correct guesses."""

import math

import numpy as np
import pytest

from mldoctor_bench.audit_bound import (
    DEFAULT_GUESS_FRACTIONS,
    audit,
    epsilon_lower_bound,
    guess_grid,
    p_value,
)


@pytest.mark.parametrize(
    "m,r,v,delta,beta,printed",
    [
        (1000, 100, 75, 1e-4, 0.05, 0.673),  # arXiv:2305.08846v1, Appendix D
        (100_000, 1510, 1439, 1e-5, 0.05, 2.675),  # the same paper, section 7
    ],
)
def test_reproduces_the_papers_printed_bounds(m, r, v, delta, beta, printed):
    assert epsilon_lower_bound(m, r, v, delta, beta) == pytest.approx(printed, abs=1.5e-3)


def test_p_value_is_the_binomial_tail_without_delta():
    # 8 or more right out of 10 coin flips: (45 + 10 + 1) / 1024
    assert p_value(10, 10, 8, 0.0, 0.0) == pytest.approx(56 / 1024)
    assert p_value(10, 10, 8, 0.0, 1e-3) > p_value(10, 10, 8, 0.0, 0.0)


def test_null_scores_give_zero_in_at_least_95_percent_of_runs():
    """Scores independent of inclusion carry no information; a public auditor once reported eps 3.5
    on such scores. At beta = 0.05 at most 5% of runs may report a positive bound."""
    rng = np.random.default_rng(0)
    bounds = []
    for _ in range(200):
        included = rng.random(1000) < 0.5
        bounds.append(
            audit(
                rng.normal(size=1000), included, delta=1e-5, beta=0.05, seed=int(rng.integers(1 << 30))
            ).epsilon_lower_bound
        )
    assert np.mean(np.array(bounds) == 0) >= 0.95, f"positive bounds in {np.mean(np.array(bounds) > 0):.1%} of runs"


def randomized_response(m: int, eps: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An eps-DP mechanism per canary: it reports the inclusion bit truthfully with probability
    ``e^eps / (1 + e^eps)``; the score is the reported bit."""
    included = rng.random(m) < 0.5
    truthful = rng.random(m) < 1 / (1 + math.exp(-eps))
    return np.where(truthful, included, ~included).astype(float), included


def test_randomized_response_bounds_stay_below_epsilon_and_approach_it():
    eps, rng = 2.0, np.random.default_rng(1)
    means = {}
    for m in (100, 1000, 10_000):
        runs = [audit(*randomized_response(m, eps, rng), delta=0.0, seed=k).epsilon_lower_bound for k in range(10)]
        assert max(runs) < eps, (m, runs)
        means[m] = float(np.mean(runs))
    assert means[100] < means[1000] < means[10_000]
    assert means[10_000] > 0.9 * eps, means


def test_bound_is_monotone_in_correct_guesses():
    bounds = [epsilon_lower_bound(1000, 200, v, 1e-5, 0.05) for v in range(0, 201, 5)]
    assert all(a <= b for a, b in zip(bounds, bounds[1:]))
    assert bounds[0] == 0 and bounds[-1] > 0


def test_the_grid_counts_every_choice_the_maximum_is_taken_over():
    grid = guess_grid(1000)
    assert (0, 0) not in grid and all(0 < kp + km <= 1000 for kp, km in grid)
    assert len(grid) == (len(DEFAULT_GUESS_FRACTIONS) + 1) ** 2 - 1
    perfect = audit(np.arange(1000.0), np.arange(1000) >= 500, delta=1e-5)
    assert perfect.tests == len(grid)
    # perfect separation: every guess right, and the correction costs a little against one test
    assert perfect.correct_guesses == perfect.guesses
    single = epsilon_lower_bound(1000, perfect.guesses, perfect.guesses, 1e-5, 0.05)
    assert 0 < perfect.epsilon_lower_bound < single


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="one inclusion flag per score"):
        audit(np.zeros(3), np.zeros(2, dtype=bool), delta=0.0)
    with pytest.raises(ValueError, match="guesses"):
        p_value(10, 5, 6, 1.0, 0.0)

"""The one-run audit's f-DP analysis (Mahloujifar, Melis and Chaudhuri, ICML 2025): its conversion
and test against published numbers, and both bounds' validity on a mechanism whose epsilon is known."""

from __future__ import annotations

import numpy as np
import pytest

from mldoctor_bench.audit_bound import audit
from mldoctor_bench.audit_fdp import audit_fdp, gdp_epsilon, gdp_rejected, mu_lower_bound


@pytest.mark.parametrize("sigma, eps", [(0.5, 9.99), (1.0, 4.37), (2.0, 1.99), (4.0, 0.92)])
def test_gaussian_dp_converts_to_the_papers_theoretical_epsilons(sigma, eps):
    # Mahloujifar et al., Table 1, "theoretical" column: mu = 1 / sigma at delta 1e-5
    assert gdp_epsilon(1 / sigma, 1e-5) == pytest.approx(eps, abs=0.01)


def test_the_counts_of_privacyguards_example_give_its_epsilon():
    # PrivacyGuard's f-DP tutorial: 100 canaries, 80 guesses, 70 right, delta 1e-6, tau 0.05 -> 3.2906,
    # from a grid of noise values that rounds mu down; the exact supremum lies just above
    eps = gdp_epsilon(mu_lower_bound(100, 80, 70, 0.05), 1e-6)
    assert 3.2906 <= eps < 3.30


def test_guesses_no_better_than_a_coin_reject_nothing_and_more_right_reject_more():
    assert mu_lower_bound(1000, 200, 100, 0.05) == 0.0
    bounds = [mu_lower_bound(1000, 200, c, 0.05) for c in (150, 170, 190, 200)]
    assert 0 < bounds[0] < bounds[1] < bounds[2] < bounds[3]
    rng = np.random.default_rng(0)
    for _ in range(50):  # the rejected mu are an interval from 0: bisection is sound
        guesses = int(rng.integers(10, 500))
        correct = int(rng.integers(guesses // 2, guesses + 1))
        mus = np.sort(rng.uniform(0.01, 5, 6))
        rejected = [gdp_rejected(1000, guesses, correct, mu, 0.05) for mu in mus]
        assert rejected == sorted(rejected, reverse=True), (guesses, correct, mus, rejected)


def one_run_game(m: int, mu: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each canary included with probability 1/2; its score ``mu * included + N(0, 1)``: releasing the
    scores is ``mu``-GDP with respect to each canary, so its epsilon at any delta is known."""
    included = rng.random(m) < 0.5
    return mu * included + rng.normal(size=m), included


@pytest.mark.slow
@pytest.mark.parametrize("m", [100, 1000])
def test_both_bounds_are_valid_on_a_mechanism_of_known_epsilon_and_f_dp_is_tighter(m):
    runs, beta, delta, mu = 1000, 0.05, 1e-5, 1.0
    truth = gdp_epsilon(mu, delta)  # 4.38
    rng = np.random.default_rng(m)
    fdp, steinke = np.empty(runs), np.empty(runs)
    for i in range(runs):
        scores, included = one_run_game(m, mu, rng)
        fdp[i] = audit_fdp(scores, included, delta=delta, beta=beta, seed=i).epsilon_lower_bound
        steinke[i] = audit(scores, included, delta=delta, beta=beta, seed=i).epsilon_lower_bound
    assert (fdp > truth).mean() <= beta and (steinke > truth).mean() <= beta
    if m == 1000:
        assert fdp.mean() >= steinke.mean() and fdp.mean() > 0.5, (fdp.mean(), steinke.mean())

"""The exact sign-flip test: hand-computed p values, its inverted interval, and when it replaces the t-test."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from reports.stats import (difference, exact_test_reason, mde, seeds_needed, sign_flip_interval, sign_flip_min_seeds,
                           sign_flip_test, t_interval, verdict)


def _pairs(diffs: list[float], base: float = 10.0) -> tuple[dict, dict]:
    ref = {s: base + 3.0 * s for s in range(len(diffs))}
    return {s: ref[s] + d for s, d in enumerate(diffs)}, ref


def test_hand_computed_p_values():
    # 3 equal differences: of the 8 sign vectors only all-plus and all-minus reach |sum| = 3: p = 2/8
    assert sign_flip_test([1.0, 1.0, 1.0]) == (0.25, 0.0, 8)
    assert sign_flip_test([2.5] * 5)[0] == 0.0625
    assert sign_flip_test([-0.7] * 6)[0] == 0.03125  # 2/64
    # 1, 2, 3: |sum| = 6 only for (+,+,+) and (-,-,-); the other six give 0, 2 or 4: p = 2/8
    assert sign_flip_test([1.0, 2.0, 3.0])[0] == 0.25
    # 1, 2, -3: sum 0, every vector reaches it: p = 1
    assert sign_flip_test([1.0, 2.0, -3.0])[0] == 1.0
    # 4 pairs 3, 1, 1, 1: |sum| = 6; vectors with |sum| >= 6: (+,+,+,+) 6, (-,-,-,-) 6 only: 2/16
    assert sign_flip_test([3.0, 1.0, 1.0, 1.0])[0] == 0.125


def test_exhaustive_p_matches_a_brute_force_count():
    rng = np.random.default_rng(1)
    d = rng.normal(0.5, 1.0, 9)
    count = sum(abs(sum(s * x for s, x in zip(signs, d))) >= abs(d.sum()) - 1e-12
                for signs in itertools.product((-1, 1), repeat=len(d)))
    assert sign_flip_test(d)[0] == pytest.approx(count / 2 ** 9, abs=0)


def test_monte_carlo_beyond_sixteen_pairs_states_its_error():
    d = np.random.default_rng(2).normal(0.4, 1.0, 20)
    p, se, draws = sign_flip_test(d, draws=20_000)
    assert draws == 20_000 and 0 < se < 0.01
    t_p = 2 * (1 - __import__("scipy").stats.t.cdf(abs(d.mean()) / (d.std(ddof=1) / math.sqrt(20)), 19))
    assert abs(p - t_p) < 0.02  # the permutation t-test agrees with the t-test at n = 20


def test_smallest_p_needs_six_seeds():
    assert sign_flip_min_seeds() == 6
    assert mde(0.0, 5, test="sign-flip") == math.inf and mde(0.0, 6, test="sign-flip") == 0.0
    assert seeds_needed(0.0, 1.0, test="sign-flip") == 6
    assert seeds_needed(1.0, 1.0, test="sign-flip") == seeds_needed(1.0, 1.0) == 10


def test_inverted_interval():
    assert math.isinf(sign_flip_interval([2.0] * 5).low)  # p >= 0.0625 for every shift: nothing excluded
    iv = sign_flip_interval([2.0] * 6)
    assert (iv.low, iv.high) == (2.0, 2.0)
    # with spread, close to the t interval, and its bounds are p = 0.05 crossings
    d = np.random.default_rng(0).normal(1.0, 1.0, 10)
    iv, t = sign_flip_interval(d), t_interval(d)
    assert abs(iv.low - t.low) < 0.1 and abs(iv.high - t.high) < 0.1
    assert sign_flip_test(d - iv.low)[0] >= 0.05 and sign_flip_test(d - (iv.low - 1e-6))[0] < 0.05


def test_zero_variance_and_tied_integers_go_to_the_exact_test():
    assert exact_test_reason([5, 5, 5], [3, 3, 3], [2, 2, 2]) == "the paired differences have zero variance"
    assert exact_test_reason([6, 5, 7], [1, 1, 2], [5, 4, 5]).startswith("integer-valued")
    assert exact_test_reason([6.1, 5.0, 7.3], [1.0, 1.2, 2.0], [5.1, 3.8, 5.3]) == ""
    d3 = difference(*_pairs([-6.0, -6.0, -6.0]))
    assert d3.test == "sign-flip" and d3.p_value == 0.25 and "exact" in d3.method
    assert verdict(d3, "lower", 1.0) == "inconclusive"  # never p < 0.0001 from 3 seeds
    d6 = difference(*_pairs([-6.0] * 6))
    assert d6.p_value == 0.03125 and verdict(d6, "lower", 1.0) == "supported"
    assert verdict(d6, "higher", 1.0) == "contradicted" and verdict(d6, "lower", 7.0) == "no effect"
    noisy = difference(*_pairs([1.0, 1.2, 0.8, 1.1, 0.9]))
    assert noisy.test == "t" and noisy.method == "paired over 5 seed(s), paired t-test"

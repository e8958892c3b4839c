"""The analytic rows behind claims 8-10: correct values, stored in the layout the claims report reads."""
from __future__ import annotations

import json
import math

import pytest

from ablations.analytic import CHECKS, alpha_bar_T, kl_asymmetry, kl_closed_form_vs_monte_carlo, record_analytic


def test_monte_carlo_kl_agrees_with_closed_form_within_its_error():
    closed, mc = kl_closed_form_vs_monte_carlo(k=4, draws=100_000, seed=3)
    assert abs(closed.value - mc.value) < 4 * mc.extra["std_error"]
    assert 0 < mc.extra["std_error"] < 0.05 * closed.value


def test_kl_is_asymmetric():
    forward, reverse = kl_asymmetry()
    assert forward.value > 0 and reverse.value > 0
    assert abs(forward.value - reverse.value) > 1.0


def test_alpha_bar_of_short_linear_schedules():
    assert abs(alpha_bar_T(100, scaled=False)[0].value - 0.3636) < 1e-3
    assert alpha_bar_T(100, scaled=True)[0].value < 1e-4


def test_recording_is_idempotent_and_readable(store):
    assert record_analytic(store) == len(CHECKS)
    record_analytic(store)
    runs = store.read_table("runs")
    assert len(runs) == len(CHECKS) and set(runs["kind"]) == {"analytic"} and set(runs["study"]) == {"analytic"}
    m = store.read_table("results")
    row = m[m["name"] == "kl_monte_carlo"].iloc[0]
    assert "std_error" in json.loads(row["extra_json"])


def test_sanov_coin_exact_tails_approach_the_kl_rate():
    from ablations.analytic import bernoulli_kl, sanov_coin

    kl = bernoulli_kl(0.7, 0.5)
    assert kl == pytest.approx(0.7 * math.log(1.4) + 0.3 * math.log(0.6))
    # n = 10: P(heads >= 7) = (120 + 45 + 10 + 1) / 1024 = 176 / 1024
    log_p, kl_row = sanov_coin(0.7, 10)
    assert math.exp(log_p.value) == pytest.approx(176 / 1024, rel=1e-12) and kl_row.value == pytest.approx(kl)
    gaps = [-sanov_coin(0.7, n)[0].value / n - kl for n in (10, 100, 1000, 10000)]
    assert all(0 < g <= math.log(n + 1) / n for g, n in zip(gaps, (10, 100, 1000, 10000)))
    assert gaps == sorted(gaps, reverse=True)


def test_sanov_all_heads_coin_is_exact_and_the_reverse_is_impossible():
    from ablations.analytic import sanov_coin

    for n in (10, 100, 1000):
        log_p, kl = sanov_coin(1.0, n)
        assert log_p.value == pytest.approx(-n * math.log(2), rel=1e-12) and kl.value == pytest.approx(math.log(2))
        assert log_p.extra["kl_reverse"] == "inf" and log_p.extra["reverse_log_prob"] == "-inf"


def test_claim_9b_is_supported_from_the_stored_rows(store, tmp_path):
    from reports.claims import ANALYTIC_CLAIMS, evaluate_claims
    from reports.load import open_store

    record_analytic(store)
    claim = next(c for c in ANALYTIC_CLAIMS if c.id == "9b")
    (res,) = evaluate_claims(open_store(store.path), [claim])
    assert res.verdict == "supported"
    text = res.tests[0].measured
    assert "n = 10:" in text and "n = 100:" in text and "n = 1000:" in text and "all-heads coin" in text

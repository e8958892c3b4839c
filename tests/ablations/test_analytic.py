"""The analytic rows behind claims 8-10: correct values, stored in the layout the claims report reads."""
from __future__ import annotations

import json

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

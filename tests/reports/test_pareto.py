"""The Pareto table joins quality and latency on the artifact: each row's numbers come from the same evaluation
rows (one configuration, its seeds), a row mixing configurations is refused, and the front is non-dominated."""
from __future__ import annotations

import math

import numpy as np
import pytest

from reports.pareto import Measure, ParetoError, build_point, mark_front, pareto_points, pareto_report
from reports.render import Stat


def test_rows_read_quality_and_latency_from_the_same_run_keys(store_data):
    (table,), (plot,) = pareto_report(store_data)
    assert table.name == "pareto-moons" and table.title == "Quality vs latency (steps, moons, swd)"
    assert plot.png.startswith(b"\x89PNG")
    m = store_data.metrics
    assert len(table.rows) == 2 * 2 * 2 * 2  # (S, sampler) x backends x batches of the timed cells
    for row in table.rows:
        keys = row["run_keys"].split()
        rows = m[m["run_key"].isin(keys)]
        assert len(keys) == 2 and rows["config_key"].nunique() == 1  # one configuration, seeds pooled
        assert {c["eval"]["steps"] for c in rows["config"]} == {row["eval.steps"]}
        assert {c["axes"]["sampler"] for c in rows["config"]} == {row["sampler"]}
        split = f"{row['backend']}/{row['provider']}/b{row['batch']}/t{row['threads']}"
        p50 = rows[(rows["metric"] == "latency_ms_p50") & (rows["split"] == split)]
        swd = rows[rows["metric"] == "swd"]
        assert sorted(p50["run_key"]) == sorted(swd["run_key"]) == sorted(keys)  # both from every listed row
        assert row["latency"].mean == pytest.approx(p50["value"].mean())
        assert row["quality"].mean == pytest.approx(swd["value"].mean()) and row["quality"].n == 2


def test_untimed_configurations_give_no_row(store_data):
    (table,), _ = pareto_report(store_data)
    m = store_data.metrics
    listed = {k for r in table.rows for k in r["run_keys"].split()}
    timed = set(m[(m["kind"] == "eval") & (m["metric"] == "latency_ms_p50")]["run_key"])
    assert listed == timed  # S = T and T = 100 cells were never timed: not in the table, not joined by name


def test_a_row_from_two_configurations_is_refused():
    measures = [Measure("r0", "cfgA", 0, 0.1, 2.0), Measure("r1", "cfgB", 1, 0.2, 2.1)]
    with pytest.raises(ParetoError, match="needs rows of one configuration.*cfgA, cfgB"):
        build_point(measures, backend="ort_graph", provider="CPUExecutionProvider", batch=1, threads=1)
    with pytest.raises(ParetoError, match="lists a run key twice"):
        build_point([measures[0], measures[0]], backend="ort_graph", provider="CPUExecutionProvider", batch=1,
                    threads=1)
    point = build_point([measures[0], Measure("r2", "cfgA", 1, 0.3, 3.0)], backend="torch_loop",
                        provider="torch:cpu", batch=1, threads=1)
    assert point.run_keys == ("r0", "r2") and point.quality.mean == pytest.approx(0.2)
    assert point.latency.mean == pytest.approx(2.5) and point.latency.low < 2.5 < point.latency.high


def _point(latency: float, quality: float, batch: int = 1):
    return build_point([Measure(f"r{latency}-{quality}-{batch}", "c", 0, quality, latency)], backend="b",
                       provider="p", batch=batch, threads=1)


def test_front_is_the_non_dominated_points_per_batch():
    pts = mark_front([_point(1, 0.5), _point(2, 0.3), _point(3, 0.4), _point(4, 0.1), _point(5, 0.1),
                      _point(100, 0.9, batch=256)], higher_is_better=False)
    assert [p.front for p in pts] == [True, True, False, True, False, True]  # batch 256 is compared to itself
    higher = mark_front([_point(1, 0.5), _point(2, 0.3)], higher_is_better=True)
    assert [p.front for p in higher] == [True, False]


def test_front_in_the_fixture_is_non_dominated(store_data):
    ((_, info, points),) = pareto_points(store_data, "steps")
    assert info.name == "swd" and info.higher_is_better is False  # the study's claim metric
    for p in points:
        rivals = [q for q in points if (q.batch, q.threads) == (p.batch, p.threads) and q is not p]
        dominated = any(q.latency.mean <= p.latency.mean and q.quality.mean <= p.quality.mean
                        and (q.latency.mean, q.quality.mean) != (p.latency.mean, p.quality.mean) for q in rivals)
        assert p.front == (not dominated)
    assert all(isinstance(p.quality, Stat) and math.isfinite(p.quality.high) for p in points)
    by_setting = {(p.config["eval"]["steps"], p.config["axes"]["sampler"], p.backend, p.batch): p for p in points}
    for (steps, sampler, backend, batch), p in by_setting.items():
        if steps == 5:
            assert by_setting[(50, sampler, backend, batch)].latency.mean > p.latency.mean
    assert np.isfinite([p.latency.mean for p in points]).all()

"""Claims decided from the store: each study's stored claims (bundled or a user's own) and the analytic checks."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ablations.cli import bundled_grids
from ablations.spec import parse_grid
from genlib import records
from genlib.config import config_hash
from genlib.store import Metric, ResultsStore, RunRecord
from reports import build_claims, evaluate_claims
from reports.build import claims_blocks
from reports.claims import (ANALYTIC_CLAIMS, claims_in_store, indicative_studies, studies_without_claims,
                            study_profiles)
from reports.load import open_store
from reports.stats import RULE

EXPECTED_VERDICTS = {"1": "supported", "2": "supported", "3": "supported", "4": "supported", "5": "inconclusive",
                     "6a": "supported", "6b": "no effect", "7": "supported", "8": "supported", "9": "supported",
                     "10b": "supported"}


def test_claim_verdicts_on_the_fixture(store_data):
    results = evaluate_claims(store_data)
    assert {r.claim.id: r.verdict for r in results} == EXPECTED_VERDICTS
    assert [r.claim.id for r in results] == list(EXPECTED_VERDICTS)  # lecture order: 6a < 6b < 7 < 10b
    by_id = {r.claim.id: r for r in results}
    # the primary decides: a contradicted secondary (coverage) does not flip claim 6a
    assert [(t.role, t.verdict) for t in by_id["6a"].tests] == [
        ("primary", "supported"), ("secondary", "supported"), ("secondary", "contradicted")]
    # refinement rows with loss.beta=4 exist but the claim's filter keeps them out: 3 pairs, not 6
    assert by_id["6a"].tests[0].difference.interval.n == 3
    # a secondary on data the store lacks is reported, never filled in
    assert by_id["1"].tests[1].verdict == "not measured"
    # every measured comparison carries its margin, MDE and the seeds the margin needs
    primary = by_id["5"].tests[0]
    assert primary.margin == 0.5 and primary.mde > 10 and primary.seeds_needed > 100
    assert "MDE" in primary.measured and "seeds give 80% power at the margin" in primary.measured


def test_secondary_tests_use_holm_adjusted_p_values(store_data):
    res = {r.claim.id: r for r in evaluate_claims(store_data)}["6a"]
    p = [t.p_value for t in res.tests[1:]]
    adjusted = [t.p_adjusted for t in res.tests[1:]]
    lo, hi = sorted(range(2), key=lambda i: p[i])
    assert adjusted[lo] == pytest.approx(min(1.0, 2 * p[lo]))
    assert adjusted[hi] == pytest.approx(max(adjusted[lo], p[hi]))
    assert res.tests[0].p_adjusted is None  # the primary is pre-registered: no correction


def test_only_claims_in_the_store_are_listed(store_data):
    ids = [c.id for c in claims_in_store(store_data)]
    assert "10a" not in ids  # the fixture has no alpha_bar_T row
    assert {"8", "9"} <= set(ids) and studies_without_claims(store_data) == []


def _write_eval(store: ResultsStore, study: str, key: str, seed: int, axes: dict, values: dict[str, float]) -> None:
    config = {"train": {"data": {"name": "idx:/data/mine"}, "seed": seed}, "eval": {}, "axes": axes,
              "profile": "quick"}
    store.commit_run(RunRecord(run_key=key, kind="eval", study=study, seed=seed, config=config),
                     [records.metric("eval", name, v) for name, v in values.items()])


def test_a_users_own_grid_decides_its_own_claim(tmp_path):
    """A bundled study copied under another name and pointed at other data: its stored claims are decided."""
    data = yaml.safe_load(Path(bundled_grids()["refinement"]).read_text())
    data["study"] = "refinement_mine"
    spec = parse_grid(data, profile="quick")
    store_path = tmp_path / "r.db"
    with ResultsStore(store_path) as store:
        store.commit_run(*records.build("study", run_key=config_hash({"kind": "study", "study": spec.study}),
                                        config=spec.record_config(), device=None, study=spec.study,
                                        name=spec.study, prov={}))
        for seed in range(6):  # the differences are constant: the exact sign-flip test needs 6 seeds to decide
            for passes, cov in ((0, 0.80), (1, 0.81), (10, 0.50)):
                axes = {"loss.beta": 1, "eval.passes": passes, "eval.reencode": "mean"}
                _write_eval(store, spec.study, f"e{passes}-{seed}", seed, axes,
                            {"coverage": cov + 0.01 * seed, "fd": 10.0 + passes + 0.1 * seed})
    data = open_store(store_path)
    results = {r.claim.id: r for r in evaluate_claims(data)}
    assert set(results) == {c.id for c in spec.claims}  # no analytic rows: no analytic claims listed
    assert results["6b"].verdict == "supported"  # coverage falls 0.30 after 10 passes (margin 0.02)
    assert results["6a"].verdict == "contradicted"  # fd rises by 1 after one pass (margin 1.0)
    md = build_claims(store_path, tmp_path / "out", formats=("md",))["md"].read_text()
    assert "### Claim 6b: **supported**" in md and "refinement_mine" in md and "not measured**" in md


def test_a_store_without_study_rows_says_how_to_record_them(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        for seed in (0, 1):
            _write_eval(store, "beta", f"b{seed}", seed, {"loss.beta": 1}, {"active_units": 6.0})
    data = open_store(tmp_path / "r.db")
    assert claims_in_store(data) == [] and studies_without_claims(data) == ["beta"]
    md = build_claims(tmp_path / "r.db", tmp_path / "out", formats=("md",))["md"].read_text()
    assert "no stored claims" in md and "`beta`" in md


def test_the_same_claim_id_in_two_studies_is_told_apart(store_data):
    runs = store_data.runs
    row = runs[runs["run_key"] == "study-beta"].iloc[0].to_dict()
    copy = {**row, "run_key": "study-beta2", "study": "beta2"}
    data = dataclasses.replace(store_data, runs=pd.concat([runs, pd.DataFrame([copy])], ignore_index=True))
    ids = [c.id for c in claims_in_store(data)]
    assert "3 (beta)" in ids and "3 (beta2)" in ids and "3" not in ids


def test_the_report_states_the_rule_and_the_power(built_claims):
    md = built_claims["md"].read_text()
    assert RULE.split(". ")[0] in md
    assert "| # | claim | verdict | effect [95% CI] | margin | MDE | seeds for margin | decided by | studies |" in md
    assert "### Claim 6b: **no effect**" in md


def test_the_lecture_claims_are_the_bundled_studies_plus_the_analytic_checks():
    ids = {c.id for c in ANALYTIC_CLAIMS}
    for name, path in bundled_grids().items():
        spec = parse_grid(yaml.safe_load(Path(path).read_text()), profile="quick", path=Path(path))
        ids |= {c.id for c in spec.claims}
        for c in spec.claims:
            assert len(c.text) > 20 and c.primary.margin > 0
    assert {i.rstrip("abc") for i in ids} == {str(n) for n in range(1, 12)}


def test_quick_studies_are_marked_indicative_and_standard_ones_are_not(store_data, tmp_path):
    # the fixture's studies were all stored from the quick profile; relabel beta's study row as standard
    assert indicative_studies(store_data, claims_in_store(store_data)) == ["baselines", "beta", "warmup",
                                                                           "refinement", "steps"]
    runs = store_data.runs.copy()
    is_beta = runs["run_key"] == "study-beta"
    runs.loc[is_beta, "config"] = [{**runs.loc[is_beta, "config"].iloc[0], "profile": "standard"}]
    data = dataclasses.replace(store_data, runs=runs)
    assert study_profiles(data)["beta"] == "standard"
    assert "beta" not in indicative_studies(data, claims_in_store(data))
    blocks = "\n".join(str(b) for b in claims_blocks(data, evaluate_claims(data), set()))
    assert "`genbench claims --profile standard` decides them" in blocks and "`beta`" not in blocks.split(
        "decides them")[0]

"""`genbench claims` and `genbench demo`: argument errors, and one study end to end into a claims report."""
from __future__ import annotations

import pytest

from genlib.cli import main
from genlib.store import ResultsStore


def test_unknown_study_is_a_one_line_error(tmp_path, capsys):
    assert main(["claims", "--out", str(tmp_path / "c"), "--store", str(tmp_path / "r.db"), "--studies", "beta,warmp"]) == 2
    err = capsys.readouterr().err
    assert "unknown studies warmp" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["claims", "demo"])
def test_help_names_what_runs(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "--profile" in capsys.readouterr().out


@pytest.mark.slow
def test_claims_on_one_study_writes_verdicts_and_analytic_rows(tmp_path, capsys):
    db, out = tmp_path / "r.db", tmp_path / "claims"
    assert main(["claims", "--studies", "beta", "--store", str(db), "--out", str(out)]) == 0
    text = (out / "claims.md").read_text()
    assert "Claim 3" in text and "Claim 8: **supported**" in text
    with ResultsStore(db) as store:
        kinds = set(store.read_table("runs")["kind"])
    assert {"train", "eval", "analytic"} <= kinds
    assert str(out) in capsys.readouterr().out

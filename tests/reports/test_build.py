"""The built reports: golden Markdown, self-contained HTML with valid images, CSV, LaTeX, claims, CLI and errors.

Regenerate the golden files after an intended change with GENBENCH_UPDATE_GOLDEN=1 and review the diff.
"""
from __future__ import annotations

import base64
import os
import re
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genlib.cli import main as genbench
from genlib.store import Metric, ResultsStore, RunRecord, StoreError
from reports import ReportError, build_claims, build_report, evaluate_claims
from reports.samples import find_samples, render_samples
from reports_fixture import check_png

GOLDEN = Path(__file__).resolve().parent / "golden"


def _check_golden(path: Path, name: str) -> None:
    text = path.read_text(encoding="utf-8")
    golden = GOLDEN / name
    if os.environ.get("GENBENCH_UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert golden.is_file(), f"missing {golden}; run with GENBENCH_UPDATE_GOLDEN=1 to create it"
    expected = golden.read_text(encoding="utf-8")
    if text != expected:  # show the first differing line, not two walls of text
        for i, (a, b) in enumerate(zip(text.splitlines(), expected.splitlines())):
            assert a == b, f"{name} line {i + 1} differs from the golden file"
        assert len(text.splitlines()) == len(expected.splitlines()), f"{name}: line count differs"


def test_report_markdown_matches_golden(built_report):
    _check_golden(built_report["md"], "report.md")


def test_claims_markdown_matches_golden(built_claims):
    _check_golden(built_claims["md"], "claims.md")


def test_markdown_links_and_images_resolve(built_report):
    md = built_report["md"].read_text()
    out = built_report["md"].parent
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(images) >= 20 and all((out / p).is_file() for p in images)
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', md))
    links = set(re.findall(r"\]\(#([^)]+)\)", md))
    assert links and links <= anchors


def test_html_is_self_contained_and_every_image_decodes(built_report):
    html = built_report["html"].read_text()
    assert "<script" not in html and not re.search(r"""(src|href)=["'](https?:|//|file:)""", html)
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) >= 20
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        w, h = check_png(base64.b64decode(src.split(",", 1)[1], validate=True))
        assert w > 0 and h > 0
    ids = set(re.findall(r'id="([^"]+)"', html))
    assert set(re.findall(r'href="#([^"]+)"', html)) <= ids  # every in-page link has its target


def test_csv_tables_round_trip(built_report, store_data):
    csv_dir = built_report["csv"]
    names = sorted(p.stem for p in csv_dir.glob("*.csv"))
    assert names == ["baselines", "beta", "claims", "pareto-moons", "refinement", "speed", "steps", "warmup"]
    beta = pd.read_csv(csv_dir / "beta.csv")
    assert beta["row_type"].tolist() == ["result"] * 3 + ["reference"]
    m = store_data.metrics
    fd = m[(m["study"] == "beta") & (m["kind"] == "eval") & (m["metric"] == "fd")]
    at64 = [v for v, c in zip(fd["value"], fd["config"]) if c["axes"]["loss.beta"] == 64]
    assert beta.loc[2, "fd_mean"] == pytest.approx(np.mean(at64))
    assert beta.loc[2, "fd_ci_low"] < beta.loc[2, "fd_mean"] < beta.loc[2, "fd_ci_high"]
    claims = pd.read_csv(csv_dir / "claims.csv")
    assert len(claims) == sum(len(r.claim.tests) for r in evaluate_claims(store_data))


def test_latex_tables(built_report):
    tex = built_report["tex"].read_text()
    assert tex.startswith("% genbench tables: needs \\usepackage{booktabs}")
    n = tex.count(r"\begin{table}")
    assert n == tex.count(r"\end{table}") == tex.count(r"\toprule") == tex.count(r"\bottomrule") == 7
    assert tex.count("{") == tex.count("}")
    for spec, body in re.findall(r"\\begin\{tabular\}\{([lr]+)\}(.*?)\\end\{tabular\}", tex, re.S):
        rows = [line for line in body.splitlines() if line.endswith("\\\\")]
        assert len(rows) >= 2
        for line in rows:
            clean = re.sub(r"\\[_%&#$]", "", line)  # escaped specials are fine
            assert clean.count("&") == len(spec) - 1, line
            assert not re.search(r"[_%#]", clean), line


def test_report_of_a_store_with_only_benchmarks(tmp_path):
    with ResultsStore(tmp_path / "r.db") as s:
        for batch in (1, 16):
            s.commit_run(RunRecord(run_key=f"b{batch}", kind="bench", provider="CPUExecutionProvider",
                                   config={"bench": {"backend": "ort", "batch": batch, "threads": 1}, "part": "decoder"}),
                         [Metric("latency_ms_p50", 0.1 * batch, "ms", False)])
    out = build_report(tmp_path / "r.db", tmp_path / "out", formats=("md",), claims=False)
    md = out["md"].read_text()
    assert "## Speed" in md and "## Study" not in md and "latency-vs-batch.png" in md


def test_errors_are_one_clear_line(tmp_path):
    with pytest.raises(ReportError, match="does not exist"):
        build_report(tmp_path / "missing.db", tmp_path / "out")
    with ResultsStore(tmp_path / "empty.db"):
        pass
    with pytest.raises(ReportError, match="holds no runs yet"):
        build_report(tmp_path / "empty.db", tmp_path / "out")
    newer = tmp_path / "newer.db"
    with ResultsStore(newer):
        pass
    con = sqlite3.connect(newer)
    con.execute("PRAGMA user_version=99")
    con.close()
    with pytest.raises(StoreError, match="schema version 99, newer"):
        build_claims(newer, tmp_path / "out")
    (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a SQLite results store"):
        build_report(tmp_path / "junk.db", tmp_path / "out")


def test_unknown_study_and_format(fixture_store, tmp_path):
    with pytest.raises(ReportError, match="no study 'betta'.*did you mean 'beta'"):
        build_report(fixture_store, tmp_path, studies=["betta"])
    with pytest.raises(ReportError, match="unknown report format 'pdf'"):
        build_report(fixture_store, tmp_path, formats=("md", "pdf"))
    with pytest.raises(ReportError, match="claims report format 'tex'"):
        build_claims(fixture_store, tmp_path, formats=("tex",))


def test_cli_report_one_study(fixture_store, tmp_path, capsys):
    assert genbench(["report", "--store", str(fixture_store), "--out", str(tmp_path), "--format", "md,csv",
                     "--study", "warmup", "--no-claims"]) == 0
    printed = capsys.readouterr().out
    assert f"md     {tmp_path / 'report.md'}" in printed
    md = (tmp_path / "report.md").read_text()
    assert "## Study warmup" in md and "## Study beta" not in md and "## Claims" not in md
    assert "warmup-training-curves.png" in md and "## Speed" not in md
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == ["warmup.csv"]


def test_cli_errors_print_one_line(fixture_store, tmp_path, capsys):
    assert genbench(["report", "--store", str(tmp_path / "nope.db"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("genbench report: error:") and "Traceback" not in err
    assert genbench(["report", "--store", str(fixture_store), "--out", str(tmp_path), "--study", "nope"]) == 2
    assert "no study 'nope'" in capsys.readouterr().err


def test_sample_lookup_order_and_formats(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert find_samples(run) is None
    png = render_samples(np.random.default_rng(0).uniform(size=(9, 3, 6, 5)))  # RGB images
    (run / "zz.png").write_bytes(png)
    (run / "aa.png").write_bytes(b"not a png")
    assert find_samples(run) == (run / "zz.png", png)  # invalid PNGs are skipped
    np.savez(run / "samples.npz", x=np.zeros((4, 2)))
    path, arr = find_samples(run)
    assert path.name == "samples.npz" and arr.shape == (4, 2)
    np.save(run / "samples.npy", np.zeros((5, 8, 8)))
    path, arr = find_samples(run)
    assert path.name == "samples.npy" and arr.shape == (5, 8, 8)
    for samples in (np.zeros((5, 8, 8)), np.zeros((4, 2)), np.zeros((3, 8, 8, 1))):
        check_png(render_samples(samples))
    assert render_samples(np.zeros((4, 7))) is None  # neither images nor 2-D points


@pytest.mark.parametrize("names", [("vae_sweep", "vae-sweep"), ("mine", "Mine"), ("a/b", "a-b")])
def test_studies_whose_names_slugify_alike_keep_their_own_files(tmp_path, names):
    from reports_fixture import _cell, _digits, _eval_cfg, _train_cfg, _Writer

    model = {"family": "vae", "latent_dim": 8, "hidden": [16], "covariance": "diagonal"}
    values = {names[0]: 0.125, names[1]: 0.875}
    with ResultsStore(tmp_path / "r.db") as store:
        w = _Writer(store, tmp_path)
        for study, mse in values.items():
            for beta in (1, 4):
                for seed in (0, 1):
                    axes = {"loss.beta": beta}
                    _cell(w, study, seed, _train_cfg(study, seed, "digits", model,
                                                     {"beta": float(beta), "kl_schedule": {"kind": "constant"}}),
                          axes, axes, _eval_cfg(["mse"], sampler="vae"), {"mse": mse * beta}, exact=("mse",),
                          samples=_digits(seed, 0.5 if study == names[0] else 0.0) if seed == 0 else None)
    out = build_report(tmp_path / "r.db", tmp_path / "out", formats=("md", "csv"), claims=False)
    csvs = sorted((tmp_path / "out").rglob("*.csv"))
    means = {}
    for path in csvs:
        frame = pd.read_csv(path)
        col = next(c for c in frame.columns if c.startswith("mse"))
        means[path.name] = sorted(frame[col].astype(str))
    assert len(csvs) == 2, [p.name for p in csvs]
    assert {tuple(v) for v in means.values()} == {tuple(sorted(str(v) for v in (0.125, 0.5))),
                                                  tuple(sorted(str(v) for v in (0.875, 3.5)))}
    pngs = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert len(pngs) == len(set(pngs)) and len({p.split("/")[1] for p in pngs if p.startswith("samples/")}) == 2
    md = out["md"].read_text()
    for png in pngs:
        assert md.count(f"({png})") == 1, png  # each image belongs to one section

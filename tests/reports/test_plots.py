"""Plots: the kinds a grid file may declare, a user's own grid drawn from its stored `plots:`, and log axes whose
tick labels never crowd into each other."""
from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
import yaml
from matplotlib.figure import Figure

import reports.plots as plots
from ablations.spec import load_grid
from genlib import records
from genlib.config import config_hash
from genlib.store import ResultsStore, RunRecord
from genlib.study_schema import PLOT_COMMON_KEYS, PLOT_HELP, PLOT_KINDS, PlotEntry
from reports import build_report
from reports.load import open_store
from reports_fixture import _bench_row, _Writer

USER_GRID = textwrap.dedent("""\
    study: my_vaes
    base:
      data: {name: digits}
      model: {family: vae, latent_dim: 4, hidden: [32]}
      train: {steps: 50}
    eval: {n: 100, metrics: [active_units, kl, mse]}
    axes:
      loss.beta: [0.5, 2, 8]
    seeds: [0, 1, 2]
    plots:
      - {kind: lines, name: units-vs-beta, title: Units kept, x: loss.beta, metrics: [active_units], x_scale: log}
      - {kind: trade_off, metrics: [kl, mse], along: loss.beta}
    """)


def _captured(monkeypatch) -> list[Figure]:
    """Every figure the plots module renders from now on."""
    figures: list[Figure] = []
    png = plots._png

    def keep(fig: Figure) -> bytes:
        figures.append(fig)
        return png(fig)

    monkeypatch.setattr(plots, "_png", keep)
    return figures


def _tick_labels(fig: Figure) -> list[tuple[str, str, list]]:
    """(axis name, kind, [(text, window extent)]) of the visible, non-empty tick labels of every shown axes."""
    renderer = fig.canvas.get_renderer()
    out = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            for kind, ticks in (("major", axis.get_major_ticks()), ("minor", axis.get_minor_ticks())):
                labels = [(t.label1.get_text(), t.label1.get_window_extent(renderer)) for t in ticks
                          if t.label1.get_visible() and t.label1.get_text()
                          and axis.get_view_interval().min() <= t.get_loc() <= axis.get_view_interval().max()]
                out.append((name, kind, labels))
    return out


def _overlaps(labels: list) -> list[tuple[str, str]]:
    return [(a, b) for i, (a, ba) in enumerate(labels) for b, bb in labels[i + 1:] if ba.overlaps(bb)]


# -- the kinds --------------------------------------------------------------------------------------------------
def test_every_declared_kind_has_exactly_one_drawer():
    assert set(plots.KIND_DRAWERS) == set(PLOT_KINDS)
    with pytest.raises(ValueError, match="not declared"):
        plots.draws("violin")
    with pytest.raises(ValueError, match="two drawers"):
        plots.draws("lines")


def test_the_plot_schema_declares_each_key_once():
    fields = {f.name for f in dataclasses.fields(PlotEntry)}
    used = set(PLOT_COMMON_KEYS) | {k for kind in PLOT_KINDS.values() for k in kind.required + kind.optional}
    assert set(PLOT_HELP) == fields == used
    entry = PlotEntry.from_dict({"kind": "lines", "x": "eval.steps", "colour": "sampler", "metrics": ["swd"]})
    assert entry.colour == ("sampler",) and PlotEntry.from_dict(entry.to_dict()) == entry


# -- a user's own grid ---------------------------------------------------------------------------------------
def test_a_users_own_grid_gets_the_plots_it_declares(tmp_path):
    """A grid under a study name no bundled study has: its `plots:` are stored with it and drawn in the report."""
    grid = tmp_path / "my_vaes.yaml"
    grid.write_text(USER_GRID)
    spec = load_grid(grid)
    assert [p.name for p in spec.plots] == ["units-vs-beta", "trade_off"]
    store_path = tmp_path / "mine.db"
    with ResultsStore(store_path) as store:
        store.commit_run(RunRecord(run_key=config_hash({"kind": "study", "study": spec.study}), kind="study",
                                   study=spec.study, name=spec.study, config=spec.record_config()), [])
        for beta, units, kl, mse in ((0.5, 4.0, 30.0, 0.01), (2, 2.0, 8.0, 0.03), (8, 0.0, 0.5, 0.06)):
            for seed in (0, 1, 2):
                config = {"train": {"data": {"name": "digits"}, "loss": {"beta": beta}, "seed": seed},
                          "eval": {"n": 100}, "axes": {"loss.beta": beta}, "profile": "default"}
                jitter = 1 + 0.01 * seed
                store.commit_run(RunRecord(run_key=f"e-{beta}-{seed}", kind="eval", study=spec.study, seed=seed,
                                           config=config),
                                 [records.metric("eval", "active_units", units),
                                  records.metric("eval", "kl", kl * jitter),
                                  records.metric("eval", "mse", mse * jitter)])
    data = open_store(store_path)
    # the study's own name in file names (a name that is not its slug would get a short hash to stay unique)
    assert [p.name for p in plots.study_plots(data, "my_vaes")] == ["my_vaes-units-vs-beta", "my_vaes-trade-off"]
    out = build_report(store_path, tmp_path / "report", formats="md")
    md = out["md"].read_text()
    assert "![Units kept (digits): mean ± 95% CI over seeds](plots/my_vaes-units-vs-beta.png)" in md
    assert "plots/my_vaes-trade-off.png" in md and "overview" not in md
    assert (out["plots"] / "my_vaes-units-vs-beta.png").is_file()


def test_a_study_that_declares_no_plots_gets_the_overview(tmp_path):
    data = yaml.safe_load(USER_GRID)
    del data["plots"]
    grid = tmp_path / "bare.yaml"
    grid.write_text(yaml.safe_dump(data))
    spec = load_grid(grid)
    assert spec.plots is None and "plots" not in spec.record_config()


def test_the_bundled_plots_are_drawn_from_the_stored_entries(store_data):
    names = {s: [p.name for p in plots.study_plots(store_data, s)] for s in store_data.studies(("eval",))}
    assert names["beta"] == ["beta-rate-distortion", "beta-active-units"]
    assert names["steps"] == ["steps-quality-vs-steps"] and names["baselines"] == ["baselines-overview"]


# -- log axes --------------------------------------------------------------------------------------------------
def _latency_store(tmp_path: Path, low_ms: float, high_ms: float) -> Path:
    path = tmp_path / "speed.db"
    batches = (1, 4, 16, 64, 256)
    with ResultsStore(path) as store:
        w = _Writer(store, tmp_path)
        for backend, provider, scale in (("torch", "torch:cpu", 1.0), ("ort", "CPUExecutionProvider", 0.9)):
            for i, batch in enumerate(batches):
                p50 = low_ms * (high_ms / low_ms) ** (i / (len(batches) - 1)) * (scale if i else 1.0)
                _bench_row(w, "train-0001", "decoder", backend, provider, batch, 1, p50, parity="n/a")
    return path


@pytest.mark.parametrize("low_ms, high_ms", [(0.005, 0.5), (0.2, 0.6)])
def test_latency_vs_batch_log_axes_label_no_crowded_minor_ticks(tmp_path, monkeypatch, low_ms, high_ms):
    """0.005-0.5 ms spans two decades: only the decades are labelled (0.006 ... 0.009 used to overlap); a range
    inside one decade keeps a few labelled ticks; labelled ticks never overlap."""
    figures = _captured(monkeypatch)
    [plot] = plots.plot_latency_vs_batch(open_store(_latency_store(tmp_path, low_ms, high_ms)))
    assert plot.name == "latency-vs-batch"
    [fig] = figures
    labels = {(name, kind): texts for name, kind, texts in _tick_labels(fig)}
    y_texts = [t for t, _ in labels[("y", "major")] + labels[("y", "minor")]]
    if high_ms / low_ms >= 10:
        assert labels[("y", "minor")] == [] and labels[("x", "minor")] == []
        assert {"0.01", "0.1"} <= set(y_texts)
    else:
        assert len(y_texts) >= 2
    for name, kind, texts in _tick_labels(fig):
        assert _overlaps(texts) == [], f"{name} {kind} tick labels overlap"
    for name in ("x", "y"):
        both = labels[(name, "major")] + labels[(name, "minor")]
        assert _overlaps(both) == [], f"{name} tick labels overlap"


def test_no_plot_of_the_report_has_overlapping_tick_labels(store_data, monkeypatch):
    figures = _captured(monkeypatch)
    for study in store_data.studies(("eval",)):
        plots.study_plots(store_data, study)
    plots.plot_latency_vs_batch(store_data)
    assert len(figures) >= 6
    for fig in figures:
        for ax in fig.axes:
            if not ax.get_visible():
                continue
            for axis in (ax.xaxis, ax.yaxis):
                renderer = fig.canvas.get_renderer()
                lo, hi = sorted(axis.get_view_interval())
                shown = [t.label1.get_window_extent(renderer) for t in axis.get_major_ticks() + axis.get_minor_ticks()
                         if t.label1.get_visible() and t.label1.get_text() and lo <= t.get_loc() <= hi]
                assert not any(a.overlaps(b) for i, a in enumerate(shown) for b in shown[i + 1:]), ax.get_title()

"""Plots from the store (matplotlib, headless): rate-distortion, active units, training curves, refinement,
quality vs steps, latency vs batch, and an overview for studies without a plot of their own.

Plots register by name with the study they draw (`PLOTS`); each returns PNG bytes with a caption, or
nothing when the store lacks what it needs. Figures are built with `matplotlib.figure.Figure` and the
Agg canvas directly, so the global pyplot backend is never touched. Error bars are the 95% t-intervals.
Points aggregate the seeds of one configuration (`config_key`) only: a setting that holds several
configurations (a study rerun with another train.steps) is drawn as several points, labelled with the keys
that differ, as `reports.tables` shows them as several rows.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from reports.load import MISSING, StoreData, is_scalar, setting_value
from reports.render import Stat
from reports.tables import (bench_frame, configurations, grid_metrics, metric_infos, sampler_detail,
                            sampler_setting, slug, stat_of, training_first, varying_axes)

DPI = 100
HISTORY_FILE = "history.csv"  # training curves beside each checkpoint (genlib.train writes it)
CURVES = ("loss", "kl", "beta_t")
MAX_LATENCY_PANELS = 9  # columns of history.csv drawn under each KL-weight schedule


@dataclass(frozen=True)
class Plot:
    name: str  # file stem and anchor
    caption: str
    png: bytes
    study: str | None

    @property
    def anchor(self) -> str:
        return f"plot-{self.name}"


@dataclass(frozen=True)
class PlotSpec:
    name: str
    study: str | None  # None: not tied to one study (speed, overview)
    draw: Callable[[StoreData, str | None], list[Plot]]


PLOTS: dict[str, PlotSpec] = {}


def register_plot(name: str, study: str | None = None):
    """Decorator: register `draw(data, study) -> list[Plot]` under `name` (a name registers once)."""

    def decorate(fn: Callable[[StoreData, str | None], list[Plot]]):
        if name in PLOTS:
            raise ValueError(f"plot '{name}' is registered twice")
        PLOTS[name] = PlotSpec(name, study, fn)
        return fn

    return decorate


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _err(stats: list[Stat]) -> np.ndarray:
    return np.array([s.half_width if math.isfinite(s.half_width) else 0.0 for s in stats])


def _groups(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    return [(g, f) for g, f in frame.groupby("data_name", sort=False)]


def _suffix(groups: list, group: str) -> str:
    return "" if len(groups) == 1 else f"-{slug(group)}"


def _config_key(value: Any, run_key: Any) -> str:
    return value if isinstance(value, str) and value else f"run:{run_key}"


def points(frame: pd.DataFrame, metric: str, x_of: Callable[[dict], Any],
           line_of: Callable[[dict], Any] = lambda cfg: "") -> pd.DataFrame:
    """One row per (line, x, configuration) of one metric: columns line, x, config_key, configuration (the keys
    that differ, 'train.steps=400', when a (line, x) holds several configurations, else ''), mean, low, high,
    n (seeds). Seeds of one config_key are aggregated, configurations never; x_of None/MISSING skips a row."""
    rows = frame[frame["metric"] == metric]
    row_of: dict[Any, tuple[tuple, str]] = {}
    config_of: dict[Any, dict] = {}
    keyed: dict[tuple, list[int]] = {}
    for i, cfg, rk, ck in zip(rows.index, rows["config"], rows["run_key"], rows["config_key"]):
        x = x_of(cfg)
        if x is MISSING or x is None or isinstance(x, bool) or not isinstance(x, (int, float)):
            continue
        setting, key = (line_of(cfg), float(x)), _config_key(ck, rk)
        row_of[rk], config_of[rk] = (setting, key), cfg
        keyed.setdefault((setting, key), []).append(i)
    _, labels, _ = configurations(row_of, config_of, ["line", "x"])
    out = []
    for (setting, key), idx in keyed.items():
        st = stat_of(rows.loc[idx])
        out.append({"line": setting[0], "x": setting[1], "config_key": key,
                    "configuration": labels.get((setting, key), ""), "mean": st.mean, "low": st.low,
                    "high": st.high, "n": st.n})
    return pd.DataFrame.from_records(out, columns=["line", "x", "config_key", "configuration", "mean", "low",
                                                   "high", "n"])


def _line_name(line: Any, configuration: str) -> Any:
    if not configuration:
        return line
    return f"{line}, {configuration}" if line != "" else configuration


def curve(frame: pd.DataFrame, metric: str, x_of: Callable[[dict], Any],
          line_of: Callable[[dict], Any] = lambda cfg: "") -> dict[Any, list[tuple[float, Stat]]]:
    """line label -> [(x, Stat over seeds)] sorted by x, for rows of one metric (`points`: a setting holding
    several configurations gives one line per configuration, its label naming the keys that differ)."""
    out: dict[Any, list[tuple[float, Stat]]] = {}
    for p in points(frame, metric, x_of, line_of).itertuples(index=False):
        out.setdefault(_line_name(p.line, p.configuration), []).append(
            (p.x, Stat(p.mean, p.low, p.high, int(p.n))))
    return {k: sorted(v, key=lambda q: q[0]) for k, v in out.items()}


def _axis(key: str) -> Callable[[dict], Any]:
    return lambda cfg: setting_value(cfg, key)


def _line_label(keys: list[str]) -> Callable[[dict], str]:
    def label(cfg: dict) -> str:
        parts = []
        for k in keys:
            v = setting_value(cfg, k)
            if v is not MISSING:
                parts.append(f"{k.split('.')[-1]}={v}")
        return ", ".join(parts)
    return label


def _other_axes(data: StoreData, frame: pd.DataFrame, exclude: tuple[str, ...]) -> list[str]:
    runs = frame.drop_duplicates("run_key")
    keys = training_first(data, runs["parent_key"], varying_axes(list(runs["config"])))
    return [k for k in keys if k not in exclude]


# -- beta -------------------------------------------------------------------------------------------------
@register_plot("rate_distortion", study="beta")
def plot_rate_distortion(data: StoreData, study: str | None) -> list[Plot]:
    """Distortion (reconstruction MSE) against rate (KL, nats) with one point per beta."""
    ev = grid_metrics(data, study, "eval")
    out = []
    groups = _groups(ev)
    for group, frame in groups:
        kl_lines, mse_lines = curve(frame, "kl", _axis("loss.beta")), curve(frame, "mse", _axis("loss.beta"))
        lines = []  # one curve per configuration (a rerun with other settings is its own curve)
        for line in kl_lines:
            kx, mx = dict(kl_lines[line]), dict(mse_lines.get(line, []))
            common = sorted(set(kx) & set(mx))
            if len(common) >= 2:
                lines.append((line, common, [kx[b] for b in common], [mx[b] for b in common]))
        if not lines:
            continue
        fig = Figure(figsize=(5.2, 3.8), layout="constrained")
        ax = fig.add_subplot()
        for line, common, xs, ys in lines:
            ax.errorbar([s.mean for s in xs], [s.mean for s in ys], xerr=_err(xs), yerr=_err(ys), marker="o",
                        capsize=3, label=line or None)
            for b, sx, sy in zip(common, xs, ys):
                ax.annotate(f"β={b:g}", (sx.mean, sy.mean), textcoords="offset points", xytext=(5, 4), fontsize=8)
        if any(line for line, *_ in lines):
            ax.legend(fontsize=7)
        unit = frame[frame["metric"] == "kl"]["unit"].iloc[0] or "nats"
        ax.set_xscale("symlog", linthresh=1.0)  # rates span orders of magnitude; linear below 1 nat
        ax.set_xlabel(f"rate: KL(q(z|x) || p(z)) [{unit}], symlog")
        ax.set_ylabel("distortion: reconstruction MSE")
        ax.set_title(f"Rate-distortion over β ({group})")
        ax.grid(alpha=0.3)
        out.append(Plot(f"{slug(study)}-rate-distortion{_suffix(groups, group)}",
                        f"Rate-distortion curve over β ({group}): mean ± 95% CI over seeds", _png(fig), study))
    return out


@register_plot("active_units", study="beta")
def plot_active_units(data: StoreData, study: str | None) -> list[Plot]:
    """Active latent units against beta (symmetric log x so that beta = 0 shows)."""
    ev = grid_metrics(data, study, "eval")
    out = []
    groups = _groups(ev)
    for group, frame in groups:
        lines = {k: v for k, v in curve(frame, "active_units", _axis("loss.beta")).items() if len(v) >= 2}
        if not lines:
            continue
        fig = Figure(figsize=(5.2, 3.6), layout="constrained")
        ax = fig.add_subplot()
        for line, pts in lines.items():
            stats = [s for _, s in pts]
            ax.errorbar([x for x, _ in pts], [s.mean for s in stats], yerr=_err(stats), marker="o", capsize=3,
                        label=line or None)
        ax.set_xscale("symlog", linthresh=0.1)
        latent = [e.get("latent_dim") for e in frame[frame["metric"] == "active_units"]["extra"]]
        latent = [d for d in latent if isinstance(d, (int, float))]
        if latent:
            ax.axhline(max(latent), color="grey", ls="--", lw=1, label=f"latent_dim = {int(max(latent))}")
        if latent or any(lines):
            ax.legend(fontsize=8)
        ax.set_xlabel("β (KL weight)")
        ax.set_ylabel("active units")
        ax.set_title(f"Active units vs β ({group})")
        ax.grid(alpha=0.3)
        out.append(Plot(f"{slug(study)}-active-units{_suffix(groups, group)}",
                        f"Active latent units vs β ({group}): mean ± 95% CI over seeds", _png(fig), study))
    return out


# -- warmup ------------------------------------------------------------------------------------------------
def read_history(data: StoreData, artifact_path: Any) -> pd.DataFrame | None:
    """A training run's history.csv (step, loss, kl, beta_t, ...) from its artifact directory, or None."""
    run_dir = data.artifact_dir(artifact_path)
    path = run_dir / HISTORY_FILE if run_dir is not None else None
    if path is None or not path.is_file():
        return None
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    frame = pd.DataFrame(rows).apply(pd.to_numeric, errors="coerce")
    return frame if "step" in frame else None


@register_plot("training_curves", study="warmup")
def plot_training_curves(data: StoreData, study: str | None) -> list[Plot]:
    """Loss, KL and the beta(t) actually used against the step, one line per KL-weight schedule (seed mean)."""
    runs = data.runs[(data.runs["study"] == study) & (data.runs["kind"] == "train") & (data.runs["status"] == "done")]
    found = []
    for rk, ck, cfg, art in zip(runs["run_key"], runs["config_key"], runs["config"], runs["artifact_path"]):
        hist = read_history(data, art)
        if hist is None:
            continue
        label = setting_value(cfg, "loss.kl_schedule.kind")
        others = [k for k in (cfg.get("axes") or {}) if k != "loss.kl_schedule.kind" and is_scalar(cfg["axes"][k])]
        found.append((rk, str(label) + "".join(f", {k}={cfg['axes'][k]}" for k in others), _config_key(ck, rk),
                      cfg, hist))
    # seeds of one configuration are averaged; configurations sharing a label are separate lines
    _, labels, _ = configurations({rk: ((name,), key) for rk, name, key, _, _ in found},
                                  {rk: cfg for rk, _, _, cfg, _ in found}, ["schedule"])
    lines: dict[str, list[pd.DataFrame]] = {}
    for _, name, key, _, hist in found:
        lines.setdefault(_line_name(name, labels.get(((name,), key), "")), []).append(hist)
    curves = [c for c in CURVES if any(c in h for hs in lines.values() for h in hs)]
    if not lines or not curves:
        return []
    fig = Figure(figsize=(4.2 * len(curves), 3.6), layout="constrained")
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, col in zip(axes, curves):
        for name, hists in lines.items():
            hs = [h.set_index("step")[col] for h in hists if col in h]
            if not hs:
                continue
            mean = pd.concat(hs, axis=1).mean(axis=1).sort_index()
            ax.plot(mean.index, mean.values, label=name, lw=1.4)
        ax.set_xlabel("training step")
        ax.set_ylabel({"beta_t": "β(t) used", "kl": "KL [nats]"}.get(col, col))
        ax.set_title(col)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title="KL schedule")
    n_seeds = max(len(h) for h in lines.values())
    return [Plot(f"{slug(study)}-training-curves", f"Training curves under each KL-weight schedule (mean over up to "
                 f"{n_seeds} seed(s); from each run's {HISTORY_FILE})", _png(fig), study)]


# -- refinement ----------------------------------------------------------------------------------------------
@register_plot("refinement_quality", study="refinement")
def plot_refinement(data: StoreData, study: str | None) -> list[Plot]:
    """Sample quality against refinement passes, one panel per metric, one line per other setting."""
    ev = grid_metrics(data, study, "eval")
    out = []
    groups = _groups(ev)
    for group, frame in groups:
        infos = [i for i in metric_infos(frame) if i.higher_is_better is not None or i.target is not None][:6]
        line_keys = _other_axes(data, frame, ("eval.passes",))
        panels = [(i, curve(frame, i.name, _axis("eval.passes"), _line_label(line_keys))) for i in infos]
        panels = [(i, c) for i, c in panels if any(len(v) >= 2 for v in c.values())]
        if not panels:
            continue
        ncols = min(3, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        fig = Figure(figsize=(4.2 * ncols, 3.3 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, (info, lines) in zip(axes, panels):
            for label, pts in lines.items():
                stats = [s for _, s in pts]
                ax.errorbar([x for x, _ in pts], [s.mean for s in stats], yerr=_err(stats), marker="o", ms=3,
                            capsize=2, label=label or None, lw=1.2)
            arrow = {True: " ↑", False: " ↓"}.get(info.higher_is_better, "")
            ax.set_title(f"{info.key}{arrow}")
            ax.set_xlabel("refinement passes")
            ax.grid(alpha=0.3)
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        if any(lines for _, lines in panels if any(lines)):
            axes[0].legend(fontsize=7)
        out.append(Plot(f"{slug(study)}-quality-vs-passes{_suffix(groups, group)}",
                        f"Sample quality vs refinement passes ({group}): mean ± 95% CI over seeds", _png(fig), study))
    return out


# -- steps ------------------------------------------------------------------------------------------------
def _effective_steps(cfg: dict) -> Any:
    s = sampler_setting(cfg)
    return s.steps if s is not None else MISSING


@register_plot("quality_vs_steps", study="steps")
def plot_quality_vs_steps(data: StoreData, study: str | None) -> list[Plot]:
    """The first directed metric against sampling steps S (log x), one line per sampler, a panel per T/schedule."""
    ev = grid_metrics(data, study, "eval")
    out = []
    groups = _groups(ev)
    for group, frame in groups:
        infos = [i for i in metric_infos(frame) if i.higher_is_better is not None]
        if not infos:
            continue
        info = infos[0]
        rows = frame[frame["metric"] == info.name]
        panels: dict[str, list[int]] = {}
        for i, cfg in zip(rows.index, rows["config"]):
            T = setting_value(cfg, "model.noise.T")
            scaled = setting_value(cfg, "model.noise.scaled")
            panels.setdefault(f"T={T}" + ("" if scaled in (True, MISSING) else " unscaled"), []).append(i)
        panels = {k: v for k, v in panels.items()}
        if not panels:
            continue
        ncols = min(3, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        fig = Figure(figsize=(4.2 * ncols, 3.3 * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        drawn = False
        panel_lines = {title: curve(rows.loc[idx], info.name, _effective_steps,
                                    lambda cfg: sampler_setting(cfg).label if sampler_setting(cfg) else "")
                       for title, idx in panels.items()}
        # one colour per line label across every panel, and a legend in each panel: a panel never borrows
        # another panel's labels (a configuration present in one panel only, such as a start from data)
        colours = {label: f"C{i % 10}" for i, label in
                   enumerate(sorted({label for lines in panel_lines.values() for label in lines}))}
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        for ax, (title, lines) in zip(axes, panel_lines.items()):
            for label, pts in sorted(lines.items()):
                stats = [s for _, s in pts]
                ax.errorbar([x for x, _ in pts], [s.mean for s in stats], yerr=_err(stats), marker="o", ms=3,
                            capsize=2, label=label, lw=1.2, color=colours[label])
                drawn = True
            if lines:
                ax.legend(fontsize=7)
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(NullFormatter())
            means = [s.mean for pts in lines.values() for _, s in pts if s.mean > 0]
            if means and len(means) == sum(len(p) for p in lines.values()) and max(means) > 30 * min(means):
                ax.set_yscale("log")  # few-step samples can be orders of magnitude off; keep the rest readable
                title += " (log y)"
            ax.set_xlabel("sampling steps S")
            ax.set_title(title)
            ax.grid(alpha=0.3, which="both")
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        if not drawn:
            continue
        axes[0].set_ylabel(f"{info.key} {'↑' if info.higher_is_better else '↓'}")
        out.append(Plot(f"{slug(study)}-quality-vs-steps{_suffix(groups, group)}",
                        f"{info.key} vs sampling steps per sampler ({group}): mean ± 95% CI over seeds",
                        _png(fig), study))
    return out


# -- speed ---------------------------------------------------------------------------------------------------
@register_plot("latency_vs_batch")
def plot_latency_vs_batch(data: StoreData, study: str | None) -> list[Plot]:
    """p50 latency against batch size per backend and provider (log-log), one panel per model, part and sampler
    setting, at the highest thread count timed; rows that failed parity are left out (not valid speeds)."""
    df = bench_frame(data)
    if df.empty:
        return []
    df = df[df["p50"].notna() & df["batch"].notna() & (df["parity"] != "invalid")].copy()
    df["detail"] = [sampler_detail(r) for _, r in df.iterrows()]
    keys: dict[tuple, pd.DataFrame] = {}
    for key, g in df.groupby(["model", "part", "detail"], sort=False):
        if g["batch"].nunique() >= 2:
            keys[key] = g
    order = sorted(keys, key=lambda k: (k[1] == "sampler", k[0], k[1],
                                        float(keys[k]["steps"].max()) if keys[k]["steps"].notna().any() else 0.0,
                                        k[2]))
    shown = order[:MAX_LATENCY_PANELS]
    if not shown:
        return []
    ncols = min(3, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig = Figure(figsize=(4.4 * ncols, 3.5 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for ax, key in zip(axes, shown):
        frame = keys[key]
        threads = frame["threads"].max()
        frame = frame[(frame["threads"] == threads) | frame["threads"].isna()]
        for (backend, provider, precision), g in frame.groupby(["backend", "provider", "precision"], dropna=False,
                                                               sort=True):
            g = g.groupby("batch")["p50"].median().sort_index()
            label = str(backend) + ("" if not isinstance(provider, str) or provider.startswith("torch")
                                    else f" / {provider.replace('ExecutionProvider', '')}")
            label += f" {precision}" if isinstance(precision, str) and precision != "fp32" else ""
            ax.plot(g.index, g.values, marker="o", ms=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(plain)
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.set_xlabel("batch")
        ax.set_ylabel("p50 latency [ms]")
        model, part, detail = key
        ax.set_title(f"{part}{' ' + detail if detail else ''}\n{model}, "
                     f"{int(threads) if pd.notna(threads) else '?'} thread(s)", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    caption = "Median latency vs batch size per backend and execution provider (valid parity only)"
    if len(order) > len(shown):
        caption += f"; {len(order) - len(shown)} more panel(s) in the speed table"
    return [Plot("latency-vs-batch", caption, _png(fig), None)]


# -- any study ----------------------------------------------------------------------------------------------
@register_plot("overview")
def plot_overview(data: StoreData, study: str | None) -> list[Plot]:
    """Bars per setting for up to six directed metrics, for studies without a plot of their own."""
    ev = grid_metrics(data, study, "eval")
    out = []
    groups = _groups(ev)
    for group, frame in groups:
        keys = _other_axes(data, frame, ())
        if not keys:
            continue
        label_of = _line_label(keys)
        infos = [i for i in metric_infos(frame) if i.higher_is_better is not None or i.target is not None][:6]
        bars = {i.name: points(frame, i.name, lambda cfg: 0.0, label_of) for i in infos}
        # one bar per setting and configuration: a setting holding several configurations is several bars
        labels = list(dict.fromkeys(_line_name(p.line, p.configuration) for pts in bars.values()
                                    for p in pts.itertuples(index=False)))
        if not infos or not 2 <= len(labels) <= 16:
            continue
        ncols = min(3, len(infos))
        nrows = math.ceil(len(infos) / ncols)
        fig = Figure(figsize=(4.4 * ncols, (0.28 * len(labels) + 1.2) * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, info in zip(axes, infos):
            found = {_line_name(p.line, p.configuration): Stat(p.mean, p.low, p.high, int(p.n))
                     for p in bars[info.name].itertuples(index=False)}
            stats = [found.get(lab, Stat(math.nan, math.nan, math.nan, 0)) for lab in labels]
            y = np.arange(len(labels))
            ax.barh(y, [s.mean for s in stats], xerr=_err(stats), color="C0", alpha=0.75, capsize=2)
            ax.set_yticks(y, labels, fontsize=7)
            ax.invert_yaxis()
            if info.target is not None:
                ax.axvline(info.target, color="grey", ls="--", lw=1)
            ax.set_title(info.column().header())
            ax.grid(alpha=0.3, axis="x")
        for ax in axes[len(infos):]:
            ax.set_visible(False)
        out.append(Plot(f"{slug(study)}-overview{_suffix(groups, group)}",
                        f"Study {study} ({group}): each metric per setting, mean ± 95% CI over seeds", _png(fig),
                        study))
    return out


def study_plots(data: StoreData, study: str) -> list[Plot]:
    """The plots registered for `study`, or the overview when none is registered (or none could be drawn)."""
    out: list[Plot] = []
    for spec in PLOTS.values():
        if spec.study == study:
            out.extend(spec.draw(data, study))
    if not out:
        out.extend(PLOTS["overview"].draw(data, study))
    return out


__all__ = ["PLOTS", "Plot", "PlotSpec", "curve", "points", "read_history", "register_plot", "study_plots"]

"""Plots from the store (matplotlib, headless): the plots each study declares in its grid file, an overview for
studies that declare none, and latency vs batch for the speed section.

A study's `plots:` entries (`genlib.study_schema.PlotEntry`, stored with its definition) name a kind: `lines`
(metrics against a setting, faceted into panels and coloured lines), `trade_off` (two metrics against each
other along a setting), `training_curves` (each training's history.csv) or `bars` (each metric per setting).
Each kind has one drawer here (`KIND_DRAWERS`); each returns PNG bytes with a caption, or nothing when the store
lacks what it needs. Figures are built with `matplotlib.figure.Figure` and the Agg canvas directly, so the global
pyplot backend is never touched; every log axis goes through `log_axis`. Error bars are the 95% t-intervals.
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
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogFormatter, NullFormatter

from genlib.study_schema import PLOT_KINDS, PlotEntry

from reports.load import MISSING, StoreData, is_scalar, setting_value
from reports.render import Stat
from reports.tables import (bench_frame, configurations, grid_metrics, metric_infos, sampler_detail,
                            sampler_setting, slug, stat_of, study_slug, training_first, varying_axes)

DPI = 100
HISTORY_FILE = "history.csv"  # training curves beside each checkpoint (genlib.train writes it)
CURVES = ("loss", "kl", "beta_t")
MAX_LATENCY_PANELS = 9
MAX_METRICS = 6  # directed metrics drawn when an entry names none
LOG_Y_SPREAD = 30.0  # y_scale auto: log when the largest mean exceeds the smallest by this factor
STUDY_KIND = "study"  # the run kind of a study's stored definition (genlib.records)


@dataclass(frozen=True)
class Plot:
    name: str  # file stem and anchor
    caption: str
    png: bytes
    study: str | None

    @property
    def anchor(self) -> str:
        return f"plot-{self.name}"


Drawer = Callable[[StoreData, str, PlotEntry], list[Plot]]
KIND_DRAWERS: dict[str, Drawer] = {}


def draws(kind: str):
    """Decorator: `draw(data, study, entry) -> list[Plot]` draws entries of `kind` (declared once, in
    `genlib.study_schema.PLOT_KINDS`; a kind is drawn by one function)."""

    if kind not in PLOT_KINDS:
        raise ValueError(f"plot kind '{kind}' is not declared in genlib.study_schema.PLOT_KINDS "
                         f"(declared: {', '.join(PLOT_KINDS)})")
    if kind in KIND_DRAWERS:
        raise ValueError(f"plot kind '{kind}' has two drawers")

    def decorate(fn: Drawer) -> Drawer:
        KIND_DRAWERS[kind] = fn
        return fn

    return decorate


def log_axis(ax: Axes, which: str = "x", *, scale: str = "log", base: float = 10, linthresh: float = 1.0) -> None:
    """Put `ax`'s `which` axis ('x' or 'y') on a log (or symlog) scale with plain tick labels ('0.05', not 5e-2).

    Minor ticks are labelled only where the view spans less than about one decade, and then only some of them
    (matplotlib's LogFormatter thresholds), so labels never crowd into each other (0.006, 0.007, 0.008 ...)."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    setter = ax.set_xscale if which == "x" else ax.set_yscale
    if scale == "symlog":
        setter("symlog", linthresh=linthresh)
    else:
        setter("log", base=base)
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if scale == "symlog":
        axis.set_minor_formatter(NullFormatter())
    else:
        axis.set_minor_formatter(_PlainLogFormatter(base=base, labelOnlyBase=False, minor_thresholds=(1, 0.4)))


class _PlainLogFormatter(LogFormatter):
    """LogFormatter's choice of which minor ticks to label, printed as plain numbers."""

    def __call__(self, x: float, pos: Any = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def _scale(ax: Axes, which: str, scale: str, values: list[float]) -> str:
    """Apply an entry's x_scale / y_scale ('auto': log when the positive means span more than LOG_Y_SPREAD);
    returns ' (log y)' when auto chose log, for the panel title."""
    if scale == "auto":
        if values and all(v > 0 for v in values) and max(values) > LOG_Y_SPREAD * min(values):
            log_axis(ax, which)
            return f" (log {which})"
        return ""
    if scale in ("log", "symlog"):
        finite = [v for v in values if math.isfinite(v)]
        nonzero = [abs(v) for v in finite if v != 0]
        linthresh = min(nonzero) if nonzero else 1.0
        log_axis(ax, which, scale=scale, linthresh=linthresh)
        if scale == "symlog" and finite and min(finite) >= 0:  # no negative ticks in the margin left of 0
            (ax.set_xlim if which == "x" else ax.set_ylim)(-0.3 * linthresh, 1.6 * max(finite) or 1.0)
    return ""


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


# -- settings of a plot entry ------------------------------------------------------------------------------
# A setting whose null value stands for a resolved one: eval.steps null is S = T, drawn at T.
RESOLVED_NULL: dict[str, Callable[[dict], Any]] = {
    "eval.steps": lambda cfg: sampler_setting(cfg).steps if sampler_setting(cfg) is not None else MISSING,
}


def _x_of(key: str) -> Callable[[dict], Any]:
    def x_of(cfg: dict) -> Any:
        value = setting_value(cfg, key)
        return RESOLVED_NULL[key](cfg) if value is None and key in RESOLVED_NULL else value
    return x_of


def _short(key: str) -> str:
    return key.split(".")[-1]


def _show(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else f"{value}"


def _facet_label(keys: tuple[str, ...] | list[str]) -> Callable[[dict], str]:
    """The label of a row's values of `keys`: the value alone for one key, 'key=value, ...' for several."""
    def label(cfg: dict) -> str:
        values = [(k, setting_value(cfg, k)) for k in keys]
        values = [(k, v) for k, v in values if v is not MISSING]
        if len(keys) == 1:
            return _show(values[0][1]) if values else ""
        return ", ".join(f"{_short(k)}={_show(v)}" for k, v in values)
    return label


def _facets(frame: pd.DataFrame, keys: tuple[str, ...]) -> list[tuple[str, pd.DataFrame]]:
    """(title, rows) per combination of `keys` present in `frame`, in order of the values (one untitled facet
    when no keys)."""
    if not keys:
        return [("", frame)]
    combos: dict[tuple, list[int]] = {}
    for i, cfg in zip(frame.index, frame["config"]):
        combos.setdefault(tuple(_sortable(setting_value(cfg, k)) for k in keys), []).append(i)
    label = lambda combo: ", ".join(f"{_short(k)}={_show(v[2])}" for k, v in zip(keys, combo))  # noqa: E731
    return [(label(c), frame.loc[combos[c]]) for c in sorted(combos)]


def _sortable(value: Any) -> tuple:
    """Sort numbers before text before null, each in its own order; the value itself is kept last."""
    if value is None or value is MISSING:
        return (2, "", value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), value)
    return (1, str(value), value)


def _chosen_metrics(frame: pd.DataFrame, names: tuple[str, ...]) -> list:
    """The MetricInfos of an entry's metrics that `frame` holds, in the entry's order; when the entry names
    none, the directed metrics (or those with a target), at most MAX_METRICS."""
    infos = metric_infos(frame)
    if names:
        by_name = {i.name: i for i in infos}
        return [by_name[n] for n in names if n in by_name]
    return [i for i in infos if i.higher_is_better is not None or i.target is not None][:MAX_METRICS]


def _reference_lines(frame: pd.DataFrame, metric: str) -> list[tuple[float, str]]:
    """Horizontal guides a metric's records declare: its target, and for a count of latent units the latent
    dimension (its ceiling)."""
    rows = frame[frame["metric"] == metric]
    out = []
    targets = {e.get("target") for e in rows["extra"] if isinstance(e.get("target"), (int, float))}
    if len(targets) == 1:
        t = targets.pop()
        out.append((float(t), f"target {t:g}"))
    if (rows["unit"] == "count").any():
        dims = [e.get("latent_dim") for e in rows["extra"] if isinstance(e.get("latent_dim"), (int, float))]
        if dims:
            out.append((float(max(dims)), f"latent_dim = {int(max(dims))}"))
    return out


def _arrow(info: Any) -> str:
    return {True: " ↑", False: " ↓"}.get(info.higher_is_better, "")


def _title(entry: PlotEntry, default: str) -> str:
    return entry.title or default


def _grid(n_panels: int, ncols: int | None = None, width: float = 4.2, height: float = 3.3):
    ncols = ncols or min(3, n_panels)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False).ravel()


# -- kinds ---------------------------------------------------------------------------------------------------
@draws("lines")
def draw_lines(data: StoreData, study: str, entry: PlotEntry) -> list[Plot]:
    """Metrics against the setting `x`: a panel per (rows value, metric, columns value), a line per colour value
    (default: per combination of the other settings the study varies), one colour per label across panels."""
    assert entry.x is not None
    ev = grid_metrics(data, study, "eval")
    x_label = entry.x_label or entry.x
    out = []
    groups = _groups(ev)
    for group, frame in groups:
        infos = _chosen_metrics(frame, entry.metrics)
        if not infos:
            continue
        colour = entry.colour or tuple(_other_axes(data, frame, (entry.x, *entry.columns, *entry.rows)))
        line_of = _facet_label(colour)
        rows = _facets(frame, entry.rows)
        cols = _facets(frame, entry.columns)
        panels = []  # (info, facet title, {line label: [(x, Stat)]})
        for row_title, row_frame in rows:
            for info in infos:
                for col_title, _ in cols:
                    sub = dict(_facets(row_frame, entry.columns)).get(col_title)
                    if sub is None:
                        continue
                    lines = curve(sub, info.name, _x_of(entry.x), line_of)
                    facet = ", ".join(t for t in (row_title, col_title) if t)
                    panels.append((info, facet, lines))
        if not any(len(pts) >= 2 for _, _, lines in panels for pts in lines.values()):
            continue
        fig, axes = _grid(len(panels), len(infos) * len(cols) if entry.rows else None)
        labels = sorted({str(label) for _, _, lines in panels for label in lines})
        colours = {label: f"C{i % 10}" for i, label in enumerate(labels)}
        for ax, (info, facet, lines) in zip(axes, panels):
            for label, pts in sorted(lines.items(), key=lambda kv: str(kv[0])):
                stats = [s for _, s in pts]
                ax.errorbar([x for x, _ in pts], [s.mean for s in stats], yerr=_err(stats), marker="o", ms=3,
                            capsize=2, label=label or None, lw=1.2, color=colours[str(label)])
            for value, text in _reference_lines(frame, info.name):
                ax.axhline(value, color="grey", ls="--", lw=1, label=text)
            xs = [x for pts in lines.values() for x, _ in pts]
            _scale(ax, "x", entry.x_scale, xs)
            log_y = _scale(ax, "y", entry.y_scale, [s.mean for pts in lines.values() for _, s in pts])
            if ax.get_legend_handles_labels()[1]:
                ax.legend(fontsize=7, title=_short(colour[0]) if len(colour) == 1 else None, title_fontsize=7)
            title = f"{info.key}{_arrow(info)}" + (f": {facet}" if facet else "") + log_y
            ax.set_title(title, fontsize=9)
            ax.set_xlabel(x_label)
            ax.grid(alpha=0.3, which="both")
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        default = f"{', '.join(i.key for i in infos)} vs {x_label}" + (
            f" per {', '.join(_short(k) for k in entry.colour)}" if entry.colour else "")
        out.append(Plot(f"{study_slug(study)}-{slug(entry.name)}{_suffix(groups, group)}",
                        f"{_title(entry, default)} ({group}): mean ± 95% CI over seeds", _png(fig), study))
    return out


@draws("trade_off")
def draw_trade_off(data: StoreData, study: str, entry: PlotEntry) -> list[Plot]:
    """metrics[1] against metrics[0], a point per value of `along` (annotated), joined into one curve per
    colour value and configuration."""
    assert entry.along is not None and len(entry.metrics) == 2
    x_metric, y_metric = entry.metrics
    ev = grid_metrics(data, study, "eval")
    line_of = _facet_label(entry.colour) if entry.colour else (lambda cfg: "")
    out = []
    groups = _groups(ev)
    for group, frame in groups:
        x_lines, y_lines = (curve(frame, m, _x_of(entry.along), line_of) for m in entry.metrics)
        lines = []  # one curve per configuration (a rerun with other settings is its own curve)
        for line in x_lines:
            xs, ys = dict(x_lines[line]), dict(y_lines.get(line, []))
            common = sorted(set(xs) & set(ys))
            if len(common) >= 2:
                lines.append((line, common, [xs[v] for v in common], [ys[v] for v in common]))
        if not lines:
            continue
        fig = Figure(figsize=(5.2, 3.8), layout="constrained")
        ax = fig.add_subplot()
        for line, common, xs, ys in lines:
            ax.errorbar([s.mean for s in xs], [s.mean for s in ys], xerr=_err(xs), yerr=_err(ys), marker="o",
                        capsize=3, label=line or None)
            for v, sx, sy in zip(common, xs, ys):
                ax.annotate(f"{_short(entry.along)}={v:g}", (sx.mean, sy.mean), textcoords="offset points",
                            xytext=(5, 4), fontsize=8)
        if any(line for line, *_ in lines):
            ax.legend(fontsize=7)
        _scale(ax, "x", entry.x_scale, [s.mean for _, _, xs, _ in lines for s in xs])
        _scale(ax, "y", entry.y_scale, [s.mean for _, _, _, ys in lines for s in ys])
        units = {m: next((u for u in frame.loc[frame["metric"] == m, "unit"] if isinstance(u, str) and u), "")
                 for m in entry.metrics}
        ax.set_xlabel(x_metric + (f" [{units[x_metric]}]" if units[x_metric] else ""))
        ax.set_ylabel(y_metric + (f" [{units[y_metric]}]" if units[y_metric] else ""))
        title = _title(entry, f"{y_metric} vs {x_metric} over {entry.along}")
        ax.set_title(f"{title} ({group})", fontsize=10)
        ax.grid(alpha=0.3)
        out.append(Plot(f"{study_slug(study)}-{slug(entry.name)}{_suffix(groups, group)}",
                        f"{title} ({group}): mean ± 95% CI over seeds", _png(fig), study))
    return out


# -- training logs ---------------------------------------------------------------------------------------
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


@draws("training_curves")
def draw_training_curves(data: StoreData, study: str, entry: PlotEntry) -> list[Plot]:
    """Training-log columns (default loss, KL and the beta(t) actually used) against the step, one line per colour
    value (default: per combination of the study's training axes), the mean over seeds."""
    runs = data.runs[(data.runs["study"] == study) & (data.runs["kind"] == "train") & (data.runs["status"] == "done")]
    found = []
    for rk, ck, cfg, art in zip(runs["run_key"], runs["config_key"], runs["config"], runs["artifact_path"]):
        hist = read_history(data, art)
        if hist is None:
            continue
        colour = entry.colour or tuple(k for k in (cfg.get("axes") or {}) if is_scalar(cfg["axes"][k]))
        label = _facet_label(colour[:1])(cfg) if colour else ""
        label += "".join(f", {_short(k)}={_show(setting_value(cfg, k))}" for k in colour[1:]
                         if setting_value(cfg, k) is not MISSING)
        others = [k for k in (cfg.get("axes") or {}) if k not in colour and is_scalar(cfg["axes"][k])]
        label += "".join(f", {k}={cfg['axes'][k]}" for k in others)
        found.append((rk, label, _config_key(ck, rk), cfg, hist))
    # seeds of one configuration are averaged; configurations sharing a label are separate lines
    _, labels, _ = configurations({rk: ((name,), key) for rk, name, key, _, _ in found},
                                  {rk: cfg for rk, _, _, cfg, _ in found}, ["line"])
    lines: dict[str, list[pd.DataFrame]] = {}
    for _, name, key, _, hist in found:
        lines.setdefault(_line_name(name, labels.get(((name,), key), "")), []).append(hist)
    wanted = entry.metrics or CURVES
    curves = [c for c in wanted if any(c in h for hs in lines.values() for h in hs)]
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
    if any(lines):
        colour_keys = entry.colour
        axes[0].legend(fontsize=8, title=_short(colour_keys[0]) if len(colour_keys) == 1 else None)
    n_seeds = max(len(h) for h in lines.values())
    title = _title(entry, "Training curves")
    return [Plot(f"{study_slug(study)}-{slug(entry.name)}", f"{title} (mean over up to {n_seeds} seed(s); from each run's "
                 f"{HISTORY_FILE})", _png(fig), study)]


@draws("bars")
def draw_bars(data: StoreData, study: str, entry: PlotEntry) -> list[Plot]:
    """A horizontal bar per setting (and configuration) for each metric (default: up to six directed ones)."""
    ev = grid_metrics(data, study, "eval")
    out = []
    groups = _groups(ev)
    for group, frame in groups:
        keys = _other_axes(data, frame, ())
        if not keys:
            continue
        label_of = _line_label(keys)
        infos = _chosen_metrics(frame, entry.metrics)
        bars = {i.name: points(frame, i.name, lambda cfg: 0.0, label_of) for i in infos}
        # one bar per setting and configuration: a setting holding several configurations is several bars
        labels = list(dict.fromkeys(_line_name(p.line, p.configuration) for pts in bars.values()
                                    for p in pts.itertuples(index=False)))
        if not infos or not 2 <= len(labels) <= 16:
            continue
        fig, axes = _grid(len(infos), width=4.4, height=0.28 * len(labels) + 1.2)
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
        title = _title(entry, f"Study {study}")
        out.append(Plot(f"{study_slug(study)}-{slug(entry.name)}{_suffix(groups, group)}",
                        f"{title} ({group}): each metric per setting, mean ± 95% CI over seeds", _png(fig), study))
    return out


# -- speed ---------------------------------------------------------------------------------------------------
def plot_latency_vs_batch(data: StoreData, study: str | None = None) -> list[Plot]:
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
        log_axis(ax, "x", base=2)
        log_axis(ax, "y")
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


OVERVIEW = PlotEntry(kind="bars", name="overview")  # drawn for a study whose grid declares no plots


def declared_plots(data: StoreData, study: str) -> tuple[PlotEntry, ...] | None:
    """The plot entries stored with `study`'s definition (the last recorded), or None when it declares none (or
    was recorded by a genbench that did not store plots)."""
    runs = data.runs
    rows = runs[(runs["kind"] == STUDY_KIND) & (runs["status"] == "done") & (runs["study"] == study)]
    for config in reversed(list(rows["config"])):
        if isinstance(config, dict) and isinstance(config.get("plots"), list):
            return tuple(PlotEntry.from_dict(p) for p in config["plots"]
                         if isinstance(p, dict) and p.get("kind") in KIND_DRAWERS)
    return None


def study_plots(data: StoreData, study: str) -> list[Plot]:
    """The plots `study` declares in its grid file (stored with its definition), or the overview when it declares
    none, or none of them could be drawn from the store."""
    out: list[Plot] = []
    for entry in declared_plots(data, study) or ():
        out.extend(KIND_DRAWERS[entry.kind](data, study, entry))
    if not out:
        out.extend(draw_bars(data, study, OVERVIEW))
    return out


__all__ = ["KIND_DRAWERS", "OVERVIEW", "Plot", "curve", "declared_plots", "draws", "log_axis", "plot_latency_vs_batch",
           "points", "read_history", "study_plots"]


# -- the claims at a glance ---------------------------------------------------------------------------------
VERDICT_COLOURS = {"supported": "#2e7d32", "contradicted": "#c62828", "no effect": "#1565c0",
                   "inconclusive": "#b8860b", "not measured": "#9e9e9e"}
FOREST_LIMIT = 6.0  # effects and bounds beyond +-6 margins are drawn at the edge, with an arrow


def forest_rows(results: list) -> list[dict[str, Any]]:
    """Per claim decided by a comparison: its primary effect and 95% bounds divided by the margin, signed so that
    the expected direction is positive (+1: an effect of the margin's size the way the claim says), and its
    verdict. Claims without a measured difference (analytic checks, nothing stored) are left out."""
    rows = []
    for res in results:
        test, primary = res.tests[0], res.claim.primary
        d = test.difference
        direction = getattr(primary, "direction", None)
        if d is None or direction is None or not test.margin or not math.isfinite(d.interval.mean):
            continue
        sign = 1.0 if direction == "higher" else -1.0
        iv = d.interval
        low, high = sorted((sign * iv.low / test.margin, sign * iv.high / test.margin)) if iv.n >= 2 else (math.nan,) * 2
        rows.append({"id": res.claim.id, "effect": sign * iv.mean / test.margin, "low": low, "high": high,
                     "verdict": res.verdict, "test": d.test_label})
    return rows


def plot_forest(results: list) -> Plot | None:
    """Every claim's primary effect / margin with its 95% interval, the +-1 margin lines and 0, coloured by
    verdict: the whole claims report at a glance. None when no claim has a measured difference."""
    rows = forest_rows(results)
    if not rows:
        return None
    fig = Figure(figsize=(7.0, 0.9 + 0.38 * len(rows)), layout="constrained")
    ax = fig.subplots()
    lim = FOREST_LIMIT
    for y, row in enumerate(reversed(rows)):
        colour = VERDICT_COLOURS.get(row["verdict"], "#000000")
        low, high = row["low"], row["high"]
        if math.isnan(low):
            low = high = row["effect"]
        ax.plot([max(low, -lim), min(high, lim)], [y, y], color=colour, lw=2.2, solid_capstyle="butt")
        for bound, edge in ((low, -lim), (high, lim)):
            if (bound < -lim and edge < 0) or (bound > lim and edge > 0):
                ax.annotate("", xy=(edge, y), xytext=(edge * 0.93, y),
                            arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.5})
        ax.plot([min(max(row["effect"], -lim), lim)], [y], "o", color=colour, ms=6)
    for x, style in ((0.0, "-"), (1.0, "--"), (-1.0, "--")):
        ax.axvline(x, color="#555555", lw=0.9, ls=style)
    ax.set_yticks(range(len(rows)), [f"{r['id']} ({r['test']})" for r in reversed(rows)], fontsize=8)
    ax.set_xlim(-lim * 1.02, lim * 1.02)
    ax.set_xlabel("primary effect / margin (+: the claimed direction; dashed: +-1 margin)")
    shown = list(dict.fromkeys(r["verdict"] for r in rows))
    for v in shown:
        ax.plot([], [], "o-", color=VERDICT_COLOURS.get(v, "#000000"), label=v)
    ax.legend(fontsize=7, loc="lower right", frameon=True)
    ax.grid(alpha=0.3, axis="x")
    return Plot("claims-forest", "Every claim's primary effect divided by its margin, with its 95% interval, the "
                "+-1 margin lines and 0, coloured by verdict (bounds beyond +-6 margins end in an arrow).",
                _png(fig), None)


def plot_regimes(frame: pd.DataFrame, study: str, settings: list[str], metric: str) -> Plot | None:
    """A heat map of a regime table (reports.regimes.degradation_frame): perturbed - clean of `metric` per
    setting (rows) and perturbation (columns), each cell annotated with its mean and 95% interval."""
    from reports.regimes import show_setting

    sub = frame[(frame["metric"] == metric) & (frame["why"] == "")] if "why" in frame else frame.iloc[0:0]
    if sub.empty:
        return None
    row_keys = [c for c in settings if c != "perturb"]
    labels = [", ".join(show_setting(r[c], c) for c in row_keys) for _, r in sub.iterrows()]
    sub = sub.assign(_row=labels)
    rows, cols = sorted(dict.fromkeys(labels)), list(dict.fromkeys(sub["perturb"]))
    grid = np.full((len(rows), len(cols)), np.nan)
    text = [["" for _ in cols] for _ in rows]
    for _, r in sub.iterrows():
        i, j = rows.index(r["_row"]), cols.index(r["perturb"])
        grid[i, j] = r["effect"]
        text[i][j] = f"{r['effect']:+.3g}\n[{r['low']:.2g}, {r['high']:.2g}]"
    fig = Figure(figsize=(1.6 + 1.5 * len(cols), 0.8 + 0.45 * len(rows)), layout="constrained")
    ax = fig.subplots()
    bound = float(np.nanmax(np.abs(grid))) or 1.0
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, text[i][j], ha="center", va="center", fontsize=6.5)
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.set_xlabel("perturbation")
    ax.set_ylabel(", ".join("S" if c == "eval.steps" else c for c in row_keys), fontsize=8)
    fig.colorbar(im, ax=ax, label=f"{metric}: perturbed - clean")
    return Plot(f"regimes-{metric}-{study_slug(study)}", f"Degradation by regime ({study}, {metric}): perturbed - clean, "
                "mean and 95% interval over seeds per setting (S = T where it says T).", _png(fig), study)

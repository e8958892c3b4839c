"""Tables from the store: per-study quality (mean +- 95% CI over seeds), and speed.

A study table has one row per configuration (the grid axes that vary; seeds of one `config_key` pooled,
different configurations never: rows that share their axes but not their configuration are shown apart with
the keys that differ), one column per metric with its direction arrow taken from the stored
`higher_is_better`, the best value marked, and the data-versus-data floor as a reference row. The speed table lists benchmark rows by part, backend,
provider, batch and threads with their parity status (quality against latency of timed evaluations is
`reports.pareto`). Directions and units always come from the rows, never a list here.
"""
from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from genlib import records

from reports.load import MISSING, StoreData, data_name, is_scalar, select_rows, setting_value
from reports.render import Column, Num, Stat, Table
from reports.stats import t_interval

HIDDEN_AXES = ("block",)  # a block's name repeats the settings its `set` fixes
STEPS_STUDY = "steps"  # the sampler study (its plots read the sampler settings below)


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-") or "x"


def study_slug(study: str) -> str:
    """A study's part of report file names and anchors, one per study: the name itself when it is already
    lower-case letters, digits, '-' and '_'; otherwise its slug plus a short hash of the name, so that names
    which slugify alike ('a/b' and 'a-b', 'Mine' and 'mine') never share a file."""
    text = str(study)
    base = re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-") or "x"
    return base if base == text else f"{base}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def _hashable(value: Any) -> Any:
    return repr(value) if not is_scalar(value) else (("bool", value) if isinstance(value, bool) else value)


# -- metric columns ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricInfo:
    key: str  # column key: the metric name, or name[split] when one name has several splits
    name: str
    split: str
    unit: str
    higher_is_better: bool | None
    target: float | None

    def column(self) -> Column:
        return Column(key=self.key, label=self.key, kind="stat", unit=self.unit,
                      higher_is_better=self.higher_is_better, target=self.target)


def metric_infos(frame: pd.DataFrame, preferred: Iterable[str] = ()) -> list[MetricInfo]:
    """Metric columns of `frame` (rows of the store's metrics), in `preferred` order then by first appearance.
    Direction: the rows' higher_is_better when they agree, else None; target: extra['target'] when numeric."""
    if frame.empty:
        return []
    pairs = list(dict.fromkeys(zip(frame["metric"], frame["split"])))
    splits_per_name = Counter(name for name, _ in pairs)
    order = {name: i for i, name in enumerate(dict.fromkeys(preferred))}
    first_seen = {p: i for i, p in enumerate(pairs)}
    pairs.sort(key=lambda p: (order.get(p[0], len(order)), first_seen[p]))
    out = []
    for name, split in pairs:
        rows = frame[(frame["metric"] == name) & (frame["split"] == split)]
        units = [u for u in rows["unit"] if isinstance(u, str) and u]
        dirs = {d for d in rows["higher_is_better"] if d is not None}
        hib = dirs.pop() if len(dirs) == 1 else None
        targets = {e.get("target") for e in rows["extra"] if isinstance(e.get("target"), (int, float))
                   and not isinstance(e.get("target"), bool)}
        target = float(targets.pop()) if hib is None and len(targets) == 1 else None
        key = name if splits_per_name[name] == 1 else f"{name}[{split}]"
        out.append(MetricInfo(key, name, split, units[0] if units else "", hib, target))
    return out


def per_seed(values: pd.DataFrame) -> dict[int | None, float]:
    """seed -> value, averaging rows that share a seed (cells differing only in hidden settings)."""
    out: dict[Any, list[float]] = {}
    for seed, value in zip(values["seed"], values["value"]):
        out.setdefault(seed, []).append(value)
    return {s: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for s, v in out.items()}


def stat_of(values: pd.DataFrame) -> Stat:
    iv = t_interval(list(per_seed(values).values()))
    return Stat(iv.mean, iv.low, iv.high, iv.n)


def mark_best(rows: list[dict[str, Any]], info: MetricInfo | Column) -> None:
    """Mark the best mean of a column (ties all marked): by direction, or closest to the target."""
    key = info.key
    cells = [(i, r[key]) for i, r in enumerate(rows) if isinstance(r.get(key), (Stat, Num))]
    values = [(i, c.mean if isinstance(c, Stat) else c.value) for i, c in cells]
    values = [(i, v) for i, v in values if v is not None and math.isfinite(v)]
    if len(values) < 2:
        return
    hib, target = info.higher_is_better, info.target
    if hib is True:
        score = {i: -v for i, v in values}
    elif hib is False:
        score = {i: v for i, v in values}
    elif target is not None:
        score = {i: abs(v - target) for i, v in values}
    else:
        return
    best = min(score.values())
    for i, s in score.items():
        if s == best:
            cell = rows[i][key]
            rows[i][key] = Stat(cell.mean, cell.low, cell.high, cell.n, True) if isinstance(cell, Stat) else \
                Num(cell.value, True, cell.digits)


# -- settings ------------------------------------------------------------------------------------------------
def _sort_key_for(values: list[Any]) -> Callable[[Any], Any]:
    """Numbers sort numerically (None last), booleans False < True, anything else keeps first-seen order."""
    if all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
        return lambda v: (v is None, float(v) if v is not None else 0.0)
    if all(isinstance(v, bool) for v in values):
        return lambda v: int(v)
    order = {_hashable(v): i for i, v in enumerate(dict.fromkeys(_hashable(v) for v in values))}
    return lambda v: order.get(_hashable(v), len(order))


def varying_axes(configs: list[dict[str, Any]]) -> list[str]:
    """Scalar axes (in first-seen order) that take more than one value across `configs`."""
    keys: dict[str, set] = {}
    for cfg in configs:
        for k, v in (cfg.get("axes") or {}).items():
            if k in HIDDEN_AXES or not is_scalar(v):
                continue
            keys.setdefault(k, set()).add(_hashable(v))
    out = []
    for k, vals in keys.items():
        # an axis missing from some rows counts as a distinct value (MISSING)
        missing = any(k not in (cfg.get("axes") or {}) for cfg in configs)
        if len(vals) + int(missing) > 1:
            out.append(k)
    return out


def training_first(data: StoreData, parent_keys: Iterable[Any], keys: list[str]) -> list[str]:
    """Training-time axes (those on the parent training rows) before inference-time ones, each group in order."""
    train_keys: set[str] = set()
    for p in dict.fromkeys(parent_keys):
        run = data.run(p)
        if run is not None:
            train_keys.update(run["axes"] or {})
    return [k for k in keys if k in train_keys] + [k for k in keys if k not in train_keys]


def _row_values(cfg: dict[str, Any], keys: list[str]) -> tuple:
    axes = cfg.get("axes") or {}
    return tuple(axes.get(k, MISSING) if k != "profile" else cfg.get("profile") for k in keys)


def _label(key: str, value: Any) -> Any:
    return "-" if value is MISSING else value


# -- configurations: never pooled ---------------------------------------------------------------------------
def _config_key(value: Any, run_key: str) -> str:
    return value if isinstance(value, str) and value else f"run:{run_key}"


def configurations(row_of: dict[str, tuple[tuple, str]], config_of: dict[str, dict], keys: list[str]
                   ) -> tuple[dict[tuple, list[str]], dict[tuple, str], list[str]]:
    """For rows keyed (displayed settings, config_key): the config keys under each displayed setting (first
    seen first), a label 'key=value, ...' for each (setting, config_key) that shares its setting with another
    configuration, and one note per such setting naming the keys that differ."""
    variants: dict[tuple, list[str]] = {}
    example: dict[tuple, dict] = {}
    for rk, (s, ck) in row_of.items():
        if ck not in variants.setdefault(s, []):
            variants[s].append(ck)
            example[(s, ck)] = config_of[rk]
    labels: dict[tuple, str] = {}
    notes: list[str] = []
    for s, cks in variants.items():
        if len(cks) < 2:
            continue
        configs = [example[(s, ck)] for ck in cks]
        paths = records.differing_keys(configs)
        names = list(dict.fromkeys(records.setting_name(p) for p in paths))
        mine = [_configuration_label(cfg, paths) for cfg in configs]
        for ck, label in zip(cks, mine):  # a label two configurations share names the config key too
            labels[(s, ck)] = (f"{label} ({ck})" if label else ck) if mine.count(label) > 1 else label
        where = ", ".join(f"{k}={_label(k, v)}" for k, v in zip(keys, s)) or "all cells"
        notes.append(f"Not pooled: {where} holds {len(cks)} configurations that differ in "
                     f"{', '.join(names) or 'their stored configuration'}; each is its own row.")
    return variants, labels, notes


LABEL_KEYS = 3  # a configuration's label names at most this many settings (the note names them all)


def _configuration_label(config: dict[str, Any], paths: list[str]) -> str:
    """'key=value, ...' telling one configuration from the others sharing its row: the grid axes that differ
    when any do (an axis is what a reader knows the grid by), else the other differing keys; each setting once,
    at most LABEL_KEYS of them."""
    axes = [p for p in paths if p.startswith("axes.")]
    shown: dict[str, Any] = {}
    for p in axes or paths:
        name = records.setting_name(p)
        value = records.axes(config).get(name, records.MISSING) if p in axes else records.value_at(
            config, p, records.MISSING)
        if value is not records.MISSING and name not in shown:  # a setting this configuration lacks is not shown
            shown[name] = value
    parts = [f"{name}={value}" for name, value in list(shown.items())[:LABEL_KEYS]]
    return ", ".join(parts) + (", ..." if len(shown) > LABEL_KEYS else "")


def differing_keys(configs: list[dict[str, Any]]) -> list[str]:
    """Setting names (as users write them: 'train.steps', 'eval.steps', an axis) that differ across the
    record configs `configs`, less the seed."""
    return list(dict.fromkeys(records.setting_name(p) for p in records.differing_keys(configs)))


# -- study tables -----------------------------------------------------------------------------------------
def grid_metrics(data: StoreData, study: str, kind: str = "eval", *, timing: bool = False) -> pd.DataFrame:
    """Metrics of a study's rows of one kind that finished ('done'), with a `data_name` column. Latency and
    parity metrics of timed evaluations are left out unless `timing` (they are `reports.pareto`'s)."""
    m = data.metrics
    rows = m[(m["study"] == study) & (m["kind"] == kind) & (m["status"] == "done")]
    if not timing:
        rows = rows[~rows["metric"].isin(list(records.TIMING))]
    rows = rows.copy()
    rows["data_name"] = [data_name(c) or "" for c in rows["config"]]
    return rows


def _preferred_metrics(frame: pd.DataFrame) -> list[str]:
    out: list[str] = []
    for cfg in frame["config"]:
        names = (cfg.get("eval") or {}).get("metrics")
        if isinstance(names, list):
            out.extend(n for n in names if isinstance(n, str))
    return list(dict.fromkeys(out))


def _unfinished_note(data: StoreData, study: str, group: str | None, kinds: tuple[str, ...]) -> list[str]:
    runs = data.runs[(data.runs["study"] == study) & data.runs["kind"].isin(kinds) & (data.runs["status"] != "done")]
    if group is not None:
        runs = select_rows(runs, ((data_name(c) or "") == group for c in runs["config"]))
    if runs.empty:
        return []
    counts = Counter(runs["status"])
    examples = []
    for name, status, error in zip(runs["name"], runs["status"], runs["error"]):
        if status == "failed" and len(examples) < 3:
            last = [ln for ln in str(error or "").strip().splitlines() if ln.strip()]
            examples.append(f"{name}: {last[-1].strip() if last else 'no error text'}")
    text = (f"Not in the means: {', '.join(f'{n} {s}' for s, n in sorted(counts.items()))} "
            f"cell(s) of this study ({'/'.join(kinds)}).")
    if examples:
        text += " Failed, e.g. " + "; ".join(f"`{e}`" for e in examples) + "."
    return [text]


def study_tables(data: StoreData, study: str) -> list[Table]:
    """One table per dataset of the study's evaluations (metrics differ between datasets)."""
    ev = grid_metrics(data, study, "eval")
    floors = grid_metrics(data, study, "floor")
    groups = list(dict.fromkeys(ev["data_name"])) or [None]
    tables = []
    for group in groups:
        frame = ev[ev["data_name"] == group] if group is not None else ev
        name = study_slug(study) if len(groups) == 1 else f"{study_slug(study)}-{slug(group)}"
        title = f"Study {study}" + (f": {group}" if group else "")
        notes = _unfinished_note(data, study, group, ("train", "eval"))
        if frame.empty:
            tables.append(Table(name, title, [Column("setting", "setting")], [],
                                notes=notes or ["No finished evaluations."]))
            continue
        runs = frame.drop_duplicates("run_key")
        configs = [dict(c, profile=c.get("profile")) for c in runs["config"]]
        keys = training_first(data, runs["parent_key"], varying_axes(configs))
        if len({c.get("profile") for c in configs}) > 1:
            keys.append("profile")
        infos = metric_infos(frame, _preferred_metrics(frame))
        row_of = {rk: (_row_values(dict(c, profile=c.get("profile")), keys), _config_key(ck, rk))
                  for rk, c, ck in zip(runs["run_key"], runs["config"], runs["config_key"])}
        frame = frame.assign(_row=[row_of[rk] for rk in frame["run_key"]])
        settings = list(dict.fromkeys(v[0] for v in row_of.values()))
        sorters = [_sort_key_for([s[i] for s in settings if s[i] is not MISSING]) for i in range(len(keys))]
        settings.sort(key=lambda s: tuple((s[i] is MISSING, sorters[i](s[i]) if s[i] is not MISSING else 0)
                                          for i in range(len(keys))))
        variants, labels, split_notes = configurations(row_of, dict(zip(runs["run_key"], runs["config"])), keys)
        setting_cols = [Column(k, k, "setting") for k in keys] or [Column("setting", "setting")]
        if labels:
            setting_cols.append(Column("configuration", "configuration", "setting"))
        columns = setting_cols + [Column("seeds", "seeds", "setting")] + [i.column() for i in infos]
        rows = []
        by_row = {key: g for key, g in frame.groupby("_row", sort=False)}
        for s in settings:
            for ck in variants[s]:
                g = by_row[(s, ck)]
                row: dict[str, Any] = ({k: _label(k, v) for k, v in zip(keys, s)} if keys
                                       else {"setting": "all cells"})
                if labels:
                    row["configuration"] = labels.get((s, ck), "")
                n = 0
                for info in infos:
                    vals = g[(g["metric"] == info.name) & (g["split"] == info.split)]
                    if not vals.empty:
                        row[info.key] = stat_of(vals)
                        n = max(n, row[info.key].n)
                row["seeds"] = n
                rows.append(row)
        notes = split_notes + notes
        for info in infos:
            mark_best(rows, info)
        reference = []
        fl = floors[floors["data_name"] == group] if group is not None else floors
        # the floor depends on the sample size: one reference row per n (profiles may differ) and configuration
        ns = [records.eval_config(c).get("n") for c in fl["config"]]
        fl_keys = [_config_key(ck, rk) for ck, rk in zip(fl["config_key"], fl["run_key"])]
        fl_rows = {rk: ((x,), k) for rk, x, k in zip(fl["run_key"], ns, fl_keys)}
        fl_variants, fl_labels, fl_notes = configurations(fl_rows, dict(zip(fl["run_key"], fl["config"])), ["n"])
        sizes = list(dict.fromkeys(ns))
        notes = notes + [f"Floor: {n}" for n in fl_notes]
        for size, ck in ((x, k) for x in sizes for k in fl_variants.get((x,), [])):
            sub = select_rows(fl, (x == size and k == ck for x, k in zip(ns, fl_keys)))
            label = fl_labels.get(((size,), ck))
            row = {setting_cols[0].key: "floor: data vs data" + (f" (n={size})" if len(sizes) > 1 else "")
                   + (f" ({label})" if label else "")}
            n = 0
            for info in infos:
                vals = sub[sub["metric"] == info.name]
                if not vals.empty:
                    row[info.key] = stat_of(vals)
                    n = max(n, row[info.key].n)
            row["seeds"] = n
            reference.append(row)
        if reference:
            notes = ["The floor row scores training-split data against the test split as if it were samples: "
                     "the value a perfect model would reach at this sample size.", *notes]
        notes = [f"Mean ± 95% t-interval over seeds; best value in bold "
                 f"(↑ higher is better, ↓ lower is better, →v closest to v).", *notes]
        tables.append(Table(name, title, columns, rows, reference, notes))
    return tables


# -- benchmark rows -----------------------------------------------------------------------------------------
BENCH_FIELDS = records.BENCH_SETTINGS
LATENCY_METRICS = {"p50": "latency_ms_p50", "p90": "latency_ms_p90", "p99": "latency_ms_p99",
                   "mean": "latency_ms_mean", "throughput": "throughput_per_s", "peak_mb": "peak_memory_mb",
                   "max_abs_err": "parity_max_abs_err"}


def _dig(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def _parity(status: str, extras: list[dict]) -> str:
    """The parity verdict bench producers write in each metric's extra ('valid', 'invalid', 'unchecked', 'n/a')."""
    for e in extras:
        if isinstance(e.get("parity"), str):
            return e["parity"]
    return "invalid" if status == "failed" else "n/a"


def model_label(data: StoreData, run_key: Any) -> str:
    """'family/data' of a training run (e.g. 'ddpm/moons T=1000'), or its key when not in the store."""
    run = data.run(run_key)
    if run is None:
        return str(run_key)[:12] if isinstance(run_key, str) else "-"
    train = records.run_config(run["config"]) or {}
    family = _dig(train, "model.family") or run.get("kind")
    label = f"{family}/{_dig(train, 'data.name') or '?'}"
    T = _dig(train, "model.noise.T")
    if T is not None:  # any family with a noise schedule
        label += f" T={T}" + ("" if _dig(train, "model.noise.scaled") in (True, None) else " unscaled")
    return label


def bench_frame(data: StoreData) -> pd.DataFrame:
    """One line per benchmark run: the fields of BENCH_FIELDS, its latency metrics, parity, model and status."""
    m = data.metrics[data.metrics["kind"] == "bench"]
    rows = []
    for run_key, g in m.groupby("run_key", sort=False):
        first = g.iloc[0]
        cfg = first["config"]
        extras = [e for e in g["extra"] if isinstance(e, dict)]
        metrics = {name: v for name, v in zip(g["metric"], g["value"])}
        rec: dict[str, Any] = {"run_key": run_key, "status": first["status"], "parent_key": first["parent_key"],
                               "name": first["name"], "config_key": first["config_key"]}
        rec.update(records.bench_settings(cfg, extras[0] if extras else None))
        if isinstance(first["provider"], str) and first["provider"]:
            rec["provider"] = first["provider"]  # the provider that ran, from the row itself
        for col, name in LATENCY_METRICS.items():
            rec[col] = metrics.get(name, float("nan"))
        rec["parity"] = _parity(first["status"], extras)
        rec["model"] = model_label(data, first["parent_key"] or cfg.get("run_key"))
        rows.append(rec)
    df = pd.DataFrame.from_records(rows)
    if df.empty:
        return df
    for col in ("batch", "threads", "steps"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def sampler_detail(row: pd.Series) -> str:
    """A sampler row's label as its registry entry gave it (recorded with the export), with S."""
    if row.get("part") != "sampler" or not row.get("sampler"):
        return ""
    label = row.get("label")
    text = str(label) if isinstance(label, str) and label else str(row["sampler"])
    if isinstance(row.get("steps"), (int, float)) and math.isfinite(row["steps"]):
        text += f" S={int(row['steps'])}"
    return text


def speed_table(data: StoreData) -> Table | None:
    """Latency p50/p90, throughput and peak memory per part, backend, provider, batch and threads."""
    df = bench_frame(data)
    if df.empty:
        return None
    df["detail"] = [sampler_detail(r) for _, r in df.iterrows()]

    def order(r: pd.Series) -> tuple:
        num = [float(r[k]) if isinstance(r[k], (int, float)) and math.isfinite(r[k]) else -1.0
               for k in ("steps", "batch", "threads")]
        return (str(r["model"]), str(r["part"]), str(r["sampler"] or ""), num[0], str(r["eta"]), str(r["variance"]),
                str(r["precision"]), str(r["backend"]), str(r["provider"]), num[1], num[2])

    df = df.iloc[sorted(range(len(df)), key=lambda i: order(df.iloc[i]))].reset_index(drop=True)
    cols = [Column("model", "model"), Column("part", "part")]
    if (df["detail"] != "").any():
        cols.append(Column("detail", "sampler"))
    cols += [Column("backend", "backend"), Column("provider", "provider"), Column("precision", "precision"),
             Column("batch", "batch", "num"), Column("threads", "threads", "num"),
             Column("p50", "p50", "num", "ms", False), Column("p90", "p90", "num", "ms", False),
             Column("throughput", "throughput", "num", "samples/s", True),
             Column("peak_mb", "peak mem", "num", "MB", False), Column("parity", "parity", "text"),
             Column("max_abs_err", "max abs err", "num", "abs", False)]
    rows = []
    for _, r in df.iterrows():
        row: dict[str, Any] = {}
        for c in cols:
            v = r.get(c.key)
            if c.kind == "num":
                v = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
                row[c.key] = Num(v, digits=4) if c.key not in ("batch", "threads") else (int(v) if v is not None else "-")
            else:
                row[c.key] = "-" if v is None or (isinstance(v, float) and math.isnan(v)) else v
        rows.append(row)
    # fastest valid backend per (model, part, sampler, precision, batch, threads)
    groups: dict[tuple, list[int]] = {}
    for i, (_, r) in enumerate(df.iterrows()):
        if r["parity"] in ("valid", "n/a") and r["status"] == "done":
            groups.setdefault(tuple(str(r.get(k)) for k in ("model", "part", "detail", "precision", "batch",
                                                              "threads")), []).append(i)
    for idx in groups.values():
        sub = [rows[i] for i in idx]
        if len(sub) > 1:
            mark_best(sub, Column("p50", "p50", "num", "ms", False))
    notes = ["One row per timed cell; bold: the fastest backend for the same model, part, sampler, precision, "
             "batch and threads among exports that passed parity. Parity: valid (ONNX output equals torch "
             "within tolerance), invalid (timed anyway, not a valid speed), n/a (torch backends)."]
    failed = int((df["status"] != "done").sum())
    if failed:
        notes.append(f"{failed} row(s) are stored as failed (parity not passed).")
    return Table("speed", "Inference speed", cols, rows, notes=notes)


# -- Pareto: sampler quality vs latency ----------------------------------------------------------------------
@dataclass(frozen=True)
class SamplerSetting:
    data: str
    T: Any
    scaled: Any
    label: str  # the grid's sampler label (variant) or sampler + eta / variance
    sampler: str
    steps: int | None  # S (the effective number of steps; eval.steps null means S = T)
    eta: Any
    variance: Any


def sampler_setting(cfg: dict[str, Any]) -> SamplerSetting | None:
    """The sampler setting of an eval record, from what its registry entry recorded (`sampler_info`): None for
    samplers whose step count is not the respaced steps S (quality-vs-steps plots and tables read S)."""
    ev = cfg.get("eval") or {}
    T = setting_value(cfg, "model.noise.T")
    T = None if T is MISSING else T
    info = cfg.get("sampler_info")
    if not info:  # a record from before samplers recorded themselves: S is eval.steps, null meaning T
        info = {"name": ev.get("sampler"), "step_setting": "steps" if T is not None else None,
                "steps": ev.get("steps") if ev.get("steps") is not None else T}
    if info.get("step_setting") != "steps":
        return None
    steps = info.get("steps")
    label = (cfg.get("axes") or {}).get("sampler")
    if not isinstance(label, str):
        label = info.get("label") or str(info.get("name"))
    scaled = setting_value(cfg, "model.noise.scaled")
    return SamplerSetting(data_name(cfg) or "", T, None if scaled is MISSING else scaled, label, str(info.get("name")),
                          int(steps) if steps is not None else None, ev.get("eta"), ev.get("variance"))


__all__ = ["BENCH_FIELDS", "MetricInfo", "bench_frame", "configurations", "differing_keys", "grid_metrics", "mark_best", "metric_infos", "model_label",
           "per_seed", "slug", "speed_table", "study_slug", "stat_of", "study_tables", "varying_axes"]

"""The regime table of a study that perturbs its denoiser (an `eval.perturb` axis, genlib.perturb): per setting
(data block, sampling steps S, sampler, ...) and perturbation, the degradation Q(perturbed) - Q(clean) of a metric,
paired by seed, with its 95% interval (reports.stats.difference, so the exact test where the t-test breaks).

Both sides of each difference are one configuration that differs only in the perturbation; a setting holding
several configurations is left out and named, never pooled. It reads the store frame only and draws nothing.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

from reports.load import StoreData
from reports.stats import difference, t_interval
from reports.tables import per_seed

PERTURB_AXIS = "eval.perturb"
CLEAN = "none"


def has_regimes(data: StoreData, study: str) -> bool:
    """Whether the study's evaluations vary the perturbation (so it has a regime table)."""
    runs = data.runs
    rows = runs[(runs["study"] == study) & (runs["kind"] == "eval")]
    values = {a.get(PERTURB_AXIS) for a in rows["axes"] if PERTURB_AXIS in a}
    return CLEAN in values and len(values) > 1


def _setting(axes: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in axes.items() if k != PERTURB_AXIS))


def degradation_frame(data: StoreData, study: str, metrics: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """One row per (setting, perturbation, metric): the setting's axes (less the perturbation), `perturb`,
    `metric`, `clean` (mean of the clean side), `effect` = perturbed - clean paired by seed with `low`, `high`
    (95%), `n`, `test` (the test's short name) and `why` (non-empty when not measured: several configurations)."""
    m = data.metrics
    rows = m[(m["study"] == study) & (m["kind"] == "eval") & (m["status"] == "done") & m["metric"].isin(list(metrics))]
    rows = rows[[PERTURB_AXIS in a for a in rows["axes"]]]
    out: list[dict[str, Any]] = []
    if rows.empty:
        return pd.DataFrame()
    keyed = rows.assign(_setting=[_setting(a) for a in rows["axes"]],
                        _perturb=[a[PERTURB_AXIS] for a in rows["axes"]])
    for (setting, metric), group in keyed.groupby(["_setting", "metric"], sort=False):
        clean = group[group["_perturb"] == CLEAN]
        axes = {k: v for k, v in group["axes"].iloc[0].items() if k != PERTURB_AXIS}
        for perturb, side in group.groupby("_perturb", sort=False):
            if perturb == CLEAN:
                continue
            row: dict[str, Any] = {**axes, "perturb": perturb, "metric": metric}
            several = [name for name, frame in (("clean", clean), ("perturbed", side))
                       if frame["config_key"].nunique() > 1]
            if clean.empty or several:
                row["why"] = ("no clean cell" if clean.empty else
                              f"the {' and '.join(several)} side holds several configurations (never pooled)")
                out.append(row)
                continue
            d = difference(per_seed(side), per_seed(clean))
            iv = d.interval
            row.update(clean=t_interval(list(per_seed(clean).values())).mean, effect=iv.mean, low=iv.low,
                       high=iv.high, n=iv.n, test=d.test_label, why="")
            out.append(row)
    return pd.DataFrame.from_records(out)


def varied_settings(frame: pd.DataFrame) -> list[str]:
    """The setting columns of a degradation frame that take more than one value (the regime's coordinates)."""
    fixed = {"perturb", "metric", "clean", "effect", "low", "high", "n", "test", "why"}
    varied = [c for c in frame.columns if c not in fixed and frame[c].map(show_setting).nunique() > 1]
    if "block" in varied:  # a block's own settings (its data, its family) follow from the block: one column
        shown = frame.assign(**{c: frame[c].map(show_setting) for c in varied})
        varied = [c for c in varied if c == "block" or shown.groupby("block")[c].nunique().max() > 1]
    return varied


def show_setting(value: Any, key: str = "") -> str:
    """A setting as a table shows it: null eval.steps is S = T ('T'), a missing value '-', 10.0 as 10."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "T" if key == "eval.steps" else "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


__all__ = ["CLEAN", "PERTURB_AXIS", "degradation_frame", "has_regimes", "show_setting", "varied_settings"]

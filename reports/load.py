"""Reading the results store for reports: runs and metrics as pandas frames with their configs parsed.

The store (`genlib.store`) is the only contract between producers and reports: this module opens it
read-only, parses `config_json` / `extra_json`, and answers setting look-ups (`setting_value`) through the
layout accessors of `genlib.records`, the same way for grid cells, CLI rows and floors. It does not
aggregate or format anything.
"""
from __future__ import annotations

import difflib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genlib import records
from genlib.store import ResultsStore, StoreError

MISSING = records.MISSING
same_value = records.same_value


class ReportError(StoreError):
    """The store cannot be reported on as asked (empty, no such study, ...); the message says what to do."""


def _json(text: Any, default: Any) -> Any:
    if not isinstance(text, str) or not text:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return default


def _int_or_none(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value)


@dataclass
class StoreData:
    """Everything a report reads. `runs`: one row per run with `config` (dict) and `axes` (dict) columns.
    `metrics`: one row per (run, metric, split) with the run's columns, `value` (NaN when non-finite),
    `unit`, `higher_is_better` (True/False/None) and `extra` (dict)."""

    path: Path
    runs: pd.DataFrame
    metrics: pd.DataFrame

    def studies(self, kinds: tuple[str, ...] = ("train", "eval", "floor")) -> list[str]:
        """Studies with grid rows, in the order they first appear in the store."""
        runs = self.runs[self.runs["kind"].isin(kinds) & self.runs["study"].notna()]
        return list(dict.fromkeys(runs["study"]))

    def run(self, run_key: str | None) -> dict[str, Any] | None:
        if run_key is None or run_key not in self._by_key:
            return None
        return self._by_key[run_key]

    def __post_init__(self) -> None:
        self._by_key = {r["run_key"]: r for r in self.runs.to_dict("records")}

    def artifact_dir(self, artifact_path: Any) -> Path | None:
        """Resolve a run's artifact_path: absolute as is, else relative to the store's directory (the grid
        runner's convention, `<store stem>.artifacts/<run_key>`), else relative to the working directory."""
        if not isinstance(artifact_path, str) or not artifact_path:
            return None
        path = Path(artifact_path)
        # beside the real store file: a store reached through a symlink keeps its artifacts where the driver wrote them
        real_dir = Path(os.path.realpath(self.path)).parent
        candidates = [path] if path.is_absolute() else [real_dir / path, self.path.parent / path, Path.cwd() / path]
        for candidate in candidates:
            if candidate.exists():
                return candidate
        return None


def open_store(path: str | Path) -> StoreData:
    """Read the store at `path`. Raises StoreError (newer schema, not a store) or ReportError (missing, empty)."""
    path = Path(path)
    if not path.exists():
        raise ReportError(f"results store '{path}' does not exist (pass the file a grid run wrote with --store)")
    if path.is_dir():
        raise ReportError(f"results store '{path}' is a directory; pass the .db file")
    with ResultsStore(path, readonly=True) as store:
        runs = store.read_table("runs")
        metrics = store.read_table("metrics")
    if runs.empty:
        raise ReportError(f"results store '{path}' holds no runs yet; fill it first, e.g. "
                          f"`genbench grid run beta --store {path}` or `genbench claims --store {path}`")
    runs["config"] = [_json(t, {}) for t in runs["config_json"]]
    runs["axes"] = [records.axes(c) for c in runs["config"]]
    runs["seed"] = pd.Series([_int_or_none(s) for s in runs["seed"]], index=runs.index, dtype=object)
    runs = runs.drop(columns=["config_json"])
    metrics["extra"] = [_json(t, {}) for t in metrics["extra_json"]]
    metrics["higher_is_better"] = [None if v is None or (isinstance(v, float) and math.isnan(v)) else bool(v)
                                   for v in metrics["higher_is_better"]]
    metrics["value"] = pd.to_numeric(metrics["value"], errors="coerce").astype(float)
    metrics = metrics.drop(columns=["extra_json"]).rename(columns={"name": "metric"})
    run_cols = ["run_key", "kind", "study", "name", "parent_key", "status", "seed", "device", "provider",
                "git_commit", "artifact_path", "config", "axes", "config_key"]
    merged = metrics.merge(runs[run_cols], on="run_key", how="left")
    return StoreData(path=path, runs=runs, metrics=merged)


def check_studies(data: StoreData, studies: list[str] | tuple[str, ...] | None) -> list[str]:
    """The studies to report: all grid studies in the store, or `studies` after checking each exists."""
    present = data.studies()
    if studies is None:
        return present
    if isinstance(studies, str):
        studies = [s for s in studies.split(",") if s.strip()]
    out = []
    for study in studies:
        if study not in present:
            close = difflib.get_close_matches(study, present, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ReportError(f"no study '{study}' in results store '{data.path}'{hint} "
                              f"(studies there: {', '.join(present) or 'none'})")
        out.append(study)
    return out


# -- settings -----------------------------------------------------------------------------------------------
def setting_value(config: dict[str, Any], key: str) -> Any:
    """The value of a setting of a grid row: an axis (`loss.beta`, a variant label like `sampler`), else a
    dotted key of the resolved training config (`data.name`), else of the evaluation config (`eval.steps`; a
    setting an evaluation record leaves out at its default, `eval.precision`, reads as that default).
    Returns MISSING when the row has no such setting."""
    axes = records.axes(config)
    if key in axes:
        return axes[key]
    if key.startswith("eval."):
        return records.setting_at({"eval": records.eval_config(config)}, key)
    train = records.run_config(config)
    if train is not None:
        return records.value_at(train, key, MISSING)
    if key.startswith("data."):
        return records.value_at(records.data_config(config) or {}, key[len("data."):], MISSING)  # floors: own data
    return MISSING


def data_name(config: dict[str, Any]) -> str | None:
    """The dataset a grid row is about (training config, or a floor's own data config)."""
    name = (records.data_config(config) or {}).get("name")
    return name if isinstance(name, str) else None


def select_rows(frame: pd.DataFrame, mask: Any) -> pd.DataFrame:
    """Rows of `frame` where `mask` (an iterable of booleans, one per row) is true; safe for empty frames,
    where `frame[[]]` would select columns instead."""
    return frame.loc[np.asarray(list(mask), dtype=bool).reshape(-1)]


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


__all__ = ["MISSING", "ReportError", "StoreData", "check_studies", "data_name", "is_scalar", "open_store",
           "same_value", "select_rows", "setting_value"]

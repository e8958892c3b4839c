"""The train-once planner: expand a grid into training cells and the evaluation cells they feed.

Every cell of a grid is split into its training config (a resolved RunConfig: data, model, loss, KL
and noise schedules, T, steps, seed) and its evaluation config (sampler, steps, eta, refinement
passes, re-encode mode, number of samples, metrics). Cells with the same training config share one
checkpoint (its key is `RunConfig.run_key`); inference-time axes fan out from it without retraining.
`share=False` gives every evaluation its own training, the baseline the planner is measured against.
The planner validates every resolved config up front and never runs anything.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, ClassVar

from genlib.config import ConfigError, config_hash, to_dict
from genlib.metrics.eval_config import EvaluationConfig
from genlib.models import resolve_sampler
from genlib.records import MISSING, same_value, setting_at
from genlib.registry import suggest
from genlib.train import RunConfig, load_run_config

from ablations.spec import (DEFAULT_EVAL_N, EVAL_FIELDS, Block, GridError, GridSpec, block_combos, cell_settings,
                            is_eval_key)



@dataclass(frozen=True)
class TrainCell:
    """Train one checkpoint. `config` is the resolved RunConfig as a plain dict."""

    kind: ClassVar[str] = "train"
    key: str
    study: str
    profile: str
    seed: int
    label: str
    config: dict[str, Any]
    axes: dict[str, Any]
    unshared_for: str | None = None  # share=False: the evaluation this private training feeds

    def record_config(self) -> dict[str, Any]:
        out = {"train": self.config, "eval": None, "axes": self.axes, "profile": self.profile}
        if self.unshared_for:
            out["unshared_for"] = self.unshared_for
        return out


@dataclass(frozen=True)
class EvalCell:
    """Evaluate the checkpoint `parent` with one evaluation config (SampleConfig fields + n + metrics)."""

    kind: ClassVar[str] = "eval"
    key: str
    study: str
    profile: str
    seed: int
    label: str
    parent: str
    train_config: dict[str, Any]
    eval_config: dict[str, Any]
    axes: dict[str, Any]
    # the sampler's registry entry on this setting (name, label, steps, step_setting, nfe): derived, not keyed
    sampler_info: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def timed(self) -> bool:
        """True when the cell exports, times and samples through its sampler (see bench.grid_timing)."""
        return bool(self.eval_config.get("timing"))

    def record_config(self) -> dict[str, Any]:
        return {"train": self.train_config, "eval": self.eval_config, "axes": self.axes, "profile": self.profile,
                "sampler_info": self.sampler_info}


@dataclass(frozen=True)
class FloorCell:
    """The data-versus-data reference: sample metrics of the training split against the test split."""

    kind: ClassVar[str] = "floor"
    key: str
    study: str
    profile: str
    seed: int
    label: str
    data: dict[str, Any]
    n: int
    metrics: list[str] | None
    axes: dict[str, Any]

    def record_config(self) -> dict[str, Any]:
        return {"train": None, "eval": {"n": self.n, "metrics": self.metrics}, "data": self.data,
                "axes": self.axes, "profile": self.profile}


Cell = TrainCell | EvalCell | FloorCell


@dataclass
class Plan:
    spec: GridSpec
    share: bool
    train_cells: list[TrainCell] = field(default_factory=list)
    eval_cells: list[EvalCell] = field(default_factory=list)
    floor_cells: list[FloorCell] = field(default_factory=list)
    train_axes: tuple[str, ...] = ()
    eval_axes: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)  # e.g. an exclude rule that matches no cell

    @property
    def study(self) -> str:
        return self.spec.study

    @property
    def cells(self) -> list[Cell]:
        return [*self.train_cells, *self.floor_cells, *self.eval_cells]

    def children(self) -> dict[str, list[EvalCell]]:
        out: dict[str, list[EvalCell]] = {c.key: [] for c in self.train_cells}
        for cell in self.eval_cells:
            out[cell.parent].append(cell)
        return out

    @property
    def timed_cells(self) -> list[EvalCell]:
        """Evaluations that also export and time their sampler (eval config with `timing`)."""
        return [c for c in self.eval_cells if c.timed]

    def summary(self) -> dict[str, Any]:
        return {"study": self.study, "profile": self.spec.profile, "share": self.share,
                "trainings": len(self.train_cells), "evaluations": len(self.eval_cells),
                "timed": len(self.timed_cells),
                "floors": len(self.floor_cells), "cells": len(self.cells), "seeds": list(self.spec.seeds),
                "training_axes": list(self.train_axes), "inference_axes": list(self.eval_axes),
                "warnings": list(self.warnings)}


# -- evaluation configs -------------------------------------------------------------------------------
def resolve_eval(data: dict[str, Any], where: str = "eval") -> dict[str, Any]:
    """The resolved evaluation config: every SampleConfig field, n and the metric names (or None)."""
    if not isinstance(data, dict):
        raise GridError(f"'{where}' must be a mapping, got {data!r}")
    for key in data:
        if key not in EVAL_FIELDS:
            full = [f"eval.{f}" for f in EVAL_FIELDS]
            raise GridError(f"unknown key 'eval.{key}'{suggest(f'eval.{key}', full)} (valid: {', '.join(full)})")
    n = data.get("n", DEFAULT_EVAL_N)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise GridError(f"'eval.n' must be an integer >= 1 (number of samples), got {n!r}")
    metrics = data.get("metrics")
    if metrics is not None:
        if isinstance(metrics, str):
            metrics = [metrics]
        if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
            raise GridError(f"'eval.metrics' must be a non-empty list of metric names, got {metrics!r}")
        check_metric_names(metrics, "eval.metrics")
    return EvaluationConfig.from_flat({**data, "n": n, "metrics": metrics}, "eval").to_flat()


def check_metric_names(names: list[str], where: str) -> None:
    """Validate names against genlib.metrics.METRICS when that registry exists (did-you-mean on typos)."""
    try:
        from genlib.metrics import METRICS  # type: ignore[attr-defined]
    except ImportError:
        return
    known = METRICS.names()
    for name in names:
        if name not in known:
            raise GridError(f"'{where}': unknown metric '{name}'{suggest(name, known)} (known: {', '.join(known)})")


def check_eval_applies(run: RunConfig, ev: dict[str, Any]) -> dict[str, Any]:
    """Reject evaluation settings the model family cannot honour before anything trains; returns what the
    sampler's registry entry says of this setting (name, label, step count and setting, NFE) for the record."""
    family = run.model.family
    if ev["metrics"]:
        try:
            from genlib.metrics import METRICS  # type: ignore[attr-defined]
        except ImportError:
            METRICS = None
        for name in ev["metrics"] if METRICS is not None else ():
            spec = METRICS.get(name)
            if getattr(spec, "needs", None) == "model" and spec.families is not None and family not in spec.families:
                raise GridError(f"'eval.metrics': metric '{name}' applies to model families "
                                f"{', '.join(spec.families)}, not '{family}'")
    try:  # the sampler's own rules (registry spec): applies to the family, reads these settings, S <= T
        sample = EvaluationConfig.from_flat(ev).sample
        return resolve_sampler(run.model, sample).info(run.model, sample)
    except ConfigError as exc:
        noise = getattr(run.model, "noise", None)
        hint = ""
        if noise is not None and ev["steps"] is not None and ev["steps"] > noise.T:
            hint = f"; add an 'exclude' rule such as {{model.noise.T: {noise.T}, eval.steps: [{ev['steps']}]}}"
        raise GridError(f"'eval' does not fit model family '{family}': {exc}{hint}") from None


def _check_real_perturbation(run: RunConfig, ev: dict[str, Any]) -> None:
    """A real perturbation (genlib.perturb: an early checkpoint, the denoiser at a lower precision) needs what
    realises it: the step among the training's train.save_at; an untimed cell (a timed one draws through its
    whole-sampler graph: time a precision with eval.precision)."""
    from genlib.perturb import parse_perturb

    from genlib.models import MODELS

    perturbation = parse_perturb(ev.get("perturb", "none"))
    if not perturbation.real:
        return
    if not MODELS.get(run.model.family).trainable:
        raise GridError(f"eval.perturb '{perturbation.spec}' is a trained network's error, but family "
                        f"'{run.model.family}' has no trained weights; exclude it for this family")
    if "timing" in ev:
        raise GridError(f"eval.perturb '{perturbation.spec}' is realised in the torch sampler, not in a timed cell's "
                        f"exported graph; exclude it from timing.where (time a precision with eval.precision)")
    if perturbation.kind == "step" and perturbation.step not in run.train.save_at:
        raise GridError(f"eval.perturb '{perturbation.spec}' samples the weights saved at step {perturbation.step}, "
                        f"but train.save_at is {list(run.train.save_at)}; add {perturbation.step} to train.save_at")


@functools.lru_cache(maxsize=64)
def _kind_of(name: str, fingerprint: str) -> str | None:  # the fingerprint keys a file's content
    from genlib.data import data_kind

    return data_kind(name)


def _check_metrics_fit(names: list[str] | None, data: dict[str, Any], n: int, min_samples: int, where: str) -> None:
    if not names:
        return
    from genlib.metrics import METRICS

    kind = _kind_of(data["name"], data.get("fingerprint", ""))
    for name in names:
        spec = METRICS.get(name)
        if kind is not None and kind not in spec.kinds:
            raise GridError(f"{where}: metric '{name}' applies to {' and '.join(spec.kinds)} data; data "
                            f"'{data['name']}' is {kind} data")
        if spec.needs == "samples" and n < min_samples:
            raise GridError(f"{where}: metric '{name}' needs at least {min_samples} samples per set "
                            f"(metrics.min_samples); eval.n is {n}")


def check_metrics(plan: Plan) -> None:
    """For genlib.metrics, the default evaluation: refuse before anything runs a metric of another data kind
    (precision on 2-D points) or a sample metric given fewer samples than its minimum; the error names the grid
    file and the cell. (A custom Evaluation scores cells its own way and skips this.)"""
    from genlib.metrics.base import MetricsConfig

    where = f"grid '{plan.spec.path}'" if plan.spec.path else f"grid '{plan.study}'"
    for cell in plan.eval_cells:
        ev = cell.eval_config
        _check_metrics_fit(ev["metrics"], cell.train_config["data"], ev["n"],
                           EvaluationConfig.from_flat({k: v for k, v in ev.items() if k != "timing"}).settings.min_samples,
                           f"{where}: cell {cell.label}: 'eval.metrics'")
    for floor in plan.floor_cells:
        _check_metrics_fit(floor.metrics, floor.data, floor.n, MetricsConfig().min_samples,
                           f"{where}: {floor.label}: 'floor.metrics'")


# -- expansion ------------------------------------------------------------------------------------------
def _matches(rule: dict[str, Any], axes: dict[str, Any], resolved: dict, where: str) -> bool:
    """True when every key of an exclude rule has one of the rule's values in this cell.

    A key is an axis name or any dotted key of the resolved configs (`eval.steps`, `model.noise.T`)."""
    for key, want in rule.items():
        have = axes[key] if key in axes else setting_at(resolved, key)
        if have is MISSING:
            raise GridError(f"{where}: exclude rule key '{key}' is neither an axis nor a config key"
                            f"{suggest(key, list(axes))}")
        options = want if isinstance(want, list) else [want]
        if not any(same_value(have, w) for w in options):
            return False
    return True


def _timed(rule: dict[str, Any], axes: dict[str, Any], resolved: dict, seen: set[str]) -> bool:
    """True when the cell has one of the rule's values for every key (a `timing.where`); a key the cell lacks
    does not match. `seen` collects the keys some cell has, so a key no cell has is reported."""
    hit = True
    for key, want in rule.items():
        have = axes[key] if key in axes else setting_at(resolved, key)
        if have is MISSING:
            hit = False
            continue
        seen.add(key)
        if not any(same_value(have, w) for w in (want if isinstance(want, list) else [want])):
            hit = False
    return hit


def _flatten(overrides: dict[str, Any]) -> dict[str, Any]:
    """{'data': {'name': 'moons'}} -> {'data.name': 'moons'}: dotted leaf keys, as axes are named."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, dict) and value:
            out.update({f"{key}.{k}": v for k, v in _flatten(value).items()})
        else:
            out[key] = value
    return out


def _label(study: str, axes: dict[str, Any], seed: int) -> str:
    parts = [f"{k}={v}" for k, v in axes.items()]
    return f"{study}[{', '.join(parts + [f'seed={seed}'])}]"


def _is_eval_axis(name: str, block: Block) -> bool:
    if name in block.variants:
        return all(is_eval_key(k) for o in block.variants[name].values() for k in o)
    return is_eval_key(name)


def plan_grid(spec: GridSpec, *, share: bool = True) -> Plan:
    """Expand `spec` into train, eval and floor cells, validating every resolved config.

    share=True: one training per distinct training config. share=False: one per evaluation cell.
    Raises GridError naming the grid file, the cell and the offending key.
    """
    where = f"grid '{spec.path}'" if spec.path else f"grid '{spec.study}'"
    plan = Plan(spec=spec, share=share)
    trains: dict[str, TrainCell] = {}
    evals: dict[str, EvalCell] = {}
    floors: dict[tuple[str, int, int], FloorCell] = {}
    train_axes: dict[str, None] = {}
    eval_axes: dict[str, None] = {}
    many_blocks = len(spec.blocks) > 1
    resolved_runs: dict[str, RunConfig] = {}
    resolved_evals: dict[str, dict] = {}
    # Exclude rules by identity (a top-level rule is shared by every block) -> whether it matched a cell.
    rule_matched: dict[int, bool] = {id(r): False for b in spec.blocks for r in b.exclude}
    timing_keys_seen: set[str] = set()
    timing_rules_hit: set[int] = set()  # the timing.where rules some cell matched
    axis_names: set[str] = set()

    for block in spec.blocks:
        bwhere = f"{where}, block '{block.name}'" if block.name else where
        # With several blocks, the block's name and fixed settings tell its cells apart: record them as axes.
        block_axes: dict[str, Any] = {"block": block.name, **_flatten(block.set)} if many_blocks else {}
        block_axes.pop("eval.metrics", None)  # what is measured, not a setting of the cell
        for combo in block_combos(block):
            try:
                values, doc = cell_settings(spec, block, combo)
            except ConfigError as exc:
                raise GridError(f"{bwhere}: {exc}") from None
            axes = {**block_axes, **values}
            eval_doc = doc.pop("eval") or {}
            doc.setdefault("name", spec.study)
            for seed in spec.seeds:
                label = _label(spec.study, axes, seed)
                doc_seeded = {**doc, "seed": seed}
                try:
                    run_key_doc = config_hash(doc_seeded)
                    run = resolved_runs.get(run_key_doc)
                    if run is None:
                        run = resolved_runs[run_key_doc] = load_run_config(doc_seeded, resolve_data=True)
                    eval_key_doc = config_hash(eval_doc)
                    ev = resolved_evals.get(eval_key_doc)
                    if ev is None:
                        ev = resolved_evals[eval_key_doc] = resolve_eval(eval_doc)
                    run_dict = to_dict(run)
                    hits = [rule for rule in block.exclude if _matches(rule, axes, {**run_dict, "eval": ev}, bwhere)]
                    for rule in hits:
                        rule_matched[id(rule)] = True
                    if hits:
                        continue
                    sampler_info = check_eval_applies(run, ev)
                    axis_names.update(axes)
                    timed_by = [i for i, rule in enumerate(spec.timing.where if spec.timing is not None else ())
                                if _timed(rule, axes, {**run_dict, "eval": ev}, timing_keys_seen)]
                    if timed_by:
                        timing_rules_hit.update(timed_by)
                        ev = {**ev, "timing": dict(spec.timing.settings)}  # part of the cell's config and key
                    if ev.get("precision", "fp32") != "fp32" and "timing" not in ev:
                        raise GridError(f"{bwhere}: cell {label}: eval.precision {ev['precision']!r} needs a timed cell "
                                        "(timing.where): its samples are drawn through the exported graph at that "
                                        "precision; an untimed cell samples the torch network (fp32)")
                    _check_real_perturbation(run, ev)
                except GridError as exc:
                    if str(exc).startswith(where):
                        raise
                    raise GridError(f"{bwhere}: cell {label}: {exc}") from None  # name the file and the cell
                except ConfigError as exc:
                    raise GridError(f"{bwhere}: cell {label}: {exc}") from None
                t_axes = {k: v for k, v in axes.items() if not _is_eval_axis(k, block)}
                for k in axes:
                    (eval_axes if _is_eval_axis(k, block) else train_axes)[k] = None
                eval_key = config_hash({"study": spec.study, "parent": run.run_key, "eval": ev, "seed": seed})
                if eval_key in evals:
                    continue  # the same evaluation reached twice (e.g. a default value listed explicitly)
                if share:
                    train_key = run.run_key
                    if train_key not in trains:
                        trains[train_key] = TrainCell(key=train_key, study=spec.study, profile=spec.profile, seed=seed,
                                                      label=_label(spec.study, t_axes, seed), config=run_dict,
                                                      axes=t_axes)
                else:
                    train_key = config_hash({"run": run_dict, "unshared_for": eval_key})
                    trains[train_key] = TrainCell(key=train_key, study=spec.study, profile=spec.profile, seed=seed,
                                                  label=label, config=run_dict, axes=t_axes, unshared_for=eval_key)
                evals[eval_key] = EvalCell(key=eval_key, study=spec.study, profile=spec.profile, seed=seed,
                                           label=label, parent=train_key, train_config=run_dict, eval_config=ev,
                                           axes=dict(axes), sampler_info=sampler_info)
                if spec.floor is not None:
                    fid = (config_hash(run_dict["data"]), ev["n"], seed)
                    if fid not in floors:
                        metrics = spec.floor["metrics"]
                        if metrics:
                            check_metric_names(metrics, "floor.metrics")
                        f_axes = {"data.name": run_dict["data"]["name"], "eval.n": ev["n"]}
                        fkey = config_hash({"kind": "floor", "study": spec.study, "data": run_dict["data"],
                                            "n": ev["n"], "metrics": metrics, "seed": seed})
                        floors[fid] = FloorCell(key=fkey, study=spec.study, profile=spec.profile, seed=seed,
                                                label=f"{spec.study}[floor {run_dict['data']['name']}, n={ev['n']}, "
                                                      f"seed={seed}]",
                                                data=run_dict["data"], n=ev["n"], metrics=metrics, axes=f_axes)
    if not evals:
        raise GridError(f"{where}: the grid has no cells (every combination was excluded)")
    for i, rule in enumerate(spec.timing.where if spec.timing is not None else ()):
        if i in timing_rules_hit:
            continue
        name = "timing.where" + (f"[{i}]" if len(spec.timing.where) > 1 else "")
        unknown = [k for k in rule if k not in timing_keys_seen]
        if unknown:
            raise GridError(f"{where}: study '{spec.study}': {name} key '{unknown[0]}' is neither an axis nor a "
                            f"config key of any cell{suggest(unknown[0], sorted(axis_names))}")
        raise GridError(f"{where}: study '{spec.study}': {name} {rule!r} matches no evaluation "
                        "cell (check its values against the grid's axes)")
    holders: dict[int, list[str]] = {}
    for block in spec.blocks:
        for rule in block.exclude:
            holders.setdefault(id(rule), []).append(block.name)
    for block in spec.blocks:
        for rule in block.exclude:
            names = holders.pop(id(rule), None)
            if names is None or rule_matched[id(rule)]:
                continue
            # A rule held by every block is a top-level rule; otherwise name the block that states it.
            rwhere = where if len(names) == len(spec.blocks) or not block.name else f"{where}, block '{block.name}'"
            plan.warnings.append(f"{rwhere}: exclude rule {rule!r} matches no cell (a typo in a value?)")
    # A checkpoint shared by labels of a mixed variant (an AE evaluated with two priors) lists all of them.
    children: dict[str, list[EvalCell]] = {}
    for e in evals.values():
        children.setdefault(e.parent, []).append(e)
    for key, cell in trains.items():
        values: dict[str, list] = {}
        for child in children.get(key, []):
            for axis in cell.axes:
                if child.axes.get(axis) not in values.setdefault(axis, []):
                    values[axis].append(child.axes.get(axis))
        merged = {axis: vs[0] if len(vs) == 1 else vs for axis, vs in values.items()}
        if merged != cell.axes:
            trains[key] = dataclasses.replace(cell, axes=merged)
    plan.train_cells = list(trains.values())
    plan.eval_cells = list(evals.values())
    plan.floor_cells = list(floors.values())
    plan.train_axes = tuple(train_axes)
    plan.eval_axes = tuple(eval_axes)
    return plan


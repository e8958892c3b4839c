"""The record contract: every row a producer writes to the results store is built here, and reports read it here.

`build(kind, ...)` returns a `genlib.store.RunRecord` and its `Metric`s for one of KINDS, checking the
config layout below and each metric against its kind's catalogue (name -> unit, higher_is_better, read from
where each number is declared: `catalogue`; an unknown name is a RecordError). The device and execution
provider are what the producer saw run (a session's `get_providers()[0]`, the model's device), never read
from a config. Git commit, library versions and machine facts come from `genlib.provenance.provenance()`.
`config_key(kind, config)` (genlib.record_layout) hashes the config less its seed, derived run keys and
provenance: rows with one config_key differ only by seed and may be pooled, rows with different keys never
are. Importing it pulls in neither torch nor pandas (the CLI and reports import it); checking a
quality or training metric reads the metric registry or the model family, which do.

config_json layout per kind (top-level keys; * optional):
    train     {"train": RunConfig dict, "eval": null, "axes": {axis: value}, "profile": str | null,
               *"unshared_for": eval run key (a private training of share=False grids)}
    eval      {"train": RunConfig dict of the evaluated checkpoint, "eval": {SampleConfig fields, "n",
               "metrics": [names] | null, *"reference", *"settings": MetricsConfig dict, *"timing": a timed
               grid cell's settings (bench.grid_timing.TimingSettings dict)}, "axes", "profile",
               *"sampler_info": the sampler's registry entry on the setting (SamplerSpec.info: name, label,
               steps, step_setting, nfe; derived, left out of config_key)}
    floor     {"train": null, "eval": {"n", "metrics", *"reference", *"settings"}, "data": DataConfig dict,
               "axes", "profile"}
    export    {"export": ExportConfig dict ({"part", "sample": SampleConfig dict, "graph", "precision", "opset",
               "parity_batches", "atol", "rtol", "seed"}), "part": str, "run_key": training run key}
    bench     {"bench": {"backend", "provider" (the one that ran), "batch", "threads", "precision", "timing",
               "cuda_graph"}, "part", "target", "export": ExportConfig dict | null, "export_key", "run_key"}
    analytic  {"analytic": check name, *"settings": {...}}
    study     {"study": name, "profile": str, "claims": [ablations.spec.ClaimSpec.to_dict()]}: a grid study's
               definition, one row per study (run key from the study name), rewritten by every grid run
The "eval" dict is genlib.metrics.eval_config.EvaluationConfig's (`to_flat` / `record`). RunConfig dicts hold
the training seed at "seed" and ExportConfig dicts at "export.seed"; `seed` on the row repeats it. Machine
facts live in the `machine_json` column, never in a config. Bench metrics' extra holds the resolved sampler
settings that ran (sampler, its label and NFE, steps, graph and the settings it reads) and the parity verdict. A timed eval row adds timing
metrics (latency_ms_*, throughput_per_s) with split "backend/provider/bN/tN" (e.g.
"ort_graph/CPUExecutionProvider/b1/t1", the provider that ran) and parity_max_abs_err with split "export";
its quality metrics' extra says which path drew the scored samples ("samples_drawn_by": "ort_graph/<provider>"
or "torch_loop/torch:<device>").
Readers use `run_config`, `eval_config`, `axes`, `data_config`, `bench_settings`, `value_at`, `same_value` and
`differing_keys`; `upgrade_v1_config` rewrites the layouts of schema-v1 stores (genlib.store migrates with it),
`upgrade_export_config` flat ExportConfig dicts (v1 stores, version-1 export sidecars).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

# genlib.provenance's, re-exported for the producers that build records
from genlib.precisions import DEFAULT_PRECISION
from genlib.provenance import git_commit, library_versions, machine_info, provenance  # noqa: F401
# genlib.record_layout's, re-exported: a record's config_key and the upgrades of older layouts
from genlib.record_layout import (DERIVED_PATHS, EXPORT_OWN_KEYS, SEED_PATHS, config_key,  # noqa: F401
                                  needs_parent_key, upgrade_export_config, upgrade_v1_config)
from genlib.store import Metric, RunRecord, StoreError

KINDS = ("train", "eval", "floor", "export", "bench", "analytic", "study")


class RecordError(StoreError):
    """A record breaks the contract (unknown kind or metric, wrong unit, bad config layout)."""


@dataclass(frozen=True)
class MetricDef:
    """How a producer declares a number it reports: its unit and whether higher is better (None: neither)."""

    unit: str
    higher_is_better: bool | None


# -- metric catalogues --------------------------------------------------------------------------------------
# Each number is declared once, where it is produced. Quality metrics (evaluations, floors): the metric
# registry, genlib.metrics. A training's logs: its model family (GenerativeModel.training_logs) and the
# training loop (genlib.train.LOOP_LOGS). Both are read on first use (`catalogue`), so this module stays
# torch-free. The producers of timings, exports and analytic checks declare theirs here.
TIMING: dict[str, MetricDef] = {
    **{f"latency_ms_{s}": MetricDef("ms", False) for s in ("p50", "p90", "p99", "mean", "std", "min")},
    "throughput_per_s": MetricDef("samples/s", True), "peak_memory_mb": MetricDef("MB", False),
    "parity_max_abs_err": MetricDef("abs", False),
    # a timed cell's graph: its size, its cold start (session creation + first call), and below fp32 its
    # fidelity to the fp32 graph's samples from identical noise and its speed-up over it (same process)
    "model_size_bytes": MetricDef("bytes", False), "cold_start_ms": MetricDef("ms", False),
    "fidelity_l2_mean": MetricDef("data units", False), "fidelity_l2_max": MetricDef("data units", False),
    "speedup_vs_fp32": MetricDef("x", True),
}
EXPORT: dict[str, MetricDef] = {
    "export_time_s": MetricDef("s", False), "node_count": MetricDef("nodes", False),
    "file_size_bytes": MetricDef("bytes", False), "parity_max_abs_err": MetricDef("abs", False),
    # |metric(torch samples) - metric(onnx samples)|; the metric's name is in extra["metric"]
    "parity_sample_metric_abs_diff": MetricDef("metric units", False),
}
ANALYTIC: dict[str, MetricDef] = {
    "kl_closed_form": MetricDef("nats", None), "kl_monte_carlo": MetricDef("nats", None),
    "kl_forward": MetricDef("nats", None), "kl_reverse": MetricDef("nats", None),
    "alpha_bar_T": MetricDef("", None),
    "sanov_log_prob": MetricDef("nats", None), "sanov_kl": MetricDef("nats", None),
}
# Top-level config keys per kind: (required, optional).
LAYOUT: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "train": (frozenset({"train", "eval", "axes", "profile"}), frozenset({"unshared_for"})),
    # sampler_info: the sampler's registry entry on the setting (name, label, steps, step_setting, nfe)
    "eval": (frozenset({"train", "eval", "axes", "profile"}), frozenset({"sampler_info"})),
    "floor": (frozenset({"train", "eval", "data", "axes", "profile"}), frozenset()),
    "export": (frozenset({"export", "part", "run_key"}), frozenset()),
    "bench": (frozenset({"bench", "part", "target", "export", "export_key", "run_key"}), frozenset()),
    "analytic": (frozenset({"analytic"}), frozenset({"settings"})),
    "study": (frozenset({"study", "profile", "claims"}), frozenset({"plots", "gate"})),
}


def quality_metrics() -> dict[str, MetricDef]:
    """Unit and direction of every registered quality metric (the genlib.metrics registry; imports torch)."""
    from genlib.metrics import METRICS

    return {name: MetricDef(METRICS.get(name).unit, METRICS.get(name).higher_is_better) for name in METRICS.names()}


def catalogue(kind: str, family: str | None = None) -> dict[str, MetricDef]:
    """name -> MetricDef of the metrics a record of `kind` may carry. family: a train record's model family
    (its declared training logs; None: the logs every family has). RecordError for an unknown kind or family."""
    if kind not in KINDS:
        raise RecordError(f"unknown record kind {kind!r}; expected one of {', '.join(KINDS)}")
    if kind == "train":
        from genlib.registry import UnknownNameError
        from genlib.train import training_logs

        try:
            return training_logs(family)
        except UnknownNameError as exc:
            raise RecordError(f"a train record's {exc}") from None
    if kind in ("eval", "floor"):
        return {**quality_metrics(), **TIMING} if kind == "eval" else quality_metrics()
    return {"export": EXPORT, "bench": TIMING, "analytic": ANALYTIC, "study": {}}[kind]


def metric_def(kind: str, name: str, family: str | None = None) -> MetricDef:
    """Unit and direction of metric `name` in records of `kind` (a train record's: of its `family`);
    RecordError for an unknown kind, family or name."""
    known = catalogue(kind, family)
    try:
        return known[name]
    except KeyError:
        of = f" of model family '{family}'" if kind == "train" and family else ""
        raise RecordError(f"metric {name!r} is not in the catalogue of {kind} records{of} "
                          f"(known: {', '.join(sorted(known))})") from None


def metric(kind: str, name: str, value: float, *, family: str | None = None, split: str = "",
           extra: Mapping[str, Any] | None = None) -> Metric:
    """A Metric with the catalogue's unit and direction."""
    d = metric_def(kind, name, family)
    return Metric(name, float(value), unit=d.unit, higher_is_better=d.higher_is_better, split=split,
                  extra=dict(extra or {}))


def check_metric(kind: str, m: Metric, family: str | None = None) -> Metric:
    """`m` itself when its name is in the catalogue of `kind` with the same unit and direction."""
    d = metric_def(kind, m.name, family)
    if (m.unit, m.higher_is_better) != (d.unit, d.higher_is_better):
        raise RecordError(f"metric {m.name!r} of a {kind} record has unit {m.unit!r}, higher_is_better "
                          f"{m.higher_is_better}; the contract says {d.unit!r}, {d.higher_is_better}")
    return m


def model_family(config: Mapping[str, Any]) -> str | None:
    """The model family of the training a train/eval record config is about (None when it has none)."""
    model = (run_config(config) or {}).get("model")
    family = model.get("family") if isinstance(model, dict) else None
    return family if isinstance(family, str) else None


# -- config layout ----------------------------------------------------------------------------------------
def check_layout(kind: str, config: Mapping[str, Any]) -> None:
    if kind not in LAYOUT:
        raise RecordError(f"unknown record kind {kind!r}; expected one of {', '.join(KINDS)}")
    required, optional = LAYOUT[kind]
    keys = set(config)
    if required - keys or keys - required - optional:
        raise RecordError(f"a {kind} record's config must have keys {sorted(required)} (optional "
                          f"{sorted(optional)}); got {sorted(keys)}")


# -- devices --------------------------------------------------------------------------------------------------
def ort_device(provider: str | None) -> str | None:
    """The device an ONNX Runtime execution provider runs on ('CUDAExecutionProvider' -> 'cuda'); None if no ORT."""
    if not provider or not provider.endswith("ExecutionProvider"):
        return None
    return "cuda" if provider.startswith(("CUDA", "Tensorrt")) else "cpu"


# -- building records -----------------------------------------------------------------------------------------
def build(kind: str, *, run_key: str, config: Mapping[str, Any], device: str | None,
          provider: str | None = None, metrics: Sequence[Metric] = (), status: str = "done",
          study: str | None = None, name: str | None = None, parent_key: str | None = None,
          seed: int | None = None, prov: Mapping[str, Any] | None = None, artifact_path: str | None = None,
          error: str | None = None, parent_config_key: str | None = None) -> tuple[RunRecord, list[Metric]]:
    """One store row and its metrics, checked against the contract.

    device: the torch device that ran (e.g. 'cpu', 'cuda:0'); provider: the ONNX Runtime execution provider
    the session reported, None for torch. prov: provenance() (taken here when None). parent_config_key:
    the parent's config_key, for configs that refer to their training only by run key (export, bench);
    when None the store looks it up."""
    config = dict(config)
    check_layout(kind, config)
    family = model_family(config) if kind == "train" else None
    checked = [check_metric(kind, m, family) for m in metrics]
    prov = provenance() if prov is None else prov
    key = (config_key(kind, config, parent_config_key)
           if parent_config_key is not None or not needs_parent_key(config) else None)
    rec = RunRecord(run_key=run_key, kind=kind, config=config, status=status, study=study,  # type: ignore[arg-type]
                    name=name, parent_key=parent_key, seed=seed, git_commit=prov.get("git_commit"),
                    versions=prov.get("versions"), device=device, provider=provider,
                    artifact_path=artifact_path, error=error, config_key=key, machine=prov.get("machine"))
    return rec, checked


# -- reading (the accessors reports use) ------------------------------------------------------------------------
def run_config(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The training RunConfig dict a train/eval row is about (None for floors, exports, ...)."""
    train = config.get("train")
    return train if isinstance(train, dict) else None


def eval_config(config: Mapping[str, Any]) -> dict[str, Any]:
    ev = config.get("eval")
    return ev if isinstance(ev, dict) else {}


# Evaluation settings a record leaves out while they hold their default (so run keys from before the setting
# existed stay valid): a reader asking for one gets the default (`reports.load.setting_value`).
OMITTED_EVAL_DEFAULTS: dict[str, Any] = {"precision": DEFAULT_PRECISION}


def setting_at(config: Mapping[str, Any], key: str) -> Any:
    """The value at dotted `key` of a cell's config (MISSING when absent); an evaluation setting the config's
    `eval` section leaves out at its default (OMITTED_EVAL_DEFAULTS) reads as that default."""
    value = value_at(config, key, MISSING)
    ev = config.get("eval")
    if value is MISSING and key.startswith("eval.") and isinstance(ev, Mapping) and ev:
        return OMITTED_EVAL_DEFAULTS.get(key[len("eval."):], MISSING)
    return value


def axes(config: Mapping[str, Any]) -> dict[str, Any]:
    value = config.get("axes")
    return value if isinstance(value, dict) else {}


def data_config(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The data a row is about: its training config's data, or a floor's own."""
    train = run_config(config)
    data = train.get("data") if train is not None else config.get("data")
    return data if isinstance(data, dict) else None


BENCH_SETTINGS = ("part", "target", "backend", "provider", "precision", "batch", "threads", "sampler", "steps",
                  "eta", "variance", "graph", "passes", "label", "nfe")
# bench metric extras: the values that ran (label and nfe come from the sampler's registry entry)
RESOLVED_SAMPLER = ("sampler", "steps", "eta", "variance", "graph", "passes", "label", "nfe")


def bench_settings(config: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The settings of a bench row (or an export row), each from its one place in the layout. `extra`: a
    metric's extra of the row, whose sampler settings are resolved (steps None in an ExportConfig means 50)."""
    bench = config.get("bench") if isinstance(config.get("bench"), dict) else {}
    export = config.get("export") if isinstance(config.get("export"), dict) else {}
    out: dict[str, Any] = {"part": config.get("part"), "target": config.get("target")}
    for k in ("backend", "provider", "precision", "batch", "threads"):
        out[k] = bench.get(k)
    if out["precision"] is None:
        out["precision"] = export.get("precision")
    sample = export.get("sample") if isinstance(export.get("sample"), dict) else {}
    for k in ("sampler", "steps", "eta", "variance", "passes"):
        out[k] = sample.get(k)
    out["graph"] = export.get("graph")
    for k in RESOLVED_SAMPLER:
        if extra and extra.get(k) is not None:
            out[k] = extra[k]
    return out


def setting_name(path: str) -> str:
    """A record config path as users write the setting: 'train.train.steps' -> 'train.steps' (a RunConfig
    key), 'axes.sampler' -> 'sampler'; 'eval.*', 'data.*' and others unchanged."""
    for prefix in ("train.", "axes."):
        if path.startswith(prefix):
            return path[len(prefix):]
    return path


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()  # value_at's default to tell an absent setting from a null one


def value_at(config: Mapping[str, Any], path: str, default: Any = None) -> Any:
    """The value at a dotted path of a config (`default` when absent)."""
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def same_value(a: Any, b: Any) -> bool:
    """Setting equality as grids mean it: YAML true is not 1, 64 equals 64.0, None equals None."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def differing_keys(configs: Sequence[Mapping[str, Any]], *, ignore: Sequence[str] = SEED_PATHS + DERIVED_PATHS
                   ) -> list[str]:
    """Dotted keys (leaves) whose values differ across `configs`, sorted; `ignore` paths are left out."""
    flat = [_flatten(c) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    ignored = set(ignore)
    out = []
    for k in keys:
        if k in ignored or any(k.startswith(i + ".") for i in ignored):
            continue
        values = {json.dumps(f.get(k, "<absent>"), sort_keys=True, default=str) for f in flat}
        if len(values) > 1:
            out.append(k)
    return out


def _flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(doc, Mapping) and doc:
        out: dict[str, Any] = {}
        for k, v in doc.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: doc} if prefix else {}

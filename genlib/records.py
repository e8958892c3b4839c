"""The record contract: every row a producer writes to the results store is built here, and reports read it here.

`build(kind, ...)` returns a `genlib.store.RunRecord` and its `Metric`s for one of KINDS, checking the
config layout below and each metric against its kind's fixed catalogue (name -> unit, higher_is_better;
an unknown name is a RecordError). The device and execution provider are what the producer saw run
(a session's `get_providers()[0]`, the model's device), never read from a config. `provenance()` is the one
source of git commit, library versions and machine facts. `config_key(kind, config)` hashes the config less
its seed, derived run keys and provenance: rows with one config_key differ only by seed and may be pooled,
rows with different keys never are. Torch-free and pandas-free (imported by the CLI, store and reports).

config_json layout per kind (top-level keys; * optional):
    train     {"train": RunConfig dict, "eval": null, "axes": {axis: value}, "profile": str | null,
               *"unshared_for": eval run key (a private training of share=False grids)}
    eval      {"train": RunConfig dict of the evaluated checkpoint, "eval": {SampleConfig fields, "n",
               "metrics": [names] | null, *"reference", *"settings": MetricsConfig dict, *"timing": a timed
               grid cell's settings (bench.grid_timing.TimingSettings dict)}, "axes", "profile"}
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
settings that ran (sampler, steps, eta, graph, passes) and the parity verdict. A timed eval row adds timing
metrics (latency_ms_*, throughput_per_s) with split "backend/provider/bN/tN" (e.g.
"ort_graph/CPUExecutionProvider/b1/t1", the provider that ran) and parity_max_abs_err with split "export";
its quality metrics' extra says which path drew the scored samples ("samples_drawn_by": "ort_graph/<provider>"
or "torch_loop/torch:<device>").
Readers use `run_config`, `eval_config`, `axes`, `data_config`, `bench_settings`, `value_at`, `same_value` and
`differing_keys`; `upgrade_v1_config` rewrites the layouts of schema-v1 stores (genlib.store migrates with it),
`upgrade_export_config` flat ExportConfig dicts (v1 stores, version-1 export sidecars).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

from genlib.store import Metric, RunRecord, StoreError

KINDS = ("train", "eval", "floor", "export", "bench", "analytic", "study")


class RecordError(StoreError):
    """A record breaks the contract (unknown kind or metric, wrong unit, bad config layout)."""


@dataclass(frozen=True)
class MetricDef:
    unit: str
    higher_is_better: bool | None


# -- metric catalogues --------------------------------------------------------------------------------------
# Quality metrics of evaluations and floors; genlib.metrics registers the same names with the same units
# (a test keeps the two in step: this module stays importable without torch).
QUALITY: dict[str, MetricDef] = {
    "mse": MetricDef("sq. data units", False), "psnr": MetricDef("dB", True), "ssim": MetricDef("", True),
    "neg_elbo": MetricDef("nats", False), "iwae": MetricDef("nats", True), "bpd": MetricDef("bits/dim", False),
    "kl": MetricDef("nats", None), "active_units": MetricDef("count", True), "mutual_info": MetricDef("nats", True),
    "fd": MetricDef("sq. feature units", False), "kid": MetricDef("kernel units", False),
    "precision": MetricDef("fraction", True), "recall": MetricDef("fraction", True),
    "density": MetricDef("ratio", True), "coverage": MetricDef("fraction", True),
    "class_entropy": MetricDef("nats", True), "sharpness": MetricDef("ratio", None),
    "hf_energy_ratio": MetricDef("ratio", None),
    "swd": MetricDef("data units", False), "mmd": MetricDef("kernel units", False),
    "energy": MetricDef("data units", False), "nll_true": MetricDef("nats", False),
}
# Training logs (split "train"; genlib.train.TRAIN_LOGS) and the training speed.
TRAINING: dict[str, MetricDef] = {
    "loss": MetricDef("", False), "recon_nll": MetricDef("nats", False), "neg_elbo": MetricDef("nats", False),
    "kl": MetricDef("nats", None), "recon_mse": MetricDef("", False), "beta_t": MetricDef("", None),
    "ema_init_weight": MetricDef("fraction", False), "train_steps_per_s": MetricDef("steps/s", True),
}
TIMING: dict[str, MetricDef] = {
    **{f"latency_ms_{s}": MetricDef("ms", False) for s in ("p50", "p90", "p99", "mean", "std", "min")},
    "throughput_per_s": MetricDef("samples/s", True), "peak_memory_mb": MetricDef("MB", False),
    "parity_max_abs_err": MetricDef("abs", False),
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
}
CATALOGUE: dict[str, dict[str, MetricDef]] = {
    "train": TRAINING, "eval": {**QUALITY, **TIMING}, "floor": dict(QUALITY), "export": EXPORT,
    "bench": TIMING, "analytic": ANALYTIC, "study": {},
}
# Top-level config keys per kind: (required, optional).
LAYOUT: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "train": (frozenset({"train", "eval", "axes", "profile"}), frozenset({"unshared_for"})),
    "eval": (frozenset({"train", "eval", "axes", "profile"}), frozenset()),
    "floor": (frozenset({"train", "eval", "data", "axes", "profile"}), frozenset()),
    "export": (frozenset({"export", "part", "run_key"}), frozenset()),
    "bench": (frozenset({"bench", "part", "target", "export", "export_key", "run_key"}), frozenset()),
    "analytic": (frozenset({"analytic"}), frozenset({"settings"})),
    "study": (frozenset({"study", "profile", "claims"}), frozenset()),
}
# Left out of config_key: the seed (row's own), keys derived from seeded configs, provenance.
SEED_PATHS = ("seed", "train.seed", "export.seed")
DERIVED_PATHS = ("run_key", "export_key", "unshared_for", "machine", "provenance")


def metric_def(kind: str, name: str) -> MetricDef:
    """Unit and direction of metric `name` in records of `kind`; RecordError for an unknown kind or name."""
    if kind not in CATALOGUE:
        raise RecordError(f"unknown record kind {kind!r}; expected one of {', '.join(KINDS)}")
    try:
        return CATALOGUE[kind][name]
    except KeyError:
        raise RecordError(f"metric {name!r} is not in the catalogue of {kind} records "
                          f"(known: {', '.join(sorted(CATALOGUE[kind]))})") from None


def metric(kind: str, name: str, value: float, *, split: str = "", extra: Mapping[str, Any] | None = None) -> Metric:
    """A Metric with the catalogue's unit and direction."""
    d = metric_def(kind, name)
    return Metric(name, float(value), unit=d.unit, higher_is_better=d.higher_is_better, split=split,
                  extra=dict(extra or {}))


def check_metric(kind: str, m: Metric) -> Metric:
    """`m` itself when its name is in the catalogue of `kind` with the same unit and direction."""
    d = metric_def(kind, m.name)
    if (m.unit, m.higher_is_better) != (d.unit, d.higher_is_better):
        raise RecordError(f"metric {m.name!r} of a {kind} record has unit {m.unit!r}, higher_is_better "
                          f"{m.higher_is_better}; the contract says {d.unit!r}, {d.higher_is_better}")
    return m


# -- config layout and key ----------------------------------------------------------------------------------
def check_layout(kind: str, config: Mapping[str, Any]) -> None:
    if kind not in LAYOUT:
        raise RecordError(f"unknown record kind {kind!r}; expected one of {', '.join(KINDS)}")
    required, optional = LAYOUT[kind]
    keys = set(config)
    if required - keys or keys - required - optional:
        raise RecordError(f"a {kind} record's config must have keys {sorted(required)} (optional "
                          f"{sorted(optional)}); got {sorted(keys)}")


def _drop(doc: Any, path: str) -> Any:
    head, _, rest = path.partition(".")
    if not isinstance(doc, dict) or head not in doc:
        return doc
    if not rest:
        return {k: v for k, v in doc.items() if k != head}
    return {**doc, head: _drop(doc[head], rest)}


def config_key(kind: str, config: Mapping[str, Any], parent_config_key: str | None = None) -> str:
    """sha256 prefix of (kind, config less seed and derived keys, parent's config_key when the config does not
    embed the trained run): equal for the seeds of one configuration, different otherwise."""
    doc: Any = dict(config)
    for path in SEED_PATHS + DERIVED_PATHS:
        doc = _drop(doc, path)
    if isinstance(doc.get("train"), dict):
        parent_config_key = None  # the evaluated training config is in the record itself
    text = json.dumps({"kind": kind, "config": doc, "parent": parent_config_key}, sort_keys=True,
                      separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def needs_parent_key(config: Mapping[str, Any]) -> bool:
    """True when config_key depends on the parent run's config_key (exports and benchmarks)."""
    return not isinstance(config.get("train"), dict) and isinstance(config.get("run_key"), str)


# -- provenance -----------------------------------------------------------------------------------------------
TRACKED_PACKAGES = ("torch", "numpy", "scikit-learn", "scikit-image", "pandas", "onnx", "onnxscript",
                    "onnxruntime", "onnxruntime-gpu", "genbench")


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@lru_cache(maxsize=1)
def git_commit() -> str:
    """HEAD of the genbench checkout (with '+dirty' when it has uncommitted changes), or 'unknown'."""
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@lru_cache(maxsize=1)
def machine_info() -> dict[str, Any]:
    """Machine facts stored with every record (pytest-benchmark's machine_info, trimmed)."""
    info: dict[str, Any] = {"node": platform.node(), "processor": platform.processor() or platform.machine(),
                            "machine": platform.machine(), "system": platform.system(),
                            "release": platform.release(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), None)
        if model:
            info["cpu_model"] = model
    except OSError:
        pass
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    return info


def provenance() -> dict[str, Any]:
    """{"git_commit", "versions", "machine"}: plain data, picklable from workers to the driver."""
    return {"git_commit": git_commit(), "versions": library_versions(), "machine": dict(machine_info())}


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
    checked = [check_metric(kind, m) for m in metrics]
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


def axes(config: Mapping[str, Any]) -> dict[str, Any]:
    value = config.get("axes")
    return value if isinstance(value, dict) else {}


def data_config(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """The data a row is about: its training config's data, or a floor's own."""
    train = run_config(config)
    data = train.get("data") if train is not None else config.get("data")
    return data if isinstance(data, dict) else None


BENCH_SETTINGS = ("part", "target", "backend", "provider", "precision", "batch", "threads", "sampler", "steps",
                  "eta", "variance", "graph", "passes")
RESOLVED_SAMPLER = ("sampler", "steps", "eta", "graph", "passes")  # bench metric extras: the values that ran


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


# -- the v1 layouts, rewritten on migration ---------------------------------------------------------------------
def upgrade_v1_config(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """A schema-v1 config in the contract's layout: `genbench train --store` wrote the RunConfig at the top
    level, `genbench eval --store` a flat {kind, run_key, n, sample, ...}, benchmarks their machine facts."""
    if kind == "train" and "model" in config and "profile" not in config:
        return {"train": config, "eval": None, "axes": {}, "profile": None}
    if kind in ("eval", "floor") and config.get("kind") == kind:
        ev = {**(config.get("sample") or {}), "n": config.get("n"), "metrics": config.get("metrics"),
              "reference": config.get("reference"), "settings": config.get("settings")}
        if kind == "floor":
            return {"train": None, "eval": ev, "data": config.get("data"), "axes": {}, "profile": None}
        return {"train": None, "eval": ev, "axes": {}, "profile": None, "run_key": config.get("run_key")}
    if kind in ("export", "bench") and isinstance(config.get("export"), dict):
        config = {**config, "export": upgrade_export_config(config["export"])}
    if kind == "bench" and "machine" in config:
        return {k: v for k, v in config.items() if k != "machine"}
    return config


# ExportConfig's own keys. Before it embedded the SampleConfig (schema-v1 stores, export sidecars of
# version 1), the sampler settings sat beside them at the top level.
EXPORT_OWN_KEYS = ("part", "graph", "precision", "opset", "parity_batches", "atol", "rtol", "seed")


def upgrade_export_config(export: Mapping[str, Any]) -> dict[str, Any]:
    """An ExportConfig dict in the current layout (sampler settings under "sample"); unchanged if already so."""
    if "sample" in export:
        return dict(export)
    return {**{k: v for k, v in export.items() if k in EXPORT_OWN_KEYS},
            "sample": {k: v for k, v in export.items() if k not in EXPORT_OWN_KEYS}}

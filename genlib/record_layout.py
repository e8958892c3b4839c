"""A record config's identity and its older layouts: the pure functions below genlib.store and genlib.records.

`config_key(kind, config)` hashes a record config (genlib.records documents the layouts) less its seed,
derived run keys and provenance: rows with one config_key differ only by seed. `upgrade_v1_config` and
`upgrade_export_config` rewrite the layouts of schema-v1 stores and flat ExportConfig dicts. The store
computes keys on commit and migrates with these; records builds rows with them; neither imports the other's
caller. Standard library only.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

# Left out of config_key: the seed (row's own), keys derived from seeded configs, provenance.
SEED_PATHS = ("seed", "train.seed", "export.seed")
DERIVED_PATHS = ("run_key", "export_key", "unshared_for", "machine", "provenance", "sampler_info")


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


# Sampling settings the evaluation config gained after schema v1, with the values every v1 evaluation used. A v1
# grid evaluation cell's run key hashed its evaluation config without them; on migration the settings are filled
# in and the cell re-keyed as the planner now keys it, so a resumed v1 store reruns no evaluation.
V1_EVAL_ADDED = {"start": "prior", "clip_low": None, "clip_high": None}


def upgrade_v1_eval(ev: Mapping[str, Any]) -> dict[str, Any]:
    """A v1 grid evaluation config with the settings added since (V1_EVAL_ADDED) at their v1 values."""
    return {**V1_EVAL_ADDED, **ev}


def grid_eval_key(study: str, parent_key: str, ev: Mapping[str, Any], seed: int) -> str:
    """The run key the grid planner gives an evaluation cell (ablations.plan): sha256 prefix of the canonical
    JSON of {study, parent, eval, seed}, as genlib.config.config_hash computes it."""
    text = json.dumps({"study": study, "parent": parent_key, "eval": ev, "seed": seed}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ExportConfig's own keys. Before it embedded the SampleConfig (schema-v1 stores, export sidecars of
# version 1), the sampler settings sat beside them at the top level.
EXPORT_OWN_KEYS = ("part", "graph", "precision", "calibration_method", "calibration_size", "per_channel",
                   "reduce_range", "opset", "parity_batches", "atol", "rtol", "seed")


def upgrade_export_config(export: Mapping[str, Any]) -> dict[str, Any]:
    """An ExportConfig dict in the current layout (sampler settings under "sample"); unchanged if already so."""
    if "sample" in export:
        return dict(export)
    return {**{k: v for k, v in export.items() if k in EXPORT_OWN_KEYS},
            "sample": {k: v for k, v in export.items() if k not in EXPORT_OWN_KEYS}}

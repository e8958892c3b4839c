"""Grid specs: one YAML file states a study's claim, its base run, its axes and its profiles.

`load_grid(path, profile)` reads the file safely (duplicate keys refused), applies the chosen profile and
checks the structure (unknown keys get a did-you-mean, axis keys must be RunConfig keys or `eval.*`).
It does not resolve cells: `ablations.plan` expands the grid and validates every resolved config.

File layout (every key but `base` is optional; `claim` and `decided_by` are read by the claims report):

    study: beta                      # defaults to the file stem
    claim: "large beta collapses the posterior"
    decided_by: {metric: active_units, direction: lower, axis: loss.beta, treatment: 64, reference: 1}
    base: {data: {name: digits}, model: {family: vae}}   # a RunConfig, as for `genbench train`
    eval: {n: 500, metrics: [fd, precision]}             # SampleConfig fields + n + metrics
    axes: {loss.beta: [0, 1, 64], eval.passes: [0, 1]}   # product over dotted keys
    zip: [{eval.sampler: [ddpm, ddim], eval.eta: [0, 1]}]   # each group varies together
    variants: {method: {ae: {model: {family: ae}}, vae: {model: {family: vae}}}}  # labelled override sets
    blocks: {digits: {set: {data.name: digits}}, moons: {set: {...}, variants: {...}}}  # union of sub-grids
    exclude: [{eval.passes: 0, eval.reencode: sample}]   # drop cells matching every key of a rule
    seeds: [0, 1, 2]
    floor: {metrics: [fd]}           # data-versus-data reference rows (false: none)
    profiles: {quick: {set: {train.steps: 500}, axes: {loss.beta: [0, 64]}, seeds: [0, 1]}, full: {}}

Keys whose first part is a RunConfig field are training-time (they make a checkpoint); `eval.*` keys
are inference-time (they fan out from a checkpoint). A mapping value replaces the whole subtree.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genlib.config import ConfigError, read_yaml, set_dotted
from genlib.models import SAMPLE_FIELDS, EvaluationConfig  # noqa: F401  (SAMPLE_FIELDS: read by ablations.plan)
from genlib.registry import suggest
from genlib.train import RunConfig

TOP_LEVEL_KEYS = ("study", "claim", "decided_by", "secondary_claims", "description", "base", "eval", "axes",
                  "zip", "variants", "blocks", "exclude", "seeds", "floor", "profiles")
PROFILE_KEYS = ("description", "set", "axes", "zip", "variants", "blocks", "exclude", "seeds", "floor")
BLOCK_KEYS = ("set", "axes", "zip", "variants", "exclude")
DECIDED_BY_KEYS = ("metric", "direction", "axis", "treatment", "reference", "split", "where", "note")
DIRECTIONS = ("higher", "lower", "increasing", "decreasing", "equal")

RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.init)
# The evaluation config of a cell is genlib's EvaluationConfig (SampleConfig + n + metrics), flat in YAML.
EVAL_FIELDS = EvaluationConfig.FLAT_FIELDS
DEFAULT_EVAL_N = EvaluationConfig().n


class GridError(ConfigError):
    """A grid file is malformed; the message names the file, the key and what was expected."""


def is_eval_key(key: str) -> bool:
    """True for inference-time keys (`eval.passes`), False for training-time keys (`loss.beta`)."""
    return key == "eval" or key.startswith("eval.")


def check_key(key: str, where: str) -> str:
    """Reject a dotted key whose first part is neither a RunConfig field nor `eval`, with a suggestion."""
    if not isinstance(key, str) or not key or any(not p for p in key.split(".")):
        raise GridError(f"{where}: {key!r} is not a dotted key like 'loss.beta' or 'eval.passes'")
    head = key.split(".")[0]
    if head == "eval":
        if key != "eval":
            sub = key.split(".", 1)[1]
            if sub not in EVAL_FIELDS:
                full = [f"eval.{f}" for f in EVAL_FIELDS]
                raise GridError(f"{where}: unknown key '{key}'{suggest(key, full)} "
                                f"(inference-time keys: {', '.join(full)})")
        return key
    if head not in RUN_FIELDS:
        choices = list(RUN_FIELDS) + ["eval"]
        raise GridError(f"{where}: unknown key '{key}'{suggest(head, choices)} (a key starts with one of: "
                        f"{', '.join(choices)})")
    return key


@dataclass(frozen=True)
class Block:
    """One sub-grid: fixed overrides plus the axes varied within it."""

    name: str
    set: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list] = field(default_factory=dict)
    zip: tuple[dict[str, list], ...] = ()
    variants: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    exclude: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class GridSpec:
    """A grid file with one profile applied. `blocks` always has at least one block."""

    study: str
    path: Path | None
    profile: str
    claim: str
    decided_by: dict[str, Any]
    base: dict[str, Any]  # RunConfig as a plain dict, profile `set` applied
    eval: dict[str, Any]  # eval config as a plain dict, profile `set` applied
    blocks: tuple[Block, ...]
    seeds: tuple[int, ...]
    floor: dict[str, Any] | None  # {"metrics": [...] | None}, or None for no floor rows
    profiles: tuple[str, ...]  # every profile the file defines
    description: str = ""
    secondary_claims: tuple[dict[str, Any], ...] = ()


# -- structural checks ------------------------------------------------------------------------------
def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GridError(f"{where} must be a mapping, got {value!r}")
    return value


def _check_keys(data: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise GridError(f"{where}: unknown key '{key}'{suggest(str(key), list(allowed))} "
                            f"(valid keys: {', '.join(allowed)})")


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):  # YAML true must not equal 1
        return a is b
    return a == b


def _values(value: Any, where: str, *, unique: bool = True) -> list:
    if not isinstance(value, list) or not value:
        raise GridError(f"{where} must be a non-empty list of values, got {value!r}")
    if unique:
        for i, v in enumerate(value):
            if any(same_value(v, w) for w in value[:i]):
                raise GridError(f"{where} lists the value {v!r} twice; each value of an axis must appear once")
    return list(value)


def _overrides(value: Any, where: str) -> dict[str, Any]:
    data = _mapping(value, where)
    return {check_key(k, where): v for k, v in data.items()}


def _axes(value: Any, where: str, *, unique: bool = True) -> dict[str, list]:
    data = _mapping(value, where)
    return {check_key(k, where): _values(v, f"{where}.{k}", unique=unique) for k, v in data.items()}


def _zip(value: Any, where: str) -> tuple[dict[str, list], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise GridError(f"{where} must be a list of groups (mappings of dotted key -> list), got {value!r}")
    groups = []
    for i, group in enumerate(value):
        g = _axes(group, f"{where}[{i}]", unique=False)  # a column may repeat; a whole row may not
        if not g:
            raise GridError(f"{where}[{i}] is empty")
        lengths = {k: len(v) for k, v in g.items()}
        if len(set(lengths.values())) > 1:
            raise GridError(f"{where}[{i}]: zipped lists must have equal lengths, got "
                            + ", ".join(f"{k}: {n}" for k, n in lengths.items()))
        rows = [{k: vs[j] for k, vs in g.items()} for j in range(next(iter(lengths.values())))]
        for j, row in enumerate(rows):
            if any(all(same_value(row[k], other[k]) for k in row) for other in rows[:j]):
                raise GridError(f"{where}[{i}] lists the combination {row!r} twice; each must appear once")
        groups.append(g)
    return tuple(groups)


def _variants(value: Any, where: str) -> dict[str, dict[str, dict[str, Any]]]:
    out = {}
    for axis, options in _mapping(value, where).items():
        options = _mapping(options, f"{where}.{axis}")
        if not options:
            raise GridError(f"{where}.{axis} must name at least one variant (label: {{dotted key: value}})")
        out[str(axis)] = {str(label): _overrides(o, f"{where}.{axis}.{label}") for label, o in options.items()}
    return out


def _exclude(value: Any, where: str) -> tuple[dict[str, Any], ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise GridError(f"{where} must be a list of rules (mappings of axis -> value or list of values)")
    rules = []
    for i, rule in enumerate(value):
        rule = _mapping(rule, f"{where}[{i}]")
        if not rule:
            raise GridError(f"{where}[{i}] is empty: it would exclude every cell")
        rules.append(dict(rule))
    return tuple(rules)


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if value is None:
        return (0,)
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           and s >= 0 for s in value):
        raise GridError(f"{where} must be a non-empty list of integers >= 0, got {value!r}")
    if len(set(value)) != len(value):
        raise GridError(f"{where} has repeated seeds: {value!r}")
    return tuple(value)


def _floor(value: Any, where: str) -> dict[str, Any] | None:
    if value is False:
        return None
    data = _mapping(value, where)
    _check_keys(data, ("metrics",), where)
    metrics = data.get("metrics")
    if metrics is not None and (not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics)):
        raise GridError(f"{where}.metrics must be a list of metric names, got {metrics!r}")
    return {"metrics": metrics}


def _decided_by(value: Any, where: str) -> dict[str, Any]:
    data = _mapping(value, where)
    _check_keys(data, DECIDED_BY_KEYS, where)
    if data and "metric" not in data:
        raise GridError(f"{where} must name the deciding 'metric'")
    if "direction" in data and data["direction"] not in DIRECTIONS:
        raise GridError(f"{where}.direction must be one of {', '.join(DIRECTIONS)}, got {data['direction']!r}"
                        f"{suggest(str(data['direction']), list(DIRECTIONS))}")
    return dict(data)


def _block(name: str, data: Any, where: str) -> Block:
    data = _mapping(data, where)
    _check_keys(data, BLOCK_KEYS, where)
    return Block(name=name, set=_overrides(data.get("set"), f"{where}.set"), axes=_axes(data.get("axes"), f"{where}.axes"),
                 zip=_zip(data.get("zip"), f"{where}.zip"), variants=_variants(data.get("variants"), f"{where}.variants"),
                 exclude=_exclude(data.get("exclude"), f"{where}.exclude"))


def _merge_named(base: dict, update: dict) -> dict:
    """Merge by name; a None value removes the entry (profiles use this to drop an axis)."""
    out = dict(base)
    for key, value in update.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _split_set(overrides: dict[str, Any], base: dict, eval_cfg: dict) -> tuple[dict, dict]:
    for key, value in overrides.items():
        if is_eval_key(key):
            eval_cfg = set_dotted({"eval": eval_cfg}, key, value)["eval"]
        else:
            base = set_dotted(base, key, value)
    return base, eval_cfg


def parse_grid(data: dict, *, profile: str | None = None, path: Path | None = None,
               study: str | None = None) -> GridSpec:
    """Build a GridSpec from a parsed grid mapping (see the module docstring for the layout).

    profile: a profile the file defines, or None: 'quick' when the file defines it, else the grid as
    written (recorded as profile 'default').
    """
    where = f"grid '{path}'" if path else "grid"
    if not isinstance(data, dict):
        raise GridError(f"{where} must be a mapping at the top level")
    _check_keys(data, TOP_LEVEL_KEYS, where)
    if "base" not in data:
        raise GridError(f"{where}: missing required key 'base' (a run config: data, model, loss, train)")
    base = _mapping(data["base"], f"{where}: 'base'")
    for key in base:
        check_key(str(key), f"{where}: 'base'")
    eval_cfg = _mapping(data.get("eval"), f"{where}: 'eval'")
    for key in eval_cfg:
        check_key(f"eval.{key}", f"{where}: 'eval'")

    profiles = _mapping(data.get("profiles"), f"{where}: 'profiles'")
    if profile is None and "quick" in profiles:
        profile = "quick"
    if profile is None or (profile == "default" and "default" not in profiles):
        prof: dict = {}
        profile = "default"
    elif profile not in profiles:
        defined = ", ".join(profiles) or "none"
        raise GridError(f"{where} defines no profile '{profile}'{suggest(profile, list(profiles))} "
                        f"(defined: {defined})")
    else:
        prof = _mapping(profiles[profile], f"{where}: 'profiles.{profile}'")
    pwhere = f"{where}: 'profiles.{profile}'"
    _check_keys(prof, PROFILE_KEYS, pwhere)

    axes = _merge_named(_axes(data.get("axes"), f"{where}: 'axes'"), _mapping(prof.get("axes"), f"{pwhere}.axes"))
    axes = _axes(axes, f"{pwhere}.axes")
    variants = _merge_named(_mapping(data.get("variants"), f"{where}: 'variants'"),
                            _mapping(prof.get("variants"), f"{pwhere}.variants"))
    variants = _variants(variants, f"{where}: 'variants'")
    zipped = _zip(prof["zip"] if "zip" in prof else data.get("zip"), f"{where}: 'zip'")
    exclude = _exclude(prof["exclude"] if "exclude" in prof else data.get("exclude"), f"{where}: 'exclude'")
    seeds = _seeds(prof["seeds"] if "seeds" in prof else data.get("seeds"), f"{where}: 'seeds'")
    floor = _floor(prof["floor"] if "floor" in prof else data.get("floor"), f"{where}: 'floor'")

    base, eval_cfg = _split_set(_overrides(prof.get("set"), f"{pwhere}.set"), dict(base), dict(eval_cfg))

    raw_blocks = _merge_named(_mapping(data.get("blocks"), f"{where}: 'blocks'"),
                              _mapping(prof.get("blocks"), f"{pwhere}.blocks"))
    if raw_blocks:
        blocks = tuple(_block(str(name), b, f"{where}: 'blocks.{name}'") for name, b in raw_blocks.items())
    else:
        blocks = (Block(name=""),)
    # Top-level axes, zip groups, variants and exclusions apply inside every block.
    blocks = tuple(dataclasses.replace(
        b, axes={**axes, **b.axes}, zip=zipped + b.zip, variants={**variants, **b.variants},
        exclude=exclude + b.exclude) for b in blocks)
    for b in blocks:
        _check_disjoint(b, f"{where}" + (f": block '{b.name}'" if b.name else ""))

    secondary = data.get("secondary_claims") or []
    if not isinstance(secondary, list):
        raise GridError(f"{where}: 'secondary_claims' must be a list of {{claim, decided_by}} mappings")
    secondary_claims = []
    for i, item in enumerate(secondary):
        item = _mapping(item, f"{where}: 'secondary_claims[{i}]'")
        _check_keys(item, ("claim", "decided_by"), f"{where}: 'secondary_claims[{i}]'")
        secondary_claims.append({"claim": str(item.get("claim", "")),
                                 "decided_by": _decided_by(item.get("decided_by"),
                                                           f"{where}: 'secondary_claims[{i}].decided_by'")})
    name = study or data.get("study") or (path.stem if path else None)
    if not name or not isinstance(name, str):
        raise GridError(f"{where}: needs a 'study' name (or a file to take the name from)")
    return GridSpec(study=name, path=path, profile=profile, claim=str(data.get("claim") or ""),
                    decided_by=_decided_by(data.get("decided_by"), f"{where}: 'decided_by'"), base=base,
                    eval=eval_cfg, blocks=blocks, seeds=seeds, floor=floor, profiles=tuple(profiles),
                    description=str(prof.get("description") or data.get("description") or ""),
                    secondary_claims=tuple(secondary_claims))


def _check_disjoint(block: Block, where: str) -> None:
    """One key may be varied by one axis only; otherwise the later one would silently win."""
    owners: dict[str, str] = {}

    def claim(key: str, owner: str) -> None:
        if key == "seed":
            raise GridError(f"{where}: vary seeds with the top-level 'seeds' list, not with {owner}")
        for other, other_owner in owners.items():
            if key == other or key.startswith(other + ".") or other.startswith(key + "."):
                raise GridError(f"{where}: key '{key}' is varied by both {other_owner} and {owner}")
        owners[key] = owner

    for key in block.axes:
        claim(key, f"axis '{key}'")
    for i, group in enumerate(block.zip):
        for key in group:
            claim(key, f"zip group {i}")
    for axis, options in block.variants.items():
        if axis in block.axes:
            raise GridError(f"{where}: variant axis '{axis}' has the same name as an axis")
        keys = {k for o in options.values() for k in o}
        for key in keys:
            claim(key, f"variant axis '{axis}'")


def load_grid(path: str | Path, profile: str | None = None) -> GridSpec:
    """Read a grid YAML file (safe loading, duplicate keys refused) and apply `profile` (None: 'quick' if defined); errors name the key."""
    path = Path(path)
    try:
        data = read_yaml(path)
    except ConfigError as exc:
        raise GridError(str(exc)) from None
    return parse_grid(data, profile=profile, path=path)

"""Grid specs: one YAML file states a study's claim, its base run, its axes and its profiles.

`load_grid(path, profile)` reads the file safely (duplicate keys refused), applies the chosen profile and
checks the structure (unknown keys get a did-you-mean, axis keys must be RunConfig keys or `eval.*`).
It does not resolve cells: `ablations.plan` expands the grid and validates every resolved config.

File layout (every key but `base` is optional; `claims` are stored with the results and decided by reports):

    study: beta                      # defaults to the file stem
    claims:                          # one or more; each decided by its pre-registered primary test
      - id: "3"                      # label in the report (default: <study>.<k>)
        text: "large beta collapses the posterior"
        primary: {metric: active_units, direction: lower, axis: loss.beta, treatment: 64, reference: 1,
                  margin: 1.0, where: {eval.n: 500}}   # margin: smallest effect that matters (metric units)
        secondary: [{metric: mse, direction: higher, axis: loss.beta, treatment: 64, reference: 1, margin: 0.005}]
    plots:                           # stored with the results and drawn by reports (absent: an overview)
      - {kind: lines, x: loss.beta, metrics: [active_units], colour: eval.passes, x_scale: symlog}
    base: {data: {name: digits}, model: {family: vae}}   # a RunConfig, as for `genbench train`
    eval: {n: 500, metrics: [fd, precision]}             # SampleConfig fields + n + metrics
    axes: {loss.beta: [0, 1, 64], eval.passes: [0, 1]}   # product over dotted keys
    zip: [{eval.sampler: [ddpm, ddim], eval.eta: [0, 1]}]   # each group varies together
    variants: {method: {ae: {model: {family: ae}}, vae: {model: {family: vae}}}}  # labelled override sets
    blocks: {digits: {set: {data.name: digits}}, moons: {set: {...}, variants: {...}}}  # union of sub-grids
    exclude: [{eval.passes: 0, eval.reencode: sample}]   # drop cells matching every key of a rule
    seeds: [0, 1, 2]
    floor: {metrics: [fd]}           # data-versus-data reference rows (false: none)
    timing: {where: {eval.steps: [5, 50]}, backends: [ort_graph, torch_loop], providers: [cpu], batches: [1, 256],
             threads: [1]}           # time the sampler of the eval cells matching `where` (bench.grid_timing);
                                     # `where` may be a list of rules: a cell matching any is timed
    profiles: {quick: {set: {train.steps: 500}, axes: {loss.beta: [0, 64]}, seeds: [0, 1]}, full: {}}

The keys of a claim test and of a plot entry are declared in `genlib.study_schema` (the reports read the stored
copies with the same declarations); this module checks them against the grid's planned cells.
Keys whose first part is a RunConfig field are training-time (they make a checkpoint); `eval.*` keys
are inference-time (they fan out from a checkpoint). A mapping value replaces the whole subtree. A profile's
`timing` replaces the top-level one (`timing: false` times nothing).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from genlib import records
from genlib.config import ConfigError, read_yaml, set_dotted
from genlib.metrics.eval_config import EvaluationConfig
from genlib.records import same_value
from genlib.registry import suggest
from genlib.study_schema import (CLAIM_KEYS, DIRECTIONS, FACET_KEYS, PLOT_COMMON_KEYS, PLOT_HELP, PLOT_KINDS, SCALES,
                                 TEST_HELP, TEST_KEYS, TEST_REQUIRED, ClaimTest, PlotEntry, as_list,
                                 INTERACTION_KEYS, Interaction)
from genlib.train import RunConfig

TOP_LEVEL_KEYS = ("study", "claims", "plots", "gate", "description", "base", "eval", "axes", "zip", "variants",
                  "blocks", "exclude", "seeds", "floor", "timing", "profiles")
GATE_KEYS = ("metric", "max_increase", "relative_to")
PROFILE_KEYS = ("description", "set", "axes", "zip", "variants", "blocks", "exclude", "seeds", "floor", "timing")
BLOCK_KEYS = ("set", "axes", "zip", "variants", "exclude")
REPLACED_KEYS = {"claim": "claims[].text", "decided_by": "claims[].primary", "secondary_claims": "claims[].secondary"}

RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.init)
# The evaluation config of a cell is genlib's EvaluationConfig (SampleConfig + n + metrics), flat in YAML.
EVAL_FIELDS = EvaluationConfig.FLAT_FIELDS
DEFAULT_EVAL_N = EvaluationConfig().n
# The most evaluation cells (axis values x seeds, summed over blocks) one grid may plan. Planning costs a few
# milliseconds a cell; the limit is checked before any cell is expanded, so a mistyped million-value axis is
# refused at once (ablations/README.md).
MAX_GRID_CELLS = 20_000


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
class ClaimSpec:
    """A claim in words, decided by its primary test; secondary tests are reported beside it."""

    id: str
    text: str
    primary: ClaimTest
    secondary: tuple[ClaimTest, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "primary": self.primary.to_dict(),
                "secondary": [t.to_dict() for t in self.secondary]}


@dataclass(frozen=True)
class TimingSpec:
    """Which evaluation cells are timed and how: `where` is one rule or a list of rules, each selecting cells as
    exclude rules do (axis names, variant labels, dotted config keys; a list of values means any of); a cell
    matching any rule is timed. `settings` is `bench.grid_timing.TimingSettings.to_dict()`, attached by the
    planner to each matching cell's eval config as `timing`."""

    where: tuple[dict[str, Any], ...]  # rules, any of which times a cell (a grid file may give one mapping)
    settings: dict[str, Any]


@dataclass(frozen=True)
class GridSpec:
    """A grid file with one profile applied. `blocks` always has at least one block."""

    study: str
    path: Path | None
    profile: str
    base: dict[str, Any]  # RunConfig as a plain dict, profile `set` applied
    eval: dict[str, Any]  # eval config as a plain dict, profile `set` applied
    blocks: tuple[Block, ...]
    seeds: tuple[int, ...]
    floor: dict[str, Any] | None  # {"metrics": [...] | None}, or None for no floor rows
    profiles: tuple[str, ...]  # every profile the file defines
    description: str = ""
    claims: tuple[ClaimSpec, ...] = ()
    plots: tuple[PlotEntry, ...] | None = None  # None: none declared (reports draw an overview)
    timing: TimingSpec | None = None
    # the quality gate of timed cells below fp32: {metric, max_increase, relative_to: fp32} (MLPerf's rule: a
    # latency counts only where quality stays inside the window); the Pareto and Precision tables apply it
    gate: dict[str, Any] | None = None

    def record_config(self) -> dict[str, Any]:
        """The study's stored definition (a `kind="study"` row): what reports need to decide its claims and draw
        its plots (`plots` only when the grid declares them)."""
        out = {"study": self.study, "profile": self.profile, "claims": [c.to_dict() for c in self.claims]}
        if self.plots is not None:
            out["plots"] = [p.to_dict() for p in self.plots]
        if self.gate is not None:
            out["gate"] = dict(self.gate)
        return out


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


def _value_id(value: Any) -> Any:
    """A hashable stand-in equal for values that records.same_value calls equal (true is not 1, 64 is 64.0)."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("num", float(value))
    try:
        hash(value)
        return ("value", value)
    except TypeError:
        return ("json", json.dumps(value, sort_keys=True, default=repr))


def _values(value: Any, where: str, *, unique: bool = True) -> list:
    if not isinstance(value, list) or not value:
        raise GridError(f"{where} must be a non-empty list of values, got {value!r}")
    if len(value) > MAX_GRID_CELLS:
        raise GridError(f"{where} lists {len(value):,} values, more than the {MAX_GRID_CELLS:,} cells a grid may "
                        "plan; split it into several studies")
    if unique:
        seen: set = set()
        for v in value:  # linear: a set of stand-ins, not every earlier value
            key = _value_id(v)
            if key in seen:
                raise GridError(f"{where} lists the value {v!r} twice; each value of an axis must appear once")
            seen.add(key)
    return list(value)


def _check_study_name(name: str, where: str) -> str:
    """A study name goes into file names, report anchors and one-line status rows: no control characters,
    and no '.' or '..' path part."""
    bad = next((c for c in name if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise GridError(f"{where}: study name {name!r} contains the control character {bad!r}; use letters, "
                        "digits, '-' and '_'")
    if any(part in (".", "..") for part in name.replace("\\", "/").split("/")) or not name.strip():
        raise GridError(f"{where}: study name {name!r} is empty or has a '.' or '..' part; use letters, digits, "
                        "'-' and '_'")
    return name


def _check_grid_size(blocks: tuple[Block, ...], seeds: tuple[int, ...], where: str) -> None:
    """Refuse, before expanding anything, a grid of more than MAX_GRID_CELLS evaluation cells."""
    total = 0
    for b in blocks:
        per_block = math.prod([len(v) for v in b.axes.values()] + [len(next(iter(g.values()))) for g in b.zip]
                              + [len(o) for o in b.variants.values()])
        total += per_block * max(1, len(seeds))
    if total > MAX_GRID_CELLS:
        raise GridError(f"{where} expands to {total:,} evaluation cells, more than the {MAX_GRID_CELLS:,} a grid may "
                        "plan; split it into several studies or shorten its axes")


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


def _timing(value: Any, where: str) -> TimingSpec | None:
    """The `timing` section: `where` plus the settings `bench.grid_timing.TimingSettings` checks (an unknown
    backend gets a did-you-mean from bench's BACKENDS registry). None / false: no cell is timed."""
    if value is None or value is False:
        return None
    data = dict(_mapping(value, where))
    given = data.pop("where", None)
    rules = [_mapping(r, f"{where}.where[{i}]") for i, r in enumerate(given)] if isinstance(given, list) else [
        _mapping(given, f"{where}.where")]
    if not rules or not all(rules):
        raise GridError(f"{where}.where: say which evaluation cells to time, e.g. {{eval.steps: [5, 50]}} "
                        "(a mapping of axis or dotted config key -> value or list of values, or a list of such "
                        "mappings: a cell matching any of them is timed)")
    from bench.grid_timing import TimingSettings  # only grids that time anything import bench

    try:
        settings = TimingSettings.from_dict(data, where)
    except ConfigError as exc:
        raise GridError(str(exc)) from None
    return TimingSpec(where=tuple(dict(r) for r in rules), settings=settings.to_dict())


Combo = tuple[tuple[dict[str, Any], dict[str, Any]], ...]  # one (axis values, overrides) option per factor


def block_combos(block: Block) -> Iterator[Combo]:
    """Every combination of a block's factors (one per axis, zip group and variant axis), each factor's
    option an (axis values, config overrides) pair; a plain axis's value is its own override."""
    factors = [[({key: v}, {key: v}) for v in values] for key, values in block.axes.items()]
    for group in block.zip:
        length = len(next(iter(group.values())))
        factors.append([({k: vs[i] for k, vs in group.items()},) * 2 for i in range(length)])
    for axis, options in block.variants.items():
        factors.append([({axis: label}, overrides) for label, overrides in options.items()])
    return itertools.product(*factors)


def cell_settings(spec: GridSpec, block: Block, combo: Combo) -> tuple[dict[str, Any], dict[str, Any]]:
    """(axis values, config document) of one combination: the grid's base and eval section, then the block's
    `set`, then the combination's overrides. ConfigError when a dotted key cannot be set."""
    doc = {**spec.base, "eval": spec.eval}
    values: dict[str, Any] = {}
    for key, value in block.set.items():
        doc = set_dotted(doc, key, value)
    for axis_values, overrides in combo:
        values.update(axis_values)
        for key, value in overrides.items():
            doc = set_dotted(doc, key, value)
    return values, doc


def _cells(spec: GridSpec) -> list[dict[str, Any]]:
    """The settings of every planned cell (seeds aside): axis values and variant labels, then every dotted key
    the grid sets (base, eval, block `set`, overrides). Exclude rules are applied; defaults the grid never
    writes are absent, except the evaluation settings a record leaves out at their default
    (`genlib.records.OMITTED_EVAL_DEFAULTS`: a report reads those as the default, so a test may name them).
    A cheap stand-in for `ablations.plan.plan_grid`, for checking claims at parse time."""
    cells = []
    many = len(spec.blocks) > 1
    for block in spec.blocks:
        for combo in block_combos(block):
            try:
                values, doc = cell_settings(spec, block, combo)
            except ConfigError:
                continue  # plan_grid reports it
            cell = {**{f"eval.{k}": v for k, v in records.OMITTED_EVAL_DEFAULTS.items()}, **_flat(doc),
                    **({"block": block.name} if many else {}), **values}
            if not any(all(_has(cell, k, w) for k, w in rule.items()) for rule in block.exclude):
                cells.append(cell)
    return cells


def _flat(doc: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flat(value, name + "."))
        out[name] = value
    return out


def _has(cell: dict[str, Any], key: str, want: Any) -> bool:
    """The cell's setting `key` is `want` (or one of `want` when it is a list)."""
    if key not in cell:
        return False
    options = want if isinstance(want, list) else [want]
    return any(same_value(cell[key], w) for w in options)


def _metric_names() -> list[str] | None:
    try:
        from genlib.metrics import METRICS
    except ImportError:
        return None
    return METRICS.names()


def _show(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _claim_test(data: Any, where: str, cells: list[dict[str, Any]], metrics: list[str] | None,
                declared: set[str]) -> ClaimTest:
    """Parse one test and check it can be decided by the planned cells; errors name the file and key."""
    data = _mapping(data, where)
    _check_keys(data, TEST_KEYS, where)
    for key in TEST_REQUIRED:
        if key not in data:
            raise GridError(f"{where}: missing required key '{key}' ({TEST_HELP[key]})")
    metric = data["metric"]
    if not isinstance(metric, str) or (metrics is not None and metric not in metrics):
        raise GridError(f"{where}.metric: unknown metric {metric!r}{suggest(str(metric), metrics or [])} "
                        f"(known: {', '.join(metrics or [])})")
    direction = data["direction"]
    if direction not in DIRECTIONS:
        raise GridError(f"{where}.direction must be one of {', '.join(DIRECTIONS)} (the expected sign of treatment "
                        f"- reference), got {direction!r}{suggest(str(direction), list(DIRECTIONS))}")
    margin = data["margin"]
    if (not isinstance(margin, (int, float)) or isinstance(margin, bool) or not math.isfinite(margin)
            or margin <= 0):
        raise GridError(f"{where}.margin must be a number > 0 (the smallest effect that matters, in the unit of "
                        f"'{metric}'), got {margin!r}")
    axis = data["axis"]
    axes = list(dict.fromkeys(k for c in cells for k in c if k in declared))
    if not isinstance(axis, str) or (axis not in declared and axis not in _varied(cells)):
        raise GridError(f"{where}.axis: '{axis}' is not an axis of the grid{suggest(str(axis), axes)} "
                        f"(axes: {', '.join(axes)})")
    values = list(dict.fromkeys(_show(c[axis]) for c in cells if axis in c))
    for side in ("treatment", "reference"):
        if not any(_has(c, axis, data[side]) for c in cells):
            raise GridError(f"{where}.{side}: {_show(data[side])} is not a value of axis '{axis}' "
                            f"(values: {', '.join(values)})")
    if any(_has(c, axis, data["treatment"]) and _has(c, axis, data["reference"]) for c in cells):
        raise GridError(f"{where}: treatment and reference are the same setting of '{axis}'")
    filters = _mapping(data.get("where"), f"{where}.where")
    for key, want in filters.items():
        present = [c for c in cells if key in c]
        if not present:
            keys = sorted({k for c in cells for k in c if not isinstance(c[k], dict)})
            raise GridError(f"{where}.where: '{key}' is not a setting of the grid{suggest(str(key), keys)}")
        for w in (want if isinstance(want, list) else [want]):
            if not any(_has(c, key, w) for c in present):
                seen = ", ".join(dict.fromkeys(_show(c[key]) for c in present))
                raise GridError(f"{where}.where.{key}: {_show(w)} is not produced by the grid (values: {seen})")
    for side in ("treatment", "reference"):
        matching = [c for c in cells if _has(c, axis, data[side]) and all(_has(c, k, w) for k, w in filters.items())]
        if not matching:
            raise GridError(f"{where}: undecidable: no planned cell has {axis}={_show(data[side])} together with "
                            + ", ".join(f"{k}={_show(w)}" for k, w in filters.items()))
        if not any(_measures(c, metric) for c in matching):
            raise GridError(f"{where}: undecidable: the cells with {axis}={_show(data[side])} do not measure "
                            f"'{metric}' (add it to eval.metrics)")
    split, note = data.get("split"), data.get("note", "")
    if split is not None and not isinstance(split, str):
        raise GridError(f"{where}.split must be a string, got {split!r}")
    interaction = _interaction(data.get("interaction"), f"{where}.interaction", cells, data, filters)
    return ClaimTest(metric=metric, direction=direction, axis=axis, treatment=data["treatment"],
                     reference=data["reference"], margin=float(margin), where=tuple(filters.items()), split=split,
                     note=str(note or ""), interaction=interaction)


def _interaction(value: Any, where: str, cells: list[dict[str, Any]], test: dict[str, Any],
                 filters: dict[str, Any]) -> Interaction | None:
    """An interaction test's second axis: a varied setting other than the test's axis, whose two values make, with
    the test's two, four planned cells (under `where`) that measure the metric."""
    if value is None:
        return None
    data = _mapping(value, where)
    _check_keys(data, INTERACTION_KEYS, where)
    for key in INTERACTION_KEYS:
        if key not in data:
            raise GridError(f"{where}: missing required key '{key}' (interaction: {{axis, treatment, reference}})")
    axis, varied = data["axis"], sorted(_varied(cells))
    if not isinstance(axis, str) or axis not in varied or axis == test["axis"]:
        raise GridError(f"{where}.axis: '{axis}' is not an axis of the grid other than the test's own "
                        f"'{test['axis']}'{suggest(str(axis), varied)} (axes: {', '.join(varied)})")
    for side in ("treatment", "reference"):
        if not any(_has(c, axis, data[side]) for c in cells):
            values = ", ".join(dict.fromkeys(_show(c[axis]) for c in cells if axis in c))
            raise GridError(f"{where}.{side}: {_show(data[side])} is not a value of axis '{axis}' (values: {values})")
    for a in ("treatment", "reference"):
        for b in ("treatment", "reference"):
            want = {test["axis"]: test[a], axis: data[b], **filters}
            if not any(all(_has(c, k, w) for k, w in want.items()) and _measures(c, test["metric"]) for c in cells):
                raise GridError(f"{where}: undecidable: no planned cell measuring '{test['metric']}' has "
                                + ", ".join(f"{k}={_show(w)}" for k, w in want.items()))
    return Interaction(axis=axis, treatment=data["treatment"], reference=data["reference"])


def _in_profile(test: Any, where: str, spec: GridSpec) -> bool:
    """A secondary test may name the profiles that measure it (`profiles: [quick, full]`), so a profile sized
    for the primary test's power can leave its cells out; elsewhere the test is not part of the claim."""
    if not isinstance(test, dict) or "profiles" not in test:
        return True
    names = test["profiles"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise GridError(f"{where}.profiles must be a non-empty list of profile names, got {names!r}")
    for name in names:
        if name not in spec.profiles:
            raise GridError(f"{where}.profiles: no profile '{name}' in the grid{suggest(name, list(spec.profiles))} "
                            f"(profiles: {', '.join(spec.profiles)})")
    return spec.profile in names


def _for_profile(test: Any, where: str, spec: GridSpec) -> Any:
    return {k: v for k, v in test.items() if k != "profiles"} if isinstance(test, dict) else test


def _varied(cells: list[dict[str, Any]]) -> set[str]:
    """Keys that take more than one value across the cells (the axes a comparison can contrast)."""
    seen: dict[str, list] = {}
    for c in cells:
        for k, v in c.items():
            if isinstance(v, dict):
                continue
            vals = seen.setdefault(k, [])
            if not any(same_value(v, w) for w in vals):
                vals.append(v)
    return {k for k, vs in seen.items() if len(vs) > 1}


def _measures(cell: dict[str, Any], metric: str) -> bool:
    names = cell.get("eval.metrics")
    if names is None:
        return True  # the family's default metrics: plan_grid and the evaluation decide
    return metric in (names if isinstance(names, list) else [names])


def _claims(value: Any, where: str, spec: GridSpec) -> tuple[ClaimSpec, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise GridError(f"{where}: 'claims' must be a list of {{id, text, primary, secondary}} mappings")
    cells = _cells(spec)
    metrics = _metric_names()
    declared = _declared_axes(spec)
    out: list[ClaimSpec] = []
    for i, item in enumerate(value):
        cwhere = f"{where}: claims[{i}]"
        item = _mapping(item, cwhere)
        _check_keys(item, CLAIM_KEYS, cwhere)
        text = item.get("text")
        if not isinstance(text, str) or not text.strip():
            raise GridError(f"{cwhere}: missing 'text' (the claim in words)")
        if "primary" not in item:
            raise GridError(f"{cwhere}: missing 'primary' (the one pre-registered test that decides the claim)")
        cid = str(item.get("id") or f"{spec.study}.{i + 1}")
        if any(c.id == cid for c in out):
            raise GridError(f"{cwhere}.id: {cid!r} is used by another claim of the grid")
        if isinstance(item["primary"], dict) and "profiles" in item["primary"]:
            raise GridError(f"{cwhere}.primary.profiles: the primary test decides the claim in every profile; "
                            f"only secondary tests may be limited to some profiles")
        primary = _claim_test(item["primary"], f"{cwhere}.primary", cells, metrics, declared)
        secondary = item.get("secondary") or []
        if not isinstance(secondary, list):
            raise GridError(f"{cwhere}.secondary must be a list of tests")
        tests = tuple(_claim_test(_for_profile(t, f"{cwhere}.secondary[{j}]", spec), f"{cwhere}.secondary[{j}]",
                                  cells, metrics, declared)
                      for j, t in enumerate(secondary) if _in_profile(t, f"{cwhere}.secondary[{j}]", spec))
        out.append(ClaimSpec(id=cid, text=" ".join(text.split()), primary=primary, secondary=tests))
    return tuple(out)


def _declared_axes(spec: GridSpec) -> set[str]:
    """The axes the grid file names: plain axes, zipped keys, variant axes, and 'block' when it has several."""
    declared = {"block"} if len(spec.blocks) > 1 else set()
    for b in spec.blocks:
        declared |= set(b.axes) | {k for g in b.zip for k in g} | set(b.variants)
    return declared


def _plot_axis(value: Any, where: str, cells: list[dict[str, Any]], declared: set[str]) -> str:
    axes = list(dict.fromkeys(k for c in cells for k in c if k in declared))
    if not isinstance(value, str) or (value not in declared and value not in _varied(cells)):
        raise GridError(f"{where}: '{value}' is not an axis of the grid{suggest(str(value), axes)} "
                        f"(axes: {', '.join(axes)})")
    return value


def _plot_settings(value: Any, where: str, cells: list[dict[str, Any]]) -> tuple[str, ...]:
    keys = sorted({k for c in cells for k in c if not isinstance(c[k], dict)})
    out = []
    for key in as_list(value):
        if not isinstance(key, str) or not any(key in c for c in cells):
            raise GridError(f"{where}: '{key}' is not a setting of the grid{suggest(str(key), keys)}")
        out.append(key)
    if not out:
        raise GridError(f"{where} must name a setting or a list of settings, got {value!r}")
    return tuple(out)


def _plot_entry(item: Any, where: str, cells: list[dict[str, Any]], metrics: list[str] | None,
                declared: set[str]) -> dict[str, Any]:
    """One `plots:` entry checked against `genlib.study_schema.PLOT_KINDS` and the planned cells."""
    item = _mapping(item, where)
    kind = item.get("kind")
    if kind not in PLOT_KINDS:
        raise GridError(f"{where}.kind: " + (f"unknown plot kind {kind!r}{suggest(str(kind), list(PLOT_KINDS))}"
                                             if "kind" in item else "missing") + f" (kinds: {', '.join(PLOT_KINDS)})")
    spec = PLOT_KINDS[kind]
    _check_keys(item, PLOT_COMMON_KEYS + spec.required + spec.optional, f"{where} (kind {kind})")
    for key in spec.required:
        if key not in item:
            raise GridError(f"{where}: kind {kind} needs '{key}' ({PLOT_HELP[key]})")
    out: dict[str, Any] = {"kind": kind}
    for key, value in item.items():
        kwhere = f"{where}.{key}"
        if key in ("name", "title", "x_label"):
            if not isinstance(value, str) or not value.strip():
                raise GridError(f"{kwhere} must be a non-empty string, got {value!r}")
            out[key] = " ".join(value.split())
        elif key in ("x", "along"):
            out[key] = _plot_axis(value, kwhere, cells, declared)
        elif key in FACET_KEYS:
            out[key] = _plot_settings(value, kwhere, cells)
        elif key in ("x_scale", "y_scale"):
            allowed = SCALES if key == "y_scale" else SCALES[:3]
            if value not in allowed:
                raise GridError(f"{kwhere} must be one of {', '.join(allowed)}, got {value!r}"
                                f"{suggest(str(value), list(allowed))}")
            out[key] = value
        elif key == "metrics":
            names = as_list(value)
            if not names or not all(isinstance(m, str) for m in names):
                raise GridError(f"{kwhere} must be a metric name or a list of them, got {value!r}")
            if kind == "trade_off" and len(names) != 2:
                raise GridError(f"{kwhere}: kind trade_off draws two metrics against each other ([x, y]), "
                                f"got {len(names)}")
            for m in names if kind != "training_curves" else ():  # training-log columns are not metrics
                if metrics is not None and m not in metrics:
                    raise GridError(f"{kwhere}: unknown metric {m!r}{suggest(m, metrics)}")
                if not any(_measures(c, m) for c in cells):
                    raise GridError(f"{kwhere}: no cell of the grid measures '{m}' (add it to eval.metrics)")
            out[key] = tuple(names)
    return out


def _plots(value: Any, where: str, spec: GridSpec) -> tuple[PlotEntry, ...] | None:
    """The `plots:` section (None when absent: reports draw an overview); errors name the entry and key."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise GridError(f"{where}: 'plots' must be a list of {{kind, ...}} mappings (kinds: {', '.join(PLOT_KINDS)})")
    cells = _cells(spec)
    metrics = _metric_names()
    declared = _declared_axes(spec)
    entries = [_plot_entry(item, f"{where}: plots[{i}]", cells, metrics, declared) for i, item in enumerate(value)]
    kinds = [e["kind"] for e in entries]
    names: list[str] = []
    for i, e in enumerate(entries):
        name = e.get("name") or (e["kind"] if kinds.count(e["kind"]) == 1
                                 else f"{e['kind']}-{kinds[:i + 1].count(e['kind'])}")
        if name in names:
            raise GridError(f"{where}: plots[{i}].name: {name!r} is used by another plot of the grid")
        names.append(name)
        e["name"] = name
    return tuple(PlotEntry.from_dict(e) for e in entries)


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
    for old, new in REPLACED_KEYS.items():
        if old in data:
            raise GridError(f"{where}: key '{old}' was replaced by '{new}' (a list of claims, each with its lecture "
                            "wording, a primary test and secondary tests that carry a margin)")
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
    timing = (_timing(prof["timing"], f"{pwhere}.timing") if "timing" in prof
              else _timing(data.get("timing"), f"{where}: 'timing'"))

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

    name = study or data.get("study") or (path.stem if path else None)
    if not name or not isinstance(name, str):
        raise GridError(f"{where}: needs a 'study' name (or a file to take the name from)")
    _check_study_name(name, where)
    _check_grid_size(blocks, seeds, where)
    spec = GridSpec(study=name, path=path, profile=profile, base=base, eval=eval_cfg, blocks=blocks, seeds=seeds,
                    floor=floor, profiles=tuple(profiles), timing=timing,
                    description=str(prof.get("description") or data.get("description") or ""))
    return dataclasses.replace(spec, claims=_claims(data.get("claims"), where, spec),
                               plots=_plots(data.get("plots"), where, spec), gate=_gate(data.get("gate"), where))


def _gate(value: Any, where: str) -> dict[str, Any] | None:
    """The `gate:` section: {metric: NAME, max_increase: X > 0, relative_to: fp32}; errors name the key."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise GridError(f"{where}: 'gate' must be a mapping {{metric, max_increase, relative_to: fp32}}, got {value!r}")
    unknown = [k for k in value if k not in GATE_KEYS]
    if unknown:
        raise GridError(f"{where}: gate: unknown key '{unknown[0]}'{suggest(str(unknown[0]), list(GATE_KEYS))} "
                        f"(valid: {', '.join(GATE_KEYS)})")
    metric = value.get("metric")
    if not isinstance(metric, str):
        raise GridError(f"{where}: gate.metric: needs a metric name, got {metric!r}")
    from ablations.plan import check_metric_names

    check_metric_names([metric], "gate.metric")
    limit = value.get("max_increase")
    if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0:
        raise GridError(f"{where}: gate.max_increase: needs a number > 0 (in the metric's unit), got {limit!r}")
    relative = value.get("relative_to", "fp32")
    if relative != "fp32":
        raise GridError(f"{where}: gate.relative_to: only 'fp32' (the same sampler's fp32 graph), got {relative!r}")
    return {"metric": metric, "max_increase": float(limit), "relative_to": "fp32"}


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

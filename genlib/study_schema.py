"""The schema of a study's stored definition: its claim tests and its plot entries, each declared once.

A grid file's `claims:` and `plots:` sections are parsed by `ablations.spec` (which also checks them against the
planned cells) into the dataclasses below, stored with the results by their `to_dict`, and read back by `reports`
with `from_dict`. The keys, which are required, what each means and the allowed values live only here.
Plain Python with no dependencies: reports may import it (tests/test_layering.py). It draws nothing.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

DIRECTIONS = ("higher", "lower")
CLAIM_KEYS = ("id", "text", "primary", "secondary")


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


INTERACTION_KEYS = ("axis", "treatment", "reference")


@dataclass(frozen=True, kw_only=True)
class Interaction:
    """The second axis of an interaction test: the test's contrast (axis=treatment minus axis=reference) is taken
    at interaction.axis=treatment and at interaction.axis=reference, and the test compares the two contrasts."""

    axis: str
    treatment: Any
    reference: Any

    def to_dict(self) -> dict[str, Any]:
        return {"axis": self.axis, "treatment": self.treatment, "reference": self.reference}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Interaction | None":
        if not data:
            return None
        return cls(axis=str(data["axis"]), treatment=data["treatment"], reference=data["reference"])


@dataclass(frozen=True, kw_only=True)
class ClaimTest:
    """One pre-registered comparison: `metric` at axis=treatment minus at axis=reference, paired by seed, over the
    cells matching `where`; `direction` is the expected sign of that difference and `margin` (> 0, in the metric's
    unit) the smallest effect that matters. Fields without a default are required in a grid file."""

    metric: str = _help("a registered metric name, measured by the cells on both sides")
    direction: Literal["higher", "lower"] = _help("the expected sign of treatment - reference: higher or lower")
    axis: str = _help("the setting compared: an axis, a variant axis or 'block'")
    treatment: Any = _help("the value of the axis on the treatment side")
    reference: Any = _help("the value of the axis on the reference side")
    margin: float = _help("the smallest effect that matters, in the metric's unit")
    where: tuple[tuple[str, Any], ...] = _help("settings fixed for the comparison: {setting: value or list}",
                                               default=())
    split: str | None = _help("the metric's split (e.g. 'test'), when a cell records it on several", default=None)
    note: str = _help("a remark printed beside the test", default="")
    interaction: Interaction | None = _help(
        "an interaction test: {axis, treatment, reference} of a second axis; d = (metric at axis=treatment - at "
        "axis=reference) at interaction.axis=treatment minus the same at interaction.axis=reference, paired by "
        "seed over the four cells, each one configuration", default=None)

    def to_dict(self) -> dict[str, Any]:
        """The stored layout: `where` as a mapping; split, note and interaction only when set."""
        out = {"metric": self.metric, "direction": self.direction, "axis": self.axis, "treatment": self.treatment,
               "reference": self.reference, "margin": self.margin, "where": dict(self.where)}
        if self.split is not None:
            out["split"] = self.split
        if self.note:
            out["note"] = self.note
        if self.interaction is not None:
            out["interaction"] = self.interaction.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **extra: Any):
        """A test in the stored layout (`to_dict`); `extra` fills the fields a subclass adds (a study name)."""
        return cls(**extra, metric=str(data["metric"]), direction=data["direction"], axis=str(data["axis"]),
                   treatment=data["treatment"], reference=data["reference"], margin=float(data["margin"]),
                   where=tuple((data.get("where") or {}).items()), split=data.get("split"),
                   note=str(data.get("note") or ""), interaction=Interaction.from_dict(data.get("interaction")))


# Keys a test may have in a grid file but that are not part of the stored test.
TEST_GRID_KEYS: dict[str, str] = {
    "profiles": "the profiles that measure a secondary test (the primary is decided in every profile)",
}
TEST_HELP: dict[str, str] = {f.name: f.metadata["help"] for f in dataclasses.fields(ClaimTest)} | TEST_GRID_KEYS
TEST_KEYS = tuple(TEST_HELP)
TEST_REQUIRED = tuple(f.name for f in dataclasses.fields(ClaimTest)
                      if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)


# -- plots ---------------------------------------------------------------------------------------------------
SCALES = ("linear", "log", "symlog", "auto")  # auto (y only): log when the means span more than 30x


@dataclass(frozen=True)
class PlotKind:
    """A kind of plot a study may declare: what it draws and which entry keys it takes besides kind, name, title."""

    name: str
    help: str
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


PLOT_KINDS: dict[str, PlotKind] = {k.name: k for k in (
    PlotKind("lines", "metrics against a setting x (mean ± 95% CI over seeds), a panel per metric and per "
             "columns/rows value, a line per colour value (default: per combination of the other settings varied)",
             required=("x",), optional=("metrics", "colour", "columns", "rows", "x_scale", "y_scale", "x_label")),
    PlotKind("trade_off", "two metrics against each other (metrics: [x, y]), a point per value of the setting "
             "`along`, labelled with it, a curve per colour value",
             required=("metrics", "along"), optional=("colour", "x_scale", "y_scale")),
    PlotKind("training_curves", "training-log columns (metrics; default loss, kl, beta_t) against the step from "
             "each training's history.csv, mean over seeds, a line per colour value", optional=("metrics", "colour")),
    PlotKind("bars", "a horizontal bar per setting for each directed metric (default: up to six)",
             optional=("metrics",)),
)}
PLOT_COMMON_KEYS = ("kind", "name", "title")
PLOT_HELP: dict[str, str] = {
    "kind": "what to draw: " + ", ".join(PLOT_KINDS),
    "name": "the plot's file stem and anchor (default: the kind, numbered when repeated)",
    "title": "the figure's title, and its caption before the data group",
    "x": "the setting on the x axis (an axis of the grid)",
    "along": "the setting each point stands for (an axis of the grid)",
    "metrics": "metric names (a list); a data group draws those it measures",
    "colour": "a setting, or a list of settings, whose values get a line each",
    "columns": "a setting, or a list of settings, whose values get a column of panels each",
    "rows": "a setting, or a list of settings, whose values get a row of panels each",
    "x_scale": "one of " + ", ".join(SCALES[:3]),
    "y_scale": "one of " + ", ".join(SCALES),
    "x_label": "the x axis label (default: the setting)",
}
FACET_KEYS = ("colour", "columns", "rows")


@dataclass(frozen=True, kw_only=True)
class PlotEntry:
    """One plot a study declares (`plots:` in its grid file); which keys a kind takes is `PLOT_KINDS[kind]`."""

    kind: str
    name: str = ""
    title: str = ""
    x: str | None = None
    along: str | None = None
    metrics: tuple[str, ...] = ()
    colour: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    rows: tuple[str, ...] = ()
    x_scale: str = "linear"
    y_scale: str = "linear"
    x_label: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The stored layout: the keys that differ from their defaults, lists for tuples."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name != "kind" and value != f.default:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PlotEntry":
        """An entry in the stored layout (`to_dict`) or a checked grid-file entry (a facet may be one string)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: (tuple(as_list(v)) if k in ("metrics", *FACET_KEYS) else v) for k, v in data.items() if k in known}
        return cls(**kw)


def as_list(value: Any) -> list:
    """A facet or metrics value as a list: one string is a list of one."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


__all__ = ["CLAIM_KEYS", "ClaimTest", "DIRECTIONS", "FACET_KEYS", "INTERACTION_KEYS", "Interaction", "PLOT_COMMON_KEYS", "PLOT_HELP", "PLOT_KINDS",
           "PlotEntry", "PlotKind", "SCALES", "TEST_GRID_KEYS", "TEST_HELP", "TEST_KEYS", "TEST_REQUIRED", "as_list"]

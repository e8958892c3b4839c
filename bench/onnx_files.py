"""Reading ONNX files: what a benchmark needs to know about a graph (its part, IO contract and sidecar).

`read_export` loads a file written by `bench.export` (or any ONNX file whose inputs match a part's
contract), `export_info` builds the same record from a model already in memory (what `export_part`
returns, so nothing is re-read after an export), and `random_feeds` makes inputs for a file alone.
It never runs a graph and never writes one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from genlib import records
from genlib.cli import UserError


class NotOnnxFileError(UserError):
    """A file given as an ONNX model is missing or is not a readable ONNX model."""


class UnexpectedInputsError(UserError):
    """An ONNX graph's inputs do not match the contract of the part it claims to be (or of any part)."""


PART_CONTRACTS: dict[str, list[tuple[str, ...]]] = {
    "decoder": [("z",)], "encoder": [("x",)], "denoiser": [("x_t", "t")], "chain": [("x_t", "t")],
    "sampler": [("x_T",), ("x_T", "noise"), ("z",), ("z", "noise")],
}


SIDECAR_FORMAT = "genbench-onnx-export"
# 2: export_config holds the sampler settings under "sample" (version 1 had them at its top level; read
# files are brought to the current layout by genlib.records.upgrade_export_config).
SIDECAR_VERSION = 2


def sidecar_path(onnx_path: str | Path) -> Path:
    """The JSON record written beside an export: FILE.onnx -> FILE.onnx.json."""
    p = Path(onnx_path)
    return p.with_name(p.name + ".json")


def io_spec(values) -> list[dict]:
    """[{name, dtype, shape}] of graph inputs or outputs; symbolic axes keep their names."""
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        out.append({"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims})
    return out


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX model, raising NotOnnxFileError (naming the file) for anything else."""
    path = Path(path)
    if not path.is_file():
        raise NotOnnxFileError(f"ONNX file '{path}' does not exist")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError, onnx raises several types
        raise NotOnnxFileError(f"'{path}' is not an ONNX model ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not model.graph.node and not model.graph.output:
        raise NotOnnxFileError(f"'{path}' is not an ONNX model (no graph)")
    return model


@dataclass
class ExportInfo:
    """What a benchmark needs to know about an ONNX file: its part, IO contract and sidecar (if any)."""

    path: Path
    part: str
    inputs: list[dict]
    outputs: list[dict]
    sidecar: dict | None
    details: dict

    @property
    def valid(self) -> bool | None:
        parity = (self.sidecar or {}).get("parity") or {}
        return parity.get("valid")


def export_info(model: onnx.ModelProto, path: str | Path, sidecar: dict | None = None) -> ExportInfo:
    """The ExportInfo of `model` (stored at `path`), its part from genbench metadata or inferred from its inputs.

    Raises UnexpectedInputsError when the inputs fit no part (or not the part the metadata names).
    """
    path = Path(path)
    props = {p.key: p.value for p in model.metadata_props}
    init_names = {i.name for i in model.graph.initializer}
    inputs = io_spec([v for v in model.graph.input if v.name not in init_names])
    outputs = io_spec(model.graph.output)
    names = tuple(v["name"] for v in inputs)
    part = props.get("genbench.part")
    if part is not None:
        if part not in PART_CONTRACTS:
            raise UnexpectedInputsError(f"'{path}' is a genbench '{part}' graph, which cannot be benchmarked on its own")
        if names not in PART_CONTRACTS[part]:
            raise UnexpectedInputsError(
                f"'{path}' claims to be a '{part}' graph but has inputs {list(names)}; expected "
                f"{' or '.join(str(list(c)) for c in PART_CONTRACTS[part])}")
    else:
        matches = [p for p, contracts in PART_CONTRACTS.items() if names in contracts and p != "sampler"]
        if not matches:
            raise UnexpectedInputsError(
                f"'{path}' has inputs {list(names)}, which match no genbench part (expected one of: "
                + "; ".join(f"{p} {list(c[0])}" for p, c in PART_CONTRACTS.items()) + ")")
        part = matches[0]
    details = json.loads(props.get("genbench.details", "{}"))
    return ExportInfo(path, part, inputs, outputs, sidecar, details)


def read_export(path: str | Path) -> ExportInfo:
    """Load an ONNX file's contract and its sidecar (when present and readable).

    Raises NotOnnxFileError for a non-ONNX file and UnexpectedInputsError when the inputs fit no part
    (or not the part the metadata names).
    """
    model = load_onnx(path)
    side = sidecar_path(path)
    sidecar = None
    if side.is_file():
        try:
            sidecar = json.loads(side.read_text())
        except json.JSONDecodeError:
            sidecar = None
    if isinstance(sidecar, dict):
        sidecar = upgrade_sidecar(sidecar, side)
    return export_info(model, path, sidecar)


def upgrade_sidecar(sidecar: dict, where: str | Path) -> dict:
    """A sidecar in the current layout; a newer version than this code writes is a one-line UserError."""
    version = sidecar.get("version", 1)
    if not isinstance(version, int) or version > SIDECAR_VERSION:
        raise UserError(f"export sidecar '{where}' has version {version!r}; this genbench reads versions 1 to "
                        f"{SIDECAR_VERSION} (export the part again or upgrade genbench)")
    if isinstance(sidecar.get("export_config"), dict):
        sidecar = {**sidecar, "export_config": records.upgrade_export_config(sidecar["export_config"]),
                   "version": SIDECAR_VERSION}
    return sidecar


def random_feeds(info: ExportInfo, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the right shape and dtype for timing an ONNX file alone (no torch model needed).

    Float inputs are standard normal, int64 timesteps uniform over 0..T-1 (T from the export details
    when known). Symbolic axes other than the batch take 1.
    """
    rng = np.random.default_rng(seed)
    T = int(info.details.get("T", 1000))
    feeds = {}
    for item in info.inputs:
        shape = [batch if d == "batch" else (d if isinstance(d, int) and d > 0 else 1) for d in item["shape"]]
        if item["dtype"].startswith("int"):
            feeds[item["name"]] = rng.integers(0, T, size=shape).astype(item["dtype"])
        else:
            feeds[item["name"]] = rng.standard_normal(shape).astype(item["dtype"])
    return feeds

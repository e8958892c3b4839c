"""The parity gate: an exported graph in ONNX Runtime against its torch reference on the same inputs.

For a part the reference is the wrapped network; for a sampler it is genlib's torch sampler, which loops
over the same step functions the graph was exported from, so the gate checks export fidelity (the
exporter, operator coverage, float16) against the one implementation the grid evaluates. Valid when
every output is within atol + rtol * max |torch| at each batch size, and for a sampler when its sliced
Wasserstein distance to held-out data agrees as well. It writes nothing.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from genlib.metrics import sliced_wasserstein
from genlib.models import module_device

from bench.onnx_files import UnexpectedInputsError
from bench.parts import ExportConfig, PartGraph


@dataclass(frozen=True)
class ParityResult:
    valid: bool
    max_abs_err: float
    tolerance: float  # the bound at the batch with the largest error ratio
    atol: float
    rtol: float
    provider: str
    per_batch: tuple[dict, ...]
    metric: dict | None = None
    reason: str = ""
    gated: bool = True  # False for a lower precision: the error is measured, not held to the tolerance

    def to_dict(self) -> dict:
        return asdict(self)


def unchecked(cfg: ExportConfig) -> ParityResult:
    """The verdict of an export whose parity was not checked: not valid, and saying why."""
    atol, rtol = cfg.tolerances()
    return ParityResult(valid=False, max_abs_err=math.nan, tolerance=math.nan, atol=atol, rtol=rtol, provider="",
                        per_batch=(), reason="parity not checked")


def _np(v: torch.Tensor) -> np.ndarray:
    return v.detach().cpu().numpy()


def check_parity(part: PartGraph, cfg: ExportConfig, model: bytes | str | object, *,
                 provider: str = "cpu", session=None) -> ParityResult:
    """ONNX Runtime vs torch at each of `cfg.parity_batches`; for a sampler also a sample metric.

    model: the serialized graph, a path, or anything `bench.runtime.make_session` takes (unused when a
    `session` is given). Valid when every output's max |onnx - torch| <= atol + rtol * max |torch| at every
    batch (and, for a sampler, the sliced Wasserstein distance to held-out data agrees within
    `cfg.metric_tolerance()`).
    """
    from bench.runtime import SessionConfig, make_session

    if session is None:  # within the process's thread budget (a grid worker's share of the cores)
        session = make_session(model, SessionConfig(provider=provider, intra_op_threads=torch.get_num_threads()))
    atol, rtol = cfg.tolerances()
    rows = []
    worst_ratio, worst = -1.0, (0.0, atol)
    metric = None
    nonfinite = False
    for b in cfg.parity_batches:
        gen = torch.Generator().manual_seed(cfg.seed + 7919 * b)
        feeds = part.make_feeds(b, gen)
        device = module_device(part.module)
        with torch.inference_mode():
            ref = {k: _np(v) for k, v in part.reference({k: v.to(device) for k, v in feeds.items()}).items()}
        onnx_feeds = {k: _np(v) for k, v in feeds.items() if k in part.graph_inputs}
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, onnx_feeds)))
        for name in part.graph_outputs:
            r, o = ref[name].astype(np.float64), got[name].astype(np.float64)
            if r.shape != o.shape:
                raise UnexpectedInputsError(f"output '{name}' has shape {o.shape} in ONNX but {r.shape} in torch")
            err = float(np.max(np.abs(r - o))) if r.size else 0.0
            if not math.isfinite(err):
                nonfinite = True
            bound = atol + rtol * float(np.max(np.abs(r))) if r.size else atol
            rows.append({"batch": b, "output": name, "max_abs_err": err, "tolerance": bound,
                         "max_abs_ref": float(np.max(np.abs(r))) if r.size else 0.0})
            if not math.isfinite(err):
                ratio = math.inf
            else:
                ratio = err / bound if bound > 0 else (0.0 if err == 0 else math.inf)
            if ratio > worst_ratio:
                worst_ratio, worst = ratio, (err, bound)
        if part.metric_data is not None and b == max(cfg.parity_batches):
            metric = _metric_agreement(part, cfg, ref, got)
    if not cfg.gated:  # a lower precision is measured, never invalid (unless it gives non-finite outputs)
        reason = "outputs are not finite" if nonfinite else ""
        return ParityResult(valid=not nonfinite, max_abs_err=worst[0], tolerance=worst[1], atol=atol, rtol=rtol,
                            provider=session.get_providers()[0], per_batch=tuple(rows), metric=metric, reason=reason,
                            gated=False)
    valid = worst_ratio <= 1.0 and not nonfinite
    reason = "" if valid else f"max abs error {worst[0]:.3g} exceeds tolerance {worst[1]:.3g}"
    if metric is not None and metric.get("agree") is False:
        valid = False
        reason = (reason + "; " if reason else "") + (f"sample metric {metric['name']} differs: onnx {metric['onnx']:.5g} "
                                                      f"vs torch {metric['torch']:.5g}")
    return ParityResult(valid=valid, max_abs_err=worst[0], tolerance=worst[1], atol=atol, rtol=rtol,
                        provider=session.get_providers()[0], per_batch=tuple(rows), metric=metric, reason=reason)


def _metric_agreement(part: PartGraph, cfg: ExportConfig, ref: dict, got: dict) -> dict:
    data = part.metric_data()
    if data is None or len(data) == 0:
        return {"name": "sliced_wasserstein", "agree": None, "reason": "held-out data unavailable"}
    x_ref, x_onnx = ref["x"].reshape(len(ref["x"]), -1), got["x"].reshape(len(got["x"]), -1)
    data = data.reshape(len(data), -1)
    m_torch = sliced_wasserstein(x_ref, data, seed=cfg.seed)
    m_onnx = sliced_wasserstein(x_onnx, data, seed=cfg.seed)
    tol = cfg.metric_tolerance() * abs(m_torch) + 1e-6
    return {"name": "sliced_wasserstein", "torch": m_torch, "onnx": m_onnx, "abs_diff": abs(m_onnx - m_torch),
            "tolerance": tol, "agree": bool(abs(m_onnx - m_torch) <= tol), "n": int(len(x_ref))}

"""Real denoiser errors as perturbations (genlib.perturb's real kinds), realised where a run is loaded.

`realise_perturbation(loaded, spec, exports_dir)` returns the run whose network *is* the perturbed denoiser:
  precision:P  the run's denoiser exported to ONNX and converted to precision P (bench.precision, the same
               conversion a shipped graph gets), called through an ONNX Runtime session at every step of the
               genlib sampler, so the sampler's own arithmetic stays float32 and only the network's error differs;
  step:N       the weights the run saved at training step N (train.save_at; genlib.train.load_run).
It also returns the facts a result must carry about that network (export key, conversion, ORT version, the
measured error against the float network). Synthetic kinds (scale, bias, field) need nothing here.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from genlib.perturb import mark_realised, parse_perturb
from genlib.train import LoadedRun, load_run


def realise_perturbation(loaded: LoadedRun, spec: str, exports_dir: str | Path, *, device: str = "auto",
                         seed: int = 0) -> tuple[LoadedRun, dict[str, Any]]:
    """(the run to sample under `spec`, facts about its network). `loaded` itself and {} for 'none' and the
    synthetic kinds. exports_dir: the export cache (bench.export.cached_export) for precision kinds."""
    from genlib.models import MODELS

    perturbation = parse_perturb(spec)
    if not perturbation.real:
        return loaded, {}
    if not MODELS.get(loaded.config.model.family).trainable:
        raise ValueError(f"perturb '{perturbation.spec}' is a trained network's error, but family "
                         f"'{loaded.config.model.family}' has no trained weights")
    if perturbation.kind == "step":
        early = load_run(loaded.run_dir, device=device, at_step=perturbation.step)
        return early, {"kind": "step", "step": perturbation.step,
                       "weights": f"model.step{perturbation.step}.pt", "of_steps": loaded.config.train.steps}
    return _realise_precision(loaded, perturbation.precision, perturbation.spec, Path(exports_dir), seed)


def _realise_precision(loaded: LoadedRun, precision: str, spec: str, exports_dir: Path,
                       seed: int) -> tuple[LoadedRun, dict[str, Any]]:
    from bench.backends import onnx_part
    from bench.export import cached_export
    from bench.parts import ExportConfig
    from bench.runtime import SessionConfig, make_session

    # the diffusion samplers call one part, the denoiser (SamplerSpec.net_parts), which with_parts replaces
    cached = cached_export(loaded, ExportConfig(part="denoiser", precision=precision, seed=seed), exports_dir)
    session = make_session(cached.path, SessionConfig(intra_op_threads=1))
    net = mark_realised(onnx_part(session), spec)
    sidecar = cached.info.sidecar or {}
    parity = sidecar.get("parity") or {}
    facts = {"kind": "precision", "precision": precision, "export_key": sidecar.get("export_key"),
             "precision_facts": sidecar.get("precision_facts"),
             "max_abs_err": parity.get("max_abs_err"), "provider": session.get_providers()[0]}
    return dataclasses.replace(loaded, model=loaded.model.with_parts({"denoiser": net})), facts


__all__ = ["realise_perturbation"]

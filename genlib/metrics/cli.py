"""`genbench eval`: score a trained run, or the data against itself (the floor), with named metrics.

Registered as the `eval` entry of the `genbench.commands` entry-point group. Settings use the dotted
override grammar of genlib.config (`--set metrics.iwae_k=1000 --set sample.steps=50`); results print as a table
or JSON and can be committed to a results store. The maths lives in genlib.metrics, not here.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from typing import TYPE_CHECKING, Any

from genlib.cli import UserError, check_device, check_store_writable, str_list

if TYPE_CHECKING:  # imported when a command runs: building the parser must not import torch
    from genlib.data import DataConfig
    from genlib.metrics.eval_config import EvaluationConfig
    from genlib.store import Metric

EPILOG = """metrics (genbench eval --list shows units, directions and where each applies):
  reconstruction  mse psnr ssim                      (ae, vae)
  likelihood      neg_elbo iwae bpd                  (vae)
  latent health   kl active_units mutual_info        (vae)
  image samples   fd kid precision recall density coverage class_entropy sharpness
                  hf_energy_ratio
  2-D toys        swd mmd energy nll_true

Image sample metrics live in the feature space of a small classifier trained on the dataset's own
labelled training split (no downloaded weights). It trains once, a few seconds for digits, and is
cached in $GENBENCH_CACHE/extractors (default ~/.cache/genbench/extractors); its id and held-out
accuracy are recorded with every number. The floor (--data) scores training-split items as if they
were samples against the test split at the same n: how far a model is from the best it can be.

examples:
  genbench eval --run runs/vae                              default metrics for the run's family
  genbench eval --run runs/vae --metrics iwae,bpd --set metrics.iwae_k=1000
  genbench eval --run runs/ddpm --metrics fd,precision,recall --n 2000 --set sample.steps=50
  genbench eval --data digits                               the data-versus-data floor
  genbench eval --data idx:../shared/data/mnist --set data.test_fraction=0.2 --n 2000 --json
  genbench eval --run runs/vae --store results.db           also record the numbers in a results store
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval", help="score a trained run (or the data-vs-data floor) with quality metrics",
        description="Compute quality metrics for a trained run (--run) or the data-versus-data reference "
                    "floor of a dataset (--data). Each number carries its unit, its direction and what it "
                    "depends on (n, k, feature extractor and its accuracy, thresholds).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", metavar="DIR", help="a run directory written by `genbench train`")
    what.add_argument("--data", metavar="NAME", help="a dataset name or idx:PATH / npz:PATH: the floor")
    what.add_argument("--list", action="store_true", help="list the metrics and exit")
    p.add_argument("--metrics", type=str_list, metavar="A,B,C",
                   help="metric names (default: every metric that applies to the run's family and data)")
    p.add_argument("--n", type=int, default=None, metavar="N",
                   help="samples per set (capped by the reference split; default 1000 for images, 2000 for 2-D toys)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling, subsets and projections (default 0)")
    p.add_argument("--reference", choices=("test", "train"), default="test",
                   help="split the samples are compared with (--run only; default test)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="one setting per --set, repeatable: metrics.* (e.g. metrics.iwae_k=1000, "
                        "metrics.extractor.steps=2000), sample.* (e.g. sample.steps=50, sample.sampler=ddim), "
                        "data.* (--data only)")
    p.add_argument("--device", default="auto", help="torch device for the model (--run; default auto)")
    p.add_argument("--store", metavar="DB", help="also commit the metrics to this results store (SQLite)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_eval)
    return p


def _eval_config(args: argparse.Namespace) -> tuple[EvaluationConfig, DataConfig]:
    """The evaluation config (genlib's one EvaluationConfig, as grids use it) from --set sample.* /
    metrics.* and --reference, and the data config of --data (data.*)."""
    from genlib.config import ConfigError, apply_overrides, from_dict
    from genlib.data import DataConfig
    from genlib.metrics.eval_config import EvaluationConfig
    from genlib.registry import suggest

    data: dict[str, Any] = {}
    try:
        data = apply_overrides(data, args.overrides)
        sections = [*EvaluationConfig.CLI_SECTIONS, "data"]
        for key in data:
            if key not in sections:
                raise ConfigError(f"unknown key '{key}'{suggest(key, sections)} (valid keys here: {', '.join(sections)})")
        if args.run and "data" in data:
            raise ConfigError("'data.*' settings apply to --data; a run is evaluated on the data it was trained on")
        if args.data:
            data = apply_overrides(data, {"data.name": args.data})
        data_cfg = from_dict(DataConfig, data.pop("data", None), "data").resolved()  # keyed by content
        return EvaluationConfig.from_sections(data, reference=args.reference), data_cfg
    except ConfigError as exc:
        raise UserError(f"--set: {exc}") from None


def run_eval(args: argparse.Namespace) -> int:
    if args.list:
        print(_listing())
        return 0
    if args.n is not None and args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    cfg, data_cfg = _eval_config(args)
    if args.store:
        check_store_writable(args.store)
    from genlib.config import to_dict
    from genlib.metrics.base import MetricError
    from genlib.data import load_dataset
    from genlib.metrics.evaluate import default_n, evaluate, evaluate_floor
    from genlib.metrics.features import ExtractorError

    try:
        if args.run:
            from genlib.train import load_run

            loaded = load_run(args.run, device=check_device(args.device), at_step=_perturbed_step(cfg.sample))
            _check_sampling(loaded.model, cfg.sample)
            dataset = load_dataset(loaded.config.data)
            args.n = default_n(dataset.kind) if args.n is None else args.n  # recorded with the numbers
            metrics = evaluate(args.metrics, dataset=dataset, model=loaded.model,
                               sample_cfg=cfg.sample, n=args.n, seed=args.seed, reference=cfg.reference,
                               cfg=cfg.settings, progress=True)
            context = {"kind": "eval", "run_key": loaded.config.run_key, "run_name": loaded.config.name,
                       "train": to_dict(loaded.config), "device": str(loaded.model.device)}
        else:
            dataset = load_dataset(data_cfg)
            args.n = default_n(dataset.kind) if args.n is None else args.n
            metrics = evaluate_floor(dataset, args.metrics, n=args.n, seed=args.seed, cfg=cfg.settings, progress=True)
            context = {"kind": "floor", "data": to_dict(data_cfg), "device": "cpu", "name": f"floor:{data_cfg.name}"}
    except (MetricError, ExtractorError) as exc:
        raise UserError(str(exc)) from None
    # Print first: a store that fails to take the write now must not cost the numbers just computed.
    print(json.dumps([_as_dict(m) for m in metrics], indent=2, default=str) if args.json else _table(metrics),
          flush=True)
    if args.store:
        _commit(args, dataclasses.replace(cfg, n=args.n, metrics=tuple(m.name for m in metrics)), context, metrics)
    return 0


def _perturbed_step(sample_cfg: Any) -> int | None:
    """The training step whose weights `eval.perturb: step:N` samples (an early checkpoint); a precision is
    refused here: its denoiser graph is exported by bench, which grid cells use."""
    from genlib.perturb import parse_perturb

    perturbation = parse_perturb(sample_cfg.perturb)
    if perturbation.kind == "precision":
        raise UserError(f"--set sample.perturb={perturbation.spec}: the denoiser's {perturbation.precision} graph is "
                        f"sampled by grid cells (genbench grid run with an eval.perturb axis); genbench eval samples "
                        f"the run's torch network")
    return perturbation.step


def _check_sampling(model: Any, sample_cfg: Any) -> None:
    """Refuse sampler settings the run cannot honour (a sampler of another family, steps S > T, steps on
    the naive chain) before any metric is computed, with the message `genbench sample` gives: the sampler's
    registry spec makes the check that sampling itself runs."""
    from genlib.config import ConfigError

    try:
        model.resolve_sampler(sample_cfg)
    except (ConfigError, ValueError) as exc:
        raise UserError(f"--set sample.*: {exc}") from None


def _as_dict(m: Metric) -> dict[str, Any]:
    return {"name": m.name, "value": m.value, "unit": m.unit, "higher_is_better": m.higher_is_better,
            "split": m.split, "extra": m.extra}


def _arrow(higher_is_better: bool | None) -> str:
    return {True: "↑", False: "↓", None: "·"}[higher_is_better]


_NOTE_KEYS = ("k", "threshold", "extractor", "extractor_accuracy", "subsets", "bandwidth", "draws", "floor")


def _table(metrics: list[Metric]) -> str:
    rows = [("metric", "value", "", "unit", "n", "settings")]
    for m in metrics:
        notes = " ".join(f"{k}={m.extra[k]:.4g}" if isinstance(m.extra[k], float) else f"{k}={m.extra[k]}"
                         for k in _NOTE_KEYS if k in m.extra)
        err = m.extra.get("sem")
        value = f"{m.value:.4g}" if math.isfinite(m.value) else str(m.value)
        if err:
            value += f" ± {err:.2g}"
        rows.append((m.name, value, _arrow(m.higher_is_better), m.unit, str(m.extra.get("n", "")), notes))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _listing() -> str:
    from genlib.metrics import catalog  # noqa: F401  (registers every metric)
    from genlib.metrics.base import METRICS, ORDER

    rows = [("metric", "", "unit", "data", "needs", "description")]
    for name in ORDER:
        spec = METRICS.get(name)
        needs = spec.needs if spec.families is None else f"{spec.needs} ({', '.join(spec.families)})"
        rows.append((name, _arrow(spec.higher_is_better), spec.unit or "-", "/".join(spec.kinds), needs,
                     spec.description))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows)


def _commit(args: argparse.Namespace, cfg: EvaluationConfig, context: dict[str, Any], metrics: list[Metric]) -> None:
    from genlib import records
    from genlib.config import config_hash
    from genlib.store import ResultsStore

    kind = context["kind"]
    ev = cfg.record()
    if kind == "eval":
        config = {"train": context["train"], "eval": ev, "axes": {}, "profile": None}
    else:  # a floor draws no samples: no sampler settings
        ev = {k: ev[k] for k in ("n", "metrics", "reference", "settings")}
        config = {"train": None, "eval": ev, "data": context["data"], "axes": {}, "profile": None}
    record, checked = records.build(kind, run_key=config_hash({"kind": kind, **config, "seed": args.seed}),
                                    config=config, name=context.get("run_name") or context["name"],
                                    parent_key=context.get("run_key"), seed=args.seed, device=context["device"],
                                    metrics=metrics)
    with ResultsStore(args.store) as store:
        store.commit_run(record, checked)


__all__ = ["add_parser", "run_eval"]

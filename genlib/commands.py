"""Core `genbench` subcommands: train, sample, datasets, models.

Each `add_*_parser(subparsers)` is registered as a `genbench.commands` entry point in pyproject.toml.
Handlers parse, call the library, print where the outputs went, and leave error reporting to
`genlib.cli.main` (user errors become one line and exit status 2).
"""
from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

from genlib.cli import UserError, check_device, check_store_writable, check_writable

FORMATTER = argparse.RawDescriptionHelpFormatter


def example_configs() -> dict[str, Path]:
    """Shipped example run configs by name (file stem), from genlib/configs/."""
    root = resources.files("genlib") / "configs"
    return {Path(str(p)).stem: Path(str(p)) for p in root.iterdir() if str(p).endswith(".yaml")}


def resolve_config_path(text: str) -> Path:
    """A YAML path, or the name of a shipped example config (see `genbench models`)."""
    path = Path(text)
    if path.exists():
        return path
    examples = example_configs()
    if text in examples:
        return examples[text]
    from genlib.registry import suggest
    raise UserError(f"config '{text}' is neither a file nor a shipped example{suggest(text, list(examples))} "
                    f"(examples: {', '.join(sorted(examples))})")


# -- train -----------------------------------------------------------------------------------------
def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train one model from a YAML run config", formatter_class=FORMATTER,
        description="Train one model and write a run directory: config.yaml (the resolved config, enough to "
                    "reload), model.pt, history.csv (loss, KL, the beta(t) used) and meta.json (run key, seed, "
                    "versions, git commit, device, timings).",
        epilog="examples:\n"
               "  genbench train vae_digits --out runs/vae                 # a shipped example config\n"
               "  genbench train my.yaml --out runs/x --set model.latent_dim=16 --set loss.beta=4\n"
               "  genbench train ddpm_8gaussians --out runs/d --set model.noise.kind=cosine --store results.db\n"
               "\nOverrides use dotted keys and YAML values (8, 1e-3, [64, 64], null); unknown keys are errors.")
    p.add_argument("config", help="run config YAML, or a shipped example name (list: genbench models)")
    p.add_argument("--out", required=True, type=Path, help="run directory to write")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run in --out (only once the new run is complete)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (repeatable), e.g. --set train.steps=500")
    p.add_argument("--store", type=Path, help="also record the run and its final training metrics in this results store")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from genlib.config import to_dict
    from genlib import records
    from genlib.store import ResultsStore
    from genlib.train import load_run_config, train, training_metrics

    cfg = load_run_config(resolve_config_path(args.config), args.overrides, resolve_data=True)
    check_writable(args.out, "--out", directory=True)
    check_device(cfg.train.device, "train.device")
    if args.store:
        check_store_writable(args.store)
    result = train(cfg, args.out, progress=not args.quiet, overwrite=args.overwrite)
    meta = result.meta
    final = ", ".join(f"{k} {v:.4g}" for k, v in meta["final"].items() if k != "step")
    steps = (f"{meta['steps_run']} steps in {meta['train_wall_s']:.1f} s ({meta['train_steps_per_s']:.0f} steps/s)"
             if meta["steps_run"] else "no steps (the network has no trainable weights)")
    print(f"trained {cfg.model.family} '{cfg.name}' (run key {meta['run_key']}) on {cfg.data.name}: {steps} "
          f"on {meta['device']}")
    print(f"final: {final}")
    print(f"run directory: {args.out}")
    if args.store:
        with ResultsStore(args.store) as store:
            store.commit_run(*records.build(
                "train", run_key=meta["run_key"], config={"train": to_dict(cfg), "eval": None, "axes": {},
                                                          "profile": None},
                name=cfg.name, seed=cfg.seed, device=meta["device"], artifact_path=str(Path(args.out).resolve()),
                metrics=training_metrics(result.history, cfg.model.family) + [
                    records.metric("train", "train_steps_per_s", meta["train_steps_per_s"], family=cfg.model.family)]))
        print(f"recorded in {args.store}")
    return 0


# -- sample ----------------------------------------------------------------------------------------
def add_sample_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample", help="draw samples from a trained run", formatter_class=FORMATTER,
        description="Draw N samples from a run directory written by `genbench train` and save them as .npz "
                    "(array x, data space: images in [0, 1], shape (N, C, H, W)) or .png (image grid, or a "
                    "scatter plot for 2-D toys). Inference-only settings need no retraining.",
        epilog="each family's samplers and the settings they read: genbench models\n\nexamples:\n"
               "  genbench sample --run runs/vae --n 64 --passes 2 --out refined.png\n"
               "  genbench sample --run runs/ddpm --n 1000 --sampler ddim --steps 20 --eta 0 --out ddim20.npz")
    p.add_argument("--run", required=True, type=Path, help="run directory (from genbench train)")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", required=True, type=Path, help="output file, .npz or .png")
    p.add_argument("--sampler", default="auto",
                   help="generation procedure, a registered sampler (default: the family's own; list: genbench models)")
    p.add_argument("--steps", type=int, help="diffusion: respaced sampling steps S <= T (default T)")
    p.add_argument("--eta", type=float, default=0.0, help="ddim: stochasticity, 0 deterministic .. 1 DDPM-like")
    p.add_argument("--variance", choices=["small", "large"], default="small",
                   help="ddpm: reverse-step variance beta_tilde (small) or beta (large)")
    p.add_argument("--start", choices=["prior", "data"], default="prior",
                   help="ddpm/ddim: start the reverse chain from N(0, I) (prior) or from q(x_T | x0) with x0 "
                        "from the held-out data (data), which isolates the prior mismatch of a short schedule")
    p.add_argument("--no-clip", action="store_true",
                   help="diffusion: do not clip the predicted x0 (to the data range for images, to the training "
                        "bounding box plus 10%% for 2-D toys)")
    p.add_argument("--passes", type=int, default=0, help="vae: refinement passes (decode, re-encode, decode)")
    p.add_argument("--reencode", choices=["mean", "sample"], default="mean", help="vae: use the posterior mean or a draw")
    p.add_argument("--prior", choices=["standard", "fitted"], default="standard",
                   help="ae: z ~ N(0, I) or a Gaussian fitted to the training codes")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.set_defaults(func=run_sample)


def run_sample(args: argparse.Namespace) -> int:
    import time

    from genlib.config import ConfigError
    from genlib.data import load_dataset
    from genlib.images import save_samples
    from genlib.models import SampleConfig
    from genlib.samplers import resolve_x0_clip
    from genlib.train import generate, load_run

    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    if args.out.suffix.lower() not in (".npz", ".png"):
        raise UserError(f"--out '{args.out}' must end in .npz or .png")
    try:
        sample_cfg = SampleConfig(sampler=args.sampler, steps=args.steps, eta=args.eta, variance=args.variance,
                                  clip_x0=not args.no_clip, passes=args.passes, reencode=args.reencode, prior=args.prior,
                                  start=args.start)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    check_writable(args.out, "--out", directory=False)
    run = load_run(args.run, device=check_device(args.device))
    sample_cfg = resolve_x0_clip(sample_cfg, run.model, lambda: load_dataset(run.config.data).x_train)
    start = time.perf_counter()
    try:
        x = generate(run.model, args.n, sample_cfg, seed=args.seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    wall_s = time.perf_counter() - start
    save_samples(x.numpy(), args.out, title=f"{run.config.name} ({run.model.resolve_sampler(sample_cfg).name})")
    print(f"{args.n} samples from {run.config.model.family} run {run.meta.get('run_key', '?')} in {wall_s:.2f} s "
          f"-> {args.out}")
    return 0


# -- datasets / models -----------------------------------------------------------------------------
def add_datasets_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("datasets", help="list datasets", description="List the datasets genbench can train on.")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run_datasets)


def run_datasets(args: argparse.Namespace) -> int:
    from genlib.data import DATASETS, describe_datasets

    rows = describe_datasets()
    for r in rows:  # the plugin that registered it (genlib.plugins), None for genbench's own
        r["plugin"] = DATASETS.origin(r["name"]) if r["name"] in DATASETS else None
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    print(f"{'name':<14} {'kind':<6} {'shape':<10} {'train':>6} {'test':>6}  description")
    for r in rows:
        shape = "x".join(map(str, r.get("sample_shape") or ())) or "-"
        print(f"{r['name']:<14} {r.get('kind') or '-':<6} {shape:<10} {r.get('n_train') or '-':>6} "
              f"{r.get('n_test') or '-':>6}  {r.get('description', '')}{_from_plugin(r['plugin'])}")
    return 0


def _from_plugin(plugin: str | None) -> str:
    return f" (plugin: {plugin})" if plugin else ""


def add_models_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model families, samplers and example configs",
                       description="List model families with their samplers, and the shipped example configs "
                                   "usable as `genbench train NAME`.")
    p.set_defaults(func=run_models)


def run_models(args: argparse.Namespace) -> int:
    from genlib.models import MODELS, SAMPLERS, samplers_of

    print("model families (their samplers: the first is the default):")
    for name in MODELS.names():
        print(f"  {name:<15} {MODELS.describe(name)}{_from_plugin(MODELS.origin(name))}")
        print(f"  {'':<15} samplers: {', '.join(samplers_of(name))}")
    print("\nsamplers (the settings each reads; any other sampling flag is refused):")
    for name in SAMPLERS.names():
        settings = ", ".join(SAMPLERS.get(name).settings) or "none"
        print(f"  {name:<15} {SAMPLERS.describe(name)} [settings: {settings}]{_from_plugin(SAMPLERS.origin(name))}")
    print("\nexample configs (genbench train NAME --out DIR):")
    for name, path in sorted(example_configs().items()):
        first = next((ln[1:].strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        print(f"  {name:<22} {first}")
    return 0


"""Generation procedures as stateless functions over network *callables*, built from one step each.

`denoise(x_t, t) -> eps` and `decode(z) -> x` may be torch modules, lambdas or wrapped ONNX Runtime
sessions: a sampler never holds state, counts steps or owns weights (k-diffusion's style). Each sampler
is a plan of per-step coefficients (`ddim_plan`, `ddpm_plan`) plus a pure step (`ddim_step`, `ddpm_step`,
`chain_step`, `vae_pass`); the torch samplers below loop over the steps and the exported ONNX graphs
(`bench.wrappers`) call the very same functions. All noise comes from an explicit `generator` or `noise`
tensor. The x0 clip box is decided once, by `x0_clip_bounds`. The noise process lives in `genlib.diffusion`;
each sampler's registry spec (settings read, family, export step) in `genlib.models.SAMPLERS`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import torch

from genlib.diffusion import NoiseSchedule, eps_from_x0, x0_from_eps
from genlib.losses import reparameterize

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Index = int | torch.Tensor  # a python int (torch loop) or a (1,) int64 tensor (exported graph)
ClipBox = tuple[torch.Tensor, torch.Tensor]  # (low, high), each broadcastable to one sample

# Toys: the x0 clip box is the training data's bounding box widened by this fraction of its range per dimension.
X0_CLIP_MARGIN = 0.1


# ------------------------------------------------------------------------------------------ plans
@dataclass(frozen=True)
class StepPlan:
    """Per-step coefficients of a DDIM or DDPM sampler over S respaced steps, computed once.

    Every table has shape (S,) and is indexed by the respaced step i (run from S-1 down to 0) with a
    python int or a (1,) int64 tensor. `coef_second` multiplies eps_hat (DDIM) or x_t (DDPM's posterior
    mean); `noise_std` multiplies the fresh N(0, I) draw and is 0 at i = 0 and wherever no noise is added.
    """

    kind: Literal["ddim", "ddpm"]
    timesteps: torch.Tensor  # (S,) int64: the original t each respaced step stands for
    sqrt_alpha_bar: torch.Tensor
    sqrt_one_minus_alpha_bar: torch.Tensor
    coef_x0: torch.Tensor
    coef_second: torch.Tensor
    noise_std: torch.Tensor
    stochastic: bool  # whether steps i > 0 add noise (DDPM always; DDIM when eta > 0)

    TABLES = ("timesteps", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar", "coef_x0", "coef_second", "noise_std")

    @property
    def steps(self) -> int:
        return int(self.timesteps.shape[0])

    def tables(self) -> dict[str, torch.Tensor]:
        """The tables by name (an exported step registers them as buffers)."""
        return {name: getattr(self, name) for name in self.TABLES}

    def with_tables(self, tables: dict[str, torch.Tensor]) -> "StepPlan":
        """The same plan over other tensors holding the same values (e.g. a module's buffers)."""
        return dataclasses.replace(self, **tables)


def take(table: torch.Tensor, i: Index) -> torch.Tensor:
    """table[i]: a 0-d tensor for a python int, shape (1,) for a (1,) index tensor; both broadcast over x."""
    return table[i] if isinstance(i, int) else table.index_select(0, i)


def ddim_plan(schedule: NoiseSchedule, steps: int, eta: float, *, dtype: torch.dtype = torch.float32,
              device: torch.device | str | None = None) -> StepPlan:
    """DDIM (Song et al. 2021) coefficients for S = `steps` respaced steps, in `dtype`.

    sigma_i = eta sqrt((1 - abar_prev) / (1 - abar)) sqrt(1 - abar / abar_prev)            (eq. 16)
    x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z      (eq. 12)
    """
    sched, ts = schedule.respaced(steps)
    ab, ab_prev = sched.alpha_bar.to(dtype), sched.alpha_bar_prev.to(dtype)
    sigma = eta * ((1 - ab_prev) / (1 - ab)).sqrt() * (1 - ab / ab_prev).sqrt()  # eq. 16
    coef_eps = (1 - ab_prev - sigma**2).clamp(min=0).sqrt()
    noise_std = sigma.clone() if eta > 0 else torch.zeros_like(sigma)
    noise_std[0] = 0.0  # the last step returns its mean
    plan = StepPlan("ddim", ts.to(torch.int64), sched.alpha_bar.sqrt().to(dtype), (1 - sched.alpha_bar).sqrt().to(dtype),
                    ab_prev.sqrt(), coef_eps, noise_std, stochastic=eta > 0)
    return _on(plan, device)


def ddpm_plan(schedule: NoiseSchedule, steps: int, variance: Literal["small", "large"] = "small", *,
              dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> StepPlan:
    """DDPM ancestral (Ho et al. 2020, Alg. 2) coefficients for S respaced steps, in `dtype`.

    x_prev = mu_tilde(x_t, x0_hat) + sigma z, mu_tilde = c0 x0_hat + ct x_t (eq. 7); sigma^2 is the
    posterior variance beta_tilde (`small`) or beta (`large`).
    """
    if variance not in ("small", "large"):
        raise ValueError(f"variance must be 'small' or 'large', got {variance!r}")
    sched, ts = schedule.respaced(steps)
    var = sched.posterior_variance if variance == "small" else sched.betas
    noise_std = var.to(dtype).sqrt()
    noise_std[0] = 0.0  # i = 0 returns the posterior mean
    plan = StepPlan("ddpm", ts.to(torch.int64), sched.alpha_bar.sqrt().to(dtype), (1 - sched.alpha_bar).sqrt().to(dtype),
                    sched.posterior_coef_x0.to(dtype), sched.posterior_coef_xt.to(dtype), noise_std, stochastic=True)
    return _on(plan, device)


def _on(plan: StepPlan, device: torch.device | str | None) -> StepPlan:
    return plan if device is None else plan.with_tables({k: v.to(device) for k, v in plan.tables().items()})


# ------------------------------------------------------------------------------------------ steps
def predict_x0_eps(plan: StepPlan, i: Index, x: torch.Tensor, eps: torch.Tensor, clip: ClipBox | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_hat, eps_hat) at step i from the network's eps (B, ...). With a clip box, x0_hat is clipped to
    [low, high] and eps_hat recomputed from it, so the two stay consistent."""
    return x0_eps_at(plan.sqrt_alpha_bar, plan.sqrt_one_minus_alpha_bar, i, x, eps, clip)


def x0_eps_at(sqrt_alpha_bar: torch.Tensor, sqrt_one_minus_alpha_bar: torch.Tensor, i: Index, x: torch.Tensor,
              eps: torch.Tensor, clip: ClipBox | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`predict_x0_eps` over the two tables (S,) it reads, for solvers whose tables are not a StepPlan."""
    sqrt_ab, sqrt_1mab = take(sqrt_alpha_bar, i), take(sqrt_one_minus_alpha_bar, i)
    x0 = x0_from_eps(x, eps, sqrt_ab, sqrt_1mab)  # DDIM eq. 12: x0 from eps
    if clip is not None:
        x0 = torch.maximum(torch.minimum(x0, clip[1]), clip[0])
        eps = eps_from_x0(x, x0, sqrt_ab, sqrt_1mab)
    return x0, eps


def ddim_step(plan: StepPlan, i: Index, x: torch.Tensor, eps: torch.Tensor, noise: torch.Tensor | None = None,
              clip: ClipBox | None = None) -> torch.Tensor:
    """One DDIM step (eq. 12) from x = x_t (B, ...) and the network's eps at timestep plan.timesteps[i].

    noise: the N(0, I) draw z (B, ...) for eta > 0, or None to add none (deterministic DDIM, or i = 0).
    """
    x0, eps = predict_x0_eps(plan, i, x, eps, clip)
    x_prev = take(plan.coef_x0, i) * x0 + take(plan.coef_second, i) * eps
    if plan.stochastic and noise is not None:
        x_prev = x_prev + take(plan.noise_std, i) * noise
    return x_prev


def ddpm_step(plan: StepPlan, i: Index, x: torch.Tensor, eps: torch.Tensor, noise: torch.Tensor | None = None,
              clip: ClipBox | None = None) -> torch.Tensor:
    """One ancestral step x_prev = mu_tilde(x_t, x0_hat) + sigma_i z (eqs. 6-7) from x = x_t and eps.

    noise: the draw z (B, ...), or None for the posterior mean (the last step, i = 0).
    """
    x0, _ = predict_x0_eps(plan, i, x, eps, clip)
    mean = take(plan.coef_x0, i) * x0 + take(plan.coef_second, i) * x  # eq. 7
    return mean if noise is None else mean + take(plan.noise_std, i) * noise


def chain_step(predict_prev: Denoise, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One step of the naive chain: x_{t-1} = E[x_{t-1} | x_t] = predict_prev(x_t, t); no noise, no schedule."""
    return torch.as_tensor(predict_prev(x, t)).to(x)


def vae_pass(encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor,
             reencode: Literal["mean", "sample"], noise: torch.Tensor | None = None) -> torch.Tensor:
    """One refinement pass on a decoded sample x (B, ...): re-encode to (mu, scale) and return the new code
    z' (B, k): mu (`mean`) or mu + Sigma^(1/2) noise (`sample`, noise (B, k) ~ N(0, I)). Decoding z' is
    the caller's: the torch loop keeps every pass's sample, an exported graph only the last."""
    mu, scale = encode(x)
    if reencode == "mean":
        return mu
    if noise is None:
        raise ValueError("reencode='sample' needs the noise draw of this pass")
    return reparameterize(mu, scale, noise.to(mu))


# ------------------------------------------------------------------------------------- clip box
def x0_clip_bounds(model: Any, x_train: Any = None, *, margin: float = X0_CLIP_MARGIN
                   ) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The box (low, high) that predicted x0 is clipped to, in the model's space: the one clip rule.

    Images keep their data range [0, 1] (mapped to model space: [-1, 1] for diffusion). 2-D toys and other
    unbounded data use the training data's bounding box widened by `margin` times its range per dimension
    (x_train (N, *sample_shape) in data space, or a callable returning it, called only when needed); None
    when x_train is not given. One number in low/high applies to every dimension. `model` needs `.kind`,
    `.sample_shape` and `.to_model_space`.
    """
    if model.kind == "image":
        lo, hi = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    elif x_train is None:
        return None
    else:
        x_train = x_train() if callable(x_train) else x_train
        data = torch.as_tensor(np.asarray(x_train, dtype=np.float64)).reshape(-1, *model.sample_shape)
        if data.shape[0] == 0:
            raise ValueError("x0 clip bounds need at least one training sample")
        lo, hi = data.amin(0).flatten(), data.amax(0).flatten()
        pad = margin * (hi - lo)
        lo, hi = lo - pad, hi + pad
    lo, hi = model.to_model_space(lo), model.to_model_space(hi)
    return tuple(float(v) for v in lo), tuple(float(v) for v in hi)


def resolve_x0_clip(sample_cfg: Any, model: Any, x_train: Any = None) -> Any:
    """`sample_cfg` (a SampleConfig) with its clip box written as numbers (clip_low, clip_high).

    Unchanged when clip_x0 is off, the box is already set, the model's sampler does not clip x0, or the
    rule has no box for this data (toys without x_train). x_train: training data in data space (or a
    callable returning it, called only for data whose box depends on it).
    """
    if not sample_cfg.clip_x0 or sample_cfg.clip_low is not None:
        return sample_cfg
    if "clip_x0" not in getattr(model.resolve_sampler(sample_cfg), "settings", ()):
        return sample_cfg
    bounds = x0_clip_bounds(model, x_train)
    if bounds is None:
        return sample_cfg
    return dataclasses.replace(sample_cfg, clip_low=bounds[0], clip_high=bounds[1])


def clip_x0_for(model: Any, sample_cfg: Any) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The `clip_x0` argument a diffusion sampler gets for `sample_cfg`: its recorded box (clip_low,
    clip_high), else the rule's box where it needs no data (images), else None (clipping off, or a toy
    config never resolved against its data: see `resolve_x0_clip`)."""
    if not sample_cfg.clip_x0:
        return None
    if sample_cfg.clip_low is not None:
        return tuple(sample_cfg.clip_low), tuple(sample_cfg.clip_high)
    return x0_clip_bounds(model)


def clip_box(clip_x0: float | tuple[Any, Any] | None, like: torch.Tensor) -> ClipBox | None:
    """The samplers' `clip_x0` argument as (low, high) tensors in like's dtype and device.

    clip_x0: None (no clipping), a float c (the box [-c, c] in every dimension) or a pair (low, high) of
    floats or per-dimension sequences broadcastable to one sample (e.g. (2,) for 2-D data).
    """
    if clip_x0 is None:
        return None
    if isinstance(clip_x0, (int, float)):
        low, high = -float(clip_x0), float(clip_x0)
    else:
        low, high = clip_x0
    lo = torch.as_tensor(np.asarray(low, dtype=np.float64)).to(dtype=like.dtype, device=like.device)
    hi = torch.as_tensor(np.asarray(high, dtype=np.float64)).to(dtype=like.dtype, device=like.device)
    if not bool((lo <= hi).all()):
        raise ValueError(f"x0 clip box needs low <= high in every dimension, got low={lo.tolist()}, high={hi.tolist()}")
    return lo, hi


# ------------------------------------------------------------------------------------ chain start
def start_from_data(x_test: torch.Tensor, n: int, schedule: NoiseSchedule, generator: torch.Generator | None
                    ) -> torch.Tensor:
    """x_T ~ q(x_T | x0) = N(sqrt(alpha_bar_T) x0, (1 - alpha_bar_T) I) (eq. 4 at t = T) with x0 held-out data.

    The reverse chain then starts from the distribution the network was trained on at its last timestep
    instead of N(0, I). Where alpha_bar_T is far from 0 (unscaled linear, T = 100: 0.36) the gap between the
    two starts on one checkpoint is the prior mismatch alone, with the network and the sampler unchanged.
    x_test: (N, *shape) held-out data in model space; n rows are drawn uniformly with replacement by
    `generator`, then eps (both on the CPU, as every draw here). Returns (n, *shape) in x_test's dtype and device.
    """
    if x_test.shape[0] < 1:
        raise ValueError("start_from_data needs at least one held-out sample")
    index = torch.randint(0, x_test.shape[0], (n,), generator=generator)
    x0 = x_test[index.to(x_test.device)]
    eps = _noise(tuple(x0.shape), x0, generator)
    alpha_bar_T = float(schedule.alpha_bar[-1])
    return math.sqrt(alpha_bar_T) * x0 + math.sqrt(1.0 - alpha_bar_T) * eps  # eq. 4, t = T


# -------------------------------------------------------------------------------------- programs
State = tuple[torch.Tensor, ...]  # (x, *history): every tensor (B, *start_shape)
Step = Callable[[dict[str, torch.Tensor], Index, State, torch.Tensor | None], State]


@dataclass(frozen=True)
class SamplerProgram:
    """One sampler on one model and settings: tables plus one pure step, the single description that the torch
    loop (`run_program`), the exported whole-sampler graph (`bench.wrappers.ProgramStep`, composed by
    `bench.onnx_graph`), its ONNX inputs (`draw_inputs`) and every timing backend read.

    The step protocol is stateless (diffusers' uniform `step()`, without its scheduler state):
    `step(tables, i, state, noise) -> state`, with state = (x, *history) and i the table index of the step (a
    python int in the torch loop, a (1,) int64 tensor in a graph). A multistep solver carries `history` extra
    tensors shaped like x (zeros before the first step); a second-order step calls its network twice inside.

    start: graph input name of the start ('x_T' or 'z'), start_shape its per-sample shape; draw_start(n,
    generator) draws it for the torch path (N(0, I), or a data start). indices: the table index of each step in
    execution order (a contiguous run). tables: what the step indexes (coefficients, timesteps, the clip box);
    an exported step holds them as buffers. noise_shape: per-sample shape of one fresh N(0, I) draw (None: no
    noise is injected); noise_slots: the first axis of the `noise` input; noisy: the indices whose step consumes
    a draw, in draw order (noise[i] feeds step i). finish(x) -> (B, *sample_shape) samples in data space;
    state_output: the graph output holding the final state in model space (None: not exported).
    """

    start: str
    start_shape: tuple[int, ...]
    draw_start: Callable[[int, torch.Generator | None], torch.Tensor]
    indices: tuple[int, ...]
    tables: dict[str, torch.Tensor]
    step: Step
    finish: Callable[[torch.Tensor], torch.Tensor]
    noise_shape: tuple[int, ...] | None = None
    noise_slots: int = 0
    noisy: tuple[int, ...] = ()
    history: int = 0
    state_output: str | None = "x0"

    def __post_init__(self) -> None:
        if not set(self.noisy) <= set(self.indices):
            raise ValueError(f"noisy steps {sorted(set(self.noisy) - set(self.indices))} are not steps of the program")
        order = [i for i in self.indices if i in set(self.noisy)]
        if list(self.noisy) != order:
            raise ValueError("noisy steps must be listed in execution order (they are the draw order)")
        if self.noisy and (self.noise_shape is None or self.noise_slots <= max(self.noisy)):
            raise ValueError("a program with noisy steps needs noise_shape and noise_slots > every noisy index")

    def initial_state(self, start: torch.Tensor) -> State:
        return (start,) + tuple(torch.zeros_like(start) for _ in range(self.history))


def _noise(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, I) drawn on the CPU (the same values on every device) in like's dtype, moved to like's device."""
    return torch.randn(shape, generator=generator, dtype=like.dtype, device="cpu").to(like.device)


def run_program(program: SamplerProgram, start: torch.Tensor, *, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None, each_step: Callable[[State], None] | None = None) -> torch.Tensor:
    """The torch loop: steps in execution order from `start` (B, *start_shape); returns the final x (model space).

    Fresh noise for the steps in `program.noisy`, drawn one step at a time from `generator` in that order, or
    taken from noise[i] ((noise_slots, B, *noise_shape)) when given: `draw_inputs` lays the same draws out as
    a graph input. each_step(state), if given, sees the state after every step."""
    state = program.initial_state(start)
    noisy = set(program.noisy)
    for i in program.indices:
        z = None
        if i in noisy:
            z = noise[i].to(start) if noise is not None else _noise((start.shape[0], *program.noise_shape), start,
                                                                      generator)
        state = program.step(program.tables, i, state, z)
        if each_step is not None:
            each_step(state)
    return state[0]


def draw_inputs(program: SamplerProgram, b: int, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """The inputs of b samples as the torch loop draws them from one generator: the start first, then one draw
    per noisy step in `program.noisy` order into noise[i] (slots of steps without noise stay 0). CPU float32
    tensors named as the exported graph's inputs ({start} and, when the program injects noise, 'noise')."""
    start = program.draw_start(b, generator).cpu()
    feeds = {program.start: start}
    if program.noisy:
        noise = torch.zeros((program.noise_slots, b, *program.noise_shape), dtype=start.dtype)
        for i in program.noisy:
            noise[i] = _noise((b, *program.noise_shape), start, generator)
        feeds["noise"] = noise
    return feeds


def timestep_at(table: torch.Tensor, i: Index, x: torch.Tensor) -> torch.Tensor:
    """The network's t for step i: (B,) in the torch loop, (1,) in a graph (it broadcasts inside the network,
    and ONNX Runtime can constant-fold the time embedding of an unrolled graph)."""
    t = take(table, i)
    return t.expand(x.shape[0]) if isinstance(i, int) else t


def clip_of(tables: dict[str, torch.Tensor]) -> ClipBox | None:
    """The x0 clip box a program's tables hold, or None."""
    return (tables["clip_low"], tables["clip_high"]) if "clip_low" in tables else None


def with_clip(tables: dict[str, torch.Tensor], clip_x0: float | tuple[Any, Any] | None, like: torch.Tensor
              ) -> dict[str, torch.Tensor]:
    """tables plus the clip box (clip_low, clip_high) as tensors like `like`, when clipping is on."""
    box = clip_box(clip_x0, like)
    return tables if box is None else {**tables, "clip_low": box[0], "clip_high": box[1]}


def _model_space(x: torch.Tensor) -> torch.Tensor:
    return x


def plan_program(plan: StepPlan, step: Callable, denoise: Denoise, x_like: torch.Tensor,
                 clip_x0: float | tuple[Any, Any] | None = None, *,
                 draw_start: Callable[[int, torch.Generator | None], torch.Tensor] | None = None,
                 finish: Callable[[torch.Tensor], torch.Tensor] = _model_space) -> SamplerProgram:
    """The program of a DDIM or DDPM plan: step i calls denoise(x, t_i) once, then `step` (ddim_step or
    ddpm_step); fresh noise for i > 0 when the plan is stochastic. x_like: a tensor with the start's per-sample
    shape, dtype and device (batch axis first)."""
    shape = tuple(x_like.shape[1:])
    tables = with_clip(plan.tables(), clip_x0, x_like)

    def plan_step(tab: dict[str, torch.Tensor], i: Index, state: State, noise: torch.Tensor | None) -> State:
        x = state[0]
        eps = torch.as_tensor(denoise(x, timestep_at(tab["timesteps"], i, x))).to(x)
        return (step(plan.with_tables({k: tab[k] for k in StepPlan.TABLES}), i, x, eps, noise, clip_of(tab)),)

    indices = tuple(reversed(range(plan.steps)))
    noisy = tuple(i for i in indices if i > 0) if plan.stochastic else ()
    return SamplerProgram(start="x_T", start_shape=shape, draw_start=draw_start or _randn_start(shape, x_like),
                          indices=indices, tables=tables, step=plan_step, finish=finish,
                          noise_shape=shape if noisy else None, noise_slots=plan.steps if noisy else 0, noisy=noisy)


def solver_program(step: Callable[..., State], denoise: Denoise, tables: dict[str, torch.Tensor],
                   x_like: torch.Tensor, clip_x0: float | tuple[Any, Any] | None = None, *, history: int = 0,
                   draw_start: Callable[[int, torch.Generator | None], torch.Tensor] | None = None,
                   finish: Callable[[torch.Tensor], torch.Tensor] = _model_space) -> SamplerProgram:
    """The program of a deterministic solver over S respaced steps: `tables` (each (S,), with 'timesteps')
    plus the clip box, and step(denoise, tables, i, state, noise) -> state run for i = S-1 .. 0."""
    shape = tuple(x_like.shape[1:])
    steps = int(tables["timesteps"].shape[0])
    return SamplerProgram(start="x_T", start_shape=shape, draw_start=draw_start or _randn_start(shape, x_like),
                          indices=tuple(reversed(range(steps))), tables=with_clip(tables, clip_x0, x_like),
                          step=lambda tab, i, state, noise: step(denoise, tab, i, state, noise), finish=finish,
                          history=history)


def _randn_start(shape: tuple[int, ...], like: torch.Tensor) -> Callable[[int, torch.Generator | None], torch.Tensor]:
    return lambda n, generator: _noise((n, *shape), like, generator)


@torch.no_grad()
def sample_ddpm(denoise: Denoise, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int | None = None, *,
                variance: Literal["small", "large"] = "small", clip_x0: float | tuple[Any, Any] | None = None,
                generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Ancestral sampling with Gaussian reverse steps N(mu_tilde(x_t, x0_hat), sigma_t^2 I).

    x_T: (B, ...) starting noise. steps: S <= T respaced steps (default T). variance: `small` uses
    beta_tilde_t (the posterior variance), `large` uses beta_t. clip_x0: see `clip_box`. noise: optional
    (S, B, ...) tensor of the fresh N(0, I) draws, one per step, for reproducible comparisons; else drawn
    from `generator`.
    """
    plan = ddpm_plan(schedule, steps or schedule.T, variance, dtype=x_T.dtype, device=x_T.device)
    return run_program(plan_program(plan, ddpm_step, denoise, x_T, clip_x0), x_T, generator=generator, noise=noise)


@torch.no_grad()
def sample_ddim(denoise: Denoise, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int | None = None, *,
                eta: float = 0.0, clip_x0: float | tuple[Any, Any] | None = None,
                generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
    """DDIM: x_{t-1} = sqrt(abar_{t-1}) x0_hat + sqrt(1 - abar_{t-1} - sigma^2) eps_hat + sigma z.

    sigma_t = eta sqrt((1 - abar_{t-1}) / (1 - abar_t)) sqrt(1 - abar_t / abar_{t-1}) (eq. 16); eta = 0 is
    deterministic, eta = 1 matches DDPM's small-variance ancestral step. Shapes as in `sample_ddpm`.
    """
    plan = ddim_plan(schedule, steps or schedule.T, eta, dtype=x_T.dtype, device=x_T.device)
    return run_program(plan_program(plan, ddim_step, denoise, x_T, clip_x0), x_T, generator=generator, noise=noise)


def chain_program(predict_prev: Denoise, T: int, x_like: torch.Tensor, *,
                  draw_start: Callable[[int, torch.Generator | None], torch.Tensor] | None = None,
                  finish: Callable[[torch.Tensor], torch.Tensor] = _model_space) -> SamplerProgram:
    """The naive chain as a program: T steps t = T-1 .. 0 of `chain_step`, no noise, no schedule."""
    shape = tuple(x_like.shape[1:])
    tables = {"timesteps": torch.arange(T, dtype=torch.int64, device=x_like.device)}

    def step(tab: dict[str, torch.Tensor], i: Index, state: State, noise: torch.Tensor | None) -> State:
        x = state[0]
        return (chain_step(predict_prev, x, timestep_at(tab["timesteps"], i, x)),)

    return SamplerProgram(start="x_T", start_shape=shape, draw_start=draw_start or _randn_start(shape, x_like),
                          indices=tuple(reversed(range(T))), tables=tables, step=step, finish=finish)


@torch.no_grad()
def sample_chain(predict_prev: Denoise, x_T: torch.Tensor, T: int) -> torch.Tensor:
    """Run learned conditional means x_{t-1} = E[x_{t-1} | x_t] from t = T-1 down to 0, deterministically.

    Each step regresses to a mean, so errors and blur accumulate: the failure the lecture shows.
    """
    return run_program(chain_program(predict_prev, T, x_T), x_T)


def vae_program(decode: Callable[[torch.Tensor], torch.Tensor],
                encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None, z_like: torch.Tensor,
                passes: int, reencode: Literal["mean", "sample"] = "mean", *,
                draw_start: Callable[[int, torch.Generator | None], torch.Tensor] | None = None) -> SamplerProgram:
    """VAE refinement as a program over the code: the state is z (B, k); pass p decodes z, re-encodes the
    sample (`vae_pass`) and draws noise[p] for `sample`; finish decodes the last code."""
    if passes < 0:
        raise ValueError(f"passes must be >= 0, got {passes}")
    if passes > 0 and encode is None:
        raise ValueError("refinement passes need an encoder")
    k = tuple(z_like.shape[1:])

    def step(tab: dict[str, torch.Tensor], i: Index, state: State, noise: torch.Tensor | None) -> State:
        return (vae_pass(encode, decode(state[0]), reencode, noise),)

    indices = tuple(range(passes))
    noisy = indices if reencode == "sample" else ()
    return SamplerProgram(start="z", start_shape=k, draw_start=draw_start or _randn_start(k, z_like),
                          indices=indices, tables={}, step=step, finish=decode, noise_shape=k if noisy else None,
                          noise_slots=passes if noisy else 0, noisy=noisy, state_output=None)


@torch.no_grad()
def sample_vae(decode: Callable[[torch.Tensor], torch.Tensor],
               encode: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
               z: torch.Tensor, *, passes: int = 0, reencode: Literal["mean", "sample"] = "mean",
               generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
               return_passes: bool = False) -> torch.Tensor | list[torch.Tensor]:
    """Decode prior draws z (B, k) ~ N(0, I), then `passes` times: re-encode to (mu, scale) and decode
    mu (`mean`) or a reparameterised draw (`sample`). noise: optional (passes, B, k) draws for `sample`
    (pass p uses noise[p]); else drawn from `generator`. With return_passes, returns [x_pass0, ..., x_passk].
    """
    if noise is not None and reencode == "sample" and tuple(noise.shape[:2]) != (passes, z.shape[0]):
        raise ValueError(f"noise must have shape (passes={passes}, B={z.shape[0]}, k), got {tuple(noise.shape)}")
    program = vae_program(decode, encode, z, passes, reencode)
    if not return_passes:
        return program.finish(run_program(program, z, generator=generator, noise=noise))
    outs = [decode(z)]
    run_program(program, z, generator=generator, noise=noise, each_step=lambda state: outs.append(decode(state[0])))
    return outs


def fit_gaussian(codes: torch.Tensor, jitter: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (k,) and lower Cholesky factor (k, k) of a Gaussian fitted to codes (N, k)."""
    mean = codes.mean(0)
    centred = codes - mean
    cov = centred.T @ centred / max(1, codes.shape[0] - 1)
    return mean, torch.linalg.cholesky(cov + jitter * torch.eye(codes.shape[1], dtype=codes.dtype))


@torch.no_grad()
def sample_ae(decode: Callable[[torch.Tensor], torch.Tensor], eps: torch.Tensor,
              fitted: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """eps (B, k) ~ N(0, I). With fitted = (mean, L) decode mean + L eps, else decode eps itself."""
    z = eps if fitted is None else fitted[0] + eps @ fitted[1].T
    return decode(z)

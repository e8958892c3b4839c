"""Core throughput benchmarks (pytest-benchmark; run with `tox -e bench`, never asserted on wall time).

Training steps per second for the digits VAE and the 8gaussians DDPM, and sampling time per denoiser
step. Each benchmark stores its derived rate in `extra_info` so the JSON carries the figure directly.
"""
from __future__ import annotations

import pytest
import torch

from genlib.commands import example_configs
from genlib.models import SampleConfig
from genlib.train import generate, load_run_config, train

TRAIN_STEPS = 300


@pytest.mark.parametrize("example", ["vae_digits", "ddpm_8gaussians", "ddpm_digits"])
def test_training_steps_per_second(benchmark, example):
    cfg = load_run_config(example_configs()[example], [f"train.steps={TRAIN_STEPS}", "train.device=cpu"])
    train(cfg, progress=False)  # burn-in: data cache, allocator, kernels
    benchmark.pedantic(train, args=(cfg,), kwargs={"progress": False}, rounds=3, iterations=1)
    steps_per_s = TRAIN_STEPS / benchmark.stats.stats.median
    benchmark.extra_info.update(steps_per_s=steps_per_s, steps=TRAIN_STEPS, batch_size=cfg.train.batch_size)


@pytest.fixture(scope="module")
def trained_ddpm():
    cfg = load_run_config(example_configs()["ddpm_8gaussians"], ["train.steps=50", "train.device=cpu"])
    return train(cfg, progress=False).model


@pytest.mark.parametrize("sampler,batch", [("ddim", 1), ("ddim", 256), ("ddpm", 256)])
def test_sampling_ms_per_step(benchmark, trained_ddpm, sampler, batch):
    steps = 50
    sample_cfg = SampleConfig(sampler=sampler, steps=steps)
    torch.set_num_threads(1)
    generate(trained_ddpm, batch, sample_cfg)
    benchmark.pedantic(generate, args=(trained_ddpm, batch, sample_cfg), rounds=10, iterations=1)
    ms_per_step = benchmark.stats.stats.median / steps * 1e3
    benchmark.extra_info.update(ms_per_step=ms_per_step, steps=steps, batch=batch)

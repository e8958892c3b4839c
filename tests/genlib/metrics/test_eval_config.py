"""One evaluation config for grids and `genbench eval`: the grid's flat `eval` section and the CLI's --set
sections build the same frozen EvaluationConfig, and records take its layout from it."""
from __future__ import annotations

import dataclasses

import pytest

import genlib.models
from genlib.config import ConfigError, to_dict
from genlib.metrics.base import MetricsConfig
from genlib.metrics.eval_config import EvaluationConfig
from genlib.models import SampleConfig


def test_the_grid_section_and_the_cli_sections_build_the_same_config():
    grid = EvaluationConfig.from_flat({"sampler": "ddim", "steps": 5, "eta": 0.5, "n": 200, "metrics": ["swd"]})
    cli = EvaluationConfig.from_sections({"sample": {"sampler": "ddim", "steps": 5, "eta": 0.5}}, n=200,
                                         metrics=("swd",))
    assert grid == cli and grid.sample == SampleConfig(sampler="ddim", steps=5, eta=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        grid.n = 3  # type: ignore[misc]


def test_cli_sections_set_sampling_and_metric_settings():
    cfg = EvaluationConfig.from_sections({"metrics": {"iwae_k": 5}, "sample": {"passes": 1}}, reference="train")
    assert (cfg.settings.iwae_k, cfg.sample.passes, cfg.reference) == (5, 1, "train")
    with pytest.raises(ConfigError, match=r"^unknown key 'metrics.iwae_kk'; did you mean 'metrics.iwae_k'\?"):
        EvaluationConfig.from_sections({"metrics": {"iwae_kk": 5}})
    with pytest.raises(ConfigError, match=r"^unknown key 'smaple'; did you mean 'sample'"):
        EvaluationConfig.from_sections({"smaple": {}})
    with pytest.raises(ConfigError, match="steps must be >= 1, got 0"):
        EvaluationConfig.from_sections({"sample": {"steps": 0}})


def test_the_record_layout_is_the_flat_section_plus_reference_and_settings():
    cfg = EvaluationConfig(sample=SampleConfig(sampler="ddpm", steps=10), n=64, metrics=("swd", "mmd"))
    assert cfg.to_flat() == {**to_dict(cfg.sample), "n": 64, "metrics": ["swd", "mmd"]}
    assert cfg.record() == {**cfg.to_flat(), "reference": "test", "settings": to_dict(MetricsConfig())}
    # every field, but those left out at their defaults so keys from before they existed stay valid
    assert set(cfg.to_flat()) | {"precision", "perturb"} == set(EvaluationConfig.FLAT_FIELDS)
    assert EvaluationConfig.from_flat({**cfg.to_flat(), "precision": "fp16"}).to_flat()["precision"] == "fp16"
    assert EvaluationConfig.from_flat(cfg.to_flat()) == cfg


def test_grids_read_the_same_class():
    from ablations import cells, spec

    assert spec.EVAL_FIELDS == EvaluationConfig.FLAT_FIELDS and spec.DEFAULT_EVAL_N == EvaluationConfig().n
    assert cells._sample_config({"sampler": "ddim", "steps": 3, "n": 10, "metrics": None,
                                 "timing": {"backends": ["ort_graph"]}}) == SampleConfig(sampler="ddim", steps=3)
    assert not hasattr(genlib.models, "EvaluationConfig")  # one evaluation config, not two

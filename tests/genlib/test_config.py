"""Tests for genlib.config on the real run config: did-you-mean errors for keys and values in YAML and
in dotted overrides, type errors naming the dotted key, the family discriminator, YAML-typed overrides,
run keys (stable, sensitive to every field) and YAML round trips of the shipped example configs."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genlib.config import (ConfigError, apply_overrides, canonical_json, config_hash, dump_yaml, from_dict,
                           parse_override, read_yaml, to_dict)
from genlib.models import MODELS
from genlib.train import RunConfig, load_run_config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "genlib" / "configs").glob("*.yaml"))
VAE = {"name": "t", "data": {"name": "digits"}, "model": {"family": "vae", "latent_dim": 4}}


def write(tmp_path: Path, data: dict | str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------- unknown keys

def test_unknown_key_in_yaml_suggests_the_dotted_key(tmp_path):
    path = write(tmp_path, {**VAE, "model": {"family": "vae", "latnt_dim": 4}})
    with pytest.raises(ConfigError, match=r"unknown key 'model.latnt_dim'; did you mean 'model.latent_dim'\?"):
        load_run_config(path)


def test_unknown_key_in_override_suggests_the_dotted_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'model.latnt_dim'; did you mean 'model.latent_dim'\?"):
        load_run_config(write(tmp_path, VAE), ["model.latnt_dim=8"])
    with pytest.raises(ConfigError, match=r"unknown key 'model.latnt_dim'; did you mean 'model.latent_dim'\?"):
        load_run_config(VAE, {"model.latnt_dim": 8})


@pytest.mark.parametrize("data,match", [
    ({**VAE, "trian": {"steps": 3}}, r"unknown key 'trian'; did you mean 'train'\?"),
    ({**VAE, "train": {"step": 3}}, r"unknown key 'train.step'; did you mean 'train.steps'\?"),
    ({**VAE, "loss": {"kl_schedule": {"knd": "linear"}}},
     r"unknown key 'loss.kl_schedule.knd'; did you mean 'loss.kl_schedule.kind'\?"),
    # no spurious suggestion for a key that resembles nothing (the shared 'train.' prefix does not count)
    ({**VAE, "train": {"zzz": 1}}, r"unknown key 'train.zzz' \(valid keys here: batch_size, device"),
    ({**VAE, "model": {"family": "vae", "hiddn": [4]}}, r"unknown key 'model.hiddn'; did you mean 'model.hidden'\?"),
])
def test_unknown_keys_anywhere_are_named_with_their_path(data, match):
    with pytest.raises(ConfigError, match=match):
        load_run_config(data)


# ---------------------------------------------------------------- wrong types and choices

@pytest.mark.parametrize("override,match", [
    ("train.steps=abc", r"'train.steps' must be an integer, got 'abc'"),
    ("train.steps=1.5", r"'train.steps' must be an integer, got 1.5"),
    ("train.steps=true", r"'train.steps' must be an integer, got True"),
    ("train.lr=fast", r"'train.lr' must be a number, got 'fast'"),
    ("model.hidden=64", r"'model.hidden' must be a list, got 64"),
    ("model.hidden=[64, x]", r"'model.hidden\[1\]' must be an integer, got 'x'"),
    ("name=[1]", r"'name' must be a string, got \[1\]"),
    ("train.grad_clip=[1]", r"'train.grad_clip' must be a number, got \[1\]"),
    ("model.covariance=fulll", r"'model.covariance' must be one of 'diagonal', 'full', got 'fulll'; did you mean 'full'\?"),
    ("train.device=gpu", r"'train.device' must be one of 'auto', 'cpu', 'cuda', got 'gpu'"),
    ("loss.kl_schedule.kind=cyclic", r"'loss.kl_schedule.kind' must be one of .*'cyclical'.*did you mean 'cyclical'\?"),
    ("model=3", r"'model' must be a mapping of keys to values, got 3"),
])
def test_wrong_types_and_choices_name_the_dotted_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_run_config(VAE, [override])


def test_value_checks_in_post_init_become_config_errors_naming_the_section():
    with pytest.raises(ConfigError, match=r"'train': steps must be >= 1, got 0"):
        load_run_config(VAE, ["train.steps=0"])
    with pytest.raises(ConfigError, match=r"'model': latent_dim must be >= 1, got 0"):
        load_run_config(VAE, ["model.latent_dim=0"])
    with pytest.raises(ConfigError, match=r"loss.\* \(beta, kl_schedule\) applies only to model.family 'vae'"):
        load_run_config({"model": {"family": "ddpm"}, "loss": {"beta": 2.0}})


# ---------------------------------------------------------------- the family discriminator

def test_missing_family_lists_the_families():
    families = ", ".join(MODELS.names())
    with pytest.raises(ConfigError, match=rf"missing required key 'model.family' \(one of: {families}\)"):
        load_run_config({"model": {"latent_dim": 4}})
    with pytest.raises(ConfigError, match=r"missing required key 'model'"):
        load_run_config({"name": "x"})


def test_unknown_family_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"'model.family': unknown model family 'vea'; did you mean 'vae'\? "
                                          r"\(known: ae, ddpm, denoiser_chain, oracle, vae\)"):
        load_run_config({"model": {"family": "vea"}})


def test_family_picks_the_config_class_and_its_keys():
    ddpm = load_run_config({"model": {"family": "ddpm", "noise": {"T": 50}}})
    assert type(ddpm.model).__name__ == "DDPMConfig" and ddpm.model.noise.T == 50
    with pytest.raises(ConfigError, match=r"unknown key 'model.latent_dim'"):  # a VAE key on a DDPM
        load_run_config({"model": {"family": "ddpm", "latent_dim": 4}})


# ---------------------------------------------------------------- overrides

def test_overrides_parse_yaml_values():
    cfg = load_run_config(VAE, ["train.steps=8", "model.hidden=[64, 32]", "train.grad_clip=null",
                                "train.lr=1e-4", "train.ema_decay=0.99", "name=run 2", "data.name=moons",
                                "model.likelihood=gaussian"])
    assert cfg.train.steps == 8 and isinstance(cfg.train.steps, int)
    assert cfg.model.hidden == (64, 32)
    assert cfg.train.grad_clip is None
    assert cfg.train.lr == pytest.approx(1e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.ema_decay == 0.99 and cfg.name == "run 2" and cfg.data.name == "moons"


def test_override_grammar():
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("a=") == ("a", "")
    assert parse_override("a=x=y") == ("a", "x=y")
    assert parse_override(" a.b =null") == ("a.b", None)
    with pytest.raises(ConfigError, match=r"override 'a.b' must look like key.path=value"):
        parse_override("a.b")
    with pytest.raises(ConfigError, match=r"override 'a..b=1' has an empty key"):
        parse_override("a..b=1")
    with pytest.raises(ConfigError, match=r"override 'a=\[1,' : value is not valid YAML|value is not valid YAML"):
        parse_override("a=[1,")
    with pytest.raises(ConfigError, match=r"cannot set 'seed.x': 'seed' is 0, not a mapping"):
        apply_overrides({"seed": 0}, ["seed.x=1"])
    data = {"model": {"family": "ddpm"}}
    out = apply_overrides(data, ["model.noise.T=50"])  # creates intermediate mappings
    assert out == {"model": {"family": "ddpm", "noise": {"T": 50}}} and data == {"model": {"family": "ddpm"}}


# ---------------------------------------------------------------- files

def test_read_yaml_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file '.*nope.yaml' does not exist"):
        read_yaml(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"config file '.*bad.yaml' is not valid YAML"):
        read_yaml(write(tmp_path, "model: [1,\n", "bad.yaml"))
    with pytest.raises(ConfigError, match=r"config file '.*list.yaml' must contain a mapping"):
        read_yaml(write(tmp_path, "- 1\n- 2\n", "list.yaml"))
    assert read_yaml(write(tmp_path, "", "empty.yaml")) == {}


def test_yaml_is_read_safely(tmp_path):
    marker = tmp_path / "pwned"
    evil = f"name: !!python/object/apply:os.system ['touch {marker}']\nmodel: {{family: vae}}\n"
    with pytest.raises(ConfigError, match=r"config file '.*evil.yaml' is not valid YAML"):
        load_run_config(write(tmp_path, evil, "evil.yaml"))
    assert not marker.exists()


# ---------------------------------------------------------------- run keys

def leaves(data, prefix=""):
    if isinstance(data, dict):
        for k, v in data.items():
            yield from leaves(v, f"{prefix}.{k}" if prefix else k)
    else:
        yield prefix, data


def perturb(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value + [1]
    return 1  # None


def test_config_hash_changes_with_every_field():
    cfg = load_run_config(VAE)
    base = cfg.run_key
    assert base == config_hash(cfg) == config_hash(to_dict(cfg))
    plain = to_dict(cfg)
    paths = [p for p, _ in leaves(plain)]
    # every field of every nested config takes part in the run key
    assert {"seed", "data.seed", "model.obs_sigma", "loss.kl_schedule.ramp", "train.ema_decay"} <= set(paths)
    for path, value in leaves(plain):
        changed = apply_overrides(plain, {path: perturb(value)})
        assert config_hash(changed) != base, path
    assert load_run_config(VAE, ["train.steps=3001"]).run_key != base


def test_config_hash_ignores_key_order_and_spelling_of_defaults():
    shuffled = {"model": {"latent_dim": 4, "family": "vae"}, "data": {"name": "digits"}, "name": "t"}
    explicit = {**VAE, "seed": 0, "train": {"steps": 3000}}  # defaults written out
    assert load_run_config(shuffled).run_key == load_run_config(VAE).run_key == load_run_config(explicit).run_key
    assert json.loads(canonical_json(load_run_config(VAE))) == to_dict(load_run_config(VAE))


def test_run_key_is_stable_across_processes():
    code = ("from genlib.train import load_run_config; "
            f"print(load_run_config({VAE!r}).run_key)")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout.strip()
    assert other == load_run_config(VAE).run_key


# ---------------------------------------------------------------- round trips

def test_there_are_example_configs_for_every_family():
    families = {read_yaml(p)["model"]["family"] for p in EXAMPLES}
    assert families == set(MODELS.names())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_config_yaml_round_trip(path, tmp_path):
    cfg = load_run_config(path)
    text = dump_yaml(cfg)
    again = load_run_config(write(tmp_path, text))
    assert again == cfg and again.run_key == cfg.run_key
    assert from_dict(RunConfig, yaml.safe_load(text)) == cfg
    assert dump_yaml(again) == text  # the resolved form is a fixed point
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]


def test_a_yaml_alias_bomb_is_refused_fast_and_small(tmp_path):
    import time
    import tracemalloc

    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):  # 9 levels of 9: 9^9 = 387 million items once expanded
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"^config file '.*bomb.yaml': the YAML expands to more than 1,000,000 "
                                          r"values \(through its aliases"):
        read_yaml(path)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 2 and peak < 200e6, (elapsed, peak)
    shared = "base: &b {lr: 0.001, steps: 10}\none: *b\ntwo: {<<: *b, steps: 20}\n"  # ordinary anchors still work
    (tmp_path / "ok.yaml").write_text(shared)
    assert read_yaml(tmp_path / "ok.yaml")["two"] == {"lr": 0.001, "steps": 20}


def test_a_yaml_file_over_the_size_limit_is_refused_before_parsing(tmp_path, monkeypatch):
    import genlib.config as config_module

    path = tmp_path / "big.yaml"
    path.write_text("axes:\n  eval.n: [" + ", ".join(map(str, range(100, 3100))) + "]\n")
    monkeypatch.setattr(config_module, "MAX_YAML_BYTES", 2**14)
    monkeypatch.setattr(config_module, "load_yaml_text", lambda text: pytest.fail("parsed an oversized file"))
    with pytest.raises(ConfigError, match=r"^config file '.*big.yaml' is 0.0 MiB; a run config or grid file may be "
                                          r"at most 0.015625 MiB"):
        read_yaml(path)

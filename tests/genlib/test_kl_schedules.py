"""Tests for genlib.kl_schedules: beta(step) of every kind at its key steps, the cyclical schedule of
Fu et al. (2019) (period total/M, ramp over fraction R of each cycle), defaults and bad parameters."""
from __future__ import annotations

import typing

import pytest

from genlib.config import ConfigError, from_dict
from genlib.kl_schedules import KL_SCHEDULES, KLScheduleConfig, kl_weight

BETA = 2.0
TOTAL = 1000


def weights(cfg: KLScheduleConfig, steps, total: int = TOTAL, beta: float = BETA) -> list[float]:
    return [kl_weight(cfg, beta, s, total) for s in steps]


def test_registry_has_every_kind_in_the_config_literal():
    kinds = set(typing.get_args(typing.get_type_hints(KLScheduleConfig)["kind"]))
    assert set(KL_SCHEDULES.names()) == kinds == {"constant", "recon_first", "linear", "kl_first", "cyclical"}


def test_constant_is_beta_everywhere():
    assert weights(KLScheduleConfig(kind="constant"), [0, 1, 500, 999]) == [BETA] * 4


def test_recon_first_is_zero_then_beta():
    cfg = KLScheduleConfig(kind="recon_first", warmup_steps=100)
    assert weights(cfg, [0, 50, 99, 100, 101, 999]) == [0, 0, 0, BETA, BETA, BETA]


def test_linear_ramps_from_zero_to_beta_over_the_warmup():
    cfg = KLScheduleConfig(kind="linear", warmup_steps=200)
    assert weights(cfg, [0, 50, 100, 150, 200, 201, 999]) == pytest.approx(
        [0, 0.25 * BETA, 0.5 * BETA, 0.75 * BETA, BETA, BETA, BETA])


def test_kl_first_weights_the_kl_heavier_then_beta():
    cfg = KLScheduleConfig(kind="kl_first", warmup_steps=100, kl_first_factor=5.0)
    assert weights(cfg, [0, 99, 100, 999]) == [5 * BETA, 5 * BETA, BETA, BETA]


@pytest.mark.parametrize("kind,first,after", [("recon_first", 0.0, BETA), ("kl_first", 10 * BETA, BETA),
                                              ("linear", 0.0, BETA)])
def test_default_warmup_is_a_quarter_of_training(kind, first, after):
    cfg = KLScheduleConfig(kind=kind)
    assert kl_weight(cfg, BETA, 0, TOTAL) == first
    assert kl_weight(cfg, BETA, TOTAL // 4, TOTAL) == after
    if kind != "linear":
        assert kl_weight(cfg, BETA, TOTAL // 4 - 1, TOTAL) == first
    else:
        assert kl_weight(cfg, BETA, TOTAL // 8, TOTAL) == pytest.approx(BETA / 2)


def test_zero_warmup_means_beta_from_the_start():
    for kind in ("recon_first", "linear", "kl_first"):
        assert kl_weight(KLScheduleConfig(kind=kind, warmup_steps=0), BETA, 0, TOTAL) == BETA


def test_cyclical_follows_fu_et_al():
    """M = 4 cycles of 250 steps over 1000; within each, beta rises linearly over R = 0.5 of the cycle
    (125 steps) and then holds at beta until the cycle restarts at 0."""
    cfg = KLScheduleConfig(kind="cyclical", cycles=4, ramp=0.5)
    for c in range(4):
        start = 250 * c
        got = weights(cfg, [start, start + 25, start + 62.5, start + 100, start + 125, start + 200, start + 249])
        assert got == pytest.approx([0, 0.2 * BETA, 0.5 * BETA, 0.8 * BETA, BETA, BETA, BETA]), c
    starts = [s for s in range(TOTAL) if kl_weight(cfg, BETA, s, TOTAL) == 0.0]
    assert starts == [0, 250, 500, 750]


def test_cyclical_with_full_ramp_and_one_cycle_is_the_linear_schedule():
    cyc = KLScheduleConfig(kind="cyclical", cycles=1, ramp=1.0)
    lin = KLScheduleConfig(kind="linear", warmup_steps=TOTAL)
    steps = range(0, TOTAL, 37)
    assert weights(cyc, steps) == pytest.approx(weights(lin, steps))


def test_cyclical_with_ragged_period():
    cfg = KLScheduleConfig(kind="cyclical", cycles=3, ramp=0.25)  # period 333.33 steps
    assert kl_weight(cfg, 1.0, 0, TOTAL) == 0.0
    assert kl_weight(cfg, 1.0, 334, TOTAL) == pytest.approx((334 - 1000 / 3) / (1000 / 3) / 0.25)
    assert kl_weight(cfg, 1.0, 333, TOTAL) == 1.0
    assert all(0 <= w <= 1 for w in weights(cfg, range(TOTAL), beta=1.0))


def test_schedules_scale_with_beta_and_never_exceed_the_target():
    for kind in ("constant", "recon_first", "linear", "cyclical"):
        cfg = KLScheduleConfig(kind=kind, warmup_steps=300)
        ws = weights(cfg, range(0, TOTAL, 7), beta=0.5)
        assert max(ws) == pytest.approx(0.5) and min(ws) >= 0
        assert weights(cfg, range(0, TOTAL, 7), beta=1.0) == pytest.approx([2 * w for w in ws])


@pytest.mark.parametrize("bad,match", [
    ({"warmup_steps": -1}, r"kl_schedule.warmup_steps must be >= 0, got -1"),
    ({"cycles": 0}, r"kl_schedule.cycles must be >= 1, got 0"),
    ({"ramp": 0.0}, r"kl_schedule.ramp must be in \(0, 1\], got 0.0"),
    ({"ramp": 1.5}, r"kl_schedule.ramp must be in \(0, 1\], got 1.5"),
    ({"kl_first_factor": 0.0}, r"kl_schedule.kl_first_factor must be > 0, got 0.0"),
])
def test_bad_parameters_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        KLScheduleConfig(**bad)
    with pytest.raises(ConfigError, match=match):
        from_dict(KLScheduleConfig, bad, "loss.kl_schedule")


def test_unknown_kind_is_refused_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"'loss.kl_schedule.kind' must be one of .* got 'cyclic'; "
                                          r"did you mean 'cyclical'\?"):
        from_dict(KLScheduleConfig, {"kind": "cyclic"}, "loss.kl_schedule")

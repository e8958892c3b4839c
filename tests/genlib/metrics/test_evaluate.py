"""The evaluate entry point: registry contract, known answers in the extractor's feature space, clear errors.

Known answers: the digits floor (train vs test) has precision/recall near 0.9, density near 1, coverage near
its closed-form expectation and full class entropy; a mean-image generator has recall ~0 and coverage ~0;
a blurred copy of the data is less sharp and has lower recall than the unblurred copy.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from genlib.config import to_dict
from genlib.data import load_dataset
from genlib.metrics import (METRICS, MetricError, MetricSpec, MetricsConfig, default_metrics, evaluate, evaluate_floor,
                            evaluate_run, sliced_wasserstein)
from genlib.metrics.evaluate import DEFAULT_TOY_N, default_n
from genlib.metrics.samples import expected_coverage
from genlib.models import MODELS, SampleConfig
from genlib.registry import UnknownNameError
from genlib.store import Metric
from genlib.train import load_run_config, train

pytestmark = pytest.mark.usefixtures("single_thread")

IMAGE_SAMPLE_METRICS = ["fd", "kid", "precision", "recall", "density", "coverage", "class_entropy", "sharpness",
                        "hf_energy_ratio"]


def _by_name(metrics: list[Metric]) -> dict[str, Metric]:
    return {m.name: m for m in metrics}


# ---------------------------------------------------------------- registry contract

@pytest.mark.parametrize("name", METRICS.names())
def test_every_metric_declares_unit_direction_and_scope(name):
    spec = METRICS.get(name)
    assert isinstance(spec, MetricSpec) and spec.name == name
    assert spec.higher_is_better in (True, False, None)
    assert spec.kinds and set(spec.kinds) <= {"image", "toy"}
    assert spec.needs in ("samples", "model") and spec.compute is not None and spec.description
    if spec.needs == "model":
        assert spec.families and set(spec.families) <= set(MODELS.names()) and spec.why


def test_default_metrics_follow_family_and_kind():
    assert default_metrics(None, "image") == IMAGE_SAMPLE_METRICS
    assert default_metrics("ddpm", "image") == IMAGE_SAMPLE_METRICS
    assert default_metrics("ae", "image") == ["mse", "psnr", "ssim", *IMAGE_SAMPLE_METRICS]
    vae = default_metrics("vae", "image")
    assert {"neg_elbo", "iwae", "bpd", "kl", "active_units", "mutual_info"} <= set(vae)
    assert default_metrics(None, "toy") == ["swd", "mmd", "energy", "nll_true"]
    assert "bpd" not in default_metrics("vae", "toy") and "psnr" not in default_metrics("ae", "toy")
    with pytest.raises(MetricError, match="kind must be one of"):
        default_metrics(None, "audio")


def test_sliced_wasserstein_is_still_exported():
    x = np.random.default_rng(0).normal(size=(200, 2))
    assert sliced_wasserstein(x, x + 1.0, n_projections=64, p=2, seed=0) > 0.5


# ---------------------------------------------------------------- image samples, known answers

@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def floor(digits):
    return _by_name(evaluate_floor(digits))


def test_digits_floor_is_near_its_expected_values(floor, digits):
    assert list(floor) == IMAGE_SAMPLE_METRICS
    assert floor["precision"].value == pytest.approx(0.9, abs=0.06)
    assert floor["recall"].value == pytest.approx(0.9, abs=0.06)
    assert floor["density"].value == pytest.approx(1.0, abs=0.1)
    assert floor["coverage"].value == pytest.approx(expected_coverage(899, 898, 5), abs=0.03)
    assert floor["class_entropy"].value == pytest.approx(math.log(10), abs=0.01)
    assert floor["sharpness"].value == pytest.approx(1.0, abs=0.05)
    assert floor["hf_energy_ratio"].value == pytest.approx(1.0, abs=0.05)
    assert floor["hf_energy_ratio"].extra["median_size"] == 3 and floor["hf_energy_ratio"].extra["target"] == 1.0
    assert 0 < floor["fd"].value < 1.0 and abs(floor["kid"].value) < 0.02
    extra = floor["fd"].extra
    assert extra["floor"] is True and extra["n"] == 898 and extra["n_reference"] == 899 and extra["n_requested"] == 1000
    assert extra["extractor_accuracy"] >= 0.95 and extra["feature_dim"] == 64 and len(extra["extractor"]) == 16
    assert floor["precision"].extra["k"] == 3 and floor["coverage"].extra["k"] == 5
    assert floor["kid"].extra["subsets"] == 100 and floor["kid"].extra["kernel"] == "(x.y/d + 1)^3"
    # subsets of half the 898 samples differ, so their spread is a standard error, not ~1e-16
    assert floor["kid"].extra["subset_size"] == 449 and 1e-4 < floor["kid"].extra["std"] == floor["kid"].extra["sem"]
    for m in floor.values():
        assert m.unit == METRICS.get(m.name).unit and m.higher_is_better == METRICS.get(m.name).higher_is_better
        assert m.split == "test"


def test_identical_sets_in_feature_space(digits):
    out = _by_name(evaluate(["fd", "precision", "recall", "density", "coverage"], dataset=digits,
                            samples=digits.x_test, n=len(digits.x_test)))
    assert out["fd"].value == pytest.approx(0.0, abs=1e-8)
    assert out["precision"].value == 1.0 and out["recall"].value == 1.0 and out["coverage"].value == 1.0
    assert out["density"].value == pytest.approx(1.0, abs=0.02)  # exactly 1 up to ties between images


def test_mean_image_generator_has_no_recall_and_no_coverage(digits, floor):
    mean_image = np.repeat(digits.x_train.mean(0, keepdims=True), 900, axis=0)
    out = _by_name(evaluate(["precision", "recall", "coverage", "class_entropy", "fd"], dataset=digits,
                            samples=mean_image))
    assert out["recall"].value == 0.0
    assert out["coverage"].value < 0.02
    assert out["class_entropy"].value == 0.0  # one image, one predicted class
    assert out["fd"].value > 20 * floor["fd"].value


def test_blurred_copy_lowers_sharpness_and_recall(digits, floor):
    blurred = ndimage.gaussian_filter(digits.x_train, sigma=(0, 0, 0.8, 0.8))
    out = _by_name(evaluate(["sharpness", "hf_energy_ratio", "recall"], dataset=digits, samples=blurred))
    assert out["sharpness"].value < 0.6 * floor["sharpness"].value
    assert out["hf_energy_ratio"].value < 0.6 * floor["hf_energy_ratio"].value
    assert out["recall"].value < floor["recall"].value - 0.1


def test_same_seed_same_numbers(digits):
    noisy = np.clip(digits.x_train + 0.05 * np.random.default_rng(0).normal(size=digits.x_train.shape), 0, 1)
    a = evaluate(["kid", "coverage"], dataset=digits, samples=noisy, n=500, seed=3)
    b = evaluate(["kid", "coverage"], dataset=digits, samples=noisy, n=500, seed=3)
    assert [m.value for m in a] == [m.value for m in b] and a[0].extra["n"] == 500


# ---------------------------------------------------------------- models

@pytest.fixture(scope="module")
def ae_model():
    cfg = load_run_config({"data": {"name": "digits"}, "model": {"family": "ae", "latent_dim": 8, "hidden": [128, 64]},
                           "train": {"steps": 300, "batch_size": 64, "lr": 2e-3, "device": "cpu"}})
    return train(cfg, progress=False).model


def test_ae_reconstruction_metrics_beat_the_mean_image(ae_model, digits):
    out = _by_name(evaluate(["mse", "psnr", "ssim"], dataset=digits, model=ae_model, n=400))
    x = digits.x_test
    mse_mean_image = float(((x - digits.x_train.mean(0)) ** 2).mean())
    assert out["mse"].value < 0.6 * mse_mean_image
    assert out["psnr"].value > 10 * math.log10(1 / mse_mean_image)
    assert 0.3 < out["ssim"].value <= 1.0
    assert out["psnr"].extra["data_range"] == 1.0 and out["ssim"].extra["win_size"] == 7
    assert out["mse"].extra["n"] == 400 and out["mse"].extra["std"] > 0 and out["mse"].split == "test"


def test_evaluate_run_records_everything_needed_to_compare(vae_run):
    cfg = MetricsConfig(iwae_k=20)
    out = _by_name(evaluate_run(vae_run.run_dir, ["neg_elbo", "iwae", "bpd", "kl", "active_units", "mutual_info",
                                                  "coverage"], n=300, seed=1, cfg=cfg,
                                sample_cfg=SampleConfig(passes=1)))
    assert out["iwae"].value > -out["neg_elbo"].value - 3 * out["neg_elbo"].extra["sem"]
    assert out["iwae"].extra["k"] == 20 and out["bpd"].extra["k"] == 20
    assert out["bpd"].value == pytest.approx(-out["iwae"].value / (64 * math.log(2)))
    assert out["kl"].value == pytest.approx(sum(out["kl"].extra["per_dim"]), abs=1e-4)
    assert out["active_units"].extra["threshold"] == 0.01 and out["active_units"].extra["latent_dim"] == 8
    assert out["mutual_info"].value <= out["mutual_info"].extra["upper_bound"]
    cov = out["coverage"].extra
    assert cov["samples_from"] == "model" and cov["sample"] == to_dict(SampleConfig(passes=1)) and cov["seed"] == 1


def test_collapsed_vae_has_no_active_units(collapsed_vae, digits):
    out = _by_name(evaluate(["active_units", "kl"], dataset=digits, model=collapsed_vae, n=400))
    assert out["active_units"].value == 0 and out["kl"].value < 0.05


def test_toy_metrics_rank_a_good_generator_above_a_collapsed_one():
    ds = load_dataset("8gaussians")
    good = _by_name(evaluate(None, dataset=ds, samples=ds.heldout(1000, seed=5)))
    assert list(good) == ["swd", "mmd", "energy", "nll_true"]
    assert good["swd"].extra["n_reference"] == DEFAULT_TOY_N == default_n("toy") == 2000 and default_n("image") == 1000
    one_mode = ds.heldout(1000, seed=6)
    one_mode = one_mode[np.argmax(one_mode[:, 0])] + 0.1 * np.random.default_rng(0).normal(size=(1000, 2))
    bad = _by_name(evaluate(None, dataset=ds, samples=one_mode.astype(np.float32)))
    for name in ("swd", "mmd", "energy"):
        assert bad[name].value > good[name].value + 10 * abs(good[name].value) + 1e-3
    assert abs(good["mmd"].value) < 5e-3 and good["mmd"].extra["bandwidth"] > 0


# ---------------------------------------------------------------- errors

def test_errors_name_the_metric_and_why(digits, ae_model):
    with pytest.raises(UnknownNameError, match="did you mean 'precision'"):
        evaluate(["precisoin"], dataset=digits, samples=digits.x_train)
    with pytest.raises(MetricError, match="'psnr' applies to image data; dataset 'moons' is toy"):
        evaluate(["psnr"], dataset=load_dataset("moons"), samples=np.zeros((200, 2), np.float32))
    with pytest.raises(MetricError, match="'iwae' needs the trained model"):
        evaluate(["iwae"], dataset=digits, samples=digits.x_train)
    with pytest.raises(MetricError, match="'iwae' applies to model families vae .* this model is 'ae'"):
        evaluate(["iwae", "bpd"], dataset=digits, model=ae_model)
    with pytest.raises(MetricError, match="'nll_true' needs the true density"):
        evaluate(["nll_true"], dataset=load_dataset("moons"), samples=np.zeros((200, 2), np.float32))
    with pytest.raises(MetricError, match="'fd' compares samples"):
        evaluate(["fd"], dataset=digits)
    with pytest.raises(MetricError, match=r"shape \(N, 1, 8, 8\)"):
        evaluate(["fd"], dataset=digits, samples=np.zeros((200, 64), np.float32))
    with pytest.raises(MetricError, match=r"data space \[0, 1\]"):
        evaluate(["fd"], dataset=digits, samples=2 * digits.x_train - 1)
    with pytest.raises(MetricError, match="at least 100 samples"):
        evaluate(["recall"], dataset=digits, samples=digits.x_train[:50])
    with pytest.raises(MetricError, match="needs a trained model; the floor compares data"):
        evaluate_floor(digits, ["fd", "mse"])


def test_store_round_trip(store, floor):
    from genlib.store import RunRecord

    store.commit_run(RunRecord(run_key="floor-digits", kind="floor", config={"data": "digits"}), list(floor.values()))
    table = store.read_table("results").set_index("name")
    assert table.loc["recall", "value"] == pytest.approx(floor["recall"].value)
    assert table.loc["fd", "higher_is_better"] == 0 and table.loc["precision", "unit"] == "fraction"
    assert '"k": 3' in table.loc["precision", "extra_json"]

"""Session factory and provider choice: the CPU fallback, named errors, IO binding on CPU."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import bench.runtime as rt
from bench.runtime import ProviderUnavailableError, SessionConfig, bind_runner, make_session, resolve_providers

CUDA_USABLE = rt.cuda_provider_usable()[0]


def _matmul_model() -> bytes:
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4) / 10, "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["r"])],
                          "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4]),
                           helper.make_tensor_value_info("r", TensorProto.FLOAT, ["batch", 4])], initializer=[w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9).SerializeToString()


@pytest.fixture
def fresh_probe(monkeypatch):
    rt.cuda_provider_usable.cache_clear()
    yield
    rt.cuda_provider_usable.cache_clear()


@pytest.mark.skipif(CUDA_USABLE, reason="this machine has a usable CUDA provider; the fallback is tested on CPU hosts")
def test_cpu_fallback_when_cuda_is_absent():
    usable, reason = rt.cuda_provider_usable()
    assert not usable and reason
    assert resolve_providers(None) == ["cpu"]
    with pytest.raises(ProviderUnavailableError, match="provider 'cuda' was requested but is unavailable"):
        resolve_providers(["cpu", "cuda"])
    with pytest.raises(ProviderUnavailableError, match="unavailable"):
        make_session(_matmul_model(), SessionConfig(provider="cuda"))


def test_unknown_provider_is_a_named_error():
    with pytest.raises(ProviderUnavailableError, match="unknown execution provider 'tpu'"):
        resolve_providers(["tpu"])


def test_env_switch_forbids_cuda(monkeypatch, fresh_probe):
    monkeypatch.setenv(rt.CUDA_ENV, "0")
    assert rt.cuda_provider_usable() == (False, f"{rt.CUDA_ENV}=0")
    assert rt.available_providers() == ["cpu"]


@pytest.mark.skipif(CUDA_USABLE, reason="needs a host where the CUDA provider cannot load")
def test_probe_runs_quietly_in_a_subprocess(monkeypatch, fresh_probe, capfd):
    """Pretend a GPU device exists: the real probe then tries CUDA in a child process; its load errors
    must not reach our stdout/stderr, and the answer must be 'unusable' with a reason."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no CUDA provider to probe")
    monkeypatch.delenv(rt.CUDA_ENV, raising=False)
    monkeypatch.setattr(rt, "_nvidia_device_present", lambda: True)
    usable, reason = rt.cuda_provider_usable()
    out, err = capfd.readouterr()
    assert not usable and "CUDA" in reason
    assert out == "" and err == ""


def test_session_reports_the_provider_that_ran_and_applies_options():
    cfg = SessionConfig(provider="cpu", graph_optimization="basic", intra_op_threads=1, allow_spinning=False)
    sess = make_session(_matmul_model(), cfg)
    assert sess.get_providers()[0] == "CPUExecutionProvider"
    so = rt.session_options(cfg)
    assert so.intra_op_num_threads == 1 and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.parametrize("io_binding", [False, True])
def test_runner_outputs_equal_session_run(io_binding):
    sess = make_session(_matmul_model())
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    expected = sess.run(None, {"x": x})
    runner = bind_runner(sess, {"x": x}, io_binding=io_binding)
    assert runner.io_binding is io_binding and runner.provider == "CPUExecutionProvider"
    runner.call()
    runner.sync()
    for got, want in zip(runner.outputs(), expected):
        np.testing.assert_array_equal(got, want)
    if io_binding:  # pre-allocated outputs (the CUDA-graph path) work the same way
        pre = bind_runner(sess, {"x": x}, io_binding=True, output_shapes={"y": (5, 4), "r": (5, 4)})
        pre.call()
        np.testing.assert_array_equal(pre.outputs()[1], expected[1])


def test_session_config_validation():
    with pytest.raises(ValueError, match="provider must be one of"):
        SessionConfig(provider="tpu")
    with pytest.raises(ValueError, match="cuda_graph needs provider='cuda'"):
        SessionConfig(cuda_graph=True)
    with pytest.raises(ValueError, match="graph_optimization"):
        SessionConfig(graph_optimization="max")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_USABLE, reason="the CUDA execution provider cannot load on this machine")
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_cuda_path_uses_io_binding_and_matches_cpu(cuda_graph):
    model = _matmul_model()
    x = np.random.default_rng(1).standard_normal((8, 3)).astype(np.float32)
    expected = make_session(model).run(None, {"x": x})
    sess = make_session(model, SessionConfig(provider="cuda", cuda_graph=cuda_graph))
    assert sess.get_providers()[0] == "CUDAExecutionProvider"
    runner = bind_runner(sess, {"x": x}, output_shapes={"y": (8, 4), "r": (8, 4)} if cuda_graph else None)
    assert runner.io_binding and runner.provider == "CUDAExecutionProvider"
    for _ in range(3):  # the first run captures the CUDA graph, later ones replay it
        runner.call()
    runner.sync()
    for got, want in zip(runner.outputs(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

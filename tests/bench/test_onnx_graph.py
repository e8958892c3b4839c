"""Composing a step graph into a whole-sampler graph, on a hand-written ONNX step (no torch involved)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.onnx_graph import GraphCompositionError, compose_sampler, count_nodes, prune
from bench.runtime import make_session

A = np.array([0.5, 1.5, -1.0, 2.0, 0.25], dtype=np.float32)  # a per-step table indexed by i


def _step(with_noise: bool = True, out_reads_x: bool = False) -> onnx.ModelProto:
    """x_next = a[i] * x (+ noise[i]);  out = 2 * x_next (or 2 * x when out_reads_x, which is invalid)."""
    nodes = [helper.make_node("Gather", ["a", "i"], ["a_i"], axis=0),
             helper.make_node("Mul", ["a_i", "x"], ["ax"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
              helper.make_tensor_value_info("i", TensorProto.INT64, [1])]
    if with_noise:
        nodes += [helper.make_node("Gather", ["noise", "i"], ["n1"], axis=0),
                  helper.make_node("Squeeze", ["n1", "zero"], ["n_i"]),
                  helper.make_node("Add", ["ax", "n_i"], ["x_next"])]
        inputs.append(helper.make_tensor_value_info("noise", TensorProto.FLOAT, [len(A), "batch", 3]))
    else:
        nodes.append(helper.make_node("Identity", ["ax"], ["x_next"]))
    nodes += [helper.make_node("Mul", ["x" if out_reads_x else "x_next", "two"], ["out"]),
              helper.make_node("Neg", ["x"], ["dead"])]  # unused: composition must drop it
    inits = [numpy_helper.from_array(A, "a"), numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array([0], np.int64), "zero")]
    g = helper.make_graph(nodes, "step", inputs,
                          [helper.make_tensor_value_info("x_next", TensorProto.FLOAT, ["batch", 3]),
                           helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3])], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def _reference(x, noise, indices):
    for i in indices:
        x = A[i] * x + (noise[i] if noise is not None else 0)
    return x, 2 * x


@pytest.mark.parametrize("mode", ["unrolled", "loop"])
@pytest.mark.parametrize("indices", [[4, 3, 2, 1, 0], [0, 1, 2], []])
def test_composed_graph_equals_the_python_loop(mode, indices):
    model = compose_sampler(_step(), indices, mode=mode, state_input="x_T", state_output="x0", out_output="x")
    onnx.checker.check_model(model, full_check=True)
    rng = np.random.default_rng(0)
    for batch in (1, 4):  # dynamic batch
        x_T = rng.standard_normal((batch, 3)).astype(np.float32)
        noise = rng.standard_normal((len(A), batch, 3)).astype(np.float32)
        sess = make_session(model.SerializeToString())
        x0, x = sess.run(["x0", "x"], {"x_T": x_T, "noise": noise})
        ref_x0, ref_x = _reference(x_T, noise, indices)
        np.testing.assert_allclose(x0, ref_x0, rtol=1e-6)
        np.testing.assert_allclose(x, ref_x, rtol=1e-6)
        assert "dead" not in {o for n in model.graph.node for o in n.output}


def test_loop_size_is_constant_in_steps_and_unrolled_grows():
    step = _step()
    sizes = {}
    for mode in ("loop", "unrolled"):
        for n in (2, 5):
            m = compose_sampler(step, list(reversed(range(n))), mode=mode, state_input="x_T", state_output=None,
                                out_output="x")
            sizes[mode, n] = count_nodes(m.graph)
            assert len(m.graph.initializer) == 3  # weights shared, never copied per step
    assert sizes["loop", 2] == sizes["loop", 5]
    assert sizes["unrolled", 5] > sizes["unrolled", 2]
    loop = compose_sampler(step, [1, 0], mode="loop", state_input="x_T", state_output=None, out_output="x")
    assert count_nodes(loop.graph) > len(loop.graph.node)  # the Loop body is counted


def test_noise_free_step_has_no_noise_input():
    m = compose_sampler(_step(with_noise=False), [2, 1, 0], mode="unrolled", state_input="z", state_output=None,
                        out_output="x")
    assert [v.name for v in m.graph.input] == ["z"]
    z = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(make_session(m.SerializeToString()).run(None, {"z": z})[0], _reference(z, None, [2, 1, 0])[1])


def test_composition_errors_name_the_problem():
    with pytest.raises(GraphCompositionError, match="must depend on 'x_next' only"):
        compose_sampler(_step(out_reads_x=True), [0], mode="unrolled", state_input="x_T", state_output=None, out_output="x")
    bad = _step()
    bad.graph.input[0].name = "y"
    with pytest.raises(GraphCompositionError, match="no input 'x'"):
        compose_sampler(bad, [0], mode="unrolled", state_input="x_T", state_output=None, out_output="x")
    with pytest.raises(GraphCompositionError, match="contiguous"):
        compose_sampler(_step(), [4, 2, 0], mode="loop", state_input="x_T", state_output=None, out_output="x")


def test_prune_drops_dead_nodes_and_initializers():
    m = _step()
    del m.graph.output[1]  # only x_next wanted now
    prune(m)
    assert {n.op_type for n in m.graph.node} == {"Gather", "Mul", "Squeeze", "Add"}
    assert "two" not in {i.name for i in m.graph.initializer}

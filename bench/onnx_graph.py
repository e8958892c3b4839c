"""ONNX graph surgery for the whole-sampler graph: compose one exported step into a fixed-length loop.

A sampler step is exported once with torch.export (inputs `x`, `i`, optional `noise`; outputs `x_next`
and `out`, the data-space view of `x_next`). `compose_sampler` then builds the S-step graph at the ONNX
level, either as an ONNX `Loop` (node count constant in S) or unrolled with the step index as a constant
(node count linear in S, weights shared, so ONNX Runtime constant-folds everything that depends on t
alone). Either way export time is that of one step. Also: node counting, dead-node pruning, and the nodes a
float16 conversion keeps in float32 (the schedule arithmetic and the sinusoidal time embedding; the
conversion itself is ONNX Runtime's, `bench.precision`).
This module knows nothing of schedules or networks; it moves nodes and names.
"""
from __future__ import annotations

import json
from typing import Iterable, Literal, Sequence

import onnx
from onnx import GraphProto, ModelProto, NodeProto, TensorProto, helper

STEP_STATE, STEP_INDEX, STEP_NOISE = "x", "i", "noise"
STEP_NEXT, STEP_OUT = "x_next", "out"
WEIGHT_PREFIX = "w/"


def history_names(history: int) -> tuple[list[str], list[str]]:
    """The step graph's history inputs and outputs of a multistep sampler: h0, h1, ... and h0_next, ..."""
    return [f"h{k}" for k in range(history)], [f"h{k}_next" for k in range(history)]


class GraphCompositionError(ValueError):
    """A step graph does not have the interface the composer needs; the message names what is missing."""


def count_nodes(graph: GraphProto) -> int:
    """Nodes in `graph` including those in subgraphs (Loop bodies, If branches)."""
    total = 0
    for node in graph.node:
        total += 1
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                total += count_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                total += sum(count_nodes(g) for g in attr.graphs)
    return total


def _needed(nodes: Sequence[NodeProto], outputs: Iterable[str], stop: Iterable[str] = ()) -> list[NodeProto]:
    """The nodes (in their original order) needed to compute `outputs`, not looking past `stop` values."""
    producer = {out: k for k, n in enumerate(nodes) for out in n.output if out}
    stop = set(stop)
    keep: set[int] = set()
    todo = [o for o in outputs if o not in stop]
    while todo:
        name = todo.pop()
        k = producer.get(name)
        if k is None or k in keep:
            continue
        keep.add(k)
        todo.extend(v for v in nodes[k].input if v and v not in stop)
        for attr in nodes[k].attribute:  # values a subgraph reads from this scope
            if attr.type == onnx.AttributeProto.GRAPH:
                todo.extend(v for v in _outer_refs(attr.g) if v not in stop)
    return [n for k, n in enumerate(nodes) if k in keep]


def _outer_refs(graph: GraphProto) -> set[str]:
    local = {v.name for v in graph.input} | {i.name for i in graph.initializer}
    local |= {o for n in graph.node for o in n.output}
    return {v for n in graph.node for v in n.input if v and v not in local}


def prune(model: ModelProto) -> ModelProto:
    """Drop nodes and initializers that no graph output depends on (in place; returns the model)."""
    g = model.graph
    kept = _needed(list(g.node), [o.name for o in g.output])
    del g.node[:]
    g.node.extend(kept)
    used = {v for n in kept for v in n.input} | {o.name for o in g.output}
    for n in kept:
        for attr in n.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                used |= _outer_refs(attr.g)
    inits = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    return model


def _renamed(nodes: Iterable[NodeProto], rename: dict[str, str], prefix: str) -> list[NodeProto]:
    """Copies of `nodes` with value names mapped through `rename`, else prefixed; node names prefixed."""
    out = []
    for k, node in enumerate(nodes):
        copy = NodeProto()
        copy.CopyFrom(node)
        copy.name = prefix + (node.name or f"{node.op_type}#{k}")  # ONNX Runtime needs unique node names
        del copy.metadata_props[:]  # torch's per-node stack traces, S times over, would dominate the file
        del copy.input[:]
        copy.input.extend([rename.get(v, prefix + v) if v else "" for v in node.input])
        del copy.output[:]
        copy.output.extend([rename.get(v, prefix + v) if v else "" for v in node.output])
        for attr in copy.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename_subgraph_refs(attr.g, rename, prefix)
        out.append(copy)
    return out


def _rename_subgraph_refs(graph: GraphProto, rename: dict[str, str], prefix: str) -> None:
    for v in _outer_refs(graph):
        new = rename.get(v, prefix + v)
        for n in graph.node:
            for k, name in enumerate(n.input):
                if name == v:
                    n.input[k] = new


def _step_interface(step: ModelProto, history: int = 0
                    ) -> tuple[dict[str, onnx.ValueInfoProto], dict[str, onnx.ValueInfoProto]]:
    inputs = {v.name: v for v in step.graph.input}
    outputs = {v.name: v for v in step.graph.output}
    h_in, h_out = history_names(history)
    for name in (STEP_STATE, *h_in, STEP_INDEX):
        if name not in inputs:
            raise GraphCompositionError(f"the step graph has no input '{name}' (inputs: {sorted(inputs)})")
    for name in (STEP_NEXT, *h_out, STEP_OUT):
        if name not in outputs:
            raise GraphCompositionError(f"the step graph has no output '{name}' (outputs: {sorted(outputs)})")
    extra = set(inputs) - {STEP_STATE, STEP_INDEX, STEP_NOISE, *h_in}
    if extra:
        raise GraphCompositionError(f"the step graph has unexpected inputs {sorted(extra)}")
    return inputs, outputs


def _value_info(name: str, like: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    v = onnx.ValueInfoProto()
    v.CopyFrom(like)
    v.name = name
    return v


def compose_sampler(step: ModelProto, indices: Sequence[int], *, mode: Literal["unrolled", "loop"],
                    state_input: str, state_output: str | None, out_output: str,
                    graph_name: str = "sampler", history: int = 0) -> ModelProto:
    """The whole sampler as one graph: apply `step` once per entry of `indices`, in order.

    step: a model with inputs x (state), h0 .. h{history-1} (a multistep sampler's history, each shaped like x),
    i (int64 (1,)) and optionally noise, and outputs x_next, h0_next .., and out. indices: the table index i
    of each step, in execution order (e.g. S-1 .. 0 for DDIM); the loop form needs them to be a contiguous run
    (descending or ascending). The composed graph takes `state_input` (+ `noise`); the history starts at zeros.
    It returns the final state as `state_output` (omitted when None) and `out` of it as `out_output`. With no
    steps the graph is `out` of the input.
    """
    inputs, outputs = _step_interface(step, history)
    h_in, h_out = history_names(history)
    nodes = list(step.graph.node)
    init_names = {i.name for i in step.graph.initializer}
    weights = {name: WEIGHT_PREFIX + name for name in init_names}
    has_noise = STEP_NOISE in inputs
    shared = {**weights, **({STEP_NOISE: STEP_NOISE} if has_noise else {})}

    carried_in, carried_out = [STEP_STATE, *h_in], [STEP_NEXT, *h_out]
    state_nodes = _needed(nodes, carried_out)
    out_nodes = _needed(nodes, [STEP_OUT], stop=[STEP_NEXT])
    leaked = {v for n in out_nodes for v in n.input} & {STEP_STATE, STEP_INDEX, STEP_NOISE, *h_in}
    if leaked:
        raise GraphCompositionError(f"the step output '{STEP_OUT}' must depend on '{STEP_NEXT}' only, "
                                    f"but reads {sorted(leaked)}")

    graph_nodes: list[NodeProto] = []
    indices = [int(i) for i in indices]
    finals = [state_input]
    if history:  # the history starts at zeros shaped like the state
        graph_nodes.append(helper.make_node("Shape", [state_input], ["init/shape"], name="init/shape"))
        for name in h_in:
            graph_nodes.append(helper.make_node("ConstantOfShape", ["init/shape"], [f"init/{name}"],
                                                name=f"init/{name}",
                                                value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0])))
            finals.append(f"init/{name}")
    if indices and mode == "unrolled":
        for j, idx in enumerate(indices):
            prefix = f"s{j}/"
            graph_nodes.append(helper.make_node("Constant", [], [prefix + STEP_INDEX], name=prefix + "index",
                                                value=helper.make_tensor("i", TensorProto.INT64, [1], [idx])))
            rename = {**shared, **dict(zip(carried_in, finals))}
            graph_nodes += _renamed(state_nodes, rename, prefix)
            finals = [prefix + name for name in carried_out]
    elif indices and mode == "loop":
        loop_finals = ["loop/" + name for name in carried_out]
        graph_nodes += _loop_nodes(state_nodes, indices, inputs, shared, finals, loop_finals, carried_in,
                                   carried_out)
        finals = loop_finals
    elif indices:
        raise GraphCompositionError(f"mode must be 'unrolled' or 'loop', got {mode!r}")
    final = finals[0]

    graph_nodes += _renamed(out_nodes, {**weights, STEP_NEXT: final, STEP_OUT: out_output}, "out/")
    graph_outputs = [_value_info(out_output, outputs[STEP_OUT])]
    if state_output is not None:
        graph_nodes.append(helper.make_node("Identity", [final], [state_output], name="state_output"))
        graph_outputs.insert(0, _value_info(state_output, outputs[STEP_NEXT]))

    graph_inputs = [_value_info(state_input, inputs[STEP_STATE])]
    if has_noise:
        graph_inputs.append(_value_info(STEP_NOISE, inputs[STEP_NOISE]))
    initializers = []
    for init in step.graph.initializer:
        copy = TensorProto()
        copy.CopyFrom(init)
        copy.name = weights[init.name]
        initializers.append(copy)
    graph = helper.make_graph(graph_nodes, graph_name, graph_inputs, graph_outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=list(step.opset_import), ir_version=step.ir_version,
                              producer_name="genbench", producer_version=step.producer_version)
    model.functions.extend(step.functions)
    prune(model)
    return model


def _loop_nodes(state_nodes: list[NodeProto], indices: list[int], inputs: dict[str, onnx.ValueInfoProto],
                shared: dict[str, str], initial: list[str], finals: list[str], carried_in: list[str],
                carried_out: list[str]) -> list[NodeProto]:
    """Loop(M = len(indices)) whose body maps the loop counter to the table index and runs one step; the
    state and history are loop-carried (initial values `initial`, final values `finals`)."""
    n = len(indices)
    descending = indices == list(range(indices[0], indices[0] - n, -1))
    ascending = indices == list(range(indices[0], indices[0] + n))
    if not (descending or ascending):
        raise GraphCompositionError("the loop form needs contiguous step indices; use mode='unrolled'")
    p = "body/"
    body_nodes = [
        helper.make_node("Constant", [], [p + "first"], value=helper.make_tensor("first", TensorProto.INT64, [], [indices[0]])),
        helper.make_node("Sub" if descending and n > 1 else "Add", [p + "first", "iter"], [p + "index0"]),
        helper.make_node("Constant", [], [p + "shape1"], value=helper.make_tensor("shape1", TensorProto.INT64, [1], [1])),
        helper.make_node("Reshape", [p + "index0", p + "shape1"], [p + STEP_INDEX]),
    ]
    body_nodes += [helper.make_node("Identity", [f"{name}_in"], [p + name]) for name in carried_in]
    body_nodes += _renamed(state_nodes, shared, p)
    body_nodes += [helper.make_node("Identity", ["cond_in"], ["cond_out"])]
    body_nodes += [helper.make_node("Identity", [p + nxt], [f"{name}_out"]) for name, nxt in zip(carried_in, carried_out)]
    state_type = inputs[STEP_STATE]
    body = helper.make_graph(
        body_nodes, "step",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         *[_value_info(f"{name}_in", state_type) for name in carried_in]],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         *[_value_info(f"{name}_out", state_type) for name in carried_in]])
    trip = helper.make_node("Constant", [], ["loop/M"], value=helper.make_tensor("M", TensorProto.INT64, [], [n]))
    cond = helper.make_node("Constant", [], ["loop/cond"], value=helper.make_tensor("cond", TensorProto.BOOL, [], [True]))
    loop = helper.make_node("Loop", ["loop/M", "loop/cond", *initial], finals, name="sampler_loop", body=body)
    return [trip, cond, loop]


# ---------------------------------------------------------------------------------------- float16
def _torch_scopes(node: NodeProto) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                return list(json.loads(prop.value.replace("'", '"')))
            except json.JSONDecodeError:
                return []
    return []


def _torch_classes(node: NodeProto) -> str:
    return next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.class_hierarchy"), "")


def fp16_blocked_nodes(model: ModelProto, network_attr: str = "net",
                       keep_fp32_modules: Sequence[str] = ("SinusoidalEmbedding",)) -> list[str]:
    """Names of nodes to keep in float32: everything outside the wrapped network (the schedule
    arithmetic of a sampler step, output reshaping) and the sinusoidal time embedding, whose
    arguments t * freq reach 1e3 and would lose all phase precision in float16."""
    blocked = []
    for node in model.graph.node:
        scopes = _torch_scopes(node)
        inside = len(scopes) >= 3 and (scopes[1] == network_attr or scopes[1].startswith(network_attr + "."))
        if not inside or any(m in _torch_classes(node) for m in keep_fp32_modules):
            blocked.append(node.name)
    return blocked


def toposort(model: ModelProto) -> ModelProto:
    """Order the top-level nodes so each comes after the producers of its inputs (in place; returns the model).
    Converters that append the casts they insert (ONNX Runtime's float16 conversion) leave graphs the checker
    refuses; the order of independent nodes is kept."""
    g = model.graph
    ready = {v.name for v in g.input} | {i.name for i in g.initializer} | {""}
    pending = list(g.node)
    ordered: list[NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            needs = set(node.input)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    needs |= _outer_refs(attr.g)
            if needs <= ready:
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            missing = sorted(set(rest[0].input) - ready)
            raise GraphCompositionError(f"node '{rest[0].name}' reads {missing}, which nothing produces")
        pending = rest
    del g.node[:]
    g.node.extend(ordered)
    return model


def drop_repeated_nodes(model: ModelProto) -> ModelProto:
    """Remove a top-level node that repeats an earlier one exactly (same op, inputs, outputs, attributes), in place.
    ONNX Runtime's float16 conversion with blocked nodes inserts one identical Cast per consumer of a value that
    crosses from a blocked node, which breaks single assignment; the first copy serves them all."""
    g = model.graph
    seen: dict[str, NodeProto] = {}
    kept = []
    for node in g.node:
        first = next((seen[o] for o in node.output if o in seen), None)
        if first is not None:
            same = (first.op_type == node.op_type and list(first.input) == list(node.input)
                    and list(first.output) == list(node.output)
                    and [a.SerializeToString() for a in first.attribute] == [a.SerializeToString() for a in node.attribute])
            if not same:
                raise GraphCompositionError(f"nodes '{first.name}' and '{node.name}' both produce {list(node.output)}")
            continue
        for o in node.output:
            seen[o] = node
        kept.append(node)
    del g.node[:]
    g.node.extend(kept)
    return model

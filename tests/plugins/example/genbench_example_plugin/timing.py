"""The example plugin's timing backend `torch_no_grad`: the torch part under `torch.no_grad()` instead of
inference mode. A module of its own, because registering a backend imports genbench's bench package (and
ONNX Runtime): load it with `genbench bench ... --plugin genbench_example_plugin.timing`.
"""
from __future__ import annotations

import torch

from bench.backends import Prepared, register


@register("torch_no_grad", "torch eager under torch.no_grad() (autograd off, no inference mode)",
          applies=lambda t: t.part_graph is not None and t.run is not None and not t.is_sampler)
def prepare_torch_no_grad(target, batch: int, threads: int, **_) -> Prepared:
    device = next(target.run.model.net.parameters()).device
    inputs = [v.to(device) for k, v in target.feeds(batch).items() if k in target.part_graph.graph_inputs]
    module = target.part_graph.module
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)

    def call():
        with torch.no_grad():
            return module(*inputs)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return Prepared(call, sync, f"torch_no_grad:{device.type}", str(device),
                    close=lambda: torch.set_num_threads(old_threads))

"""bench: ONNX export behind a parity gate, ONNX Runtime sessions (CPU/CUDA) and honest timings.

Modules: `wrappers` (what each graph computes), `export` (parts, parity, sidecars), `onnx_graph` (the
whole-sampler graph from one exported step), `runtime` (sessions, providers, IO binding), `timing`
(the harness over `call`/`sync` callables), `backends` and `suite` (side-by-side runs), `results`
(rows for genlib.store), `cli` (`genbench export`, `genbench bench`). See bench/README.md.
"""

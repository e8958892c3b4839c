"""bench: ONNX export behind a parity gate, ONNX Runtime sessions (CPU/CUDA) and honest timings.

Modules: `wrappers` (what each graph computes), `parts` (part builders), `export` (graphs and sidecars),
`parity` (the gate), `onnx_files` (reading exports), `onnx_graph` (the whole-sampler graph from one step),
`runtime` (sessions, providers, IO binding), `timing` (the harness over `call`/`sync` callables), `backends`
and `suite` (side-by-side runs), `results` (rows for genlib.store), `cli` (`genbench export`, `genbench bench`).
See bench/README.md.
"""

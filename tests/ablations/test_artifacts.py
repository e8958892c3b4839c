"""Artifacts travel with the work: cells return them as bytes and the driver alone publishes them; an evaluation
gets its checkpoint as bytes, unpacked once into its node's cache. GPU requests: the local pool pins one device
per worker, and a cell asking for CUDA where there is none is refused before anything runs. (The same on a
multi-node Ray cluster without a shared disk: test_ray_cluster.py, marker `ray`.)"""
from __future__ import annotations

import io
import os
import sqlite3
import tarfile

import pandas as pd
import pytest
from grid_helpers import ToyEvaluation, tiny_grid

from ablations import parse_grid, plan_grid, run_plan
from ablations.cells import cell_resources, share_key
from ablations.driver import artifacts_dir_for
from ablations.executors import ExecutorError, LocalExecutor, Resources
from genlib.checkpoint import CheckpointError, pack_dir, unpack_dir


def test_a_directory_travels_as_bytes_and_arrives_whole(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "model.pt").write_bytes(os.urandom(1000))
    (src / "sub" / "history.csv").write_text("step,loss\n1,0.5\n")
    data = pack_dir(src)
    assert pack_dir(src) == data  # the same files give the same bytes (and the same cache key)
    out = unpack_dir(data, tmp_path / "out")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        ["model.pt", "sub/history.csv"]
    assert (out / "model.pt").read_bytes() == (src / "model.pt").read_bytes()
    # replace=False keeps what another process published first; replace=True swaps in the new copy whole
    (src / "model.pt").write_bytes(b"new")
    assert (unpack_dir(pack_dir(src), out, replace=False) / "model.pt").read_bytes() != b"new"
    assert (unpack_dir(pack_dir(src), out) / "model.pt").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]  # no temporary sibling left
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("../escaped")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(CheckpointError, match="refusing to unpack '../escaped'"):
        unpack_dir(evil.getvalue(), tmp_path / "evil")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "evil").exists()


def test_the_driver_publishes_what_cells_return_and_workers_keep_their_own_cache(tmp_path, monkeypatch):
    node = tmp_path / "node"
    monkeypatch.setenv("GENBENCH_NODE_CACHE", str(node))  # the workers' cache, not the driver's folder
    plan = plan_grid(parse_grid(tiny_grid(seeds=[0])))
    db = tmp_path / "store" / "results.db"
    # serial: the driver process runs the cells through the same bytes-only path as pool and Ray workers
    summary = run_plan(plan, db, executor="serial", threads=1, evaluation=ToyEvaluation(), progress=False)
    assert summary.complete and summary.done == len(plan.cells)
    with sqlite3.connect(db) as conn:
        runs = pd.read_sql_query("SELECT run_key, kind, artifact_path FROM runs WHERE kind != 'study'", conn)
    art = artifacts_dir_for(db)
    assert sorted(p.name for p in art.iterdir()) == sorted(runs.loc[runs["artifact_path"].notna(), "run_key"])
    for key, kind, path in zip(runs["run_key"], runs["kind"], runs["artifact_path"]):
        if kind == "floor":
            continue
        assert (db.parent / path).name == key
        assert (db.parent / path / ("model.pt" if kind == "train" else "samples.npy")).is_file()
    # each checkpoint was unpacked once into the node cache under its run key and digest, byte for byte
    trains = list(runs.loc[runs["kind"] == "train", "run_key"])
    cached = {p.name: p for p in (node / "checkpoints").iterdir()}
    assert sorted(cached) == sorted(share_key(k, pack_dir(art / k)) for k in trains)
    for key in trains:
        assert (cached[share_key(key, pack_dir(art / key))] / "model.pt").read_bytes() == \
            (art / key / "model.pt").read_bytes()
    assert not list((node / "scratch").iterdir())  # scratch directories are removed after each cell


def test_cells_ask_for_a_gpu_when_their_training_runs_on_cuda_and_timed_cells_take_the_node():
    plan = plan_grid(parse_grid(tiny_grid(seeds=[0])))
    assert {cell_resources(c) for c in plan.cells} == {Resources(num_cpus=1)}
    grid = tiny_grid(seeds=[0])
    grid["base"]["train"]["device"] = "cuda"
    cuda = plan_grid(parse_grid(grid))
    for cell in cuda.train_cells + cuda.eval_cells:  # an evaluation loads its checkpoint where it trained
        assert cell_resources(cell) == Resources(num_cpus=1, num_gpus=1)


def test_the_local_pool_pins_one_visible_device_per_worker(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with LocalExecutor(workers=2) as pool:
        for i in range(2):
            pool.submit(str(i), os.getenv, "CUDA_VISIBLE_DEVICES")
        seen = []
        while pool.in_flight:
            seen += [o.value for o in pool.wait(timeout=30)]
    assert sorted(seen) == ["3", "5"] and os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"


def test_a_cuda_cell_is_refused_before_anything_runs_where_there_is_no_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    grid = tiny_grid(seeds=[0])
    grid["base"]["train"]["device"] = "cuda"
    db = tmp_path / "results.db"
    with pytest.raises(ExecutorError, match=r"asks for 1 GPU \(its train.device is cuda\) but this machine offers 0"):
        run_plan(plan_grid(parse_grid(grid)), db, executor="local", workers=1, progress=False)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs WHERE kind != 'study'").fetchone() == (0,)

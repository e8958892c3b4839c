"""A grid on a Ray cluster whose nodes share no disk: a head with no CPUs and worker nodes started with
`ray start`, each in its own mount namespace with a private tmpfs over the test folder (ray_cluster.py).

The bundled refinement study's quick profile runs through `genbench grid run --executor ray`; every cell
completes, every recorded artifact is on the driver with its content, and `genbench report` draws the
study's tables, plots and sample grids. A cell asking for CUDA is refused before anything runs where no node
offers a GPU and lands only on the node that offers a (logical) one. A node killed mid-grid loses no cell and
records none twice. Tests run in file order on one cluster (the last one kills a node).
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from grid_helpers import tiny_grid
from ray_cluster import Cluster, mount_namespaces_work

pytestmark = pytest.mark.ray

HERE = Path(__file__).resolve().parent
GENBENCH = str(Path(sys.executable).with_name("genbench"))
STUDY = "refinement"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'genbench[ray]')")
    why = mount_namespaces_work()
    if why:
        pytest.skip(f"cannot simulate nodes without a shared disk: {why}")
    root = tmp_path_factory.mktemp("ray_cluster")
    (root / "private").mkdir()
    c = Cluster(root=root, private=root / "private")
    try:
        c.start_head()
        c.add_node("a")
        c.add_node("b")
        yield c
    finally:
        c.stop()


def _genbench(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([GENBENCH, *args], capture_output=True, text=True, timeout=timeout, env=env)


def _grid_run(cluster: Cluster, store: Path, *extra: str) -> list[str]:
    return ["grid", "run", STUDY, "--profile", "quick", "--store", str(store), "--executor", "ray",
            "--ray-address", cluster.address, "--no-progress", *extra]


def _runs(db: Path) -> pd.DataFrame:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        runs = pd.read_sql_query("SELECT run_key, kind, status, error, artifact_path, machine_json, config_json "
                                 "FROM runs WHERE kind != 'study'", conn)
    return runs


def _check_artifacts(db: Path, runs: pd.DataFrame) -> None:
    """Every recorded artifact_path exists on the driver and holds what its cell made."""
    from genlib.train import load_run

    trains = runs[runs["kind"] == "train"]
    evals = runs[runs["kind"] == "eval"]
    assert trains["artifact_path"].notna().all() and evals["artifact_path"].notna().all()
    for key, path in zip(trains["run_key"], trains["artifact_path"]):
        run_dir = db.parent / path
        assert run_dir.name == key and json.loads((run_dir / "meta.json").read_text())["run_key"] == key
        load_run(run_dir, device="cpu")  # weights whose key matches the config, loadable
    for path, config in zip(evals["artifact_path"], evals["config_json"]):
        samples = np.load(db.parent / path / "samples.npy")
        assert samples.shape[0] == min(64, json.loads(config)["eval"]["n"]) and np.isfinite(samples).all()


def test_a_study_runs_on_two_nodes_that_share_no_disk(cluster, tmp_path):
    db = cluster.private / "driver" / "results.db"  # the nodes see an empty tmpfs at this path
    start = time.perf_counter()
    out = _genbench(*_grid_run(cluster, db))
    wall_s = time.perf_counter() - start
    assert out.returncode == 0, out.stdout + out.stderr
    runs = _runs(db)
    print(f"\n{STUDY} quick on 2 ray nodes: {(runs['status'] == 'done').sum()} done, "
          f"{(runs['status'] == 'failed').sum()} failed, wall {wall_s:.1f} s")
    assert runs["run_key"].is_unique and set(runs["status"]) == {"done"} and len(runs) == 33
    nodes = {json.loads(m).get("ray_node") for m in runs["machine_json"]}
    assert len(nodes) == 2 and None not in nodes  # both worker nodes ran cells (the head has no CPU)
    _check_artifacts(db, runs)
    # what the nodes cached and scratched stayed on their own tmpfs: the driver never saw it
    assert not (cluster.private / "node-cache").exists()

    report = tmp_path / "report"
    out = _genbench("report", "--store", str(db), "--out", str(report))
    assert out.returncode == 0, out.stdout + out.stderr
    assert (report / "csv" / f"{STUDY}.csv").is_file() and list((report / "plots").glob(f"{STUDY}-*.png"))
    settings = {json.dumps(json.loads(c)["axes"], sort_keys=True) for c in runs.loc[runs["kind"] == "eval", "config_json"]}
    grids = list((report / "samples" / STUDY).glob("*.png"))
    assert len(grids) == len(settings) == 9  # one sample grid per evaluation setting, drawn from the artifacts


def test_a_cuda_cell_is_refused_where_no_node_offers_a_gpu(cluster, tmp_path):
    from ablations import parse_grid, plan_grid, run_plan
    from ablations.executors import ExecutorError

    grid = tiny_grid(seeds=[0])
    grid["base"]["train"]["device"] = "cuda"
    db = tmp_path / "results.db"
    with pytest.raises(ExecutorError, match=r"asks for 1 GPU .* no node of the Ray cluster offers it"):
        run_plan(plan_grid(parse_grid(grid)), db, executor="ray", progress=False,
                 executor_options={"address": cluster.address})
    runs = _runs(db)
    assert runs.empty  # refused before any cell was handed out


def _where(_arg):
    import ray
    return ray.get_runtime_context().get_node_id(), ray.get_gpu_ids()


def test_a_cuda_cell_lands_only_on_the_node_with_a_gpu(cluster):
    import ray

    from ablations.cells import cell_resources
    from ablations.executors import make_executor
    from ablations.plan import TrainCell

    cluster.add_node("gpu", cpus=1, gpus=1)  # a logical GPU: Ray schedules by it, no device needed
    cells = {device: TrainCell(key=device, study="s", profile="quick", seed=0, label=device, axes={},
                               config={"train": {"device": device}}) for device in ("cuda", "cpu")}
    pool = make_executor("ray", 3, address=cluster.address,
                         runtime_env={"env_vars": {"PYTHONPATH": str(HERE)}})
    try:
        gpu_node = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU"))
        pool.check_resources({f"train cell {d}": cell_resources(c) for d, c in cells.items()})
        for i in range(6):
            device = "cuda" if i % 2 else "cpu"
            pool.submit(f"{device}-{i}", _where, None, resources=cell_resources(cells[device]))
        outcomes = []
        while pool.in_flight:
            outcomes += pool.wait(timeout=60)
    finally:
        pool.shutdown()
    assert len(outcomes) == 6 and all(o.ok for o in outcomes), [o.error for o in outcomes]
    for o in outcomes:
        node, gpus = o.value
        if o.task_id.startswith("cuda"):
            assert node == gpu_node and len(gpus) == 1
        else:
            assert gpus == []


def test_a_node_lost_mid_grid_loses_and_duplicates_nothing(cluster, tmp_path):
    db = cluster.private / "driver-lost" / "results.db"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = tmp_path / "grid.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([GENBENCH, *_grid_run(cluster, db)], stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        # Three nodes of one CPU each (a, b, gpu): with three cells running, one of them runs on b. Kill b then.
        cpu_nodes = sum(n.alive for n in cluster.nodes if n.name != "head")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                runs = _runs(db)
                if (runs["status"] == "done").sum() >= 2 and (runs["status"] == "running").sum() >= cpu_nodes:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, "the grid ended before a node could be killed"
        victim = next(n for n in cluster.nodes if n.name == "b")
        victim.kill()
        rc = proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    runs = _runs(db)
    assert runs["run_key"].is_unique and len(runs) == 33, text  # every cell recorded once
    failed = runs[runs["status"] == "failed"]
    # a cell lost with its node is retried once on another node; one that still fails says why
    assert failed["error"].str.contains("node|worker|died|crash", case=False).all(), failed["error"].tolist()
    assert rc == (0 if failed.empty else 1), text
    print(f"\nnode lost mid-grid: {(runs['status'] == 'done').sum()} done, {len(failed)} failed in the first run")
    again = _genbench(*_grid_run(cluster, db, "--retry-failed"))
    assert again.returncode == 0, again.stdout + again.stderr
    runs = _runs(db)
    assert runs["run_key"].is_unique and len(runs) == 33 and set(runs["status"]) == {"done"}
    _check_artifacts(db, runs)

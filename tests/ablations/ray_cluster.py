"""A multi-node Ray cluster on one machine whose nodes share no disk, for the `ray` tests.

`ray start` runs a head with no CPUs in this mount namespace (the driver's) and each worker node in a mount
namespace of its own (`unshare -m`) with a private tmpfs over the test's folder: a node sees neither the
driver's store and artifacts nor what another node wrote, as on machines without a shared filesystem.
Each node is started in its own session; stopping or killing a node signals that session's process group,
which holds exactly the processes this helper started (ray start, raylet, its workers), never others.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def mount_namespaces_work() -> str | None:
    """None when `unshare -m` with a tmpfs mount works here, else why not (the reason a test skips with)."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"mount namespaces are not allowed here: {(probe.stderr or probe.stdout).strip()[:200]}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    log: Path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL every process of the node (its session's process group), as a machine that is lost."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


@dataclass
class Cluster:
    """A head (0 CPUs) and worker nodes; `private`: the folder each worker node sees as its own empty tmpfs."""

    root: Path
    private: Path
    address: str = ""
    nodes: list[Node] = field(default_factory=list)

    def _env(self, node_cache: Path | None) -> dict[str, str]:
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        if node_cache is not None:
            env["GENBENCH_NODE_CACHE"] = str(node_cache)
        return env

    def _start(self, name: str, args: list[str], *, private: bool, timeout_s: float = 120) -> Node:
        log = self.root / f"{name}.log"
        command = [RAY, "start", *args, "--block", "--disable-usage-stats", "--object-store-memory", "100000000",
                   "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port",
                   str(free_port()), "--metrics-export-port", str(free_port())]
        if private:  # a tmpfs over the test folder, seen by this node's processes only
            quoted = " ".join(f"'{a}'" for a in command)
            command = ["unshare", "-m", "sh", "-c", f"mount -t tmpfs tmpfs '{self.private}' && exec {quoted}"]
        with open(log, "wb") as fh:
            proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                    env=self._env(self.private / "node-cache" if private else None))
        node = Node(name, proc, log)
        self.nodes.append(node)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"ray node {name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if b"block forever" in log.read_bytes():  # printed once the node has registered with the head
                return node
            time.sleep(0.5)
        raise RuntimeError(f"ray node {name} did not start in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")

    def start_head(self) -> str:
        port = free_port()
        self._start("head", ["--head", "--num-cpus", "0", "--num-gpus", "0", "--port", str(port),
                             "--include-dashboard=false", "--ray-client-server-port", str(free_port())],
                    private=False)
        self.address = f"127.0.0.1:{port}"
        return self.address

    def add_node(self, name: str, *, cpus: int = 1, gpus: int = 0) -> Node:
        """A worker node; nodes are added one at a time (two starting at once on one host collide)."""
        return self._start(name, ["--address", self.address, "--num-cpus", str(cpus), "--num-gpus", str(gpus)],
                           private=True)

    def stop(self) -> None:
        """Stop every node this cluster started (worker nodes first), by their process groups."""
        for node in reversed(self.nodes):
            if node.alive:
                try:
                    os.killpg(node.proc.pid, signal.SIGTERM)
                    node.proc.wait(timeout=20)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
            node.kill()

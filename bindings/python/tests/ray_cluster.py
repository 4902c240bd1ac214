"""A real multi-node Ray cluster on loopback for the tests: a head node and worker nodes, each
started with `ray start` as separate processes. Stopping ends exactly this cluster's
processes, by pid (`ray stop` would end every Ray process on the machine)."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")
# Every node uses Ray's token authentication with the same token (~/.ray/auth_token); the
# driver must have RAY_AUTH_MODE=token before it imports ray (conftest.py sets it).
ENV = {**os.environ, "RAY_AUTH_MODE": "token"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmdlines():
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                yield int(d.name), (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                pass


def _children(pid):
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _tree(pid):
    pids = [pid]
    for c in _children(pid):
        pids += _tree(c)
    return pids


def _kill(pids):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


# The clusters these tests started and have not stopped yet (one line each: GCS address and
# temp dir), so that a killed test run's cluster can still be stopped (test.sh's trap).
REGISTRY = Path(tempfile.gettempdir()) / "vene-ray-test-clusters"


def _keys(address, temp):
    port = address.rsplit(":", 1)[1]
    return (address, f"--gcs_server_port={port}", temp)


def _pids_of(keys):
    return [p for p, c in _cmdlines() if p != os.getpid() and any(k in c for k in keys)]


def stop_all():
    """Stops every cluster in the registry."""
    if not REGISTRY.exists():
        return
    for line in REGISTRY.read_text().split():
        address, temp = line.split(",")
        for _ in range(3):
            _kill(_pids_of(_keys(address, temp)))
    REGISTRY.unlink()


class Cluster:
    def __init__(self, workers=2, cpus_per_worker=2, object_store=80 * 1024 * 1024):
        subprocess.run([RAY, "get-auth-token", "--generate"], capture_output=True, env=ENV,
                       timeout=60)
        self.port = free_port()
        self.temp = tempfile.mkdtemp(prefix="vr", dir="/tmp")
        self.address = f"127.0.0.1:{self.port}"
        self.node_ports = []
        with open(REGISTRY, "a") as f:
            f.write(f"{self.address},{self.temp}\n")
        common = ["--node-ip-address", "127.0.0.1", "--object-store-memory", str(object_store),
                  "--disable-usage-stats"]
        self._run([RAY, "start", "--head", "--port", str(self.port), "--num-cpus", "0",
                   "--include-dashboard=false", "--temp-dir", self.temp] + common)
        for _ in range(workers):
            nm = free_port()
            self.node_ports.append(nm)
            self._run([RAY, "start", "--address", self.address, "--num-cpus",
                       str(cpus_per_worker), "--node-manager-port", str(nm)] + common)

    def _run(self, cmd):
        # Ray gives a starting node 30 s to register; on a loaded machine that can pass.
        for _ in range(3):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=ENV)
            if r.returncode == 0 or "timed out during startup" not in r.stdout + r.stderr:
                break
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")

    def raylet(self, i):
        flag = f"--node_manager_port={self.node_ports[i]}"
        return [p for p, c in _cmdlines() if "raylet" in c and flag in c]

    def kill_node(self, i):
        """SIGKILLs worker node ``i``: its raylet and every process under it."""
        pids = [p for r in self.raylet(i) for p in _tree(r)]
        _kill(pids[::-1])
        return pids

    def pids(self):
        """Every process of this cluster: those naming its GCS address or its temp dir."""
        return _pids_of(_keys(self.address, self.temp))

    def stop(self):
        for _ in range(3):
            pids = self.pids()
            if not pids:
                break
            _kill(pids)
            time.sleep(0.5)
        if REGISTRY.exists():
            rest = [x for x in REGISTRY.read_text().split() if x != f"{self.address},{self.temp}"]
            REGISTRY.write_text("".join(x + "\n" for x in rest))

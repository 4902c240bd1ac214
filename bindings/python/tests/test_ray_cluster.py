"""A 2,000-cell activation-patching sweep of SmolLM2 on a real three-node Ray cluster on
loopback (head + two worker nodes, separate `ray start` processes): equals the single-process
sweep cell for cell, and one worker node killed mid-sweep loses and duplicates nothing."""

import time

import pytest

import vene

ray = pytest.importorskip("ray")
import vene.ray as vray  # noqa: E402
from conftest import smollm2_path  # noqa: E402
from ray_cluster import Cluster  # noqa: E402

COMPONENTS = ["block_input", "block_output", "mlp_input", "mlp_activation", "mlp_output",
              "attention_input", "attention_output"]


def alive_nodes():
    return len([x for x in ray.nodes() if x["Alive"]])


def wait_alive_nodes(n, timeout):
    """The number of live nodes once it reaches ``n``, or when ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while alive_nodes() != n and time.monotonic() < deadline:
        time.sleep(1)
    return alive_nodes()


@pytest.mark.ray_cluster
def test_sweep_on_cluster_survives_a_killed_node():
    path = smollm2_path()
    m = vene.Model.load(str(path))
    base = m.encode("The Eiffel Tower is located in the city of")
    source = m.encode("The Colosseum is located in the city of")
    n = min(len(base), len(source), 10)
    base, source = base[:n], source[:n]
    watch = [m.encode(" Paris")[0], m.encode(" Rome")[0]]
    t0 = time.monotonic()
    want = vene.patch(m, base, source, watch, components=COMPONENTS)
    t_single = time.monotonic() - t0
    assert len(want["cells"]) >= 2000
    del m

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(workers=2, cpus_per_worker=2)
    try:
        ray.init(address=cluster.address, log_to_driver=False, _node_ip_address="127.0.0.1")
        assert alive_nodes() == 3
        killed = []
        arrived = []

        def on_cells(cells):
            arrived.extend(cells)
            if not killed:  # after the first part: the other node has parts in flight
                killed.extend(cluster.kill_node(1))

        stats = {}
        t0 = time.monotonic()
        got = vray.patch(str(path), base, source, watch, components=COMPONENTS,
                         address=cluster.address, actors=2, stream=on_cells, stats=stats)
        t_cluster = time.monotonic() - t0
        print(f"\nsingle process {t_single:.1f}s, cluster with a node killed {t_cluster:.1f}s,"
              f" {stats}, killed {len(killed)} processes")
        assert killed, "no process of worker node 1 was found to kill"
        assert stats["retried"] >= 1
        # The GCS declares a node dead only after its health checks fail (about 15 s with
        # Ray's defaults), and a fast sweep can end before that.
        assert wait_alive_nodes(2, timeout=90) == 2
        keys = [(c["component"], c["layer"], c["position"], c["head"]) for c in arrived]
        assert len(keys) == len(set(keys)) == len(want["cells"])  # nothing lost or duplicated
        assert got == want
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()
    assert not cluster.pids()

"""vene.ray on a local Ray instance (one node): sweeps equal the single-process results, and
a killed actor's parts run again elsewhere, each part taken once."""

import numpy as np
import pytest

import vene

ray = pytest.importorskip("ray")
import vene.ray as vray  # noqa: E402
from conftest import FIXTURES  # noqa: E402

GPT2 = str(FIXTURES / "hf" / "gpt2")
BASE, SOURCE = [21, 92, 57, 86, 67, 15], [53, 36, 16, 49, 62, 50]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # Ray gives a starting node 30 s to register; on a loaded machine that can pass.
    for attempt in range(3):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield
    ray.shutdown()


def test_patch_equals_single_process():
    m = vene.Model.load(GPT2)
    comps = ["block_output", "head_attention_value_output", "mlp_output"]
    want = vene.patch(m, BASE, SOURCE, watch=[3, 4], components=comps, batch_size=8)
    seen = []
    got = vray.patch(GPT2, BASE, SOURCE, watch=[3, 4], components=comps, batch_size=8,
                     address=None, actors=2, progress=False, stream=seen.extend)
    assert got == want
    assert len(seen) == len(want["cells"]) == 2 * (1 + 4 + 1) * 6


def test_trace_equals_single_process():
    m = vene.Model.load(GPT2)
    cases = [(BASE, (1, 3), 7), (SOURCE, (0, 2), 9), (BASE[:4], (2, 3), 11)]
    want = [vene.trace(m, *c, samples=3) for c in cases]
    got = vray.trace(GPT2, cases, samples=3, address=None, actors=2, progress=False)
    assert got == want


def requests():
    rng = np.random.default_rng(0)
    return [{"base": {"input_ids": [rng.integers(1, 90, 6).tolist()]},
             "sources": [{"input_ids": [rng.integers(1, 90, 6).tolist()]}],
             "unit_locations": {"sources->base": int(rng.integers(0, 6))}}
            for _ in range(40)]


def test_sweep_equals_single_process():
    config = [{"layer": 1, "component": "block_output", "unit": "pos",
               "intervention_type": "VanillaIntervention"}]
    iv = vene.IntervenableModel(config, vene.Model.load(GPT2))
    want = [iv.run_request(r) for r in requests()]
    got = vray.sweep(GPT2, requests(), config=config, address=None, actors=2, chunk=6,
                     progress=False)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert set(g) == set(w)
        for k in w:
            np.testing.assert_array_equal(g[k], w[k])


def test_killed_actor_parts_run_elsewhere():
    parts = [dict(base=BASE, source=SOURCE, watch=[3], components=["block_output"],
                  positions=[p], layers=None, heads=None, batch_size=8) for p in range(6)]
    s = vray.Scheduler(GPT2, parts, "patch", [2] * 6, actors=2, in_flight=2, progress=False)
    got = []
    for part, r in s.stream():
        if not got:
            # Wait until actor 0 is up (else a fast actor 1 can deliver first while actor 0 is
            # still starting, and killing it loses no part); then its parts, in flight or
            # given to it next, must run again on another actor.
            ray.get(s.actors[0].node.remote())
            ray.kill(s.actors[0])
        got.append(part)
    assert sorted(got) == list(range(6))
    assert s.retried >= 1 and s.actors_started >= 3

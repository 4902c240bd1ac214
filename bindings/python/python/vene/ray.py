"""Sweeps on a Ray cluster: each actor loads the model once and runs whole parts of a sweep
(a part's cells are batched into few forwards); results stream back with a progress bar; the
parts of a failed or killed worker run again elsewhere; the result is exactly what one process
returns (parts are merged in the single-process order, each part counted once).

    import vene.ray
    r = vene.ray.patch("model.gguf", base_ids, source_ids, watch=[tid], address="auto",
                       components=["block_output", "mlp_output"], actors=4)

- ``sweep``: many intervention requests (``vene run`` bodies) on one config.
- ``patch``: an activation-patching sweep (``vene.patch``), split by position.
- ``trace``: causal tracing (``vene.trace``) of many facts, one part per fact.
"""

import sys
import time

import ray

import vene

__all__ = ["sweep", "patch", "trace", "Scheduler"]


@ray.remote(max_restarts=0, max_task_retries=0)
class _Worker:
    """Holds one loaded model (and intervenables built on it, one per config)."""

    def __init__(self, model_path, weights):
        import vene as _vene

        self._vene = _vene
        self.model = _vene.Model.load(str(model_path), weights=weights)
        self._ivs = {}

    def node(self):
        return ray.get_runtime_context().get_node_id()

    def run(self, part, kind, args):
        if kind == "patch":
            return part, self._vene.patch(self.model, **args)
        if kind == "trace":
            return part, self._vene.trace(self.model, **args)
        if kind == "requests":
            key = args["config"]
            if key not in self._ivs:
                self._ivs[key] = self._vene.IntervenableModel(key, self.model, args["tensors"])
            iv = self._ivs[key]
            return part, [iv.run_request(b, args["tensors"]) for b in args["bodies"]]
        raise ValueError(f"unknown part kind {kind!r}")


class _Bar:
    """A one-line progress bar on stderr (cells done, rate, retried parts)."""

    def __init__(self, total, what, enabled):
        self.total, self.what, self.enabled = total, what, enabled
        self.t0 = time.monotonic()

    def show(self, done, retried):
        if not self.enabled:
            return
        w = 30
        fill = int(w * done / max(self.total, 1))
        rate = done / max(time.monotonic() - self.t0, 1e-9)
        extra = f", {retried} parts retried" if retried else ""
        sys.stderr.write(f"\r{self.what} [{'=' * fill}{' ' * (w - fill)}] {done}/{self.total}"
                         f" {rate:.1f}/s{extra}")
        if done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


class Scheduler:
    """Runs parts on ``actors`` model-holding actors, ``in_flight`` parts queued per actor.
    A part whose actor dies is queued again and the actor replaced; a part's result is taken
    once. ``stream()`` yields ``(part, result)`` as parts finish."""

    def __init__(self, model_path, parts, kind, sizes, actors=2, weights=None, in_flight=2,
                 progress=True, what="cells", max_attempts=4, actor_options=None):
        self.model_path, self.weights = str(model_path), weights
        self.parts, self.kind, self.sizes = parts, kind, sizes
        self.n_actors, self.in_flight, self.max_attempts = actors, in_flight, max_attempts
        self.actor_options = {"num_cpus": 1, "scheduling_strategy": "SPREAD",
                              **(actor_options or {})}
        self.bar = _Bar(sum(sizes), what, progress)
        self.retried = 0
        self.actors_started = 0

    def _new_actor(self):
        self.actors_started += 1
        return _Worker.options(**self.actor_options).remote(self.model_path, self.weights)

    def stream(self):
        queue = list(range(len(self.parts)))
        attempts = [0] * len(self.parts)
        done = set()
        pending = {}  # object ref -> (actor index, part)
        self.actors = [self._new_actor() for _ in range(self.n_actors)]
        # An actor gets parts once it has started (a replacement may wait for room on a node;
        # meanwhile the live actors take the queue).
        starting = {a.node.remote(): i for i, a in enumerate(self.actors)}
        alive = [False] * len(self.actors)
        load = [0] * len(self.actors)
        cells = 0
        self.bar.show(0, 0)
        try:
            while len(done) < len(self.parts):
                for i, a in enumerate(self.actors):
                    while alive[i] and load[i] < self.in_flight and queue:
                        p = queue.pop(0)
                        attempts[p] += 1
                        ref = a.run.remote(p, self.kind, self.parts[p])
                        pending[ref] = (i, p)
                        load[i] += 1
                if not pending and not starting:
                    raise RuntimeError("no live actor is left to run the sweep")
                ready, _ = ray.wait(list(pending) + list(starting), num_returns=1, timeout=5.0)
                for ref in ready:
                    if ref in starting:
                        i = starting.pop(ref)
                        try:
                            ray.get(ref)
                            alive[i] = True
                        except ray.exceptions.RayError:
                            starting[self._replace(i, alive, load)] = i
                        continue
                    i, p = pending.pop(ref)
                    load[i] -= 1
                    try:
                        part, result = ray.get(ref)
                    except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                            ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError):
                        lost = [p] + [q for r, (j, q) in pending.items() if j == i]
                        for r in [r for r, (j, _) in pending.items() if j == i]:
                            del pending[r]
                        for q in lost:
                            if q in done:
                                continue
                            if attempts[q] >= self.max_attempts:
                                raise RuntimeError(f"part {q} failed {attempts[q]} times")
                            self.retried += 1
                            queue.insert(0, q)
                        if alive[i]:
                            starting[self._replace(i, alive, load)] = i
                        continue
                    if part in done:  # a duplicate of a part that was retried
                        continue
                    done.add(part)
                    cells += self.sizes[part]
                    self.bar.show(cells, self.retried)
                    yield part, result
        finally:
            for a in self.actors:
                try:
                    ray.kill(a)
                except Exception:
                    pass

    def _replace(self, i, alive, load):
        """Actor ``i`` died: a new one takes its place; returns the ref that says it started."""
        try:
            ray.kill(self.actors[i])
        except Exception:
            pass
        self.actors[i] = self._new_actor()
        alive[i], load[i] = False, 0
        return self.actors[i].node.remote()


def _init(address):
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, include_dashboard=False)


def patch(model_path, base, source, watch, components=("block_output",), layers=None,
          positions=None, heads=None, batch_size=32, address="auto", actors=2, weights=None,
          progress=True, stream=None, stats=None, **scheduler):
    """``vene.patch`` on a Ray cluster: the cells of each position form one part.
    Returns the same dict as ``vene.patch(vene.Model.load(model_path), ...)``;
    ``stream(cells)`` sees each part's cells as they arrive; a ``stats`` dict gets the number
    of parts retried and actors started."""
    _init(address)
    components = list(components)
    base, source = list(base), list(source)
    positions = list(range(len(base))) if positions is None else list(positions)
    info = vene.Model.load(str(model_path), weights=weights).info if layers is None else None
    n_layers = len(layers) if layers is not None else info["n_layers"]
    n_heads = (len(heads) if heads is not None else (info or {}).get("n_heads"))
    # One part per position: a part then runs exactly the batches the single-process sweep
    # runs at that position (f32 matmuls can differ in the last bit when rows are batched
    # differently, so finer parts would not give the same numbers).
    per_position = sum(n_layers * (n_heads if c.startswith("head_") and n_heads else 1)
                       for c in components)
    parts = [dict(base=base, source=source, watch=list(watch), components=components,
                  layers=layers, positions=[p], heads=heads, batch_size=batch_size)
             for p in positions]
    sizes = [per_position] * len(parts)
    run = Scheduler(model_path, parts, "patch", sizes, actors=actors, weights=weights,
                    progress=progress, **scheduler)
    results = {}
    for part, r in run.stream():
        results[part] = r
        if stream is not None:
            stream(r["cells"])
    if stats is not None:
        stats.update(retried=run.retried, actors_started=run.actors_started)
    first = results[0]
    order = {c: i for i, c in enumerate(components)}
    cells = sorted((c for r in results.values() for c in r["cells"]),
                   key=lambda c: (order[c["component"]], c["layer"], c["position"],
                                  -1 if c["head"] is None else c["head"]))
    return {**first, "positions": positions, "cells": cells}


def trace(model_path, cases, kinds=("block_output", "mlp_output", "attention_output"),
          address="auto", actors=2, weights=None, progress=True, **options):
    """Causal tracing of many facts on a Ray cluster: ``cases`` is a list of
    ``(tokens, (subject_start, subject_end), target)``; one part per case (a trace batches the
    rows of its kinds together, so a case is not split). Returns
    ``[vene.trace(model, *case, kinds=kinds, **options) for case in cases]``."""
    _init(address)
    parts = [dict(tokens=list(t), subject=tuple(s), target=g, kinds=list(kinds), **options)
             for t, s, g in cases]
    run = Scheduler(model_path, parts, "trace", [1] * len(parts), actors=actors,
                    weights=weights, progress=progress, what="traces")
    results = dict(run.stream())
    return [results[i] for i in range(len(parts))]


def sweep(model_path, requests, config=None, tensors=None, address="auto", actors=2,
          weights=None, chunk=16, progress=True, stream=None, **scheduler):
    """Runs many request bodies (``vene run``'s fields: base, sources, unit_locations, ...)
    on ``config`` (pyvene's, as for ``vene.IntervenableModel``), ``chunk`` requests per part.
    Returns each request's outputs (name -> array), in order, as
    ``[iv.run_request(r, tensors) for r in requests]`` would in one process."""
    _init(address)
    requests = list(requests)
    cfg = vene._config_json(config)
    parts = [dict(config=cfg, tensors=tensors, bodies=requests[i:i + chunk])
             for i in range(0, len(requests), chunk)]
    sizes = [len(p["bodies"]) for p in parts]
    run = Scheduler(model_path, parts, "requests", sizes, actors=actors, weights=weights,
                    progress=progress, what="requests", **scheduler)
    out = [None] * len(parts)
    for part, r in run.stream():
        out[part] = r
        if stream is not None:
            stream(part * chunk, r)
    return [o for r in out for o in r]

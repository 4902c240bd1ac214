"""The pyvene oracle suite through the Python API: every case under tests/fixtures/pyvene/
(computed by real pyvene 0.1.8, replayed by `vene run` in tests/pyvene_oracle.rs) is run with
pyvene's call forms (base, sources, unit_locations, subspaces, source_representations,
intervention_state as arrays) and compared with the case's expected tensors at the same
tolerances. A second pass runs each case's body as `vene run` reads it (run_request)."""

import json

import numpy as np
import pytest

import vene
from conftest import PYVENE, read_safetensors, tolerance

CASES = sorted(p.parent for p in PYVENE.glob("*/request.json"))
_models = {}


def model(path, options):
    key = (str(path.resolve()), json.dumps(options, sort_keys=True))
    if key not in _models:
        _models[key] = vene.Model.load(str(path), **options)
    return _models[key]


def open_case(case):
    req = json.loads((case / "request.json").read_text())
    tensors = read_safetensors(case / req["tensors"]) if req.get("tensors") else {}
    for p in req.get("plugins") or []:
        vene.load_plugin(str(case / p))
    options = {}
    if req.get("model_options"):
        options["weights"] = req["model_options"]["weights"]
    m = model(case / req["model"], options)
    if req.get("knob"):
        iv = vene.IntervenableModel.load(case / req["knob"], m)
    else:
        iv = vene.IntervenableModel(req.get("config"), m, tensors=tensors or None)
    return req, tensors, iv


def check(case, got):
    want = read_safetensors(case / "expected.safetensors")
    assert want, f"{case.name}: no expected tensors"
    for name, w in want.items():
        assert name in got, f"{case.name}: {name} missing; got {sorted(got)}"
        g = got[name]
        assert g.shape == w.shape, f"{case.name}: {name} shape {g.shape}, expected {w.shape}"
        tol = tolerance(name)
        if tol is None:
            np.testing.assert_array_equal(g.astype(np.int64), w.astype(np.int64), err_msg=name)
        else:
            d = np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)), initial=0.0)
            assert d <= tol, f"{case.name}: {name} max diff {d:.3e} > {tol:.0e}"


def by_name(tensors, ref):
    """A request's tensor reference (a name, a list or a dict of names) as arrays."""
    if ref is None:
        return None
    if isinstance(ref, str):
        return tensors[ref]
    if isinstance(ref, list):
        return [by_name(tensors, r) for r in ref]
    return {k: by_name(tensors, r) for k, r in ref.items()}


def test_cases_found():
    assert len(CASES) > 300


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_call_forms(case):
    req, tensors, iv = open_case(case)
    states = req.get("intervention_state")
    if isinstance(states, list):
        states = [by_name(tensors, s) for s in states]
    elif isinstance(states, dict):
        states = {k: by_name(tensors, s) for k, s in states.items()}
    got = iv.run(
        base=req["base"],
        sources=req.get("sources"),
        unit_locations=req.get("unit_locations"),
        subspaces=req.get("subspaces"),
        source_representations=by_name(tensors, req.get("source_representations")),
        intervention_state=states,
        output_original_output=req.get("output_original_output", False),
        logits=req.get("logits"),
        generate=req.get("generate"),
    )
    check(case, got)


@pytest.mark.parametrize("case", CASES[::7], ids=[c.name for c in CASES[::7]])
def test_request_body(case):
    req, tensors, iv = open_case(case)
    setup = {"model", "model_options", "config", "knob", "plugins", "wasm_limits", "tensors"}
    body = {k: v for k, v in req.items() if k not in setup}
    check(case, iv.run_request(body, tensors))

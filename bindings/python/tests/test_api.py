"""The Python API beyond the oracle replay: zero-copy outputs, errors carrying vene's message,
Python-function interventions against the built-ins, pyvene's return forms, generate,
training with a progress callback, knobs, the patch sweep against `vene patch`."""

import json
import subprocess

import numpy as np
import pytest

import vene
from conftest import FIXTURES, PYVENE, REPO, read_safetensors

GPT2 = str(FIXTURES / "hf" / "gpt2")
BASE = {"input_ids": [[21, 92, 57, 86, 67, 15], [53, 36, 16, 49, 62, 50]]}
SOURCE = {"input_ids": [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]]}
VENE = REPO / "target" / "release" / "vene"


@pytest.fixture(scope="module")
def gpt2():
    return vene.Model.load(GPT2)


def rep(kind, **kw):
    return {"layer": 1, "component": "block_output", "unit": "pos", "intervention_type": kind, **kw}


def test_outputs_view_engine_memory(gpt2):
    iv = vene.IntervenableModel([rep("VanillaIntervention")], gpt2)
    out = iv.run(BASE, [SOURCE], {"sources->base": 2})
    assert set(out) == {"intervened.logits", "intervened.last_hidden_state"}
    for a in out.values():
        assert isinstance(a.base, vene.TensorOwner)  # numpy keeps vene's tensor alive
        assert a.ctypes.data == a.base.address       # ... and reads its buffer in place
        assert not a.flags.owndata and not a.flags.writeable
    # The buffer survives the dict and the intervenable.
    logits = out["intervened.logits"]
    first = logits.copy()
    del out, iv
    np.testing.assert_array_equal(logits, first)


def test_errors_carry_venes_message(gpt2, tmp_path):
    config = {"representations": [rep("VanillaIntervention", layer=7)]}
    with pytest.raises(vene.VeneError) as e:
        vene.IntervenableModel(config, gpt2)
    # `vene run` on the same request fails with the same message.
    req = tmp_path / "bad.json"
    req.write_text(json.dumps({"model": GPT2, "config": config, "base": BASE}))
    r = subprocess.run([str(VENE), "run", "--request", str(req), "--out",
                        str(tmp_path / "o.safetensors")], capture_output=True, text=True)
    assert r.returncode != 0
    assert str(e.value) and str(e.value) in r.stderr, (str(e.value), r.stderr)
    assert "layer 7" in str(e.value)
    iv = vene.IntervenableModel([rep("VanillaIntervention")], gpt2)
    with pytest.raises(vene.VeneError, match="index 99 is out of range"):
        iv(BASE, [SOURCE], {"sources->base": 99})
    with pytest.raises(vene.VeneError, match="unknown request field"):
        iv.run_request({"bases": BASE})
    with pytest.raises(vene.VeneError, match="weights"):
        vene.Model.load(GPT2, weights="f7")


def same_as_builtin(gpt2, name, func, builtin, needs_source=True, **call):
    vene.register_intervention(name, func, needs_source)
    try:
        ours = vene.IntervenableModel([rep(name)], gpt2).run(BASE, **call)
        theirs = vene.IntervenableModel([rep(builtin)], gpt2).run(BASE, **call)
    finally:
        vene.unregister_intervention(name)
    assert set(ours) == set(theirs)
    for k in theirs:
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
    return theirs


def test_python_add_equals_addition(gpt2):
    same_as_builtin(gpt2, "py/add", lambda b, s: b + s, "AdditionIntervention",
                    sources=[SOURCE], unit_locations={"sources->base": 3})


def test_python_add_with_subspaces_equals_addition(gpt2):
    # vene applies the subspace selection around the function, as for the built-ins.
    same_as_builtin(gpt2, "py/add", lambda b, s: b + s, "AdditionIntervention",
                    sources=[SOURCE], unit_locations={"sources->base": 3},
                    subspaces=[[[0, 1, 2, 5]] * 2])


def test_python_zero_equals_zero(gpt2):
    out = same_as_builtin(gpt2, "py/zero", lambda b, s: np.zeros_like(b), "ZeroIntervention",
                          needs_source=False, unit_locations={"base": 1})
    plain = vene.IntervenableModel(None, gpt2).run(BASE)
    assert not np.array_equal(out["intervened.logits"], plain["intervened.logits"])


def test_python_intervention_errors(gpt2):
    @vene.intervention("py/bad_shape")
    def bad(b, s):
        return b[..., :3]

    @vene.intervention("py/raises")
    def raises(b, s):
        raise ValueError("no luck")

    try:
        with pytest.raises(vene.VeneError, match="must return the base's shape"):
            vene.IntervenableModel([rep("py/bad_shape")], gpt2).run(BASE, [SOURCE])
        with pytest.raises(vene.VeneError, match="no luck"):
            vene.IntervenableModel([rep("py/raises")], gpt2).run(BASE, [SOURCE])
    finally:
        vene.unregister_intervention("py/bad_shape")
        vene.unregister_intervention("py/raises")


def test_pyvene_return_forms(gpt2):
    iv = vene.IntervenableModel([rep("VanillaIntervention")], gpt2)
    original, intervened = iv(BASE, [SOURCE], {"sources->base": 2})
    assert original is None and intervened.logits.shape == (2, 6, 96)
    original, intervened = iv(BASE, [SOURCE], {"sources->base": 2}, output_original_output=True)
    plain = vene.IntervenableModel(None, gpt2).run(BASE)["intervened.logits"]
    np.testing.assert_array_equal(original.logits, plain)
    iv = vene.IntervenableModel([rep("CollectIntervention")], gpt2)
    (original, collected), intervened = iv(BASE, unit_locations={"base": 2})
    assert len(collected) == 1 and collected[0].shape[-1] == 32
    np.testing.assert_array_equal(intervened.logits, plain)
    d = iv(BASE, unit_locations={"base": 2}, return_dict=True)
    np.testing.assert_array_equal(d.collected_activations[0], collected[0])


def test_generate_matches_fixture():
    case = PYVENE / "gen_gpt2_steer_default"
    req = json.loads((case / "request.json").read_text())
    tensors = read_safetensors(case / req["tensors"]) if req.get("tensors") else {}
    m = vene.Model.load(str(case / req["model"]))
    iv = vene.IntervenableModel(req["config"], m, tensors=tensors or None)
    g = dict(req["generate"])
    srs = req.get("source_representations")
    _, out = iv.generate(req["base"], sources=req.get("sources"),
                         unit_locations=req.get("unit_locations"),
                         source_representations=tensors[srs] if isinstance(srs, str) else None,
                         **g)
    want = read_safetensors(case / "expected.safetensors")["generated.ids"]
    np.testing.assert_array_equal(out.sequences, want)


def das_data(n=8):
    rng = np.random.default_rng(0)
    data = []
    for _ in range(n):
        base = rng.integers(1, 90, 6).tolist()
        source = rng.integers(1, 90, 6).tolist()
        data.append({"base": base, "sources": [source], "locations": [[5]],
                     "labels": [int(source[-1])]})
    return data


def test_train_progress_and_stop(gpt2, tmp_path):
    config = [rep("RotatedSpaceIntervention", layer=0)]
    iv = vene.IntervenableModel(config, gpt2)
    before = iv.state(0)
    seen = []
    report = iv.train(das_data(), progress=seen.append, epochs=2, batch_size=4, lr=0.05)
    assert report["completed"] and report["steps"] == 4 == len(seen)
    assert [p["step"] for p in seen] == [1, 2, 3, 4]
    assert all(p["total_steps"] == 4 and np.isfinite(p["loss"]) for p in seen)
    assert [p["epoch"] for p in seen] == [0, 0, 1, 1]
    after = iv.state(0)
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert changed, "training changed no parameter"
    ev = iv.evaluate(das_data(), batch_size=4)
    assert ev["examples"] == 8 and 0.0 <= ev["iia"] <= 1.0
    # Returning False stops after the first step.
    iv2 = vene.IntervenableModel(config, gpt2)
    r = iv2.train(das_data(), progress=lambda p: False, epochs=2, batch_size=4)
    assert not r["completed"] and r["steps"] == 1
    # An exception in the callback stops training and reaches the caller.
    def boom(p):
        raise RuntimeError("stop here")
    with pytest.raises(RuntimeError, match="stop here"):
        vene.IntervenableModel(config, gpt2).train(das_data(), progress=boom, epochs=1)
    with pytest.raises(vene.VeneError, match="unknown training option"):
        iv.train(das_data(), epoch=1)
    # Knobs: save, load, same outputs.
    iv.save(tmp_path / "knob")
    back = vene.IntervenableModel.load(tmp_path / "knob", gpt2)
    a = iv.run(BASE, [SOURCE], {"sources->base": 5})
    b = back.run(BASE, [SOURCE], {"sources->base": 5})
    np.testing.assert_array_equal(a["intervened.logits"], b["intervened.logits"])


def test_patch_equals_vene_patch(tmp_path):
    m = vene.Model.load(GPT2)
    base, source = [21, 92, 57, 86, 67, 15], [53, 36, 16, 49, 62, 50]
    r = vene.patch(m, base, source, watch=[3, 4], components=["block_output", "mlp_output"],
                   batch_size=5)
    assert len(r["cells"]) == 2 * 2 * 6
    # Splitting a sweep by position and merging gives the same cells (what vene.ray does).
    parts = [vene.patch(m, base, source, watch=[3, 4],
                        components=["block_output", "mlp_output"], positions=[p],
                        batch_size=5)["cells"] for p in range(6)]
    merged = sorted((c for part in parts for c in part),
                    key=lambda c: (["block_output", "mlp_output"].index(c["component"]),
                                   c["layer"], c["position"]))
    assert merged == r["cells"]


def test_wasm_plugin_equals_addition(gpt2):
    types = vene.load_plugin(str(REPO / "plugins" / "examples" / "wat" / "add_wat.wat"))
    assert "wasm/add_wat" in types
    call = dict(sources=[SOURCE], unit_locations={"sources->base": 3})
    ours = vene.IntervenableModel([rep("wasm/add_wat")], gpt2).run(BASE, **call)
    theirs = vene.IntervenableModel([rep("AdditionIntervention")], gpt2).run(BASE, **call)
    np.testing.assert_allclose(ours["intervened.logits"], theirs["intervened.logits"],
                               rtol=0, atol=1e-5)

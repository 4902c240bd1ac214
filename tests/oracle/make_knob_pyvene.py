#!/usr/bin/env python3
"""Fixtures of pyvene's own save() format, made by REAL pyvene 0.1.8, for tests/knob.rs.

For each case this builds a pyvene IntervenableModel on one of the tiny HF models of
tests/fixtures/hf/ (built by tests/oracle/make_fixtures.py), gives its trainable interventions
fixed random parameters (and, for some, a few real Adam steps of train-like updates), runs one
forward, and calls pyvene's `save()`. Each case directory tests/fixtures/knob/pyvene_<case>/
then holds:
  config.json, intkey_<key>.bin   exactly what pyvene's save() wrote (torch pickles)
  request.json                    a `vene run` request that loads the directory with
                                  "knob": "." and repeats the forward
  expected.safetensors            pyvene's output of that forward: intervened.logits

Run from the repository root (python3 with pyvene 0.1.8, torch 2.5.1 or 2.6, transformers
4.51.3 or 4.48.2, safetensors; CPU, a few seconds):
    python3 tests/oracle/make_knob_pyvene.py
"""
import json
import os
import shutil

import torch

import pyvene as pv
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "fixtures"))
OUT = os.path.join(FIXTURES, "knob")
HF = os.path.join(FIXTURES, "hf")

BASE = [[21, 92, 57, 86, 67, 15], [53, 36, 16, 49, 62, 50]]
SRC = [[40, 11, 73, 5, 88, 31], [64, 27, 90, 14, 45, 77]]
SRC_B = [[19, 58, 3, 81, 26, 69], [7, 95, 38, 60, 12, 84]]
LOC = {"sources->base": [[[[2], [1]]], [[[4], [3]]]]}
LOC2 = {"sources->base": [[[[2], [1]], [[3], [3]]], [[[4], [3]], [[5], [0]]]]}


def load_model(family):
    m = AutoModelForCausalLM.from_pretrained(os.path.join(HF, family), attn_implementation="eager")
    m.eval()
    return m


def orthogonal(n, g):
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q.float()


def init(inter, g):
    """Fixed random parameters through the intervention's own modules."""
    with torch.no_grad():
        if hasattr(inter, "rotate_layer"):
            p = inter.rotate_layer.parametrizations.weight
            n, k = p.original.shape
            x = torch.randn(n, k, generator=g) * 0.2
            if n != k:
                signs = torch.where(torch.rand(k, generator=g) < 0.5, -1.0, 1.0)
                x[torch.arange(k), torch.arange(k)] = signs
            p.original.copy_(x)
            p[0].base.copy_(orthogonal(n, g))
        if hasattr(inter, "intervention_boundaries"):
            inter.intervention_boundaries.copy_(torch.tensor([0.35]))
            inter.temperature.copy_(torch.tensor(0.8))
        if hasattr(inter, "masks"):
            inter.masks.copy_(torch.randn(inter.masks.shape, generator=g) * 2.0)
            inter.temperature.copy_(torch.tensor(1.0))
        if hasattr(inter, "mask"):
            inter.mask.copy_(torch.randn(inter.mask.shape, generator=g) * 0.01)
        if hasattr(inter, "autoencoder"):
            for name, p in inter.autoencoder.named_parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if name.endswith("weight") else 0.1))


def rep(layer, component, cls, **kw):
    return pv.RepresentationConfig(layer=layer, component=component, unit="pos",
                                   intervention_type=cls, **kw)


CASES = {
    "rotated": dict(reps=[rep(0, "block_output", pv.RotatedSpaceIntervention)],
                    interchange_dim={0: 12}, train_steps=3),
    "low_rank": dict(reps=[rep(1, "mlp_output", pv.LowRankRotatedSpaceIntervention,
                               low_rank_dimension=4)], train_steps=3),
    "boundless": dict(reps=[rep(0, "block_output", pv.BoundlessRotatedSpaceIntervention)]),
    "sigmoid_mask_rotated": dict(
        reps=[rep(1, "block_output", pv.SigmoidMaskRotatedSpaceIntervention)]),
    "sigmoid_mask": dict(reps=[rep(0, "mlp_output", pv.SigmoidMaskIntervention)]),
    "autoencoder": dict(reps=[rep(1, "block_output", pv.AutoencoderIntervention, latent_dim=8)],
                        interchange_dim={0: [0, 2, 5]}),
    "addition_constant": dict(
        reps=[rep(1, "block_output", pv.AdditionIntervention,
                  source_representation="CONST")], sources=None),
    # The pickle holds pyvene's whole state dict: embed_dim, interchange_dim 8, the constant.
    "vanilla_constant": dict(
        reps=[rep(0, "block_output", pv.VanillaIntervention, source_representation="CONST")],
        interchange_dim={0: 8}, sources=None),
    "vanilla_and_low_rank": dict(
        reps=[rep(0, "attention_output", pv.VanillaIntervention),
              rep(1, "block_output", pv.LowRankRotatedSpaceIntervention, low_rank_dimension=3)],
        sources=[SRC, SRC_B], loc=LOC2),
    "llama_rotated": dict(model="llama", reps=[rep(1, "block_output",
                                                   pv.RotatedSpaceIntervention)],
                          interchange_dim={0: 10}),
}


def main():
    if os.path.isdir(OUT):
        for d in os.listdir(OUT):
            if d.startswith("pyvene_"):
                shutil.rmtree(os.path.join(OUT, d))
    os.makedirs(OUT, exist_ok=True)
    for name, c in CASES.items():
        family = c.get("model", "gpt2")
        g = torch.Generator().manual_seed(sum(map(ord, name)))
        model = load_model(family)
        reps = []
        for r in c["reps"]:
            if isinstance(r.source_representation, str):
                r = r._replace(source_representation=torch.randn(32, generator=g) * 0.5)
            reps.append(r)
        im = pv.IntervenableModel(pv.IntervenableConfig(representations=reps), model)
        for i, key in enumerate(im.sorted_keys):
            inter = im.interventions[key]
            init(inter, g)
            if i in c.get("interchange_dim", {}):
                inter.set_interchange_dim(c["interchange_dim"][i])
        sources = c.get("sources", [SRC])
        loc = c.get("loc", LOC)
        base = {"input_ids": torch.tensor(BASE)}
        srcs = None if sources is None else [{"input_ids": torch.tensor(s)} for s in sources]
        ul = {"base": [[[4], [3]]]} if sources is None else loc
        # A few optimizer steps, so the saved weights are what training leaves behind.
        if c.get("train_steps"):
            opt = torch.optim.Adam(im.get_trainable_parameters(), lr=5e-2)
            target = torch.tensor([7, 11])
            for _ in range(c["train_steps"]):
                _, out = im(base, srcs, ul)
                loss = torch.nn.functional.cross_entropy(out.logits[:, -1], target)
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            _, out = im(base, srcs, ul)
        d = os.path.join(OUT, f"pyvene_{name}")
        im.save(d)
        request = {
            "_what": f"pyvene save() of a {name} intervention, loaded with \"knob\"",
            "model": f"../../hf/{family}",
            "knob": ".",
            "base": {"input_ids": BASE},
            "sources": None if sources is None else [{"input_ids": s} for s in sources],
            "unit_locations": ul,
        }
        with open(os.path.join(d, "request.json"), "w") as f:
            json.dump(request, f, indent=1)
            f.write("\n")
        save_file({"intervened.logits": out.logits.detach().contiguous()},
                  os.path.join(d, "expected.safetensors"))
        files = sorted(os.listdir(d))
        print(f"{name:24s} {files}")


if __name__ == "__main__":
    main()

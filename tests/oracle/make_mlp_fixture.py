"""Oracle fixtures for vene's MLP classifier, computed by pyvene 0.1.8 itself.

Builds seeded `pyvene.models.mlp.modelings_mlp.MLPForClassification` models, saves each with
`save_pretrained(..., safe_serialization=True)` (config.json + model.safetensors) under
tests/fixtures/mlp/<name>/, and records, for a few fixed inputs, the logits and the tensor at
every pyvene site (block_input, mlp_activation, block_output of each layer) in
tests/fixtures/mlp/<name>/oracle.safetensors.

Site tensors are taken with forward hooks on exactly the modules pyvene's
`mlp_classifier_type_to_module_mapping` names (`mlp.h[L]` input/output, `mlp.h[L].act`
output), and cross-checked against an IntervenableModel with CollectIntervention on every site.

oracle.safetensors keys, per case <c>:
  <c>.embeds or <c>.ids   the input (ids as int64)
  <c>.position_ids        only when the case passes position ids
  <c>.logits              MLPForClassification(...).logits
  <c>.L<l>.<component>    the site tensor, shaped as pyvene's hook sees it

Run from the repository root:  python3 tests/oracle/make_mlp_fixture.py
Needs: pyvene==0.1.8, torch, transformers, safetensors.
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file

import pyvene as pv
from pyvene.models.mlp.modelings_mlp import MLPConfig, MLPForClassification
from pyvene.models.mlp.modelings_intervenable_mlp import (
    mlp_classifier_type_to_module_mapping as MODULES,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "mlp")
COMPONENTS = ["block_input", "mlp_activation", "block_output"]


def module_at(model, path):
    """Resolves pyvene's module path strings such as 'mlp.h[1].act'."""
    return eval("model." + path, {"model": model})


def run_with_sites(model, kwargs):
    n_layer = model.config.n_layer
    seen = {}
    handles = []
    for comp in COMPONENTS:
        path, hook_type = MODULES[comp]
        for layer in range(n_layer):
            mod = module_at(model, path % layer)
            key = f"L{layer}.{comp}"
            if hook_type == pv.models.constants.CONST_INPUT_HOOK:
                def pre(m, args, key=key):
                    seen[key] = args[0].detach().clone()
                handles.append(mod.register_forward_pre_hook(pre))
            else:
                def post(m, args, out, key=key):
                    seen[key] = out.detach().clone()
                handles.append(mod.register_forward_hook(post))
    with torch.no_grad():
        logits = model(**kwargs, return_dict=True).logits
    for h in handles:
        h.remove()
    return logits.detach().clone(), seen


def pyvene_collect(model, kwargs, layer, comp):
    """The same site read through pyvene's IntervenableModel (position 0 of every row)."""
    cfg = pv.IntervenableConfig(
        representations=[{"layer": layer, "component": comp, "unit": "pos",
                          "max_number_of_units": 1}],
        intervention_types=pv.CollectIntervention,
    )
    im = pv.IntervenableModel(cfg, model)
    im.disable_model_gradients()
    b = next(iter(kwargs.values())).shape[0]
    with torch.no_grad():
        out = im(kwargs, unit_locations={"base": [[[0]] * b]})
    return out[0][1][0]


def make(name, cfg, cases, seed):
    torch.manual_seed(seed)
    model = MLPForClassification(cfg).eval()
    out_dir = os.path.join(ROOT, name)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tensors = {}
    summary = {}
    for case, kwargs in cases.items():
        logits, seen = run_with_sites(model, kwargs)
        for k, v in kwargs.items():
            tensors[f"{case}.{'embeds' if k == 'inputs_embeds' else ('ids' if k == 'input_ids' else k)}"] = v.clone().contiguous()
        tensors[f"{case}.logits"] = logits.contiguous()
        for k, v in seen.items():
            tensors[f"{case}.{k}"] = v.contiguous()
        # Cross-check the hook reading against pyvene's own collection, where pyvene's
        # position gather applies (3-D site tensors).
        x = kwargs.get("inputs_embeds", kwargs.get("input_ids"))
        if x.dim() >= 2 and seen["L0.block_input"].dim() == 3:
            for layer in range(cfg.n_layer):
                for comp in COMPONENTS:
                    got = pyvene_collect(model, kwargs, layer, comp)
                    want = seen[f"L{layer}.{comp}"][:, 0]
                    assert torch.allclose(got.reshape(want.shape), want, atol=1e-6), (case, layer, comp)
        summary[case] = {k[len(case) + 1:]: list(v.shape) for k, v in tensors.items()
                         if k.startswith(case + ".") and ".L" not in k}
    save_file(tensors, os.path.join(out_dir, "oracle.safetensors"))
    print(name, json.dumps(summary))


def main():
    g = torch.Generator().manual_seed(1234)

    # pyvene's usual setting: embeddings in, no embedding layer, gelu, biases, squeezed logits.
    small = MLPConfig(h_dim=16, n_layer=3, num_classes=4, activation_function="gelu",
                      include_bias=True, squeeze_output=True, pdrop=0.3)
    make("small", small, {
        "seq1": {"inputs_embeds": torch.randn(5, 1, 16, generator=g)},
        "seq3": {"inputs_embeds": torch.randn(2, 3, 16, generator=g)},
        "flat": {"inputs_embeds": torch.randn(4, 16, generator=g)},
    }, seed=0)

    # Token and position embeddings, relu, no biases, logits not squeezed.
    emb = MLPConfig(include_emb=True, vocab_size=50, max_position_embeddings=12, h_dim=24,
                    n_layer=2, num_classes=3, activation_function="relu", include_bias=False,
                    squeeze_output=False)
    ids = torch.randint(0, 50, (3, 6), generator=g)
    make("emb", emb, {
        "ids": {"input_ids": ids},
        "ids_pos": {"input_ids": ids, "position_ids": torch.arange(6).repeat(3, 1) + 2},
        "embeds": {"inputs_embeds": torch.randn(2, 1, 24, generator=g)},
    }, seed=1)


if __name__ == "__main__":
    sys.exit(main())

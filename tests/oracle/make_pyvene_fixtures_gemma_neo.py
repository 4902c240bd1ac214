#!/usr/bin/env python3
"""pyvene oracle cases for gpt_neo, gemma and gemma2, by running REAL pyvene 0.1.8 on the tiny
models of tests/fixtures/hf/{gpt_neo,gemma,gemma2} (built by make_fixtures_gemma_neo.py).

How to run (from the repository root; transformers 4.48.2, the version pyvene 0.1.8 pins):

    /work/venv-oracle/bin/python tests/oracle/make_pyvene_fixtures_gemma_neo.py         # all gn_*
    /work/venv-oracle/bin/python tests/oracle/make_pyvene_fixtures_gemma_neo.py NAME    # a subset

Cases are written as tests/fixtures/pyvene/gn_<...>/ in the format (and by the runner) of
make_pyvene_fixtures.py, whose docstring describes the files; tests/pyvene_oracle.rs replays
every case directory. This script only adds and rewrites gn_* directories.

Where pyvene 0.1.8's own tables are wrong for these families, the tables are corrected here
before pyvene runs, so the fixtures hold what pyvene computes on the correct module at the
correct width (transformers' module semantics); every case touched says so in its "_note":
  * gpt_neo: attention_value_output, head_attention_value_output and all q/k/v components point
    at h[L].attn.out_proj / attn.q_proj..., but transformers puts these modules under
    h[L].attn.attention.*; pyvene raises AttributeError. Corrected to attn.attention.*.
    Its "n_head" dimension is the string "num_heads" instead of a tuple (read as characters);
    corrected to ("num_heads",).
  * gemma: head_value_output's dimension reads the misspelt "hhead_dim" (AssertionError);
    corrected to head_dim.
  * gemma, gemma2: query_output and attention_value_output are sized hidden_size, but their real
    width is num_attention_heads * head_dim (64 here, hidden 32: Gemma's head_dim is independent
    of hidden/heads), so pyvene's Vanilla would swap only the first 32 dims and rotations would
    not fit. Corrected to the real width; key/value_output (num_key_value_heads * head_dim = 32
    here) are unchanged.
Generation cases are cross-checked against a plain (uncached) greedy loop with the same steering.
"""

import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_pyvene_fixtures as pf  # noqa: E402
from pyvene.models import intervenable_modelcard as card  # noqa: E402
from transformers import Gemma2ForCausalLM, GemmaForCausalLM, GPTNeoForCausalLM  # noqa: E402

case, rep, full = pf.case, pf.rep, pf.full
SRC, SRC_B, BASE = pf.SRC, pf.SRC_B, pf.BASE
SRC_POS, BASE_POS = pf.SRC_POS, pf.BASE_POS

# --------------------------------------------------------------------------------------------
# Corrections to pyvene 0.1.8's tables (see the docstring).

NEO_MOVED = [
    "attention_value_output", "head_attention_value_output", "query_output", "key_output",
    "value_output", "head_query_output", "head_key_output", "head_value_output",
]
GEMMA_WIDTH = ["query_output", "attention_value_output"]
NOTES = {
    "gpt_neo": (set(NEO_MOVED), "pyvene 0.1.8 maps this gpt_neo component to h[L].attn.<proj>, "
                "which transformers does not have (AttributeError); computed by pyvene with the "
                "path corrected to h[L].attn.attention.<proj>"),
    "gemma": (set(GEMMA_WIDTH) | {"head_value_output"}, "pyvene 0.1.8 sizes gemma's "
              "query_output/attention_value_output by hidden_size (32) instead of heads * "
              "head_dim (64) and reads a misspelt 'hhead_dim' for head_value_output; computed by "
              "pyvene with the real widths"),
    "gemma2": (set(GEMMA_WIDTH), "pyvene 0.1.8 sizes gemma2's query_output/"
               "attention_value_output by hidden_size (32) instead of heads * head_dim (64); "
               "computed by pyvene with the real width"),
}


def correct_pyvene_tables():
    paths = card.type_to_module_mapping[GPTNeoForCausalLM]
    for comp in NEO_MOVED:
        path, *rest = paths[comp]
        assert path.startswith("transformer.h[%s].attn."), path
        paths[comp] = (path.replace(".attn.", ".attn.attention."), *rest)
    card.type_to_dimension_mapping[GPTNeoForCausalLM]["n_head"] = ("num_heads",)
    card.type_to_dimension_mapping[GemmaForCausalLM]["head_value_output"] = ("head_dim",)
    for cls in (GemmaForCausalLM, Gemma2ForCausalLM):
        dims = card.type_to_dimension_mapping[cls]
        for comp in GEMMA_WIDTH:
            dims[comp] = ("num_attention_heads*16",)  # head_dim 16 in both fixtures
    # Both fixtures really have head_dim 16 (the corrected width is heads * head_dim).
    for fam in ("gemma", "gemma2"):
        assert pf.load_model(fam).config.head_dim == 16


# --------------------------------------------------------------------------------------------
# Cases

FIRST = len(pf.CASES)
FAMILIES = {"gpt_neo": 3, "gemma": 2, "gemma2": 2}  # family: layers
COMPONENTS = pf.LLAMA_COMPONENTS  # the 15 components pyvene maps for all three families
KV_SPLIT = {"head_key_output", "head_value_output"}  # gemma's 2 KV heads


def note_for(family, comps):
    affected, text = NOTES[family]
    return text if affected & set(comps) else None


def gn_case(name, what, reps, family, **kw):
    n = note_for(family, [r["component"] for r in reps])
    if n:
        kw["note"] = n
    case(name, what, reps, model=family, **kw)


for family, n_layers in FAMILIES.items():
    # 1. Every component: Vanilla at one position per example, layers in turn (local and global).
    for i, comp in enumerate(COMPONENTS):
        layer = i % n_layers
        if comp.startswith("head_"):
            kv = family != "gpt_neo" and comp in KV_SPLIT
            heads = [[1], [0]] if kv else [[1], [3]]
            loc, unit = full([heads, SRC_POS], [heads, BASE_POS]), "h.pos"
        else:
            loc, unit = full(SRC_POS, BASE_POS), "pos"
        gn_case(f"gn_component_{family}_{comp}",
                f"{family} {comp} (layer {layer}, unit {unit}): Vanilla interchange at one "
                "position per example", [rep(layer, comp, unit=unit)], family, sources=[SRC],
                unit_locations=loc, output_original_output=(i == 0))

    # 2. Heads: whole heads (unit 'h'), and two heads x two positions (unit 'h.pos').
    gn_case(f"gn_heads_h_{family}_head_query_output", f"{family}: unit 'h', heads [1, 3] / "
            "[0, 2] at all positions", [rep(0, "head_query_output", unit="h")], family,
            sources=[SRC], unit_locations=full([[1, 3], [0, 2]], [[1, 3], [2, 0]]))
    kv_heads = [[0, 1], [1, 0]] if family != "gpt_neo" else [[0, 2], [1, 3]]
    gn_case(f"gn_heads_hpos_{family}_head_value_output", f"{family}: unit 'h.pos', two heads x "
            "two positions per example", [rep(1, "head_value_output", unit="h.pos")], family,
            sources=[SRC], unit_locations=full([kv_heads, [[1, 4], [2, 5]]],
                                               [kv_heads, [[3, 4], [1, 5]]]))
    gn_case(f"gn_heads_hpos_{family}_head_attention_value_output", f"{family}: "
            "head_attention_value_output, unit 'h.pos'",
            [rep(n_layers - 1, "head_attention_value_output", unit="h.pos")], family,
            sources=[SRC], unit_locations=full([[[3], [0]], [[2], [1]]],
                                               [[[3], [0]], [[4], [3]]]))

    # 3. Several positions per example, several interventions.
    gn_case(f"gn_several_positions_{family}", f"{family}: Vanilla at two positions per example "
            "(full form), block_output of layer 0 and mlp_output of the last layer",
            [rep(0, "block_output"), rep(n_layers - 1, "mlp_output")], family,
            sources=[SRC, SRC_B],
            unit_locations={"sources->base": [[[[1, 2], [3, 4]], [[0, 5], [2, 3]]],
                                              [[[2, 3], [4, 5]], [[1, 5], [4, 2]]]]})
    gn_case(f"gn_collect_{family}", f"{family}: Collect at 3 positions, max_number_of_units 3, "
            "on attention_value_output", [rep(n_layers - 1, "attention_value_output",
                                              "CollectIntervention", max_number_of_units=3)],
            family, unit_locations={"base": [[[1, 2, 3], [2, 3, 5]]]})

    # 4. Addition (a source run, and a constant steering vector), a rotation.
    gn_case(f"gn_addition_{family}", f"{family}: AdditionIntervention with a source run on "
            "mlp_output", [rep(0, "mlp_output", "AdditionIntervention")], family,
            sources=[SRC], unit_locations=full(SRC_POS, BASE_POS))
    gn_case(f"gn_addition_const_{family}", f"{family}: Addition of a constant vector at two "
            "base positions (source_representations)",
            [rep(1, "block_output", "AdditionIntervention")], family,
            unit_locations={"base": [2, 5]}, source_representations="steer",
            tensors={"steer": ("randn", [32], 1.0)})
    gn_case(f"gn_rotated_space_{family}", f"{family}: RotatedSpaceIntervention on block_output, "
            "interchange_dim 12", [rep(1, "block_output", "RotatedSpaceIntervention",
                                       interchange_dim=12)], family,
            sources=[SRC], unit_locations=full(SRC_POS, BASE_POS))

    # 5. Padding: rows padded left and right (position ids = cumsum(mask) - 1, pads at 1).
    for side, base, mask in (
        ("right", [[21, 92, 57, 86, 67, 15], [53, 36, 16, 49, 0, 0]],
         [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]),
        ("left", [[21, 92, 57, 86, 67, 15], [0, 0, 53, 36, 16, 49]],
         [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]]),
    ):
        gn_case(f"gn_pad_{side}_{family}", f"{family}: {side}-padded base batch with an "
                "attention mask, Vanilla on block_output of layer 0",
                [rep(0, "block_output")], family, base=base, mask=mask, sources=[SRC],
                unit_locations=full([[2], [1]], [[4], [3 if side == "left" else 2]]))

    # 6. Generation: greedy, steered at every new token; longer than the windows.
    gn_case(f"gn_gen_{family}_steer_default", f"{family} generate 6 tokens, intervene_on_prompt "
            "false, {'base': 0}: every decode step steered at its new token",
            [rep(1, "block_output", "AdditionIntervention")], family, base=pf.PROMPT,
            mask=[[1] * 5], unit_locations={"base": 0}, source_representations="steer",
            tensors={"steer": ("randn", [32], 4.0)},
            generate={"max_new_tokens": 6, "do_sample": False, "intervene_on_prompt": False})
    gn_case(f"gn_gen_{family}_steer_on_prompt_all_calls", f"{family} generate 6 tokens, "
            "intervene_on_prompt true, unit_locations None: every call steered everywhere",
            [rep(0, "mlp_output", "AdditionIntervention")], family, base=pf.PROMPT,
            mask=[[1] * 5], unit_locations=None, source_representations="steer",
            tensors={"steer": ("randn", [32], 6.0)},
            generate={"max_new_tokens": 6, "do_sample": False, "intervene_on_prompt": True})

MINE = pf.CASES[FIRST:]


# --------------------------------------------------------------------------------------------
# Runner


def check_generation(c):
    """Greedy decoding without a KV cache, steered as the case says, must give pyvene's ids."""
    from safetensors.torch import load_file

    d = os.path.join(pf.OUT, c["name"])
    want = load_file(os.path.join(d, "expected.safetensors"))["generated.ids"]
    steer = load_file(os.path.join(d, "tensors.safetensors"))["steer"]
    r = c["reps"][0]
    model = pf.load_model(c["model"])
    layers = model.transformer.h if c["model"] == "gpt_neo" else model.model.layers
    module = layers[r["layer"]] if r["component"] == "block_output" else layers[r["layer"]].mlp
    on_prompt = c["generate"]["intervene_on_prompt"]
    ids = torch.tensor(c["base"])
    prompt_len = ids.shape[1]

    def hook(mod, args, out):
        hidden = out[0] if isinstance(out, tuple) else out
        seq = hidden.shape[1]
        if on_prompt:  # every position of every call (cached positions were steered likewise)
            hidden = hidden + steer
        elif seq > prompt_len:  # the newest token of every decode step
            hidden = hidden.clone()
            hidden[:, prompt_len:] += steer
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

    handle = module.register_forward_hook(hook)
    with torch.no_grad():
        for _ in range(c["generate"]["max_new_tokens"]):
            logits = model(input_ids=ids, use_cache=False).logits
            ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
    handle.remove()
    assert torch.equal(ids, want.to(ids.dtype)), f"{c['name']}: {ids} != {want}"


def main():
    only = sys.argv[1:]
    correct_pyvene_tables()
    names = [c["name"] for c in pf.CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    if not only:
        for d in os.listdir(pf.OUT):
            if d.startswith("gn_"):
                shutil.rmtree(os.path.join(pf.OUT, d))
    weak = []
    for c in MINE:
        if only and not any(o in c["name"] for o in only):
            continue
        effect, shapes = pf.run_case(c)
        if c.get("generate"):
            check_generation(c)
        only_collect = all(r["intervention_type"] == "CollectIntervention" for r in c["reps"])
        flag = ""
        if not only_collect and effect < 1e-2:
            flag = "  <-- weak effect"
            weak.append(c["name"])
        extra = f" collected {shapes}" if shapes else ""
        print(f"{c['name']:55s} effect {effect:9.4f}{extra}{flag}")
    print(f"{len(MINE)} gn_ cases")
    if weak:
        print("cases whose intervention barely changes the output:", ", ".join(weak))


if __name__ == "__main__":
    main()

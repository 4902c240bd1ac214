#!/usr/bin/env python3
"""pyvene 0.1.8 oracle cases for the registry families: OLMo and the sequence-classification
heads (GPT2/Llama/Qwen2 ...ForSequenceClassification). Cases are named `mc_*` and written under
tests/fixtures/pyvene/ in the format of make_pyvene_fixtures.py, whose helpers (case, rep, full,
run_case, ...) this script reuses; tests/pyvene_oracle.rs replays every case directory.

How to run (from the repository root, after make_fixtures_families.py built the models):

    /work/venv-oracle/bin/python tests/oracle/make_pyvene_fixtures_models_core.py [NAME ...]

Classifier cases load the model with AutoModelForSequenceClassification; their logits are the
class scores (batch, 3) of each row's last real token.
"""

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_pyvene_fixtures as mp  # noqa: E402
from make_pyvene_fixtures import BASE, BASE_POS, GEN, PROMPT, SRC, SRC_B, SRC_POS, full, rep  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification  # noqa: E402

mp.CASES.clear()
case = mp.case


def load_model(family):
    path = os.path.join(mp.HF, family)
    auto = AutoModelForSequenceClassification if family.endswith("_cls") else AutoModelForCausalLM
    m = auto.from_pretrained(path, attn_implementation="eager")
    m.eval()
    return m


mp.load_model = load_model

LLAMA_COMPONENTS = mp.LLAMA_COMPONENTS
GPT2_COMPONENTS = mp.GPT2_COMPONENTS

# pyvene 0.1.8 reads `head_dim` from Qwen2Config for its head components, which transformers
# 4.48's Qwen2Config lacks (AttributeError): Qwen2 cases use the other components.
QWEN2_COMPONENTS = [c for c in LLAMA_COMPONENTS if not c.startswith("head_")]
# A classifier scores the last token only, so its interchanges target the last position.
LAST_POS = [[5], [5]]

# 1. Every component: Vanilla interchange at one position per example (head components at one
#    head per example), for OLMo and each classifier.
for family, comps in (("olmo", LLAMA_COMPONENTS), ("gpt2_cls", GPT2_COMPONENTS),
                      ("llama_cls", LLAMA_COMPONENTS), ("qwen2_cls", QWEN2_COMPONENTS)):
    gqa = family != "gpt2_cls"
    base_pos = LAST_POS if family.endswith("_cls") else BASE_POS
    for i, comp in enumerate(comps):
        layer = (i + (1 if gqa else 0)) % 2
        if comp.startswith("head_"):
            heads = [[1], [0]] if gqa else [[1], [3]]
            loc = full([heads, SRC_POS], [heads, base_pos])
            unit = "h.pos"
        elif comp == "attention_weight":
            loc = full([[1], [2]], [[1], [3]])
            unit = "pos"
        else:
            loc = full(SRC_POS, base_pos)
            unit = "pos"
        case(f"mc_component_{family}_{comp}",
             f"{family} {comp} (layer {layer}, unit {unit}): Vanilla interchange at one "
             "position per example", [rep(layer, comp, unit=unit)], model=family,
             sources=[SRC], unit_locations=loc, output_original_output=(i == 0))

# 2. Several positions, several interventions, an Addition, a Collect, a padded batch.
MULTI = [[1, 3, 5], [0, 2, 4]]
for family in ("olmo", "gpt2_cls", "llama_cls", "qwen2_cls"):
    head_comp = "value_output" if family == "qwen2_cls" else "head_value_output"
    head_unit = "pos" if family == "qwen2_cls" else "h.pos"
    head_loc = [[2], [4]] if family == "qwen2_cls" else [[[1], [0]], [[2], [4]]]
    case(f"mc_{family}_multi_pos", f"{family}: block_output interchange at three positions",
         [rep(0, "block_output", max_number_of_units=3)], model=family, sources=[SRC],
         unit_locations=full(MULTI, MULTI))
    case(f"mc_{family}_two_sites_two_sources",
         f"{family}: mlp_output at layer 0 from one source, attention_output at layer 1 from "
         "another", [rep(0, "mlp_output", group_key=0), rep(1, "attention_output", group_key=1)],
         model=family, sources=[SRC, SRC_B],
         unit_locations={"sources->base": [[SRC_POS, [[0], [5]]], [[[4], [5]], [[5], [5]]]]})
    case(f"mc_{family}_addition", f"{family}: AdditionIntervention of a constant on block_output",
         [rep(1, "block_output", "AdditionIntervention")], model=family,
         unit_locations={"base": 5}, source_representations="steer",
         tensors={"steer": ("randn", [32], 3.0)})
    case(f"mc_{family}_collect", f"{family}: CollectIntervention on mlp_activation and "
         f"{head_comp}", [rep(1, "mlp_activation", "CollectIntervention"),
                          rep(0, head_comp, "CollectIntervention", unit=head_unit)],
         model=family, unit_locations={"base": [[[2], [4]], head_loc]})
    if family == "gpt2_cls":
        # GPT-2 gives padded query rows that see no real key a causal average, where vene (and
        # the Llama family in transformers) averages over every key: those rows' hidden states
        # differ (logits never use them). Right padding keeps every row defined.
        case("mc_gpt2_cls_right_padded", "gpt2_cls: a right-padded base batch, block_output "
             "interchange at a real position; class scores from each row's last real token",
             [rep(0, "block_output")], model=family, base=[BASE[0][:4] + [0, 0], BASE[1]],
             mask=[[1, 1, 1, 1, 0, 0], [1] * 6], sources=[SRC],
             unit_locations=full(SRC_POS, [[2], [3]]), output_original_output=True)
    else:
        case(f"mc_{family}_left_padded", f"{family}: a left-padded base batch, block_output "
             "interchange at a real position", [rep(0, "block_output")], model=family,
             base=[[0, 0, 57, 86, 67, 15], BASE[1]], mask=[[0, 0, 1, 1, 1, 1], [1] * 6],
             sources=[SRC], unit_locations=full(SRC_POS, BASE_POS), output_original_output=True)

# 3. Generation (OLMo is a language model).
case("mc_gen_olmo_steer_default", "olmo generate, intervene_on_prompt false, {'base': 0}",
     [rep(1, "block_output", "AdditionIntervention")], model="olmo", base=PROMPT,
     mask=[[1] * 5], unit_locations={"base": 0}, source_representations="steer",
     tensors={"steer": ("randn", [32], 4.0)}, generate=dict(GEN, intervene_on_prompt=False))
case("mc_gen_olmo_interchange_on_prompt", "olmo generate with a source, intervene_on_prompt "
     "true: the prompt's mlp_output swapped at one position",
     [rep(0, "mlp_output")], model="olmo", base=PROMPT, mask=[[1] * 5], sources=[[SRC[0][:5]]],
     unit_locations=full([[2]], [[4]]), generate=dict(GEN, intervene_on_prompt=True))


def main():
    only = sys.argv[1:]
    names = [c["name"] for c in mp.CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    for c in mp.CASES:
        if only and not any(o in c["name"] for o in only):
            continue
        d = os.path.join(mp.OUT, c["name"])
        if os.path.isdir(d):
            shutil.rmtree(d)
        effect, shapes = mp.run_case(c)
        extra = f" collected {shapes}" if shapes else ""
        flag = "  <-- weak effect" if effect < 1e-2 and "collect" not in c["name"] else ""
        print(f"{c['name']:55s} effect {effect:9.4f}{extra}{flag}")


if __name__ == "__main__":
    main()

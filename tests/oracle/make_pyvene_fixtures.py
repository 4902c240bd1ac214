#!/usr/bin/env python3
"""Builds the pyvene oracle suite under tests/fixtures/pyvene/ by running REAL pyvene 0.1.8.

How to run (from the repository root; needs python3 with pyvene 0.1.8, torch 2.5.1 (or 2.6),
transformers 4.51.3 (or 4.48.2), safetensors and numpy; CPU only, well under a minute):

    python3 tests/oracle/make_pyvene_fixtures.py            # rewrites tests/fixtures/pyvene/
    python3 tests/oracle/make_pyvene_fixtures.py NAME ...   # only the cases whose name contains NAME

The models are the tiny random-weight HF models of tests/fixtures/hf/ (gpt2, gpt_neox, llama,
mistral, qwen2), built by tests/oracle/make_fixtures.py; this script never modifies them.
Everything else comes from fixed seeds, so re-running rewrites byte-identical fixtures (up to
torch's CPU kernels).

Each case is one directory tests/fixtures/pyvene/<case>/ holding
  request.json          a `vene run` request (schema: the `run` command's --help). Fields
                        starting with "_" are for people: "_what" says what the case checks,
                        "_note" flags a deliberate difference from what pyvene itself returns.
  tensors.safetensors   (when needed) tensors the request names: intervention state under
                        pyvene's state-dict keys ("state.<i>.<key>"), constant sources.
  expected.safetensors  what vene must write: intervened.logits, intervened.last_hidden_state
                        (HF's final-norm hidden state), original.logits (when the request sets
                        output_original_output), collected.<i> (pyvene's flat collected order),
                        generated.ids / original.generated.ids (int64, prompt + new tokens).
tests/pyvene_oracle.rs replays every case through the `vene` binary.

pyvene quirks and bugs (docs: /work/shared/reference/pyvene-semantics.md):
  * A FRESH IntervenableModel (and a freshly loaded HF model) is built for every case, so the
    sticky `use_fast` bug (a shorthand unit_locations permanently sets use_fast=True) never leaks
    from one case into another.
  * Multi-position CollectIntervention with max_number_of_units=1 returns fragments in pyvene
    (flattening bug); the case `collect_multi_pos_nunit1_fixed` records the correct activations,
    computed with max_number_of_units=P and cross-checked with keep_last_dim=True, and says so in
    its "_note".
  * Quirks that are pyvene's documented semantics (rectangular subspace rows indexing the position
    axis, the "base" key's pair rule, hot activations of linked interventions) are recorded as
    pyvene computes them.
"""

import copy
import json
import os
import shutil
import sys

import numpy as np
import torch

import pyvene as pv
from pyvene.models.modeling_utils import get_dimension_by_component
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "fixtures"))
OUT = os.path.join(FIXTURES, "pyvene")
HF = os.path.join(FIXTURES, "hf")

# Inputs (vocab 96, max positions 32). Equal-length rows unless a case is about padding.
BASE = [[21, 92, 57, 86, 67, 15], [53, 36, 16, 49, 62, 50]]
SRC = [[40, 11, 73, 5, 88, 31], [64, 27, 90, 14, 45, 77]]
SRC_B = [[19, 58, 3, 81, 26, 69], [7, 95, 38, 60, 12, 84]]
SRC_C = [[33, 71, 24, 9, 52, 80], [47, 6, 65, 29, 93, 18]]
PROMPT = [[21, 92, 57, 86, 67]]
ONES = [[1] * 6, [1] * 6]

# The one-position location used by most cases, in pyvene's full form (per intervention, per
# example): example 0 takes source position 2 into base position 4, example 1 source 1 into 3.
SRC_POS = [[2], [1]]
BASE_POS = [[4], [3]]


def full(src, base, n=1):
    """Full-form unit_locations for n interventions sharing the same per-example locations."""
    return {"sources->base": [[src] * n, [base] * n]}


CASES = []


def case(name, what, reps, **kw):
    CASES.append(dict(name=name, what=what, reps=reps, **kw))


def rep(layer, component, itype="VanillaIntervention", unit="pos", **fields):
    r = {"layer": layer, "component": component, "unit": unit, "intervention_type": itype}
    r.update(fields)
    return r


# --------------------------------------------------------------------------------------------
# Parameter initialisers: fill an intervention's parameters with fixed random values. Whatever
# they set is written out through the intervention's own state_dict (pyvene's keys).


def _orthogonal(n, g):
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q.float()


def init_rotate(inter, g, scale=0.2):
    p = inter.rotate_layer.parametrizations.weight
    orig = p.original
    n, k = orig.shape
    x = torch.randn(n, k, generator=g) * scale
    if n != k:
        # Householder map: the diagonal of `original` holds the column signs (+-1).
        signs = torch.where(torch.rand(k, generator=g) < 0.5, -1.0, 1.0)
        x[torch.arange(k), torch.arange(k)] = signs
    orig.copy_(x)
    p[0].base.copy_(_orthogonal(n, g))


def init_sigmoid_mask(inter, g):
    inter.mask.copy_(torch.randn(inter.mask.shape, generator=g) * 0.01)
    inter.temperature.copy_(torch.tensor(0.01))


def init_boundless(inter, g):
    init_rotate(inter, g)
    inter.intervention_boundaries.copy_(torch.tensor([0.4]))
    inter.temperature.copy_(torch.tensor(1.5))


def init_sigmoid_mask_rotated(inter, g):
    init_rotate(inter, g)
    inter.masks.copy_(torch.randn(inter.masks.shape, generator=g) * 2.0)
    inter.temperature.copy_(torch.tensor(1.0))


def init_autoencoder(inter, g):
    for name, p in inter.autoencoder.named_parameters():
        p.copy_(torch.randn(p.shape, generator=g) * (0.3 if name.endswith("weight") else 0.1))


def init_jumprelu(inter, g):
    inter.W_enc.copy_(torch.randn(inter.W_enc.shape, generator=g) * 0.3)
    inter.W_dec.copy_(torch.randn(inter.W_dec.shape, generator=g) * 0.3)
    inter.b_enc.copy_(torch.randn(inter.b_enc.shape, generator=g) * 0.1)
    inter.b_dec.copy_(torch.randn(inter.b_dec.shape, generator=g) * 0.1)
    inter.threshold.copy_(torch.rand(inter.threshold.shape, generator=g) * 0.2)


INITS = {
    "SigmoidMaskIntervention": init_sigmoid_mask,
    "RotatedSpaceIntervention": init_rotate,
    "LowRankRotatedSpaceIntervention": init_rotate,
    "BoundlessRotatedSpaceIntervention": init_boundless,
    "SigmoidMaskRotatedSpaceIntervention": init_sigmoid_mask_rotated,
    "AutoencoderIntervention": init_autoencoder,
    "JumpReLUAutoencoderIntervention": init_jumprelu,
}
# Types whose state (parameters and buffers) the request passes through intervention_state.
STATEFUL = set(INITS) | {"NoiseIntervention", "PCARotatedSpaceIntervention"}


class _PCA:
    def __init__(self, components):
        self.components_ = components


def make_pca(embed_dim, g, k=8):
    comps = _orthogonal(embed_dim, g)[:k].numpy()
    mean = (torch.randn(embed_dim, generator=g) * 0.1).numpy()
    std = (0.5 + torch.rand(embed_dim, generator=g)).numpy()
    return pv.PCARotatedSpaceIntervention(
        embed_dim=embed_dim, pca=_PCA(comps), pca_mean=mean, pca_std=std
    )


# --------------------------------------------------------------------------------------------
# Cases

# 1. Every component of every family: Vanilla interchange at one position (per-example positions,
#    full form). Head components use unit "h.pos" (heads per example, positions per example).
GPT2_COMPONENTS = [
    "block_input", "block_output", "mlp_activation", "mlp_output", "mlp_input",
    "attention_value_output", "head_attention_value_output", "attention_weight",
    "attention_output", "attention_input", "query_output", "key_output", "value_output",
    "head_query_output", "head_key_output", "head_value_output",
]
LLAMA_COMPONENTS = [
    "block_input", "block_output", "mlp_activation", "mlp_output", "mlp_input",
    "attention_value_output", "head_attention_value_output", "attention_output",
    "attention_input", "query_output", "key_output", "value_output", "head_query_output",
    "head_key_output", "head_value_output",
]
NEOX_COMPONENTS = [
    "block_input", "block_output", "mlp_activation", "mlp_output", "mlp_input",
    "attention_value_output", "head_attention_value_output", "attention_output",
    "attention_input",
]
for family, comps in (("gpt2", GPT2_COMPONENTS), ("llama", LLAMA_COMPONENTS),
                      ("gpt_neox", NEOX_COMPONENTS)):
    for i, comp in enumerate(comps):
        layer = (i + (1 if family == "llama" else 0)) % 2
        if comp.startswith("head_"):
            # llama's head_key/value_output have num_key_value_heads = 2 heads
            heads = [[1], [0]] if family == "llama" else [[1], [3]]
            loc = full([heads, SRC_POS], [heads, BASE_POS])
            unit = "h.pos"
        elif comp == "attention_weight":
            # unit "pos" indexes dim 1 of (b, heads, q, k): the head axis (pyvene 12.5)
            loc = full([[1], [2]], [[1], [3]])
            unit = "pos"
        else:
            loc = full(SRC_POS, BASE_POS)
            unit = "pos"
        case(f"component_{family}_{comp}",
             f"{family} {comp} (layer {layer}, unit {unit}): Vanilla interchange at one "
             "position per example, positions differing per example",
             [rep(layer, comp, unit=unit)], model=family, sources=[SRC], unit_locations=loc,
             output_original_output=(i == 0))
# The other llama-style families vene loads (pyvene registers both), a few sites each.
for family in ("mistral", "qwen2"):
    # pyvene 0.1.8 sizes qwen2 heads by config.head_dim, which Qwen2Config lacks: no qwen2
    # head components (pyvene raises AttributeError); key_output (GQA width, k_proj bias) instead.
    last = "head_key_output" if family == "mistral" else "key_output"
    for layer, comp in ((0, "block_output"), (1, "mlp_activation"),
                        (0, "attention_value_output"), (1, last)):
        if comp.startswith("head_"):
            unit, loc = "h.pos", full([[[1], [0]], SRC_POS], [[[1], [0]], BASE_POS])
        else:
            unit, loc = "pos", full(SRC_POS, BASE_POS)
        case(f"component_{family}_{comp}", f"{family} {comp} (layer {layer}, unit {unit}): "
             "Vanilla interchange at one position per example",
             [rep(layer, comp, unit=unit)], model=family, sources=[SRC], unit_locations=loc)
case("component_gpt2_block_input_layer1",
     "gpt2 block_input at layer 1 (the sweep has it at layer 0, the embedding sum)",
     [rep(1, "block_input")], sources=[SRC],
     unit_locations=full(SRC_POS, BASE_POS))

# 2. Every static intervention type, fixed parameters through intervention_state.
L1 = full(SRC_POS, BASE_POS)
case("type_vanilla", "VanillaIntervention", [rep(0, "block_output")], sources=[SRC],
     unit_locations=L1)
case("type_vanilla_interchange_dim", "Vanilla with interchange_dim 8 (only the first 8 dims)",
     [rep(0, "block_output", interchange_dim=8)], sources=[SRC], unit_locations=L1)
case("type_addition", "AdditionIntervention with a source run",
     [rep(0, "block_output", "AdditionIntervention")], sources=[SRC], unit_locations=L1)
case("type_subtraction", "SubtractionIntervention with a source run",
     [rep(1, "mlp_output", "SubtractionIntervention")], sources=[SRC], unit_locations=L1)
case("type_zero", "ZeroIntervention, base only, per-example positions",
     [rep(0, "block_output", "ZeroIntervention")], unit_locations={"base": [[[2], [4]]]})
case("type_collect", "CollectIntervention at one position: collected.0, logits untouched",
     [rep(1, "block_output", "CollectIntervention")], unit_locations={"base": [[[2], [4]]]})
case("type_skip", "SkipIntervention on block_output layer 1: the block's output at one position "
     "becomes the block's input (taken in the source run, the base itself)",
     [rep(1, "block_output", "SkipIntervention")], sources=[BASE],
     unit_locations=full(BASE_POS, BASE_POS))
case("type_noise", "NoiseIntervention (noise buffer (1,4,d) of RandomState(1), noise_level) on "
     "4 positions, base only", [rep(0, "block_output", "NoiseIntervention")],
     unit_locations={"base": [1, 2, 3, 4]})
case("type_sigmoid_mask", "SigmoidMaskIntervention, mask and temperature from state",
     [rep(0, "block_output", "SigmoidMaskIntervention")], sources=[SRC], unit_locations=L1)
case("type_rotated_space", "RotatedSpaceIntervention (square, matrix_exp parametrisation from "
     "original + base), interchange_dim 12",
     [rep(0, "block_output", "RotatedSpaceIntervention", interchange_dim=12)], sources=[SRC],
     unit_locations=L1, output_original_output=True)
case("type_rotated_space_two_positions", "RotatedSpace over 2 positions with "
     "max_number_of_units=2: acts on the concatenation (embed_dim 64), interchange_dim 20",
     [rep(1, "block_output", "RotatedSpaceIntervention", max_number_of_units=2,
          interchange_dim=20)], sources=[SRC],
     unit_locations=full([[1, 2], [2, 3]], [[3, 4], [4, 5]]))
case("type_low_rank_rotated_space", "LowRankRotatedSpaceIntervention k=4 (Householder "
     "parametrisation, n x k), no subspaces",
     [rep(0, "block_output", "LowRankRotatedSpaceIntervention", low_rank_dimension=4)],
     sources=[SRC], unit_locations=L1)
case("type_low_rank_rotated_space_subspaces", "LowRankRotatedSpace k=6 with subspaces [0, 2, 5] "
     "(selected columns only)",
     [rep(0, "mlp_output", "LowRankRotatedSpaceIntervention", low_rank_dimension=6)],
     sources=[SRC], unit_locations=L1, subspaces=[0, 2, 5])
case("type_boundless_rotated_space", "BoundlessRotatedSpaceIntervention, boundary 0.4, "
     "temperature 1.5", [rep(0, "block_output", "BoundlessRotatedSpaceIntervention")],
     sources=[SRC], unit_locations=L1)
case("type_sigmoid_mask_rotated_space", "SigmoidMaskRotatedSpaceIntervention, masks and "
     "temperature from state", [rep(1, "block_output", "SigmoidMaskRotatedSpaceIntervention")],
     sources=[SRC], unit_locations=L1)
case("type_autoencoder", "AutoencoderIntervention latent_dim 16, swap latents [0, 3, 5, 9] "
     "(interchange_dim as a list)",
     [rep(0, "block_output", "AutoencoderIntervention", latent_dim=16,
          interchange_dim=[0, 3, 5, 9])], sources=[SRC], unit_locations=L1)
case("type_jumprelu_autoencoder", "JumpReLUAutoencoderIntervention k=16, subspaces = latent ids",
     [rep(0, "block_output", "JumpReLUAutoencoderIntervention", low_rank_dimension=16)],
     sources=[SRC], unit_locations=L1, subspaces=[[[1, 4, 7, 10], [1, 4, 7, 10]]])
case("type_jumprelu_autoencoder_all_latents", "JumpReLUAutoencoder without subspaces: "
     "interchange_dim = embed_dim covers every latent, output = decode(encode(source))",
     [rep(1, "block_output", "JumpReLUAutoencoderIntervention", low_rank_dimension=16)],
     sources=[SRC], unit_locations=L1)
case("type_pca_rotated_space", "PCARotatedSpaceIntervention (8 components, mean, std from "
     "state), subspaces [0, 2, 5]", [rep(0, "block_output", "PCARotatedSpaceIntervention")],
     sources=[SRC], unit_locations=L1, subspaces=[[[0, 2, 5], [0, 2, 5]]],
     instances={0: make_pca})

# 3. unit_locations forms (pyvene-semantics 3.5).
V0 = [rep(0, "block_output")]
case("loc_int", "unit_locations {'sources->base': 3}", V0, sources=[SRC],
     unit_locations={"sources->base": 3})
case("loc_pair", "unit_locations [2, 4] pair: source position 2 into base position 4", V0,
     sources=[SRC], unit_locations={"sources->base": [2, 4]})
case("loc_none_then_base", "unit_locations (None, 4) with a source representation (d,): "
     "Addition at base position 4", [rep(0, "block_output", "AdditionIntervention")],
     unit_locations={"sources->base": [None, 4]}, source_representations="steer",
     tensors={"steer": ("randn", [32], 0.5)})
case("loc_flat_list", "flat list [1, 3, 5]: three positions for every example (both sides)", V0,
     sources=[SRC], unit_locations={"sources->base": [1, 3, 5]})
case("loc_nested_per_example", "full form, one position per example, differing per example "
     "and between source and base", V0, sources=[SRC],
     unit_locations={"sources->base": [[[[1], [3]]], [[[2], [5]]]]})
case("loc_several_per_example", "full form, two positions per example", V0, sources=[SRC],
     unit_locations={"sources->base": [[[[1, 2], [3, 4]]], [[[2, 3], [4, 5]]]]})
case("loc_base_int_zero", "{'base': 2} with Zero", [rep(1, "block_output", "ZeroIntervention")],
     unit_locations={"base": 2})
case("loc_base_pair_zero", "{'base': [1, 2]} with Zero: a pair even under 'base', so only "
     "position 2 is zeroed (pyvene 12.1)", [rep(0, "block_output", "ZeroIntervention")],
     unit_locations={"base": [1, 2]})
case("loc_base_flat_collect", "{'base': [1, 2, 3]} with Collect, max_number_of_units 3",
     [rep(1, "block_output", "CollectIntervention", max_number_of_units=3)],
     unit_locations={"base": [1, 2, 3]})
case("loc_none_whole_tensor", "unit_locations None: the whole site tensor is swapped", V0,
     sources=[SRC], unit_locations=None)
case("loc_none_zero", "unit_locations None with Zero: every position zeroed",
     [rep(1, "mlp_output", "ZeroIntervention")], unit_locations=None)

# 4. Heads.
case("heads_h_gpt2_head_attention_value_output", "unit 'h': whole heads [1,3] / [0,2], all "
     "positions", [rep(0, "head_attention_value_output", unit="h")], sources=[SRC],
     unit_locations=full([[1, 3], [0, 2]], [[1, 3], [2, 0]]))
case("heads_h_gpt2_head_value_output", "unit 'h' on the fused c_attn value chunk",
     [rep(1, "head_value_output", unit="h")], sources=[SRC],
     unit_locations=full([[2], [1]], [[2], [3]]))
case("heads_hpos_gpt2_head_query_output", "unit 'h.pos': two heads x two positions per example",
     [rep(0, "head_query_output", unit="h.pos")], sources=[SRC],
     unit_locations=full([[[0, 2], [1, 3]], [[1, 4], [2, 5]]],
                         [[[0, 2], [1, 3]], [[3, 4], [1, 5]]]))
case("heads_h_llama_head_key_output", "llama GQA head_key_output (2 KV heads), unit 'h'",
     [rep(0, "head_key_output", unit="h")], model="llama", sources=[SRC],
     unit_locations=full([[1], [0]], [[1], [1]]))
case("heads_hpos_llama_head_value_output", "llama GQA head_value_output, unit 'h.pos'",
     [rep(1, "head_value_output", unit="h.pos")], model="llama", sources=[SRC],
     unit_locations=full([[[0], [1]], [[2], [1]]], [[[0], [1]], [[4], [3]]]))
case("heads_hpos_neox_head_attention_value_output", "gpt_neox head_attention_value_output, "
     "unit 'h.pos'", [rep(0, "head_attention_value_output", unit="h.pos")], model="gpt_neox",
     sources=[SRC], unit_locations=full([[[3], [0]], [[2], [1]]], [[[3], [0]], [[4], [3]]]))

# 5. subspaces forms (pyvene-semantics 3.4); full-form locations (no use_fast).
case("sub_int", "subspaces 3 (one dim)", V0, sources=[SRC], unit_locations=L1, subspaces=3)
case("sub_flat_list", "subspaces [0, 2, 5, 7, 11] for every example", V0, sources=[SRC],
     unit_locations=L1, subspaces=[0, 2, 5, 7, 11])
case("sub_per_example_equal", "per-example equal rows", V0, sources=[SRC], unit_locations=L1,
     subspaces=[[[0, 1, 2, 9], [0, 1, 2, 9]]])
case("sub_rect_differ_union", "rectangular rows that differ, one position: every example gets "
     "the union (pyvene's pad_idx quirk, 12.3)", V0, sources=[SRC], unit_locations=L1,
     subspaces=[[[0, 1, 2], [5, 6, 7]]])
case("sub_rect_differ_rows_to_positions", "rectangular rows that differ, two positions: row i "
     "applies to position i of every example (pyvene's quirk, 3.4)", V0, sources=[SRC],
     unit_locations=full([[1, 2], [1, 2]], [[3, 4], [3, 4]]),
     subspaces=[[[0, 1, 2], [5, 6, 7]]])
case("sub_ragged", "ragged rows: per-example subspaces", V0, sources=[SRC], unit_locations=L1,
     subspaces=[[[0, 1, 2], [5]]])
case("sub_partition", "subspace_partition [[0,8],[8,16],[16,24],[3,5,30]] (two ints = range, "
     "else explicit), subspaces [1, 3] for every example",
     [rep(0, "block_output", subspace_partition=[[0, 8], [8, 16], [16, 24], [3, 5, 30]])],
     sources=[SRC], unit_locations=L1, subspaces=[[[1, 3], [1, 3]]])
case("sub_partition_ragged", "subspace_partition with ragged per-example partition ids",
     [rep(0, "block_output", subspace_partition=[[0, 8], [8, 16], [16, 24], [3, 5, 30]])],
     sources=[SRC], unit_locations=L1, subspaces=[[[0], [1, 3]]])
case("sub_addition_ragged", "Addition with ragged subspaces",
     [rep(1, "mlp_output", "AdditionIntervention")], sources=[SRC], unit_locations=L1,
     subspaces=[[[4, 5], [10, 11, 12]]])
case("sub_rotated_space", "RotatedSpace with subspaces [0..5] (rotated coordinates)",
     [rep(0, "block_output", "RotatedSpaceIntervention")], sources=[SRC], unit_locations=L1,
     subspaces=[[[0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]]])

# 6. Several sources, groups, skipping.
case("group_two_groups", "group_key: two interventions share source group 0, a third uses "
     "group 1 (2 sources)",
     [rep(0, "block_output", group_key=0), rep(1, "mlp_output", group_key=0),
      rep(1, "block_output", group_key=1)], sources=[SRC, SRC_B],
     unit_locations={"sources->base": [[[[1], [2]], [[3], [3]], [[0], [5]]],
                                       [[[2], [4]], [[3], [1]], [[5], [5]]]]})
case("parallel_two_sources", "two interventions without group_key: one source each",
     [rep(0, "block_output"), rep(1, "attention_output")], sources=[SRC, SRC_B],
     unit_locations=full(SRC_POS, BASE_POS, 2))
case("parallel_source_skipping", "sources [None, s]: the first intervention is skipped",
     [rep(0, "block_output"), rep(1, "block_output")], sources=[None, SRC_B],
     unit_locations=full(SRC_POS, BASE_POS, 2))
case("parallel_one_source_broadcast", "one source for two groups: broadcast to both",
     [rep(0, "mlp_output"), rep(1, "block_output")], sources=[SRC],
     unit_locations=full(SRC_POS, BASE_POS, 2))
case("parallel_same_site_two_subspaces", "two Vanilla on the same site, different subspaces "
     "and sources, applied in order", [rep(0, "block_output"), rep(0, "block_output")],
     sources=[SRC, SRC_B], unit_locations=full(SRC_POS, BASE_POS, 2),
     subspaces=[[[0, 1, 2, 3]] * 2, [[2, 3, 4, 5]] * 2])

# 7. intervention_link_key.
case("link_same_site_subspaces", "two linked Vanilla on one site with subspaces [0..3] and "
     "[4..7]: both applied (hot activations)",
     [rep(0, "block_output", intervention_link_key=0),
      rep(0, "block_output", intervention_link_key=0)], sources=[SRC, SRC_B],
     unit_locations=full(SRC_POS, BASE_POS, 2),
     subspaces=[[[0, 1, 2, 3]] * 2, [[4, 5, 6, 7]] * 2])
case("link_rotated_shared_weights", "two linked RotatedSpace on one site share one rotation "
     "(one state for both), subspaces [0,1,2] and [5,6]",
     [rep(0, "block_output", "RotatedSpaceIntervention", intervention_link_key=0),
      rep(0, "block_output", "RotatedSpaceIntervention", intervention_link_key=0)],
     sources=[SRC, SRC_B], unit_locations=full(SRC_POS, BASE_POS, 2),
     subspaces=[[[0, 1, 2]] * 2, [[5, 6]] * 2])
case("link_rotated_cross_layer", "linked RotatedSpace on layers 0 and 1: pyvene's hot "
     "activations make the layer-1 setter read the layer-0 intervened units as its base",
     [rep(0, "block_output", "RotatedSpaceIntervention", intervention_link_key=0,
          interchange_dim=10),
      rep(1, "block_output", "RotatedSpaceIntervention", intervention_link_key=0,
          interchange_dim=10)],
     sources=[SRC, SRC_B], unit_locations=full(SRC_POS, BASE_POS, 2),
     note="pins pyvene 0.1.8's hot-activation semantics for linked interventions on different "
          "sites (the second linked setter gathers the first one's intervened units instead of "
          "its own site)")

# 8. Serial mode.
case("serial_chain_shorthand", "serial: {'source_0->source_1': 3, 'source_1->base': 4}, layers "
     "0 then 1", [rep(0, "block_output"), rep(1, "block_output")], mode="serial",
     sources=[SRC, SRC_B], unit_locations={"source_0->source_1": 3, "source_1->base": 4})
case("serial_chain_full_form", "serial, full form, per-example positions, three steps",
     [rep(0, "block_output"), rep(0, "mlp_output"), rep(1, "block_output")], mode="serial",
     sources=[SRC, SRC_B, SRC_C],
     unit_locations={"source_0->source_1": [[[[1], [2]]], [[[3], [3]]]],
                     "source_1->source_2": [[[[3], [3]]], [[[4], [2]]]],
                     "source_2->base": [[[[4], [2]]], [[[5], [4]]]]})

# 9. Constant sources.
case("const_config_addition", "Addition with source_representation in the config, written "
     "inline as numbers (d,), base only",
     [rep(0, "block_output", "AdditionIntervention", source_representation="steer")],
     unit_locations={"base": 3}, tensors={"steer": ("randn", [32], 0.7)}, inline_config=True)
case("const_config_vanilla", "Vanilla with a constant source in the config, named tensor from "
     "the request's file, per-example base positions",
     [rep(1, "mlp_output", source_representation="const")],
     unit_locations={"base": [[[2], [4]]]}, tensors={"const": ("randn", [32], 0.7)})
case("const_request_one_tensor", "source_representations: one tensor broadcast to every key",
     [rep(0, "block_output", "AdditionIntervention"),
      rep(1, "block_output", "AdditionIntervention")], unit_locations={"base": 3},
     source_representations="steer", tensors={"steer": ("randn", [32], 0.5)})
case("const_request_list", "source_representations: a list, one tensor per intervention",
     [rep(0, "block_output", "AdditionIntervention"),
      rep(1, "mlp_output", "SubtractionIntervention")], unit_locations={"base": [2, 4]},
     source_representations=["steer_a", "steer_b"],
     tensors={"steer_a": ("randn", [32], 0.5), "steer_b": ("randn", [32], 0.5)})
case("const_request_gathered_shape", "source_representations shaped like the gathered units "
     "(b, 2, d), Vanilla at two positions per example",
     [rep(0, "block_output")], unit_locations={"base": [[[1, 2], [3, 4]]]},
     source_representations="acts", tensors={"acts": ("randn", [2, 2, 32], 1.0)})

# 10. Collect.
case("collect_multi_pos_nunits", "Collect at 3 positions with max_number_of_units 3",
     [rep(0, "block_output", "CollectIntervention", max_number_of_units=3)],
     unit_locations={"base": [[[1, 2, 3], [2, 3, 5]]]})
case("collect_keep_last_dim", "Collect at 3 positions with keep_last_dim (per-position)",
     [rep(1, "mlp_activation", "CollectIntervention", keep_last_dim=True)],
     unit_locations={"base": [[[1, 2, 3], [2, 3, 5]]]})
case("collect_multi_pos_nunit1_fixed", "Collect at 3 positions with max_number_of_units 1",
     [rep(0, "block_output", "CollectIntervention")],
     unit_locations={"base": [[[1, 2, 3], [2, 3, 5]]]},
     pyvene_reps=[rep(0, "block_output", "CollectIntervention", max_number_of_units=3)],
     crosscheck_reps=[rep(0, "block_output", "CollectIntervention", keep_last_dim=True)],
     note="pyvene 0.1.8 returns fragments here (flattening bug, pyvene-semantics 3.10); "
          "expected collected.0 is the correct (b, 3, d) activations, computed by pyvene with "
          "max_number_of_units=3 and checked equal to keep_last_dim=True")
case("collect_order_with_vanilla", "Collect (layer 1), Vanilla (layer 0), Collect (layer 0 "
     "mlp_activation): flat collected order follows the config; the layer-1 collect sees the "
     "Vanilla's effect",
     [rep(1, "block_output", "CollectIntervention"), rep(0, "block_output"),
      rep(0, "mlp_activation", "CollectIntervention")], sources=[None, SRC, None],
     unit_locations=full(SRC_POS, BASE_POS, 3), output_original_output=True)
case("collect_head_hpos", "Collect on head_attention_value_output, unit 'h.pos'",
     [rep(1, "head_attention_value_output", "CollectIntervention", unit="h.pos")],
     unit_locations={"base": [[[[1], [2]], [[3], [4]]]]})
case("collect_subspaces", "Collect with subspaces [0, 3, 5]",
     [rep(0, "block_output", "CollectIntervention")], unit_locations={"base": [[[2], [4]]]},
     subspaces=[0, 3, 5])
case("collect_llama", "llama Collect at query_output",
     [rep(1, "query_output", "CollectIntervention")], model="llama",
     unit_locations={"base": [[[2], [4]]]})

# 11. Padding (right padding; position ids = cumsum(mask) - 1 with pads at 1).
PAD_BASE = [[21, 92, 57, 86, 67, 15], [53, 36, 16, 49, 0, 0]]
PAD_MASK = [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]
for fam in ("gpt2", "llama"):
    case(f"pad_right_{fam}", f"{fam}: right-padded base batch with an attention mask",
         [rep(0, "block_output")], model=fam, base=PAD_BASE, mask=PAD_MASK, sources=[SRC],
         unit_locations=full([[2], [1]], [[4], [2]]))

# 12. Generation: greedy, 4 new tokens, Addition steering vector via source_representations.
GEN = {"max_new_tokens": 4, "do_sample": False}
case("gen_gpt2_steer_default", "generate, intervene_on_prompt false, {'base': 0}: every decode "
     "step steered at its new token, the prompt call not",
     [rep(0, "block_output", "AdditionIntervention")], base=PROMPT, mask=[[1] * 5],
     unit_locations={"base": 0}, source_representations="steer",
     tensors={"steer": ("randn", [32], 4.0)}, generate=dict(GEN, intervene_on_prompt=False))
case("gen_gpt2_steer_on_prompt", "generate, intervene_on_prompt true, {'base': 4}: only the "
     "prompt call steered (its last position)", [rep(0, "block_output", "AdditionIntervention")],
     base=PROMPT, mask=[[1] * 5], unit_locations={"base": 4}, source_representations="steer",
     tensors={"steer": ("randn", [32], 4.0)}, generate=dict(GEN, intervene_on_prompt=True))
case("gen_gpt2_steer_on_prompt_all_calls", "generate, intervene_on_prompt true, unit_locations "
     "None: every forward call steered on its whole tensor",
     [rep(1, "mlp_output", "AdditionIntervention")], base=PROMPT, mask=[[1] * 5],
     unit_locations=None, source_representations="steer",
     tensors={"steer": ("randn", [32], 2.0)}, generate=dict(GEN, intervene_on_prompt=True))
case("gen_llama_steer_default", "llama generate, intervene_on_prompt false, {'base': 0}",
     [rep(1, "block_output", "AdditionIntervention")], model="llama", base=PROMPT,
     mask=[[1] * 5], unit_locations={"base": 0}, source_representations="steer",
     tensors={"steer": ("randn", [32], 4.0)}, generate=dict(GEN, intervene_on_prompt=False))


# --------------------------------------------------------------------------------------------
# Runner


def position_ids(mask):
    m = torch.tensor(mask)
    p = m.cumsum(-1) - 1
    p.masked_fill_(m == 0, 1)
    return p


def load_model(family):
    m = AutoModelForCausalLM.from_pretrained(os.path.join(HF, family),
                                             attn_implementation="eager")
    m.eval()
    return m


def build(c, model, tensors, g, reps):
    """A fresh IntervenableModel for the given representations."""
    fields = set(pv.RepresentationConfig._fields)
    pv_reps = []
    for i, r in enumerate(reps):
        kw = {k: v for k, v in r.items() if k in fields}
        if isinstance(kw.get("source_representation"), str):
            kw["source_representation"] = tensors[kw["source_representation"]]
        cls = getattr(pv, r["intervention_type"])
        dim = get_dimension_by_component(type(model), model.config, r["component"])
        embed_dim = dim * r.get("max_number_of_units", 1)
        if i in c.get("instances", {}):
            kw.pop("intervention_type")
            kw["intervention"] = c["instances"][i](embed_dim, g)
        elif r.get("keep_last_dim"):
            kw.pop("intervention_type")
            ctor = {k: v for k, v in kw.items() if k != "intervention"}
            kw["intervention"] = cls(**ctor, embed_dim=embed_dim, keep_last_dim=True)
        else:
            kw["intervention_type"] = cls
        pv_reps.append(pv.RepresentationConfig(**kw))
    cfg = pv.IntervenableConfig(representations=pv_reps, mode=c.get("mode", "parallel"))
    im = pv.IntervenableModel(cfg, model)
    for i, key in enumerate(im.sorted_keys):
        inter = im.interventions[key]
        if "interchange_dim" in reps[i]:
            inter.set_interchange_dim(reps[i]["interchange_dim"])
    return im


def make_tensor(spec, g):
    kind, shape, scale = spec
    assert kind == "randn"
    return torch.randn(shape, generator=g) * scale


def dump_request(req):
    """One top-level field per line (one representation per line), values compact."""
    lines = []
    for k, v in req.items():
        if k == "config":
            reps = ",\n   ".join(json.dumps(r) for r in v["representations"])
            val = '{"mode": %s, "representations": [\n   %s]}' % (json.dumps(v["mode"]), reps)
        else:
            val = json.dumps(v)
        lines.append(f" {json.dumps(k)}: {val}")
    return "{\n" + ",\n".join(lines) + "\n}"


def run_case(c):
    family = c.get("model", "gpt2")
    seed = sum(ord(ch) * (i + 1) for i, ch in enumerate(c["name"])) % (2**31)
    g = torch.Generator().manual_seed(seed)
    tensors = {k: make_tensor(v, g) for k, v in c.get("tensors", {}).items()}

    model = load_model(family)
    # pyvene_reps: what pyvene runs when its own output for the request's reps is known wrong.
    im = build(c, model, tensors, g, c.get("pyvene_reps", c["reps"]))

    # Parameters: fixed random values, then the intervention's own state dict goes to the file.
    state_refs = []
    seen = {}
    for i, key in enumerate(im.sorted_keys):
        inter = im.interventions[key]
        itype = c["reps"][i]["intervention_type"]
        if itype not in STATEFUL:
            state_refs.append(None)
            continue
        if id(inter) in seen:  # linked: the same object, the same tensors
            state_refs.append(seen[id(inter)])
            continue
        with torch.no_grad():
            if itype in INITS:
                INITS[itype](inter, g)
        refs = {}
        for k, v in inter.state_dict().items():
            name = f"state.{i}.{k}"
            tensors[name] = v.detach().clone().contiguous()
            refs[k] = name
        seen[id(inter)] = refs
        state_refs.append(refs)

    reps_json = c["reps"]
    if c.get("inline_config"):  # config source_representation as a JSON number array
        reps_json = copy.deepcopy(reps_json)
        for r in reps_json:
            if isinstance(r.get("source_representation"), str):
                r["source_representation"] = tensors.pop(r["source_representation"]).tolist()
    base_ids = c.get("base", BASE)
    mask = c.get("mask", ONES)
    gen = c.get("generate")
    request = {
        "_what": c["what"],
        "model": f"../../hf/{family}",
        "config": {"mode": c.get("mode", "parallel"), "representations": reps_json},
        "base": {"input_ids": base_ids, "attention_mask": mask},
        "sources": None if c.get("sources") is None else
        [None if s is None else {"input_ids": s} for s in c["sources"]],
        "unit_locations": c.get("unit_locations"),
        "subspaces": c.get("subspaces"),
        "tensors": "tensors.safetensors" if tensors else None,
        "source_representations": c.get("source_representations"),
        "intervention_state": state_refs if any(s is not None for s in state_refs) else None,
        "output_original_output": bool(c.get("output_original_output") or gen),
        "generate": gen,
    }
    if c.get("note"):
        request["_note"] = c["note"]
    request_text = dump_request(request)  # before pyvene sees (and mutates) anything

    # The pyvene call.
    sreps = c.get("source_representations")
    if isinstance(sreps, str):
        sreps = tensors[sreps]
    elif isinstance(sreps, list):
        sreps = [tensors[s] for s in sreps]
    sources = None
    if c.get("sources") is not None:
        sources = [None if s is None else {"input_ids": torch.tensor(s)} for s in c["sources"]]
    ul = copy.deepcopy(c.get("unit_locations"))
    if isinstance(ul, dict):  # pairs in pyvene's docs are tuples; lists behave the same
        ul = {k: tuple(v) if isinstance(v, list) and len(v) == 2 and not all(
            isinstance(x, int) for x in v) else v for k, v in ul.items()}
    subspaces = copy.deepcopy(c.get("subspaces"))

    expected = {}
    with torch.no_grad():
        if gen:
            base = {"input_ids": torch.tensor(base_ids), "attention_mask": torch.tensor(mask)}
            out = im.generate(base, sources=sources, unit_locations=ul,
                              source_representations=sreps,
                              intervene_on_prompt=gen["intervene_on_prompt"],
                              subspaces=subspaces, output_original_output=True,
                              max_new_tokens=gen["max_new_tokens"], do_sample=gen["do_sample"],
                              pad_token_id=0)
            original, steered = out
            expected["original.generated.ids"] = original.to(torch.int64)
            expected["generated.ids"] = steered.to(torch.int64)
            effect = float((original != steered).sum())
            want = len(base_ids[0]) + gen["max_new_tokens"]
            assert original.shape[1] == want and steered.shape[1] == want, \
                f"{c['name']}: generation stopped early (EOS); pick another prompt"
        else:
            base = {"input_ids": torch.tensor(base_ids), "attention_mask": torch.tensor(mask),
                    "position_ids": position_ids(mask), "output_hidden_states": True}
            out = im(base, sources=sources, unit_locations=ul, source_representations=sreps,
                     subspaces=subspaces,
                     output_original_output=bool(c.get("output_original_output")),
                     return_dict=True)
            io = out.intervened_outputs
            expected["intervened.logits"] = io.logits
            expected["intervened.last_hidden_state"] = io.hidden_states[-1]
            if c.get("output_original_output"):
                expected["original.logits"] = out.original_outputs.logits
            for i, t in enumerate(out.collected_activations or []):
                expected[f"collected.{i}"] = t
            clean = load_model(family)(**base).logits
            effect = float((io.logits - clean).abs().max())

    if c.get("crosscheck_reps"):
        crosscheck(c, family, base, g, expected)

    d = os.path.join(OUT, c["name"])
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "request.json"), "w") as f:
        f.write(request_text + "\n")
    if tensors:
        save_file({k: v.contiguous() for k, v in tensors.items()},
                  os.path.join(d, "tensors.safetensors"))
    save_file({k: v.detach().contiguous() for k, v in expected.items()},
              os.path.join(d, "expected.safetensors"))
    shapes = {k: tuple(v.shape) for k, v in expected.items() if k.startswith("collected")}
    return effect, shapes


def crosscheck(c, family, base, g, expected):
    """Runs pyvene again with crosscheck_reps (same request otherwise) and checks that every
    expected tensor comes out the same: two independent routes to the correct answer."""
    im = build(c, load_model(family), {}, g, c["crosscheck_reps"])
    with torch.no_grad():
        o = im(base, sources=None, unit_locations=copy.deepcopy(c["unit_locations"]),
               return_dict=True)
    got = {"intervened.logits": o.intervened_outputs.logits}
    for i, t in enumerate(o.collected_activations or []):
        got[f"collected.{i}"] = t
    for k, v in got.items():
        assert torch.equal(v, expected[k]), f"{c['name']}: crosscheck differs on {k}"


def main():
    only = sys.argv[1:]
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    if not only and os.path.isdir(OUT):
        # sd_* cases are written by make_pyvene_fixtures_state.py.
        for d in os.listdir(OUT):
            if not d.startswith("sd_"):
                shutil.rmtree(os.path.join(OUT, d))
    os.makedirs(OUT, exist_ok=True)
    weak = []
    for c in CASES:
        if only and not any(o in c["name"] for o in only):
            continue
        effect, shapes = run_case(c)
        only_collect = all(r["intervention_type"] == "CollectIntervention" for r in c["reps"])
        flag = ""
        if not only_collect and effect < 1e-2:
            flag = "  <-- weak effect"
            weak.append(c["name"])
        extra = f" collected {shapes}" if shapes else ""
        print(f"{c['name']:55s} effect {effect:9.4f}{extra}{flag}")
    if weak:
        print("cases whose intervention barely changes the output:", ", ".join(weak))


if __name__ == "__main__":
    main()

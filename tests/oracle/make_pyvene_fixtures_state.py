#!/usr/bin/env python3
"""Oracle cases for whole pyvene state dicts: tests/fixtures/pyvene/sd_<case>/, made by REAL
pyvene 0.1.8, in the format of tests/oracle/make_pyvene_fixtures.py (whose runner this reuses).

For every built-in intervention type, the request passes the FULL `state_dict()` pyvene 0.1.8
exports, unchanged, through "intervention_state": the `embed_dim` and `interchange_dim` buffers
of every type, `source_representation` for a constant source, and each type's parameters and
buffers (perturbed or set to non-default values). Whatever the state carries is NOT in the
request's config: a non-default `interchange_dim` or a constant source reaches vene only through
the state, so a state whose keys were dropped gives other logits.

Run from the repository root (same requirements as make_pyvene_fixtures.py, a few seconds):

    python3 tests/oracle/make_pyvene_fixtures_state.py          # rewrites tests/fixtures/pyvene/sd_*
    python3 tests/oracle/make_pyvene_fixtures_state.py NAME ... # only the cases whose name contains NAME

tests/pyvene_oracle.rs replays these cases with the others.
"""

import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_pyvene_fixtures as oracle  # noqa: E402  (the runner, models, inputs, initialisers)

from make_pyvene_fixtures import BASE_POS, L1, OUT, SRC, SRC_POS, full, make_pca, rep  # noqa: E402

PREFIX = "sd_"

# Every type's state goes into the request (the base suite passes only the parametrised ones).
oracle.STATEFUL = {
    "VanillaIntervention", "AdditionIntervention", "SubtractionIntervention", "ZeroIntervention",
    "CollectIntervention", "SkipIntervention", "NoiseIntervention", "SigmoidMaskIntervention",
    "RotatedSpaceIntervention", "LowRankRotatedSpaceIntervention",
    "BoundlessRotatedSpaceIntervention", "SigmoidMaskRotatedSpaceIntervention",
    "PCARotatedSpaceIntervention", "AutoencoderIntervention", "JumpReLUAutoencoderIntervention",
}


def init_noise(inter, g):
    """Another noise buffer and level than the fixed RandomState(1) draw and the default."""
    inter.noise.copy_(torch.randn(inter.noise.shape, generator=g, dtype=torch.float64))
    inter.noise_level.copy_(torch.tensor(0.5))


oracle.INITS["NoiseIntervention"] = init_noise

CASES = []


def case(name, what, reps, state_only=None, **kw):
    """`state_only`: fields pyvene builds with (per representation) that the request's config
    leaves out, so that they come to vene only through the state dict."""
    assert name.startswith(PREFIX)
    pyvene_reps = [dict(r, **(state_only or {}).get(i, {})) for i, r in enumerate(reps)]
    CASES.append(dict(name=name, what=what, reps=reps, pyvene_reps=pyvene_reps, **kw))


BASE_ONLY = {"base": [[[2], [4]]]}
CONST = {"const": ("randn", [32], 0.7)}

case("sd_vanilla", "VanillaIntervention, interchange_dim 8 only in the state: swaps the first "
     "8 features", [rep(0, "block_output")], {0: {"interchange_dim": 8}}, sources=[SRC],
     unit_locations=L1)
case("sd_addition", "AdditionIntervention, interchange_dim 12 from the state",
     [rep(0, "block_output", "AdditionIntervention")], {0: {"interchange_dim": 12}},
     sources=[SRC], unit_locations=L1)
case("sd_subtraction", "SubtractionIntervention, interchange_dim 5 from the state",
     [rep(1, "mlp_output", "SubtractionIntervention")], {0: {"interchange_dim": 5}},
     sources=[SRC], unit_locations=L1)
case("sd_zero", "ZeroIntervention, base only, interchange_dim 10 from the state",
     [rep(0, "block_output", "ZeroIntervention")], {0: {"interchange_dim": 10}},
     unit_locations=BASE_ONLY)
case("sd_collect", "CollectIntervention, interchange_dim 6 from the state: collects the first "
     "6 features", [rep(1, "block_output", "CollectIntervention")], {0: {"interchange_dim": 6}},
     unit_locations=BASE_ONLY)
case("sd_skip", "SkipIntervention on block_output layer 1, interchange_dim 16 from the state",
     [rep(1, "block_output", "SkipIntervention")], {0: {"interchange_dim": 16}},
     sources=[oracle.BASE], unit_locations=full(BASE_POS, BASE_POS))
case("sd_noise", "NoiseIntervention with another noise buffer and noise_level 0.5 from the "
     "state, 4 positions, base only", [rep(0, "block_output", "NoiseIntervention")],
     unit_locations={"base": [1, 2, 3, 4]})
case("sd_sigmoid_mask", "SigmoidMaskIntervention: mask, temperature and the buffers",
     [rep(0, "block_output", "SigmoidMaskIntervention")], sources=[SRC], unit_locations=L1)
case("sd_rotated_space", "RotatedSpaceIntervention whose interchange_dim 8 is only in the "
     "state: swaps 8 rotated coordinates, not the whole space",
     [rep(0, "block_output", "RotatedSpaceIntervention")], {0: {"interchange_dim": 8}},
     sources=[SRC], unit_locations=L1)
case("sd_rotated_space_two_positions", "RotatedSpace over 2 positions (embed_dim 64 in the "
     "state), interchange_dim 20 from the state",
     [rep(1, "block_output", "RotatedSpaceIntervention", max_number_of_units=2)],
     {0: {"interchange_dim": 20}}, sources=[SRC],
     unit_locations=full([[1, 2], [2, 3]], [[3, 4], [4, 5]]))
case("sd_low_rank_rotated_space", "LowRankRotatedSpaceIntervention k=4, whole state dict",
     [rep(0, "block_output", "LowRankRotatedSpaceIntervention", low_rank_dimension=4)],
     sources=[SRC], unit_locations=L1)
case("sd_boundless_rotated_space", "BoundlessRotatedSpaceIntervention: boundary, temperature, "
     "population and the buffers", [rep(0, "block_output", "BoundlessRotatedSpaceIntervention")],
     sources=[SRC], unit_locations=L1)
case("sd_sigmoid_mask_rotated_space", "SigmoidMaskRotatedSpaceIntervention: masks, temperature "
     "and the buffers", [rep(1, "block_output", "SigmoidMaskRotatedSpaceIntervention")],
     sources=[SRC], unit_locations=L1)
case("sd_pca_rotated_space", "PCARotatedSpaceIntervention (8 components), interchange_dim 5 "
     "from the state: swaps the first 5 PCA coordinates",
     [rep(0, "block_output", "PCARotatedSpaceIntervention")], {0: {"interchange_dim": 5}},
     sources=[SRC], unit_locations=L1, instances={0: make_pca})
case("sd_autoencoder", "AutoencoderIntervention latent_dim 16, latent ids [1, 4, 6, 11] "
     "(interchange_dim as a list) from the state",
     [rep(0, "block_output", "AutoencoderIntervention", latent_dim=16)],
     {0: {"interchange_dim": [1, 4, 6, 11]}}, sources=[SRC], unit_locations=L1)
case("sd_jumprelu_autoencoder", "JumpReLUAutoencoderIntervention k=16, interchange_dim 6 from "
     "the state: swaps the first 6 latents",
     [rep(0, "block_output", "JumpReLUAutoencoderIntervention", low_rank_dimension=16)],
     {0: {"interchange_dim": 6}}, sources=[SRC], unit_locations=L1)
case("sd_const_vanilla", "VanillaIntervention with a constant source only in the state "
     "(source_representation), base only", [rep(1, "mlp_output")],
     {0: {"source_representation": "const"}}, unit_locations=BASE_ONLY, tensors=CONST)
case("sd_const_addition", "AdditionIntervention with a constant source and interchange_dim 10, "
     "both only in the state", [rep(0, "block_output", "AdditionIntervention")],
     {0: {"source_representation": "const", "interchange_dim": 10}}, unit_locations=BASE_ONLY,
     tensors=CONST)
case("sd_head_vanilla", "Vanilla on head_attention_value_output (embed_dim 8 in the state), "
     "interchange_dim 3 from the state", [rep(0, "head_attention_value_output", unit="h.pos")],
     {0: {"interchange_dim": 3}}, sources=[SRC],
     unit_locations=full([[[1], [3]], SRC_POS], [[[1], [3]], BASE_POS]))


def main():
    only = sys.argv[1:]
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    assert not set(names) & {c["name"] for c in oracle.CASES}, "a name the base suite uses"
    if not only and os.path.isdir(OUT):
        for d in os.listdir(OUT):
            if d.startswith(PREFIX):
                shutil.rmtree(os.path.join(OUT, d))
    os.makedirs(OUT, exist_ok=True)
    for c in CASES:
        if only and not any(o in c["name"] for o in only):
            continue
        effect, shapes = oracle.run_case(c)
        extra = f" collected {shapes}" if shapes else ""
        print(f"{c['name']:40s} effect {effect:9.4f}{extra}")


if __name__ == "__main__":
    main()

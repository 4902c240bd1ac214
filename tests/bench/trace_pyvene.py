"""ROME-style causal tracing done with pyvene, as a careful user would, for timing `vene trace`
against (tests/bench/latency.py --only trace). Same noise as vene and ROME: numpy
RandomState(SEED).randn(SAMPLES, subject_len, hidden) times NOISE x the unbiased std of the
subject's token embeddings, added to the input embeddings at the subject's positions.

Careful means: the clean activations are recorded once and handed to pyvene as
source_representations (no source forward per cell); one IntervenableModel per (kind, layer),
restoring every position from the subject on at once (rows = positions x samples); positions
before the subject are not run (restoring them cannot change anything). `--per-cell` runs ROME's
own loop shape instead: one forward per (kind, layer, position), the noise samples as its batch.

    python3 tests/bench/trace_pyvene.py MODEL_DIR IDS SUBJ_START SUBJ_END TARGET \
        [--samples 10] [--seed 1] [--noise 3] [--window 10] [--per-cell]

IDS comma-separated, the subject is positions SUBJ_START..SUBJ_END (end exclusive), as
`vene trace --json` reports them. Prints one JSON line: p_clean, p_corrupt and per kind the
grid of mean P(target) [position][layer].
"""

import argparse
import json

import numpy as np
import pyvene as pv
import torch
from transformers import AutoModelForCausalLM

KINDS = ("block_output", "mlp_output", "attention_output")


def window(layer, w, n):
    return range(max(0, layer - w // 2), min(n, layer + (w + 1) // 2))


def clean_activations(model, ids):
    """Output of every decoder layer, its MLP and its attention on the clean prompt."""
    acts, hooks = {}, []
    for l, layer in enumerate(model.model.layers):
        for kind, mod in (("block_output", layer), ("mlp_output", layer.mlp),
                          ("attention_output", layer.self_attn)):
            def hook(_m, _i, out, key=(kind, l)):
                acts[key] = (out[0] if isinstance(out, tuple) else out).detach()
            hooks.append(mod.register_forward_hook(hook))
    model(input_ids=ids)
    for h in hooks:
        h.remove()
    return acts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("ids")
    ap.add_argument("start", type=int)
    ap.add_argument("end", type=int)
    ap.add_argument("target", type=int)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--noise", type=float, default=3.0)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--per-cell", action="store_true",
                    help="ROME's own loop shape: one forward per (kind, layer, position) cell, the samples as its batch")
    a = ap.parse_args()
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, torch_dtype=torch.float32).eval()
    ids = torch.tensor([[int(x) for x in a.ids.split(",")]])
    n, (b, e), s = ids.shape[1], (a.start, a.end), a.samples
    n_layers = model.config.num_hidden_layers

    def p_target(logits):
        return torch.softmax(logits[:, -1], dim=-1)[:, a.target]

    with torch.no_grad():
        emb = model.get_input_embeddings()(ids)
        std = float(emb[0, b:e].double().std())
        noise_std = np.float32(a.noise * std)
        draws = np.random.RandomState(a.seed).randn(s, e - b, emb.shape[-1])
        noise = torch.from_numpy(draws.astype(np.float32)) * torch.tensor(noise_std)
        corrupt = emb.repeat(s, 1, 1)
        corrupt[:, b:e] += noise
        p_clean = float(p_target(model(input_ids=ids).logits)[0])
        p_corrupt = float(p_target(model(inputs_embeds=corrupt).logits).mean())
        clean = clean_activations(model, ids)

        positions = list(range(b, n))
        grids = {}
        for kind in KINDS:
            grid = [[p_corrupt] * n_layers for _ in range(n)]
            for layer in range(n_layers):
                layers = [layer] if kind == "block_output" else list(window(layer, a.window, n_layers))
                cfg = pv.IntervenableConfig([{"layer": l, "component": kind} for l in layers])
                ivm = pv.IntervenableModel(cfg, model)
                # Per cell: each position alone, its samples as the batch; else all at once.
                groups = [[p] for p in positions] if a.per_cell else [positions]
                for group in groups:
                    rows = [p for p in group for _ in range(s)]
                    locs = [[[p] for p in rows]] * len(layers)
                    reps = [clean[(kind, l)][0, rows].unsqueeze(1) for l in layers]
                    inputs = {"inputs_embeds": corrupt.repeat(len(group), 1, 1)}
                    _, out = ivm(inputs, unit_locations={"base": locs}, source_representations=reps)
                    means = p_target(out.logits).reshape(len(group), s).mean(dim=1)
                    for i, p in enumerate(group):
                        grid[p][layer] = float(means[i])
            grids[kind] = grid
    print(json.dumps({"p_clean": p_clean, "p_corrupt": p_corrupt, "grids": grids}))


if __name__ == "__main__":
    main()

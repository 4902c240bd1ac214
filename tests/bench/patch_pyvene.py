"""The seed's patching sweep done with pyvene, as a careful user would: one IntervenableModel per
layer (block_output), all positions of that layer in one batch (row p patches position p).
Whole process timed by the caller (tests/bench/latency.py), load included.

    python3 tests/bench/patch_pyvene.py MODEL_DIR BASE_IDS SOURCE_IDS TARGET_ID

IDS are comma-separated token ids (the same ids `vene patch --json` reports). Prints one JSON
line: P(target) per [position][layer], for checking against vene's cells.
"""

import json
import sys

import torch
import pyvene as pv
from transformers import AutoModelForCausalLM


def main():
    model_dir, base, source, target = sys.argv[1:5]
    base = [int(x) for x in base.split(",")]
    source = [int(x) for x in source.split(",")]
    target = int(target)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    n = len(base)
    layers = model.config.num_hidden_layers
    grid = [[0.0] * layers for _ in range(n)]
    b = {"input_ids": torch.tensor([base] * n)}
    s = {"input_ids": torch.tensor([source] * n)}
    # One intervention; row p patches position p.
    locs = [[[p] for p in range(n)]]
    with torch.no_grad():
        for layer in range(layers):
            cfg = pv.IntervenableConfig([{"layer": layer, "component": "block_output"}])
            ivm = pv.IntervenableModel(cfg, model)
            _, out = ivm(b, [s], {"sources->base": (locs, locs)})
            probs = torch.softmax(out.logits[:, -1], dim=-1)[:, target]
            for p in range(n):
                grid[p][layer] = float(probs[p])
    print(json.dumps({"p_target": grid}))


if __name__ == "__main__":
    main()

"""Writes a randomly initialised GPT-2-small-shaped model (12 layers, 768 wide, 12 heads,
vocab 50257, 1024 positions; ~124M parameters, ~500 MB of f32 safetensors) as a Hugging Face
directory, for the forward benchmark. Nothing here is committed: the directory goes wherever
you point it (run.sh uses a temporary folder and reuses it between runs).

    python3 tests/bench/make_gpt2_small.py OUT_DIR [--seed 0]
"""

import argparse
import os

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if os.path.exists(os.path.join(a.out, "model.safetensors")):
        print(f"{a.out} already holds a model; keeping it")
        return
    torch.manual_seed(a.seed)
    cfg = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024)
    model = GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(a.out, safe_serialization=True)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {a.out}: GPT-2 small shape, {n} parameters, random weights (seed {a.seed})")


if __name__ == "__main__":
    main()

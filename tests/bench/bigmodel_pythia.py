#!/usr/bin/env python3
"""Writes a synthetic pythia-6.9B-shaped f16 Hugging Face checkpoint (random weights, the real
shapes and tensor names, sharded with model.safetensors.index.json as transformers saves it;
nothing downloaded) and, with --run, measures vene on it as stored (f16) with the same steps as
bigmodel.py: `vene info` (load time, peak RSS, resident weight bytes), a 64-token forward and an
interchange at layer 16 generating 16 tokens. Not run in CI: the directory is ~12.9 GiB; delete it
afterwards.

    /work/venv-oracle/bin/python tests/bench/bigmodel_pythia.py /tmp/pythia-6.9b-f16 --run
"""

import argparse
import json
import os
import sys
import time

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bigmodel import run  # noqa: E402  (the same measurements as the Llama-8B benchmark)

HIDDEN, FFN, LAYERS, HEADS, VOCAB = 4096, 16384, 32, 32, 50432
CONFIG = {
    "architectures": ["GPTNeoXForCausalLM"],
    "model_type": "gpt_neox",
    "hidden_size": HIDDEN,
    "intermediate_size": FFN,
    "num_attention_heads": HEADS,
    "num_hidden_layers": LAYERS,
    "rotary_pct": 0.25,
    "rotary_emb_base": 10000,
    "max_position_embeddings": 2048,
    "layer_norm_eps": 1e-5,
    "use_parallel_residual": True,
    "vocab_size": VOCAB,
    "hidden_act": "gelu",
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "bos_token_id": 0,
    "eos_token_id": 0,
}


def tensors():
    """(name, shape) of every tensor pythia-6.9b's checkpoint holds, in order."""
    yield "gpt_neox.embed_in.weight", (VOCAB, HIDDEN)
    for i in range(LAYERS):
        p = f"gpt_neox.layers.{i}."
        for norm in ("input_layernorm", "post_attention_layernorm"):
            yield p + norm + ".weight", (HIDDEN,)
            yield p + norm + ".bias", (HIDDEN,)
        for name, rows, cols in (
            ("attention.query_key_value", 3 * HIDDEN, HIDDEN),
            ("attention.dense", HIDDEN, HIDDEN),
            ("mlp.dense_h_to_4h", FFN, HIDDEN),
            ("mlp.dense_4h_to_h", HIDDEN, FFN),
        ):
            yield p + name + ".weight", (rows, cols)
            yield p + name + ".bias", (rows,)
    yield "gpt_neox.final_layer_norm.weight", (HIDDEN,)
    yield "gpt_neox.final_layer_norm.bias", (HIDDEN,)
    yield "embed_out.weight", (VOCAB, HIDDEN)


def write(path, shard_bytes=2 << 30):
    os.makedirs(path, exist_ok=True)
    json.dump(CONFIG, open(os.path.join(path, "config.json"), "w"), indent=1)
    rng = np.random.default_rng(0)
    # Drawing 6.9e9 normals takes minutes; windows of one random pool at random offsets give
    # realistic sizes (std 0.02) at disk speed. Norm weights are ones, biases small.
    pool = (rng.standard_normal(1 << 26) * 0.02).astype(np.float16)
    files, weight_map, shard, size, total = [], {}, {}, 0, 0

    def flush():
        # Each shard goes to disk as soon as it is full (the whole model would not fit in RAM);
        # files are renamed to transformers' "-of-N" names once N is known.
        file = f"part-{len(files) + 1:05d}.safetensors"
        save_file(shard, os.path.join(path, file), metadata={"format": "pt"})
        files.append(file)
        weight_map.update({name: file for name in shard})

    for name, shape in tensors():
        n = int(np.prod(shape))
        if name.endswith("layernorm.weight") or name.endswith("layer_norm.weight"):
            t = np.ones(shape, dtype=np.float16)
        else:
            start = int(rng.integers(0, pool.size))
            t = np.resize(np.roll(pool, -start), n).reshape(shape)
        shard[name] = t
        size += t.nbytes
        total += t.nbytes
        if size >= shard_bytes:
            flush()
            shard, size = {}, 0
    if shard:
        flush()
    names = {f: f"model-{k:05d}-of-{len(files):05d}.safetensors" for k, f in enumerate(files, 1)}
    for old, new in names.items():
        os.rename(os.path.join(path, old), os.path.join(path, new))
    weight_map = {name: names[f] for name, f in weight_map.items()}
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    json.dump(index, open(os.path.join(path, "model.safetensors.index.json"), "w"), indent=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--run", action="store_true", help="measure vene on the checkpoint")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if not os.path.exists(a.path):
        t = time.time()
        write(a.path)
        size = sum(os.path.getsize(os.path.join(a.path, f)) for f in os.listdir(a.path))
        print(f"wrote {a.path} ({size / 2**30:.2f} GiB) in {time.time() - t:.0f} s")
    if a.run:
        run(a.path, a.threads)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Writes a synthetic Llama-3.1-8B-shaped GGUF with Q4_K blocks (random weights, the real
shapes; nothing downloaded), then optionally measures `vene info` on it (load time, peak RSS,
resident weight bytes) under each weight mode. Not run in CI: the file is ~4.6 GB.

    /work/venv-oracle/bin/python tests/bench/bigmodel.py /tmp/llama8b-q4k.gguf [--run]

Random Q4_K blocks: each 144-byte block is random bytes (4-bit values and 6-bit scales) with its
two f16 super-block scales set to small finite values, so every weight is finite and of a
realistic size. The file has no tokenizer: feed token ids.
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import gguf

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, VOCAB = 4096, 14336, 32, 32, 8, 128256
HEAD_DIM = HIDDEN // HEADS
Q4K = gguf.GGMLQuantizationType.Q4_K
Q4K_BLOCK, Q4K_BYTES = 256, 144


def tensors():
    """(name, numpy shape (rows, cols), quantized?) in file order."""
    yield "token_embd.weight", (VOCAB, HIDDEN), True
    for i in range(LAYERS):
        p = f"blk.{i}."
        yield p + "attn_norm.weight", (HIDDEN,), False
        yield p + "attn_q.weight", (HEADS * HEAD_DIM, HIDDEN), True
        yield p + "attn_k.weight", (KV_HEADS * HEAD_DIM, HIDDEN), True
        yield p + "attn_v.weight", (KV_HEADS * HEAD_DIM, HIDDEN), True
        yield p + "attn_output.weight", (HIDDEN, HEADS * HEAD_DIM), True
        yield p + "ffn_norm.weight", (HIDDEN,), False
        yield p + "ffn_gate.weight", (FFN, HIDDEN), True
        yield p + "ffn_up.weight", (FFN, HIDDEN), True
        yield p + "ffn_down.weight", (HIDDEN, FFN), True
    yield "output_norm.weight", (HIDDEN,), False
    yield "output.weight", (VOCAB, HIDDEN), True


def q4k_blocks(rows, cols, rng):
    blocks = rows * cols // Q4K_BLOCK
    data = rng.integers(0, 256, size=(blocks, Q4K_BYTES), dtype=np.uint8)
    scales = np.array([0.002, 0.001], dtype=np.float16).view(np.uint8)
    data[:, 0:4] = scales  # d, dmin
    return data.reshape(rows, cols // Q4K_BLOCK * Q4K_BYTES)


def write(path):
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(LAYERS)
    w.add_context_length(131072)
    w.add_embedding_length(HIDDEN)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(500000.0)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(VOCAB)
    for name, shape, quantized in tensors():
        if quantized:
            row_bytes = shape[1] // Q4K_BLOCK * Q4K_BYTES
            # gguf-py takes a quantized tensor's shape in bytes per row.
            w.add_tensor_info(
                name, (shape[0], row_bytes), np.dtype(np.uint8), shape[0] * row_bytes, raw_dtype=Q4K
            )
        else:
            w.add_tensor_info(name, shape, np.dtype(np.float32), shape[0] * 4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, shape, quantized in tensors():
        if quantized:
            w.write_tensor_data(q4k_blocks(shape[0], shape[1], rng))
        else:
            w.write_tensor_data(np.ones(shape, dtype=np.float32))
    w.close()


def run(path):
    vene = os.path.join(os.path.dirname(__file__), "..", "..", "target", "release", "vene")
    # Other modes of an 8B model need 10-20 GB (embeddings and LM head are f32 in every mode).
    for mode in ["as-stored"]:
        t = time.time()
        r = subprocess.run(
            ["/usr/bin/time", "-v", vene, "info", "--weights", mode, "--model", path],
            capture_output=True,
            text=True,
        )
        rss = [l for l in r.stderr.splitlines() if "Maximum resident" in l]
        weights = [l for l in r.stdout.splitlines() if l.startswith("weights")]
        err = [l for l in r.stderr.splitlines() if l.startswith("error")]
        print(f"{mode}: exit {r.returncode}, {time.time() - t:.1f} s, {rss} {weights} {err}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--run", action="store_true", help="measure `vene info` on the file")
    a = ap.parse_args()
    if not os.path.exists(a.path):
        t = time.time()
        write(a.path)
        print(f"wrote {a.path} ({os.path.getsize(a.path) / 2**30:.2f} GiB) in {time.time() - t:.0f} s")
    if a.run:
        run(a.path)


if __name__ == "__main__":
    sys.exit(main())

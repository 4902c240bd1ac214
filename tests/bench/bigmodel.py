#!/usr/bin/env python3
"""Writes a synthetic Llama-3.1-8B-shaped GGUF with Q4_K_M's tensor types (random weights, the
real shapes; nothing downloaded): Q4_K everywhere but Q6_K for the LM head and, as llama.cpp's
Q4_K_M picks them, attn_v and ffn_down of the first and last eighth of the layers and every third
layer between. With --run it measures the model as stored: `vene info` (load time, peak RSS,
resident weight bytes), a 64-token forward (prompt tokens/s, `vene run --repeat`), and one
interchange (layer 16 block output, 16-token base and source) generating 16 tokens (peak RSS;
generation tokens/s from the difference with the same request generating 1 token). Not run in
CI: the file is ~4.6 GB; delete it afterwards.

    /work/venv-oracle/bin/python tests/bench/bigmodel.py /tmp/llama8b-q4km.gguf --run

Random blocks: random bytes (4- or 6-bit values, scales) with the f16 super-block scales set to
small finite values, so every weight is finite and of a realistic size. The file has no
tokenizer: requests feed token ids.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import gguf

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, VOCAB = 4096, 14336, 32, 32, 8, 128256
HEAD_DIM = HIDDEN // HEADS
Q4K = gguf.GGMLQuantizationType.Q4_K
Q6K = gguf.GGMLQuantizationType.Q6_K
F32 = None
BLOCK = 256
BLOCK_BYTES = {Q4K: 144, Q6K: 210}


def more_bits(i):
    """Layers whose attn_v and ffn_down Q4_K_M keeps in Q6_K."""
    return i < LAYERS // 8 or i >= 7 * LAYERS // 8 or (i - LAYERS // 8) % 3 == 2


def tensors():
    """(name, numpy shape (rows, cols), GGML type or F32) in file order."""
    yield "token_embd.weight", (VOCAB, HIDDEN), Q4K
    for i in range(LAYERS):
        p = f"blk.{i}."
        wide = Q6K if more_bits(i) else Q4K
        yield p + "attn_norm.weight", (HIDDEN,), F32
        yield p + "attn_q.weight", (HEADS * HEAD_DIM, HIDDEN), Q4K
        yield p + "attn_k.weight", (KV_HEADS * HEAD_DIM, HIDDEN), Q4K
        yield p + "attn_v.weight", (KV_HEADS * HEAD_DIM, HIDDEN), wide
        yield p + "attn_output.weight", (HIDDEN, HEADS * HEAD_DIM), Q4K
        yield p + "ffn_norm.weight", (HIDDEN,), F32
        yield p + "ffn_gate.weight", (FFN, HIDDEN), Q4K
        yield p + "ffn_up.weight", (FFN, HIDDEN), Q4K
        yield p + "ffn_down.weight", (HIDDEN, FFN), wide
    yield "output_norm.weight", (HIDDEN,), F32
    yield "output.weight", (VOCAB, HIDDEN), Q6K


def random_blocks(qtype, rows, cols, rng):
    blocks = rows * cols // BLOCK
    data = rng.integers(0, 256, size=(blocks, BLOCK_BYTES[qtype]), dtype=np.uint8)
    if qtype == Q4K:
        data[:, 0:4] = np.array([0.002, 0.001], dtype=np.float16).view(np.uint8)  # d, dmin
    else:
        data[:, 128 + 64 : 208] &= 0x1F  # 8-bit scales, kept small
        data[:, 208:210] = np.array([0.0005], dtype=np.float16).view(np.uint8)  # d
    return data.reshape(rows, cols // BLOCK * BLOCK_BYTES[qtype])


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
    for name, shape, qtype in tensors():
        if qtype is not None:
            row_bytes = shape[1] // BLOCK * BLOCK_BYTES[qtype]
            # gguf-py takes a quantized tensor's shape in bytes per row.
            w.add_tensor_info(
                name, (shape[0], row_bytes), np.dtype(np.uint8), shape[0] * row_bytes, raw_dtype=qtype
            )
        else:
            w.add_tensor_info(name, shape, np.dtype(np.float32), shape[0] * 4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, shape, qtype in tensors():
        if qtype is not None:
            w.write_tensor_data(random_blocks(qtype, shape[0], shape[1], rng))
        else:
            w.write_tensor_data(np.ones(shape, dtype=np.float32))
    w.close()


def timed(args):
    """(wall seconds, peak RSS GiB, stdout) of one command under /usr/bin/time -v."""
    t = time.time()
    r = subprocess.run(["/usr/bin/time", "-v", *args], capture_output=True, text=True)
    wall = time.time() - t
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)}: exit {r.returncode}\n{r.stderr[-2000:]}")
    kb = next(int(l.split()[-1]) for l in r.stderr.splitlines() if "Maximum resident" in l)
    return wall, kb / 2**20, r.stdout


def run(path, threads):
    here = os.path.dirname(os.path.abspath(__file__))
    vene = os.path.join(here, "..", "..", "target", "release", "vene")
    env_threads = {"RAYON_NUM_THREADS": str(threads)}
    os.environ.update(env_threads)
    wall, rss, out = timed([vene, "info", "--model", path])
    weights = [l.strip() for l in out.splitlines() if "weights" in l]
    print(f"info: {wall:.1f} s (load), peak RSS {rss:.2f} GiB, {weights}")

    req = os.path.join(os.path.dirname(os.path.abspath(path)), "bigmodel_request.json")
    prompt = {"model": path, "base": {"input_ids": [list(range(300, 364))]}, "logits": "last"}
    json.dump(prompt, open(req, "w"))
    _, rss, out = timed([vene, "run", "--request", req, "--json", "--repeat", "2"])
    ms = json.loads(out.strip().splitlines()[-1])["median_ms"]
    print(f"prompt: 64 tokens in {ms:.0f} ms = {64000 / ms:.1f} tok/s (peak RSS {rss:.2f} GiB)")

    def interchange(new_tokens):
        body = {
            "model": path,
            "config": {"representations": [
                {"layer": 16, "component": "block_output", "unit": "pos",
                 "intervention_type": "VanillaIntervention"}]},
            "base": {"input_ids": [list(range(1000, 1016))]},
            "sources": [{"input_ids": [list(range(2000, 2016))]}],
            "unit_locations": {"sources->base": 15},
            "generate": {"max_new_tokens": new_tokens, "ignore_eos": True,
                         "intervene_on_prompt": True},
        }
        json.dump(body, open(req, "w"))
        return timed([vene, "run", "--request", req, "--json"])

    walls = {}
    for n in (1, 16):
        wall, rss, out = interchange(n)
        walls.setdefault(n, []).append(wall)
        print(f"interchange + {n} generated: {wall:.1f} s, peak RSS {rss:.2f} GiB")
    gen = 15 / (min(walls[16]) - min(walls[1]))
    print(f"generation: {gen:.2f} tok/s (15 tokens / difference of the best runs), threads {threads}")
    os.remove(req)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--run", action="store_true", help="measure vene on the file")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if not os.path.exists(a.path):
        t = time.time()
        write(a.path)
        print(f"wrote {a.path} ({os.path.getsize(a.path) / 2**30:.2f} GiB) in {time.time() - t:.0f} s")
    if a.run:
        run(a.path, a.threads)


if __name__ == "__main__":
    sys.exit(main())

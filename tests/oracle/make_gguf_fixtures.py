#!/usr/bin/env python3
"""Builds the GGUF fixtures under tests/fixtures/gguf/ (read by tests/gguf_families.rs).

How to run (from the repository root; the oracle venv has numpy, safetensors, torch and the
`gguf` package, which is llama.cpp's own gguf-py; Gemma 3 needs transformers >= 4.50, e.g.
4.51.3 on PYTHONPATH):

    PYTHONPATH=/work/tf-new /work/venv-oracle/bin/python tests/oracle/make_gguf_fixtures.py

It writes, deterministically:

  families/<name>.gguf   For each tiny Hugging Face fixture tests/fixtures/hf/<name>/ (made by
  families/<name>.logits tests/oracle/make_fixtures*.py), the same random weights as llama.cpp's
                         convert_hf_to_gguf.py would store them: tensor names from gguf-py's own
                         name map (gguf.get_tensor_name_map), the metadata keys llama.cpp writes
                         for the architecture, and its storage changes: Q/K rows permuted for the
                         rotary layout (llama, olmo), RMSNorm weights stored as 1 + w (gemma, gemma2,
                         gemma3), Conv1D weights transposed (gpt2), fused QKV regrouped as q|k|v
                         (gptneox). Matrices f16 (the weights are rounded to f16 before the
                         reference is computed), vectors f32. <name>.logits.safetensors holds
                         transformers' logits on the fixture's left- and right-padded batches
                         (Gemma 2/3: of the model rebuilt with what GGUF can express, see
                         FAMILIES).

  quant/<TYPE>.gguf      A tiny llama GGUF whose linear weights are stored as <TYPE> (Q4_0, Q4_1,
  quant/reference.json   Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, F16, BF16). The
                         32-wide types quantize every matrix (gguf.quants.quantize); the K-quants
                         (256-wide blocks, which gguf-py cannot quantize) get random blocks with
                         sane scales in the one matrix wide enough (ffn_down, 256 columns). The
                         reference logits come from transformers' LlamaForCausalLM loaded with
                         the weights gguf.quants.dequantize (numpy) reads back (Q8_K: d * q,
                         dequantized here), Q/K rows un-permuted.

Only file layout knowledge comes from llama.cpp (gguf-py); no code of it is copied.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

import gguf
from gguf import GGMLQuantizationType as Q

ROOT = Path(__file__).resolve().parents[2]
HF = ROOT / "tests/fixtures/hf"
OUT = ROOT / "tests/fixtures/gguf"


# ------------------------------------------------------------------------------------------
# llama.cpp's storage changes


def permute_rows(w, n_head):
    """llama.cpp's rotary layout: each head's rows (first half, second half) interleaved."""
    shape = w.shape
    return w.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def neox_qkv_grouped(w, n_head):
    """HF GPT-NeoX interleaves q, k, v per head; llama.cpp wants all q, then k, then v."""
    shape = w.shape
    per_head = w.reshape(n_head, 3, shape[0] // n_head // 3, *shape[1:])
    return np.concatenate([per_head[:, i].reshape(-1, *shape[1:]) for i in range(3)], axis=0)


# ------------------------------------------------------------------------------------------
# metadata per architecture, as llama.cpp's converter writes it


def meta_common(w, c):
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_block_count(c["num_hidden_layers"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(c.get("num_key_value_heads") or c["num_attention_heads"])
    w.add_rope_freq_base(c.get("rope_theta", 10000.0))
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    if c.get("head_dim"):
        w.add_key_length(c["head_dim"])
        w.add_value_length(c["head_dim"])


def head_dim(c):
    return c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]


def meta_llama(w, c):
    meta_common(w, c)
    w.add_rope_dimension_count(head_dim(c))


def meta_gemma2(w, c):
    meta_common(w, c)
    w.add_attn_logit_softcapping(c["attn_logit_softcapping"])
    w.add_final_logit_softcapping(c["final_logit_softcapping"])
    w.add_sliding_window(c["sliding_window"])


def meta_gemma3(w, c):
    meta_common(w, c)
    if c.get("final_logit_softcapping"):
        w.add_final_logit_softcapping(c["final_logit_softcapping"])
    w.add_sliding_window(c["sliding_window"])


def meta_phi3(w, c):
    meta_common(w, c)
    rot = int(c.get("partial_rotary_factor", 1.0) * c["hidden_size"]) // c["num_attention_heads"]
    w.add_rope_dimension_count(rot)
    w.add_rope_scaling_orig_ctx_len(c.get("original_max_position_embeddings") or c["max_position_embeddings"])
    w.add_sliding_window(c.get("sliding_window") or 0)


def meta_olmo(w, c):
    meta_common(w, c)
    w.add_layer_norm_eps(1e-5)
    if c.get("clip_qkv") is not None:
        w.add_clamp_kqv(c["clip_qkv"])


def meta_olmo2(w, c):
    meta_common(w, c)


def meta_gpt2(w, c):
    w.add_block_count(c["n_layer"])
    w.add_context_length(c["n_positions"])
    w.add_embedding_length(c["n_embd"])
    w.add_feed_forward_length(4 * c["n_embd"])  # what the converter writes, whatever n_inner is
    w.add_head_count(c["n_head"])
    w.add_layer_norm_eps(c["layer_norm_epsilon"])


def meta_gptneox(w, c):
    w.add_context_length(c["max_position_embeddings"])
    w.add_embedding_length(c["hidden_size"])
    w.add_block_count(c["num_hidden_layers"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_rope_dimension_count(int(c["rotary_pct"] * (c["hidden_size"] // c["num_attention_heads"])))
    w.add_head_count(c["num_attention_heads"])
    w.add_parallel_residual(c.get("use_parallel_residual", True))
    w.add_layer_norm_eps(c["layer_norm_eps"])


# fixture dir -> (gguf architecture, metadata writer, storage changes, config overrides).
# Overrides replace what a GGUF cannot say: llama.cpp fixes Gemma 2/3's attention scale to
# 1/sqrt(head_dim), Gemma 3's local rope base to 10000 and its layer pattern to five sliding
# layers then one global one, so those models are rebuilt with these values (six layers for
# Gemma 3, both kinds of layers; the extra layers get fresh random weights).
FAMILIES = {
    "llama": (gguf.MODEL_ARCH.LLAMA, meta_llama, {"permute_qk"}, {}),
    "qwen2": (gguf.MODEL_ARCH.QWEN2, meta_llama, set(), {}),
    "qwen3": (gguf.MODEL_ARCH.QWEN3, meta_llama, set(), {}),
    "gemma": (gguf.MODEL_ARCH.GEMMA, meta_common, {"norm_plus_one"}, {}),
    "gemma2": (gguf.MODEL_ARCH.GEMMA2, meta_gemma2, {"norm_plus_one"}, {"query_pre_attn_scalar": "head_dim"}),
    "gemma3_text": (
        gguf.MODEL_ARCH.GEMMA3,
        meta_gemma3,
        {"norm_plus_one"},
        {
            "query_pre_attn_scalar": "head_dim",
            "rope_local_base_freq": 10000.0,
            "sliding_window_pattern": 6,
            "num_hidden_layers": 6,
        },
    ),
    "olmo": (gguf.MODEL_ARCH.OLMO, meta_olmo, {"permute_qk"}, {}),
    "olmo2": (gguf.MODEL_ARCH.OLMO2, meta_olmo2, set(), {}),
    "phi3": (gguf.MODEL_ARCH.PHI3, meta_phi3, set(), {}),
    "gpt2": (gguf.MODEL_ARCH.GPT2, meta_gpt2, {"conv1d"}, {}),
    "gpt_neox": (gguf.MODEL_ARCH.GPTNEOX, meta_gptneox, {"neox_qkv"}, {}),
}


def hf_model(name, overrides):
    """The fixture's transformers model, rebuilt with `overrides` when there are any."""
    from transformers import AutoConfig, AutoModelForCausalLM

    d = HF / name
    if not overrides:
        return AutoModelForCausalLM.from_pretrained(
            str(d), torch_dtype=torch.float32, attn_implementation="eager"
        ).eval()
    cfg = AutoConfig.from_pretrained(str(d))
    for k, v in overrides.items():
        setattr(cfg, k, cfg.head_dim if v == "head_dim" else v)
    cfg._attn_implementation = "eager"
    torch.manual_seed(11)
    model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.15)
    fixture = {k: torch.from_numpy(v) for k, v in load_file(str(d / "model.safetensors")).items()}
    state = model.state_dict()
    state.update({k: v for k, v in fixture.items() if k in state})
    model.load_state_dict(state)
    return model


def reference_logits(name, model):
    """Logits on the fixture's left- and right-padded batches (inputs.json; masked positions
    included), as `<side>/logits` tensors."""
    inputs = json.loads((HF / name / "inputs.json").read_text())
    out = {}
    for side in ["left", "right"]:
        b = inputs[side]
        with torch.no_grad():
            logits = model(
                input_ids=torch.tensor(b["ids"]),
                attention_mask=torch.tensor(b["attention_mask"]),
                position_ids=torch.tensor(b["position_ids"]),
            ).logits
        out[f"{side}/logits"] = logits.numpy().astype(np.float32)
    return out


def gguf_tensors(name, cfg, weights, changes, arch):
    n_layers = cfg.get("num_hidden_layers") or cfg["n_layer"]
    names = gguf.get_tensor_name_map(arch, n_layers)
    heads = cfg.get("num_attention_heads") or cfg.get("n_head")
    kv_heads = cfg.get("num_key_value_heads") or heads
    out = {}
    for hf_name, t in sorted(weights.items()):
        if hf_name.endswith((".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")):
            continue
        g = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if g is None:
            sys.exit(f"{name}: gguf-py has no name for {hf_name}")
        t = t.astype(np.float32)
        if "permute_qk" in changes and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            t = permute_rows(t, heads)
        if "permute_qk" in changes and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            t = permute_rows(t, kv_heads)
        if "norm_plus_one" in changes and hf_name.endswith("norm.weight"):
            t = t + 1.0
        if "conv1d" in changes and hf_name.endswith(
            (".c_attn.weight", ".c_proj.weight", ".c_fc.weight")
        ):
            t = t.T
        if "neox_qkv" in changes and "query_key_value" in hf_name:
            t = neox_qkv_grouped(t, heads)
        # Matrices as f16 (the model's weights were rounded to f16 first), vectors as f32.
        out[g] = np.ascontiguousarray(t.astype(np.float16) if t.ndim == 2 else t)
    return out


def write_family(name):
    arch, meta, changes, overrides = FAMILIES[name]
    model = hf_model(name, overrides)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(p.half().float())
    cfg = model.config.to_dict()
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    if cfg.get("tie_word_embeddings", arch == gguf.MODEL_ARCH.GPT2):
        weights.pop("lm_head.weight", None)
    path = OUT / "families" / f"{name}.gguf"
    w = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[arch])
    w.add_name(f"vene tiny {name}")
    meta(w, cfg)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for g, t in gguf_tensors(name, cfg, weights, changes, arch).items():
        w.add_tensor(g, t)
    finish(w)
    save_file(reference_logits(name, model), str(OUT / "families" / f"{name}.logits.safetensors"))
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ------------------------------------------------------------------------------------------
# quantization types

QUANT_TYPES = [
    "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K",
    "F16", "BF16",
]
# Byte offsets of the f16 scale fields in each 256-wide K-quant block (gguf-py's layouts).
K_SCALES = {
    "Q2_K": (84, [80, 82]),
    "Q3_K": (110, [108]),
    "Q4_K": (144, [0, 2]),
    "Q5_K": (176, [0, 2]),
    "Q6_K": (210, [208]),
}
Q8_K_BLOCK = 4 + 256 + 2 * 16  # f32 d, 256 x int8, 16 x int16 sums
VOCAB, HIDDEN, HEADS, KV_HEADS = 64, 32, 2, 1
PROMPT = [5, 17, 3, 60, 42, 8, 33]


def random_k_blocks(qtype, rows, cols, rng):
    """Random K-quant blocks whose f16 scales are small and finite."""
    n = rows * cols // 256
    if qtype == "Q8_K":
        raw = rng.integers(0, 256, size=(n, Q8_K_BLOCK), dtype=np.uint8)
        raw[:, 0:4] = np.frombuffer(
            rng.uniform(1e-3, 4e-3, size=n).astype(np.float32).tobytes(), dtype=np.uint8
        ).reshape(n, 4)
        return raw.reshape(rows, cols // 256 * Q8_K_BLOCK)
    size, scale_at = K_SCALES[qtype]
    raw = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    for at in scale_at:
        d = rng.uniform(1e-4, 6e-4, size=n).astype(np.float16)
        raw[:, at:at + 2] = np.frombuffer(d.tobytes(), dtype=np.uint8).reshape(n, 2)
    return raw.reshape(rows, cols // 256 * size)


def dequantize_q8_k(raw, rows, cols):
    blocks = raw.reshape(-1, Q8_K_BLOCK)
    d = blocks[:, 0:4].copy().view(np.float32)
    q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
    return (d * q).reshape(rows, cols)


def write_quant(qtype, rng):
    """One tiny llama GGUF with its linear weights stored as `qtype`; returns its HF weights."""
    wide = qtype.endswith("_K")
    ffn = 256 if wide else 64
    hd = HIDDEN // HEADS
    shapes = {
        "token_embd.weight": (VOCAB, HIDDEN),
        "output.weight": (VOCAB, HIDDEN),
        "blk.0.attn_q.weight": (HEADS * hd, HIDDEN),
        "blk.0.attn_k.weight": (KV_HEADS * hd, HIDDEN),
        "blk.0.attn_v.weight": (KV_HEADS * hd, HIDDEN),
        "blk.0.attn_output.weight": (HIDDEN, HEADS * hd),
        "blk.0.ffn_gate.weight": (ffn, HIDDEN),
        "blk.0.ffn_up.weight": (ffn, HIDDEN),
        "blk.0.ffn_down.weight": (HIDDEN, ffn),
    }
    path = OUT / "quant" / f"{qtype}.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"vene tiny llama {qtype}")
    w.add_context_length(64)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(1)
    w.add_feed_forward_length(ffn)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hd)
    stored = {}  # GGUF name -> f32 weights as the file holds them (dequantized)
    for name, (rows, cols) in shapes.items():
        x = rng.normal(0, 0.2, size=(rows, cols)).astype(np.float32)
        if wide and name != "blk.0.ffn_down.weight":
            t = x.astype(np.float16)
            w.add_tensor(name, t)
            stored[name] = t.astype(np.float32)
        elif wide:
            raw = random_k_blocks(qtype, rows, cols, rng)
            w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=Q[qtype])
            if qtype == "Q8_K":
                stored[name] = dequantize_q8_k(raw, rows, cols)
            else:
                stored[name] = gguf.quants.dequantize(raw, Q[qtype]).reshape(rows, cols)
        elif qtype == "F16":
            t = x.astype(np.float16)
            w.add_tensor(name, t)
            stored[name] = t.astype(np.float32)
        else:
            raw = gguf.quants.quantize(x, Q[qtype])
            w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=Q[qtype])
            stored[name] = gguf.quants.dequantize(raw, Q[qtype]).reshape(rows, cols).astype(np.float32)
    for name in ["blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"]:
        t = (1.0 + rng.normal(0, 0.1, size=HIDDEN)).astype(np.float32)
        w.add_tensor(name, t)
        stored[name] = t
    finish(w)
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")
    return stored, ffn


def hf_logits(stored, ffn):
    """transformers' Llama on the weights the file holds, Q/K rows un-permuted."""
    from transformers import LlamaConfig, LlamaForCausalLM

    def unpermute(w, n):
        rows = w.shape[0]
        return w.reshape(n, rows // n // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=ffn, num_hidden_layers=1,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, rms_norm_eps=1e-5,
        rope_theta=10000.0, max_position_embeddings=64, tie_word_embeddings=False,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(cfg).eval()
    names = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output.weight": "lm_head.weight",
        "output_norm.weight": "model.norm.weight",
        "blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight",
        "blk.0.attn_k.weight": "model.layers.0.self_attn.k_proj.weight",
        "blk.0.attn_v.weight": "model.layers.0.self_attn.v_proj.weight",
        "blk.0.attn_output.weight": "model.layers.0.self_attn.o_proj.weight",
        "blk.0.ffn_gate.weight": "model.layers.0.mlp.gate_proj.weight",
        "blk.0.ffn_up.weight": "model.layers.0.mlp.up_proj.weight",
        "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
        "blk.0.attn_norm.weight": "model.layers.0.input_layernorm.weight",
        "blk.0.ffn_norm.weight": "model.layers.0.post_attention_layernorm.weight",
    }
    sd = {}
    for g, h in names.items():
        t = stored[g]
        if g == "blk.0.attn_q.weight":
            t = unpermute(t, HEADS)
        if g == "blk.0.attn_k.weight":
            t = unpermute(t, KV_HEADS)
        sd[h] = torch.from_numpy(np.ascontiguousarray(t, dtype=np.float32))
    model.load_state_dict(sd, strict=True)
    with torch.no_grad():
        out = model(torch.tensor([PROMPT])).logits[0]
    return out.tolist()


def main():
    torch.manual_seed(0)
    (OUT / "families").mkdir(parents=True, exist_ok=True)
    (OUT / "quant").mkdir(parents=True, exist_ok=True)
    made = []
    for name in FAMILIES:
        if (HF / name / "model.safetensors").exists():
            write_family(name)
            made.append(name)
        else:
            print(f"skipped {name}: no tests/fixtures/hf/{name}/ yet")
    rng = np.random.default_rng(1234)
    ref = {"prompt": PROMPT, "logits": {}}
    for qtype in QUANT_TYPES:
        stored, ffn = write_quant(qtype, rng)
        ref["logits"][qtype] = hf_logits(stored, ffn)
    (OUT / "quant" / "reference.json").write_text(json.dumps(ref))
    print("families:", ", ".join(made))


if __name__ == "__main__":
    main()

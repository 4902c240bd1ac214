#!/usr/bin/env python3
"""Builds the Hugging Face parity fixtures of the model-registry families under tests/fixtures/hf/.

Same format and helpers as make_fixtures.py (read its docstring): per model, config.json and
model.safetensors from save_pretrained of a tiny random-weight model, reference.safetensors with
the logits and every site of every layer for a left- and a right-padded batch, inputs.json.

How to run (from the repository root; transformers 4.51.3 for qwen3, on top of the oracle venv):

    PYTHONPATH=/work/tf-new /work/venv-oracle/bin/python tests/oracle/make_fixtures_families.py

Models:
  qwen3          per-head q/k RMSNorm, head_dim 16 != hidden / heads, GQA 4/2
  olmo           LayerNorm without parameters, clip_qkv 0.6 (clamps many q/k/v values)
  olmo2          RMSNorm after attention and MLP, q/k RMSNorm over the whole projection
  phi3           fused qkv_proj / gate_up_proj, sliding_window 3 (shorter than the batch)
  llama_rope_llama3, llama_rope_linear, llama_rope_dynamic, llama_rope_yarn
                 Llama with rope_scaling; dynamic has max_position_embeddings 4, so the 6-token
                 batch grows the base
  gpt2_cls, llama_cls, qwen2_cls
                 ...ForSequenceClassification with 3 labels and pad_token_id 0: the reference
                 `logits` are the class scores (batch, 3) of each row's last real token

Site capture follows make_fixtures.py; for Phi-3 (no pyvene mapping) q/k/v are the three slices
of qkv_proj's output and mlp_activation is activation_fn's output (the gate half).
"""

import os
import sys

import torch
import transformers
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    OlmoConfig,
    OlmoForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForSequenceClassification,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import VOCAB, build, eager, hooks_gpt2, hooks_llama, split_heads  # noqa: E402


def hooks_phi3(model, cap):
    cfg = model.config
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = cfg.hidden_size // nh
    for l, layer in enumerate(model.model.layers):
        at = layer.self_attn
        cap.pre(layer, l, lambda x: [("block_input", x)])
        cap.post(layer, l, lambda o: [("block_output", o[0] if isinstance(o, tuple) else o)])
        cap.pre(layer.mlp, l, lambda x: [("mlp_input", x)])
        cap.post(layer.mlp.activation_fn, l, lambda o: [("mlp_activation", o)])
        cap.post(layer.mlp, l, lambda o: [("mlp_output", o)])
        cap.pre(at, l, lambda x: [("attention_input", x)])
        cap.post(at, l, lambda o: [("attention_output", o[0]), ("attention_weight", o[1])])
        cap.pre(
            at.o_proj,
            l,
            lambda x, n=nh: [
                ("attention_value_output", x),
                ("head_attention_value_output", split_heads(x, n)),
            ],
        )

        def qkv(o, nh=nh, nkv=nkv, hd=hd):
            q = o[..., : nh * hd]
            k = o[..., nh * hd : (nh + nkv) * hd]
            v = o[..., (nh + nkv) * hd :]
            return [
                ("query_output", q),
                ("key_output", k),
                ("value_output", v),
                ("head_query_output", split_heads(q, nh)),
                ("head_key_output", split_heads(k, nkv)),
                ("head_value_output", split_heads(v, nkv)),
            ]

        cap.post(at.qkv_proj, l, qkv)


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    print(f"transformers {transformers.__version__}", file=sys.stderr)

    llama_cfg = dict(
        vocab_size=VOCAB,
        max_position_embeddings=32,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        bos_token_id=1,
        eos_token_id=2,
    )

    from transformers import Qwen3Config, Qwen3ForCausalLM

    qwen3 = Qwen3ForCausalLM(eager(Qwen3Config, tie_word_embeddings=False, head_dim=16, **llama_cfg))
    build("qwen3", qwen3, hooks_llama, seed=31)

    olmo = OlmoForCausalLM(eager(OlmoConfig, clip_qkv=0.6, pad_token_id=0, **llama_cfg))
    build("olmo", olmo, hooks_llama, seed=32)

    olmo2 = Olmo2ForCausalLM(eager(Olmo2Config, pad_token_id=0, **llama_cfg))
    build("olmo2", olmo2, hooks_llama, seed=33)

    phi3 = Phi3ForCausalLM(
        eager(Phi3Config, sliding_window=3, pad_token_id=0, tie_word_embeddings=False, **llama_cfg)
    )
    build("phi3", phi3, hooks_phi3, seed=34)

    scalings = {
        # head_dim 8: wavelengths 6.3, 63, 628, 6283; with a 16-token original context the
        # first is blended (between 16/4 and 16/1), the others are divided by the factor.
        "llama3": dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                       original_max_position_embeddings=16),
        "linear": dict(rope_type="linear", factor=2.0),
        "dynamic": dict(rope_type="dynamic", factor=2.0),
        "yarn": dict(rope_type="yarn", factor=4.0),
    }
    for i, (kind, scaling) in enumerate(scalings.items()):
        kw = dict(llama_cfg, rope_scaling=scaling)
        if kind == "dynamic":
            kw["max_position_embeddings"] = 4
        model = LlamaForCausalLM(eager(LlamaConfig, tie_word_embeddings=False, **kw))
        build(f"llama_rope_{kind}", model, hooks_llama, seed=35 + i)

    cls = dict(num_labels=3, pad_token_id=0)
    gpt2 = GPT2ForSequenceClassification(
        eager(
            GPT2Config,
            vocab_size=VOCAB,
            n_positions=32,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_inner=48,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **cls,
        )
    )
    build("gpt2_cls", gpt2, hooks_gpt2, seed=41)
    llama = LlamaForSequenceClassification(eager(LlamaConfig, **llama_cfg, **cls))
    build("llama_cls", llama, hooks_llama, seed=42)
    qwen2 = Qwen2ForSequenceClassification(eager(Qwen2Config, **llama_cfg, **cls))
    build("qwen2_cls", qwen2, hooks_llama, seed=43)


if __name__ == "__main__":
    main()

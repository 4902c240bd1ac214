#!/usr/bin/env python3
"""Builds the Hugging Face parity fixtures under tests/fixtures/hf/.

How to run (from the repository root; needs python3 with torch 2.5.1, transformers 4.51.3 and
safetensors; CPU only, a few seconds):

    python3 tests/oracle/make_fixtures.py            # rewrites tests/fixtures/hf/

The script is deterministic: every model and input comes from a fixed seed, so re-running it
rewrites byte-identical weights and references (up to torch's CPU kernels). The Rust tests
(tests/hf_parity.rs, tests/sites.rs, tests/loading.rs) read only the committed files; they
never need Python.

What it writes, per model directory tests/fixtures/hf/<name>/:
  config.json, model.safetensors  save_pretrained of a small random-weight model (eager
                                  attention). Norm weights/biases and all biases are randomized
                                  too, so a weight loaded from the wrong place is noticed.
  reference.safetensors           f32 tensors computed by transformers:
                                    <batch>/logits                 (batch, seq, vocab)
                                    <batch>/L<l>/<component>       the site tensor in vene's
                                                                   layout (see below)
                                  <batch> is `left` or `right` (the same rows padded either way).
  inputs.json                     {"left": {"ids", "attention_mask", "position_ids"}, "right": ...}
                                  position_ids = cumsum(mask) - 1 with padded slots set to 1
                                  (vene's default rule); they are passed to HF explicitly.

Site layouts: (batch, seq, dim) for flat components, (batch, heads, seq, head_dim) for head_*
components, (batch, heads, seq, seq) for attention_weight. Sites are captured with PyTorch
forward hooks / pre-hooks on the modules pyvene 0.1.8 names (pyvene-semantics.md section 5):

  Models: gpt2, gpt2_variant (exact GELU, default n_inner, scale_attn_by_inverse_layer_idx),
  gpt_neox (rotary_pct 0.5, parallel residual), gpt_neox_sequential (rotary_pct 0.25,
  use_parallel_residual=false), llama (GQA 4/2 heads, untied), llama_variant (head_dim 16 with
  hidden 32, q/k/v/o + MLP biases, tied, rope_theta 5e5), qwen2 (q/k/v biases, tied), mistral
  (sliding_window 3, shorter than the 6-token batch).

  GPT-2:   block_* h[L]; mlp_activation h[L].mlp.act (out); mlp_* h[L].mlp;
           attention_value_output h[L].attn.c_proj (in); attention_weight
           h[L].attn.attn_dropout (in); attention_output h[L].attn.resid_dropout (out);
           attention_input h[L].attn (in); q/k/v h[L].attn.c_attn (out, split in three).
  Llama, Mistral, Qwen2: block_* layers[L]; mlp_activation mlp.act_fn (out); mlp_* mlp;
           attention_value_output self_attn.o_proj (in); attention_* self_attn;
           q/k/v q_proj/k_proj/v_proj (out); head_key/value split by num_key_value_heads.
           attention_weight (no pyvene module): self_attn's returned weights
           (output_attentions=True).
  GPT-NeoX: block_* layers[L]; mlp_activation mlp.act (out); mlp_* mlp;
           attention_value_output attention.dense (in); attention_* attention;
           q/k/v (no pyvene module): attention.query_key_value output viewed as
           (b, s, heads, 3*head_dim) and chunked into q, k, v per head, as HF does;
           attention_weight: attention's returned weights (output_attentions=True).
  All q/k/v sites are before rotary.

Loading-variant fixtures (no per-site references, only logits):
  llama_sharded/  the `llama` weights saved as several safetensors shards + index.json
                  (reference: ../llama/reference.safetensors)
  gpt2_bin/       the `gpt2` weights as pytorch_model.bin (reference: ../gpt2/...)
  qwen2_bf16/     a qwen2 model saved in bfloat16; reference.safetensors holds the logits HF
                  computes in f32 from the same (bf16-rounded) weights
  neox_f16/       a gpt_neox model saved in float16, same idea
"""

import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "hf")
VOCAB = 96
PAD = 0

COMPONENTS = [
    "block_input",
    "block_output",
    "mlp_input",
    "mlp_activation",
    "mlp_output",
    "attention_input",
    "attention_output",
    "attention_value_output",
    "head_attention_value_output",
    "attention_weight",
    "query_output",
    "key_output",
    "value_output",
    "head_query_output",
    "head_key_output",
    "head_value_output",
]


def batches():
    """Three rows of different lengths, padded left and right."""
    g = torch.Generator().manual_seed(1234)
    lengths = [6, 3, 5]
    rows = [torch.randint(1, VOCAB, (n,), generator=g).tolist() for n in lengths]
    seq = max(lengths)
    out = {}
    for side in ["left", "right"]:
        ids, mask = [], []
        for r in rows:
            pad = seq - len(r)
            if side == "left":
                ids.append([PAD] * pad + r)
                mask.append([0] * pad + [1] * len(r))
            else:
                ids.append(r + [PAD] * pad)
                mask.append([1] * len(r) + [0] * pad)
        ids = torch.tensor(ids, dtype=torch.long)
        mask = torch.tensor(mask, dtype=torch.long)
        pos = mask.cumsum(-1) - 1
        pos = pos.masked_fill(mask == 0, 1)
        out[side] = (ids, mask, pos)
    return out


def randomize(model, seed, scale=0.15):
    """Replaces every parameter with seeded noise: norms near 1, biases and matrices ~scale."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if "norm" in name or ".ln_" in name or name.endswith("ln_f.weight") or "layernorm" in name:
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.1 * noise)
                else:
                    p.copy_(0.1 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(scale * noise)


def split_heads(x, n):
    b, s, d = x.shape
    return x.reshape(b, s, n, d // n).permute(0, 2, 1, 3).contiguous()


def first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


class Capture:
    """Registers hooks and stores site tensors in vene's layout under `L<l>/<component>`."""

    def __init__(self):
        self.handles = []
        self.store = {}

    def put(self, layer, comp, t):
        key = f"L{layer}/{comp}"
        assert key not in self.store, f"{key} captured twice"
        self.store[key] = t.detach().to(torch.float32).contiguous().clone()

    def pre(self, module, layer, fn):
        def hook(mod, args, kwargs):
            x = args[0] if len(args) > 0 else next(iter(kwargs.values()))
            for comp, t in fn(x):
                self.put(layer, comp, t)

        self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def post(self, module, layer, fn):
        def hook(mod, args, kwargs, output):
            for comp, t in fn(output):
                self.put(layer, comp, t)

        self.handles.append(module.register_forward_hook(hook, with_kwargs=True))

    def remove(self):
        for h in self.handles:
            h.remove()


def hooks_gpt2(model, cap):
    cfg = model.config
    n = cfg.n_head
    for l, blk in enumerate(model.transformer.h):
        cap.pre(blk, l, lambda x: [("block_input", x)])
        cap.post(blk, l, lambda o: [("block_output", first(o))])
        cap.pre(blk.mlp, l, lambda x: [("mlp_input", x)])
        cap.post(blk.mlp.act, l, lambda o: [("mlp_activation", o)])
        cap.post(blk.mlp, l, lambda o: [("mlp_output", o)])
        cap.pre(blk.attn, l, lambda x: [("attention_input", x)])
        cap.post(blk.attn.resid_dropout, l, lambda o: [("attention_output", o)])
        cap.pre(
            blk.attn.c_proj,
            l,
            lambda x, n=n: [
                ("attention_value_output", x),
                ("head_attention_value_output", split_heads(x, n)),
            ],
        )
        cap.pre(blk.attn.attn_dropout, l, lambda x: [("attention_weight", x)])

        def qkv(o, n=n):
            q, k, v = torch.chunk(o, 3, -1)
            return [
                ("query_output", q),
                ("key_output", k),
                ("value_output", v),
                ("head_query_output", split_heads(q, n)),
                ("head_key_output", split_heads(k, n)),
                ("head_value_output", split_heads(v, n)),
            ]

        cap.post(blk.attn.c_attn, l, qkv)


def hooks_llama(model, cap):
    cfg = model.config
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    for l, layer in enumerate(model.model.layers):
        at = layer.self_attn
        cap.pre(layer, l, lambda x: [("block_input", x)])
        cap.post(layer, l, lambda o: [("block_output", first(o))])
        cap.pre(layer.mlp, l, lambda x: [("mlp_input", x)])
        cap.post(layer.mlp.act_fn, l, lambda o: [("mlp_activation", o)])
        cap.post(layer.mlp, l, lambda o: [("mlp_output", o)])
        cap.pre(at, l, lambda x: [("attention_input", x)])
        cap.post(
            at,
            l,
            lambda o: [("attention_output", o[0]), ("attention_weight", o[1])],
        )
        cap.pre(
            at.o_proj,
            l,
            lambda x, n=nh: [
                ("attention_value_output", x),
                ("head_attention_value_output", split_heads(x, n)),
            ],
        )
        cap.post(at.q_proj, l, lambda o, n=nh: [("query_output", o), ("head_query_output", split_heads(o, n))])
        cap.post(at.k_proj, l, lambda o, n=nkv: [("key_output", o), ("head_key_output", split_heads(o, n))])
        cap.post(at.v_proj, l, lambda o, n=nkv: [("value_output", o), ("head_value_output", split_heads(o, n))])


def hooks_neox(model, cap):
    cfg = model.config
    nh = cfg.num_attention_heads
    hd = cfg.hidden_size // nh
    for l, layer in enumerate(model.gpt_neox.layers):
        at = layer.attention
        cap.pre(layer, l, lambda x: [("block_input", x)])
        cap.post(layer, l, lambda o: [("block_output", first(o))])
        cap.pre(layer.mlp, l, lambda x: [("mlp_input", x)])
        cap.post(layer.mlp.act, l, lambda o: [("mlp_activation", o)])
        cap.post(layer.mlp, l, lambda o: [("mlp_output", o)])
        cap.pre(at, l, lambda x: [("attention_input", x)])
        cap.post(
            at,
            l,
            lambda o: [("attention_output", o[0]), ("attention_weight", o[1])],
        )
        cap.pre(
            at.dense,
            l,
            lambda x, n=nh: [
                ("attention_value_output", x),
                ("head_attention_value_output", split_heads(x, n)),
            ],
        )

        def qkv(o, n=nh, hd=hd):
            b, s, _ = o.shape
            # HF: view (b, s, heads, 3*head_dim), transpose, chunk(3, -1).
            per_head = o.view(b, s, n, 3 * hd).transpose(1, 2)
            q, k, v = per_head.chunk(3, dim=-1)
            out = []
            for name, t in [("query", q), ("key", k), ("value", v)]:
                out.append((f"{name}_output", t.transpose(1, 2).reshape(b, s, n * hd)))
                out.append((f"head_{name}_output", t))
            return out

        cap.post(at.query_key_value, l, qkv)


def run_reference(model, hook_fn, with_sites=True):
    """Runs both batches; returns {name: tensor} for reference.safetensors."""
    out = {}
    for side, (ids, mask, pos) in batches().items():
        cap = Capture()
        if with_sites:
            hook_fn(model, cap)
        with torch.no_grad():
            res = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=pos,
                use_cache=False,
                output_attentions=with_sites,
            )
        cap.remove()
        out[f"{side}/logits"] = res.logits.detach().to(torch.float32).contiguous()
        if with_sites:
            n_layers = model.config.num_hidden_layers
            expected = {f"L{l}/{c}" for l in range(n_layers) for c in COMPONENTS}
            missing = expected - set(cap.store)
            assert not missing, f"not captured: {sorted(missing)}"
            for k, v in cap.store.items():
                out[f"{side}/{k}"] = v
    return out


def write_inputs(path):
    data = {}
    for side, (ids, mask, pos) in batches().items():
        data[side] = {
            "ids": ids.tolist(),
            "attention_mask": mask.tolist(),
            "position_ids": pos.tolist(),
        }
    with open(os.path.join(path, "inputs.json"), "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def save_model(model, path, **kw):
    if os.path.exists(path):
        shutil.rmtree(path)
    model.save_pretrained(path, **kw)
    # generation_config.json is noise for our purposes.
    gc = os.path.join(path, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)


def build(name, model, hook_fn, seed):
    randomize(model, seed)
    model.eval()
    path = os.path.join(ROOT, name)
    save_model(model, path)
    ref = run_reference(model, hook_fn)
    save_file(ref, os.path.join(path, "reference.safetensors"))
    write_inputs(path)
    return model


def eager(cfg_cls, **kw):
    cfg = cfg_cls(**kw)
    cfg._attn_implementation = "eager"
    return cfg


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(ROOT, exist_ok=True)

    common = dict(vocab_size=VOCAB, max_position_embeddings=32)

    gpt2 = GPT2LMHeadModel(
        eager(
            GPT2Config,
            vocab_size=VOCAB,
            n_positions=32,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_inner=48,
            activation_function="gelu_new",
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=1,
            eos_token_id=2,
        )
    )
    build("gpt2", gpt2, hooks_gpt2, seed=11)

    # GPT-2 options: exact GELU, default n_inner (4 * n_embd), attention scaled by 1/(layer+1).
    gpt2_variant = GPT2LMHeadModel(
        eager(
            GPT2Config,
            vocab_size=VOCAB,
            n_positions=32,
            n_embd=32,
            n_layer=2,
            n_head=4,
            activation_function="gelu",
            scale_attn_by_inverse_layer_idx=True,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        )
    )
    build("gpt2_variant", gpt2_variant, hooks_gpt2, seed=19)

    neox_cfg = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        hidden_act="gelu",
        rotary_emb_base=10000,
        layer_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        **common,
    )
    neox = GPTNeoXForCausalLM(eager(GPTNeoXConfig, rotary_pct=0.5, use_parallel_residual=True, **neox_cfg))
    build("gpt_neox", neox, hooks_neox, seed=12)
    neox_seq = GPTNeoXForCausalLM(
        eager(GPTNeoXConfig, rotary_pct=0.25, use_parallel_residual=False, **neox_cfg)
    )
    build("gpt_neox_sequential", neox_seq, hooks_neox, seed=13)

    llama_cfg = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        bos_token_id=1,
        eos_token_id=2,
        **common,
    )
    llama = LlamaForCausalLM(eager(LlamaConfig, tie_word_embeddings=False, **llama_cfg))
    build("llama", llama, hooks_llama, seed=14)

    # Llama options: head_dim != hidden / heads, q/k/v/o and MLP biases, tied embeddings,
    # a non-default rope_theta.
    llama_variant = LlamaForCausalLM(
        eager(
            LlamaConfig,
            tie_word_embeddings=True,
            head_dim=16,
            attention_bias=True,
            mlp_bias=True,
            **{**llama_cfg, "rope_theta": 500000.0},
        )
    )
    build("llama_variant", llama_variant, hooks_llama, seed=20)

    qwen2 = Qwen2ForCausalLM(eager(Qwen2Config, tie_word_embeddings=True, **llama_cfg))
    build("qwen2", qwen2, hooks_llama, seed=15)

    # A 3-token sliding window, shorter than the 6-token batch, so the window mask is exercised.
    mistral = MistralForCausalLM(
        eager(MistralConfig, tie_word_embeddings=False, sliding_window=3, **llama_cfg)
    )
    build("mistral", mistral, hooks_llama, seed=16)

    # Loading variants.
    path = os.path.join(ROOT, "llama_sharded")
    save_model(llama, path, max_shard_size="40KB")
    assert os.path.exists(os.path.join(path, "model.safetensors.index.json"))
    path = os.path.join(ROOT, "gpt2_bin")
    save_model(gpt2, path, safe_serialization=False)
    assert os.path.exists(os.path.join(path, "pytorch_model.bin"))

    for name, cls, cfg_cls, kw, dtype, seed in [
        ("qwen2_bf16", Qwen2ForCausalLM, Qwen2Config, dict(tie_word_embeddings=False, **llama_cfg), torch.bfloat16, 17),
        ("neox_f16", GPTNeoXForCausalLM, GPTNeoXConfig, dict(rotary_pct=0.25, **neox_cfg), torch.float16, 18),
    ]:
        model = cls(eager(cfg_cls, **kw))
        randomize(model, seed)
        model.eval()
        path = os.path.join(ROOT, name)
        save_model(model.to(dtype), path)
        # The reference: HF in f32 on the half-precision weights, loaded the way a user loads
        # them (casting the in-memory model would also round the rotary inv_freq buffer).
        f32 = cls.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager")
        f32.eval()
        ref = run_reference(f32, None, with_sites=False)
        save_file(ref, os.path.join(path, "reference.safetensors"))
        write_inputs(path)

    total = 0
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            total += os.path.getsize(os.path.join(dirpath, f))
    print(f"wrote fixtures to {os.path.normpath(ROOT)} ({total / 1024:.0f} KiB)", file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Builds the Hugging Face parity fixtures for GPT-Neo and the Gemma families under
tests/fixtures/hf/, in the format of tests/oracle/make_fixtures.py (whose helpers it imports:
read that docstring for the file layout and the site layouts).

How to run (from the repository root; CPU only, a few seconds each):

    /work/venv-oracle/bin/python tests/oracle/make_fixtures_gemma_neo.py
        # gpt_neo, gemma, gemma2, gemma_cls: transformers 4.48.2 (the version pyvene 0.1.8 pins)
    PYTHONPATH=/work/tf-new /work/venv-oracle/bin/python tests/oracle/make_fixtures_gemma_neo.py gemma3
        # gemma3_text, gemma3: transformers >= 4.50 (made with 4.51.3)

Windows (3 or 4 tokens) are shorter than the 6-token rows of the batch, so windowed attention is
exercised; soft-capping values are small enough that the caps change the numbers.

Models:
  gpt_neo      3 layers with attention_types local, global, local (window_size 3), default
               intermediate_size (4 * hidden), gelu_new, learned positions, tied head.
  gemma        head_dim 16 with hidden 32 and 4 heads (2 KV heads), GeGLU (gelu_pytorch_tanh),
               embeddings * sqrt(hidden), RMSNorm (1 + w), tied head.
  gemma2       + attn_logit_softcapping 2.0, final_logit_softcapping 3.0, norms before and after
               attention and MLP, sliding_window 3 on even layers, query_pre_attn_scalar 24.
  gemma3_text  3 layers, sliding_window_pattern 3 (layers 0, 1 local, layer 2 global),
               sliding_window 4, q/k RMSNorm, rope_local_base_freq 100 vs rope_theta 10000,
               query_pre_attn_scalar 24, no soft-capping (as released Gemma 3 checkpoints).
  gemma3       a Gemma3ForConditionalGeneration (tiny SigLIP vision tower + projector, saved with
               them) whose text_config is like gemma3_text but 2 layers, pattern 2, and linear
               rope_scaling factor 8 on the global layers (as the released 4B/12B/27B configs).
               Its text_config lists only the keys that differ from Gemma3TextConfig's
               defaults, as released configs do (a loader must know the defaults).
               Text weights are `language_model.model.*`; the reference is the full model's
               forward on text-only input, sites hooked inside `language_model`.
  gemma_cls    GemmaForSequenceClassification (3 labels, pad_token_id 0): reference
               `<side>/logits` is HF's pooled (batch, 3) output (the score row of each row's last
               non-padding token), `<side>/scores` the score layer at every position
               (batch, seq, 3), plus every site.

Sites (pyvene 0.1.8's module paths where they work, transformers' modules where pyvene's paths
are broken):
  GPT-Neo: block_* h[L]; mlp_activation h[L].mlp.act (out); mlp_* h[L].mlp; attention_input
           h[L].attn (in); attention_output h[L].attn (out[0]); attention_value_output
           h[L].attn.attention.out_proj (in); attention_weight h[L].attn.attention.attn_dropout
           (in); q/k/v h[L].attn.attention.q_proj/k_proj/v_proj (out). pyvene 0.1.8 names
           h[L].attn.out_proj / attn.q_proj..., which transformers does not have.
  Gemma*:  as Llama in make_fixtures.py (q/k/v before q/k norms and rotary; attention_weight is
           self_attn's returned weights, after soft-capping, masking and softmax).
"""

import json
import os
import sys

import torch
import transformers
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402

ROOT = mf.ROOT
VOCAB = mf.VOCAB


def gemma_norms_near_zero(model, seed):
    """Gemma's RMSNorm scales by (1 + w): re-draws every norm weight around 0 so the effective
    scale is near 1, as in trained checkpoints (still distinct per weight)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if "norm" in name and name.endswith("weight"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def hooks_gpt_neo(model, cap):
    n = model.config.num_heads
    for l, blk in enumerate(model.transformer.h):
        at = blk.attn.attention
        cap.pre(blk, l, lambda x: [("block_input", x)])
        cap.post(blk, l, lambda o: [("block_output", mf.first(o))])
        cap.pre(blk.mlp, l, lambda x: [("mlp_input", x)])
        cap.post(blk.mlp.act, l, lambda o: [("mlp_activation", o)])
        cap.post(blk.mlp, l, lambda o: [("mlp_output", o)])
        cap.pre(blk.attn, l, lambda x: [("attention_input", x)])
        cap.post(blk.attn, l, lambda o: [("attention_output", mf.first(o))])
        cap.pre(
            at.out_proj,
            l,
            lambda x, n=n: [
                ("attention_value_output", x),
                ("head_attention_value_output", mf.split_heads(x, n)),
            ],
        )
        cap.pre(at.attn_dropout, l, lambda x: [("attention_weight", x)])
        for proj, name in [(at.q_proj, "query"), (at.k_proj, "key"), (at.v_proj, "value")]:
            cap.post(
                proj,
                l,
                lambda o, n=n, name=name: [
                    (f"{name}_output", o),
                    (f"head_{name}_output", mf.split_heads(o, n)),
                ],
            )


def build(name, model, hook_fn, seed, gemma_norms=False):
    mf.randomize(model, seed)
    if gemma_norms:
        gemma_norms_near_zero(model, seed + 1000)
    model.eval()
    path = os.path.join(ROOT, name)
    mf.save_model(model, path)
    ref = mf.run_reference(model, hook_fn)
    save_file(ref, os.path.join(path, "reference.safetensors"))
    mf.write_inputs(path)
    return model, ref


def gemma_common(layers=2):
    return dict(
        vocab_size=VOCAB,
        num_hidden_layers=layers,
        max_position_embeddings=32,
        hidden_size=32,
        intermediate_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def build_old():
    """The families transformers 4.48.2 has (pyvene 0.1.8's version)."""
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        GemmaConfig,
        GemmaForCausalLM,
        GemmaForSequenceClassification,
        GPTNeoConfig,
        GPTNeoForCausalLM,
    )

    neo = GPTNeoForCausalLM(
        mf.eager(
            GPTNeoConfig,
            vocab_size=VOCAB,
            max_position_embeddings=32,
            hidden_size=32,
            num_layers=3,
            attention_types=[[["local", "global"], 1], [["local"], 1]],
            num_heads=4,
            window_size=3,
            activation_function="gelu_new",
            resid_dropout=0.0,
            embed_dropout=0.0,
            attention_dropout=0.0,
            layer_norm_epsilon=1e-5,
            bos_token_id=1,
            eos_token_id=2,
        )
    )
    build("gpt_neo", neo, hooks_gpt_neo, seed=31)

    gemma = GemmaForCausalLM(mf.eager(GemmaConfig, hidden_act="gelu_pytorch_tanh", **gemma_common()))
    build("gemma", gemma, mf.hooks_llama, seed=32, gemma_norms=True)

    gemma2 = Gemma2ForCausalLM(
        mf.eager(
            Gemma2Config,
            hidden_activation="gelu_pytorch_tanh",
            attn_logit_softcapping=2.0,
            final_logit_softcapping=3.0,
            query_pre_attn_scalar=24,
            sliding_window=3,
            **gemma_common(),
        )
    )
    _, ref = build("gemma2", gemma2, mf.hooks_llama, seed=33, gemma_norms=True)
    # The caps must bite, or the test could not tell capping from none.
    assert ref["left/logits"].abs().max() > 1.5, "final soft-cap has no effect"

    cls = GemmaForSequenceClassification(mf.eager(GemmaConfig, num_labels=3, **gemma_common()))
    _, ref = build("gemma_cls", cls, mf.hooks_llama, seed=34, gemma_norms=True)
    path = os.path.join(ROOT, "gemma_cls")
    for side, (ids, mask, pos) in mf.batches().items():
        with torch.no_grad():
            hidden = cls.model(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
            ref[f"{side}/scores"] = cls.score(hidden).contiguous()
    save_file(ref, os.path.join(path, "reference.safetensors"))


class TextPart:
    """What mf.run_reference needs of a model (`config.num_hidden_layers`, a call), for a
    Gemma3ForConditionalGeneration whose sites are hooked inside its language model."""

    def __init__(self, model):
        self.model = model
        self.language_model = model.language_model
        self.config = model.config.text_config

    def __call__(self, **kw):
        return self.model(**kw)


def build_gemma3():
    from transformers import (
        Gemma3Config,
        Gemma3ForCausalLM,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipVisionConfig,
    )

    text = dict(
        gemma_common(layers=3),
        hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=24,
        rope_local_base_freq=100.0,
        attn_logit_softcapping=None,
        final_logit_softcapping=None,
    )
    cfg = mf.eager(Gemma3TextConfig, sliding_window=4, sliding_window_pattern=3, **text)
    g3 = Gemma3ForCausalLM(cfg)
    build("gemma3_text", g3, mf.hooks_llama, seed=35, gemma_norms=True)

    text_cfg = Gemma3TextConfig(
        **{**text, "num_hidden_layers": 2},
        sliding_window=3,
        sliding_window_pattern=2,
        rope_scaling={"rope_type": "linear", "factor": 8.0},
    )
    vision_cfg = SiglipVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    cfg = Gemma3Config(
        text_config=text_cfg.to_dict(),
        vision_config=vision_cfg.to_dict(),
        mm_tokens_per_image=4,
    )
    cfg._attn_implementation = "eager"
    cfg.text_config._attn_implementation = "eager"
    cfg.vision_config._attn_implementation = "eager"
    model = Gemma3ForConditionalGeneration(cfg)
    mf.randomize(model, 36)
    gemma_norms_near_zero(model, 1036)
    model.eval()
    path = os.path.join(ROOT, "gemma3")
    mf.save_model(model, path)
    sparse_text_config(path, Gemma3TextConfig)
    ref = mf.run_reference(TextPart(model), lambda m, cap: mf.hooks_llama(m.language_model, cap))
    save_file(ref, os.path.join(path, "reference.safetensors"))
    mf.write_inputs(path)
    # The sparse config must describe the same model.
    again = Gemma3ForConditionalGeneration.from_pretrained(path, attn_implementation="eager")
    again.eval()
    redo = mf.run_reference(TextPart(again), None, with_sites=False)
    for k, v in redo.items():
        assert torch.equal(v, ref[k]), f"gemma3: the sparse config changes {k}"


def sparse_text_config(path, text_cls):
    """Released Gemma 3 configs list only the text_config keys that differ from
    Gemma3TextConfig's defaults (e.g. gemma-3-4b-it: hidden_size, intermediate_size,
    num_hidden_layers, rope_scaling, sliding_window): rewrite ours that way, so a loader must
    know the defaults."""
    f = os.path.join(path, "config.json")
    with open(f) as fh:
        cfg = json.load(fh)
    defaults = text_cls().to_dict()
    text = cfg["text_config"]
    cfg["text_config"] = {
        k: v for k, v in text.items() if k == "model_type" or k not in defaults or defaults[k] != v
    }
    with open(f, "w") as fh:
        json.dump(cfg, fh, indent=2, sort_keys=True)
        fh.write("\n")


def main():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    os.makedirs(ROOT, exist_ok=True)
    if sys.argv[1:] == ["gemma3"]:
        build_gemma3()
    elif not sys.argv[1:]:
        assert transformers.__version__ == "4.48.2", "run with pyvene's transformers (4.48.2)"
        build_old()
    else:
        sys.exit("usage: make_fixtures_gemma_neo.py [gemma3]")
    print(f"wrote fixtures to {os.path.normpath(ROOT)} (transformers {transformers.__version__})")


if __name__ == "__main__":
    main()

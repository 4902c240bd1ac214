"""Writes small synthetic SAEs in the formats researchers publish, with SAELens's own outputs.

Run with the SAE oracle venv (sae-lens 6.x):
    /work/venv-sae/bin/python tests/oracle/make_sae_fixtures.py

For every case, tests/fixtures/sae/<case>/ holds the SAE as published (SAELens: cfg.json +
sae_weights.safetensors written by SAELens's save_model; Gemma Scope: params.npz under the
gemma-scope folder layout; Gemma Scope 2: params.safetensors + config.json) and expected.safetensors:
  x        input activations (2, 5, d_in)
  acts     SAELens encode(x)
  recon    SAELens forward(x) without the error term (decode(encode(x)), plus the skip term)
  ablated  SAELens forward(x) with use_error_term=True and features ABLATE zeroed at hook_sae_acts_post
  x_out    (transcoders) the output-site activation used with the error term
and case.json says the features ablated and the expected vene site.
"""
import json
import os
import shutil
import zipfile
import io

import numpy as np
import torch
from safetensors.torch import save_file
import sae_lens
from sae_lens import (
    GatedSAE, GatedSAEConfig, JumpReLUSAE, JumpReLUSAEConfig, JumpReLUSkipTranscoder,
    JumpReLUSkipTranscoderConfig, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig,
)
from sae_lens.saes.sae import SAEMetadata

ROOT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "sae")
ABLATE = [1, 3, 7]
torch.manual_seed(0)


def randomize(sae, d_sae):
    """Every parameter random (SAELens initializes biases to zero, which would hide bugs)."""
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name == "threshold":
                p.copy_(torch.rand(d_sae) * 0.3)
            elif name == "r_mag":
                p.copy_(torch.randn_like(p) * 0.2)
            elif name.startswith("b_"):
                p.copy_(torch.randn_like(p) * 0.2)
            else:
                p.copy_(torch.randn_like(p) * 0.4)


def oracle(sae, x, x_out=None):
    """SAELens's encode, reconstruction and error-term ablation of ABLATE."""
    with torch.no_grad():
        acts = sae.encode(x)
        recon = sae(x)
        sae.use_error_term = True
        def zero(t, hook):
            t = t.clone()
            t[..., ABLATE] = 0.0
            return t
        if x_out is None:
            sae.hook_sae_acts_post.add_hook(zero)
            ablated = sae(x)
            sae.reset_hooks()
        else:
            # A transcoder's error term is measured against the output site: x_out - clean.
            sae.use_error_term = False
            clean = sae(x)
            sae.hook_sae_acts_post.add_hook(zero)
            edited = sae(x)
            sae.reset_hooks()
            ablated = edited + (x_out - clean)
        sae.use_error_term = False
    return acts, recon, ablated


def write_expected(d, x, acts, recon, ablated, site, x_out=None, extra=None):
    t = {"x": x, "acts": acts, "recon": recon, "ablated": ablated}
    if x_out is not None:
        t["x_out"] = x_out
    save_file({k: v.contiguous().float() for k, v in t.items()}, os.path.join(d, "expected.safetensors"))
    case = {"ablate": ABLATE, "site": site}
    case.update(extra or {})
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump(case, f, indent=1)


def saelens_case(name, cls, cfg_cls, d_in, d_sae, hook, site, x_scale=1.0, **cfg):
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    c = cfg_cls(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu",
                metadata=SAEMetadata(hook_name=hook, model_name="synthetic"), **cfg)
    sae = cls(c)
    randomize(sae, d_sae)
    sae.save_model(d)
    x = torch.randn(2, 5, d_in) * x_scale + 0.3
    write_expected(d, x, *oracle(sae, x), site)


def npz_bytes(arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def gemma_scope_case():
    """Gemma Scope 1: params.npz, site from gemma-scope-2b-pt-res/layer_L/width_16k/average_l0_N."""
    d_in, d_sae = 24, 48
    base = os.path.join(ROOT, "gemma_scope", "gemma-scope-2b-pt-res", "layer_2", "width_16k", "average_l0_5")
    os.makedirs(base, exist_ok=True)
    c = JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu",
                          apply_b_dec_to_input=False, normalize_activations="none",
                          metadata=SAEMetadata(hook_name="blocks.2.hook_resid_post"))
    sae = JumpReLUSAE(c)
    randomize(sae, d_sae)
    arrays = {k: v.detach().numpy().astype(np.float32) for k, v in sae.state_dict().items()}
    np.savez(os.path.join(base, "params.npz"), **arrays)
    x = torch.randn(2, 5, d_in)
    write_expected(os.path.join(ROOT, "gemma_scope"), x, *oracle(sae, x), [2, "block_output"],
                   extra={"path": "gemma-scope-2b-pt-res/layer_2/width_16k/average_l0_5/params.npz"})


def gemma_scope2_cases():
    """Gemma Scope 2: params.safetensors (lower-case names) + config.json; an SAE and a skip transcoder."""
    d_in, d_sae = 16, 40
    d = os.path.join(ROOT, "gemma_scope2_res")
    os.makedirs(d, exist_ok=True)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu",
                                        apply_b_dec_to_input=False,
                                        metadata=SAEMetadata(hook_name="blocks.1.hook_resid_post")))
    randomize(sae, d_sae)
    sd = sae.state_dict()
    save_file({"w_enc": sd["W_enc"], "w_dec": sd["W_dec"], "b_enc": sd["b_enc"],
               "b_dec": sd["b_dec"], "threshold": sd["threshold"]}, os.path.join(d, "params.safetensors"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"architecture": "jump_relu", "model_name": "gemma-v3-270m-pt",
                   "hf_hook_point_in": "model.layers.1.output",
                   "hf_hook_point_out": "model.layers.1.output", "width": d_sae}, f, indent=1)
    x = torch.randn(2, 5, d_in)
    write_expected(d, x, *oracle(sae, x), [1, "block_output"])

    d_out = 20
    d = os.path.join(ROOT, "gemma_scope2_transcoder")
    os.makedirs(d, exist_ok=True)
    tc = JumpReLUSkipTranscoder(JumpReLUSkipTranscoderConfig(
        d_in=d_in, d_sae=d_sae, d_out=d_out, dtype="float32", device="cpu",
        apply_b_dec_to_input=False,
        metadata=SAEMetadata(hook_name="blocks.0.hook_mlp_in", hook_name_out="blocks.0.hook_mlp_out")))
    randomize(tc, d_sae)
    sd = tc.state_dict()
    save_file({"w_enc": sd["W_enc"], "w_dec": sd["W_dec"], "b_enc": sd["b_enc"],
               "b_dec": sd["b_dec"], "threshold": sd["threshold"],
               "affine_skip_connection": sd["W_skip"].T.contiguous()}, os.path.join(d, "params.safetensors"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"architecture": "jump_relu", "model_name": "gemma-v3-270m-pt",
                   "affine_connection": True,
                   "hf_hook_point_in": "model.layers.0.pre_feedforward_layernorm.output",
                   "hf_hook_point_out": "model.layers.0.mlp.output", "width": d_sae}, f, indent=1)
    x = torch.randn(2, 5, d_in)
    x_out = torch.randn(2, 5, d_out)
    write_expected(d, x, *oracle(tc, x, x_out), [0, "mlp_input"], x_out=x_out,
                   extra={"site_out": [0, "mlp_output"]})


HF = os.path.join(os.path.dirname(__file__), "..", "fixtures", "hf")
IDS = [[3, 17, 42, 5, 60, 8, 11]]
TL_HOOKS = ["hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out", "attn.hook_z", "mlp.hook_post"]


def tl_model(name):
    """TransformerLens's HookedTransformer on a tiny fixture model, weights converted by TL itself."""
    import transformers
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights, convert_llama_weights
    hf = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(HF, name), torch_dtype=torch.float32).eval()
    c = hf.config
    if name == "gpt2":
        cfg = HookedTransformerConfig(
            n_layers=c.n_layer, d_model=c.n_embd, n_ctx=c.n_positions, d_head=c.n_embd // c.n_head,
            n_heads=c.n_head, d_mlp=c.n_inner, d_vocab=c.vocab_size, act_fn=c.activation_function,
            normalization_type="LN", eps=c.layer_norm_epsilon, original_architecture="GPT2LMHeadModel",
            default_prepend_bos=False)
        convert = convert_gpt2_weights
    else:
        cfg = HookedTransformerConfig(
            n_layers=c.num_hidden_layers, d_model=c.hidden_size, n_ctx=c.max_position_embeddings,
            d_head=c.head_dim, n_heads=c.num_attention_heads, n_key_value_heads=c.num_key_value_heads,
            d_mlp=c.intermediate_size, d_vocab=c.vocab_size, act_fn=c.hidden_act, normalization_type="RMS",
            eps=c.rms_norm_eps, positional_embedding_type="rotary", rotary_dim=c.head_dim,
            rotary_base=10000.0, gated_mlp=True, final_rms=True,
            original_architecture="LlamaForCausalLM", default_prepend_bos=False, rotary_adjacent_pairs=False)
        convert = convert_llama_weights
    # HookedTransformer fills in config fields the converters read, so it comes first.
    tl = HookedTransformer(cfg)
    sd = convert(hf, tl.cfg)
    tl.load_and_process_state_dict(sd, fold_ln=False, center_writing_weights=False,
                                   center_unembed=False, fold_value_biases=False)
    return hf, tl


def hf_module_hooks(hf, prefix, names):
    """Hugging Face activations by module path: `<module>.output` and `<module>.input`."""
    got, handles = {}, []
    for full in names:
        mod_path, kind = full.rsplit(".", 1)
        mod = hf.get_submodule(mod_path)
        if kind == "output":
            handles.append(mod.register_forward_hook(
                lambda m, i, o, full=full: got.__setitem__(full, (o[0] if isinstance(o, tuple) else o).detach().clone())))
        else:
            def pre(m, args, kwargs, full=full):
                x = args[0] if args else kwargs["hidden_states"]
                got[full] = x.detach().clone()
            handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
    with torch.no_grad():
        hf(torch.tensor(IDS))
    for h in handles:
        h.remove()
    return got


def site_cases():
    """Activations at each hook name from TransformerLens (gpt2, llama) and transformers module hooks."""
    d = os.path.join(ROOT, "sites")
    os.makedirs(d, exist_ok=True)
    for name, prefix, hf_names in [
        ("gpt2", "transformer.h", ["output", "attn.output", "mlp.output", "attn.c_proj.input", "mlp.c_proj.input"]),
        ("llama", "model.layers", ["output", "input", "self_attn.output", "mlp.output", "mlp.input",
                                    "self_attn.o_proj.input"]),
    ]:
        hf, tl = tl_model(name)
        with torch.no_grad():
            logits, cache = tl.run_with_cache(torch.tensor(IDS))
            diff = (logits - hf(torch.tensor(IDS)).logits).abs().max()
            assert diff < 1e-4, (name, diff)
        out = {}
        for layer in range(tl.cfg.n_layers):
            for h in TL_HOOKS:
                t = cache[f"blocks.{layer}.{h}"]
                out[f"blocks.{layer}.{h}"] = t.flatten(-2) if h == "attn.hook_z" else t
        names = [f"{prefix}.{layer}.{s}" for layer in range(tl.cfg.n_layers) for s in hf_names]
        # `<layers>.L.input` is the block's input: a forward pre-hook on the block.
        out.update(hf_module_hooks(hf, prefix, names))
        save_file({k: v.float().clone().contiguous() for k, v in out.items()}, os.path.join(d, f"{name}.safetensors"))
    # Gemma 2: transformers module hooks only (TransformerLens's hook_mlp_out on Gemma 2 is after
    # the post-feedforward norm, a place vene has no site for; the test checks vene refuses it).
    import transformers
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.join(HF, "gemma2"), torch_dtype=torch.float32, attn_implementation="eager").eval()
    names = [f"model.layers.{layer}.{s}" for layer in range(2) for s in
             ["output", "input", "self_attn.output", "mlp.output", "pre_feedforward_layernorm.output",
              "self_attn.o_proj.input"]]
    save_file({k: v.float().clone().contiguous() for k, v in hf_module_hooks(hf, "model.layers", names).items()},
              os.path.join(d, "gemma2.safetensors"))
    with open(os.path.join(d, "ids.json"), "w") as f:
        json.dump(IDS, f)


def model_case():
    """An SAE spliced into TransformerLens's gpt2 by SAELens's HookedSAETransformer: logits with
    the reconstruction, with features ablated (error term on), with a steering addition, the
    per-feature ablation effects on one logit, and the feature activations."""
    from sae_lens import HookedSAETransformer
    hf, tl = tl_model("gpt2")
    model = HookedSAETransformer(tl.cfg)
    model.load_state_dict(tl.state_dict(), strict=False)
    d = os.path.join(ROOT, "gpt2_resid")
    os.makedirs(d, exist_ok=True)
    hook = "blocks.1.hook_resid_pre"
    sae = StandardSAE(StandardSAEConfig(d_in=32, d_sae=64, dtype="float32", device="cpu",
                                        metadata=SAEMetadata(hook_name=hook, model_name="tiny-gpt2")))
    randomize(sae, 64)
    sae.save_model(d)
    ids = torch.tensor(IDS)
    pos, target, steer_f, coeff = 4, 7, 5, 3.0
    out = {}
    with torch.no_grad():
        out["plain"] = model(ids)
        with model.saes(saes=[sae], use_error_term=False):
            out["recon"], cache = model.run_with_cache(ids)
        acts_hook = [k for k in cache.keys() if k.endswith("hook_sae_acts_post")][0]
        out["acts"] = cache[acts_hook]
        def ablate(features):
            def zero(t, hook):
                t = t.clone()
                t[..., features] = 0.0
                return t
            with model.saes(saes=[sae], use_error_term=True):
                return model.run_with_hooks(ids, fwd_hooks=[(acts_hook, zero)])
        out["ablated"] = ablate(ABLATE)
        with model.saes(saes=[sae], use_error_term=True):
            out["with_error"] = model(ids)
        sweep = list(range(64))
        effects = [ablate([f])[0, pos, target] - out["plain"][0, pos, target] for f in sweep]
        out["sweep"] = torch.stack(effects)
        def steer(t, hook):
            return t + coeff * sae.W_dec[steer_f]
        out["steered"] = model.run_with_hooks(ids, fwd_hooks=[(hook, steer)])
    save_file({k: v.float().clone().contiguous() for k, v in out.items()}, os.path.join(d, "expected.safetensors"))
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump({"ids": IDS[0], "ablate": ABLATE, "position": pos, "target": target,
                   "steer_feature": steer_f, "coeff": coeff, "site": [1, "block_input"]}, f, indent=1)


def main():
    if os.path.isdir(ROOT):
        shutil.rmtree(ROOT)
    os.makedirs(ROOT)
    saelens_case("standard", StandardSAE, StandardSAEConfig, 16, 32, "blocks.1.hook_resid_post",
                 [1, "block_output"])
    saelens_case("standard_no_bdec_in", StandardSAE, StandardSAEConfig, 16, 32, "blocks.0.hook_mlp_out",
                 [0, "mlp_output"], apply_b_dec_to_input=False)
    saelens_case("standard_norm_rescale", StandardSAE, StandardSAEConfig, 16, 32, "blocks.1.hook_resid_pre",
                 [1, "block_input"], x_scale=7.0, normalize_activations="constant_norm_rescale")
    saelens_case("standard_layer_norm", StandardSAE, StandardSAEConfig, 16, 32, "blocks.0.hook_attn_out",
                 [0, "attention_output"], x_scale=3.0, normalize_activations="layer_norm")
    saelens_case("jumprelu", JumpReLUSAE, JumpReLUSAEConfig, 32, 64, "blocks.1.attn.hook_z",
                 [1, "attention_value_output"], apply_b_dec_to_input=False)
    saelens_case("topk", TopKSAE, TopKSAEConfig, 16, 48, "blocks.1.hook_resid_post",
                 [1, "block_output"], k=5)
    saelens_case("topk_rescale", TopKSAE, TopKSAEConfig, 16, 48, "blocks.1.hook_resid_post",
                 [1, "block_output"], k=4, rescale_acts_by_decoder_norm=True)
    saelens_case("gated", GatedSAE, GatedSAEConfig, 16, 32, "blocks.0.hook_resid_post",
                 [0, "block_output"])
    gemma_scope_case()
    gemma_scope2_cases()
    site_cases()
    model_case()
    with open(os.path.join(ROOT, "VERSIONS"), "w") as f:
        f.write(f"sae-lens {sae_lens.__version__}\ntorch {torch.__version__}\n")
    print("wrote", ROOT)


if __name__ == "__main__":
    main()

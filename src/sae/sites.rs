//! Hook names as SAE files give them, mapped to vene sites.
//!
//! * SAELens / TransformerLens: `blocks.L.hook_resid_pre` (the block's input), `hook_resid_post`
//!   (its output), `hook_attn_out`, `hook_mlp_out`, `attn.hook_z` (the heads' outputs
//!   concatenated, the input of the output projection: SAELens flattens `hook_z` SAEs to
//!   `n_heads * d_head`), `mlp.hook_post` (the MLP's hidden activation).
//! * Hugging Face module paths (Gemma Scope 2's `hf_hook_point_in/out`): `model.layers.L.output`,
//!   `.input`, `model.layers.L.self_attn.output`, `.mlp.output`, `.mlp.input`,
//!   `.self_attn.o_proj.input`, `.mlp.down_proj.input`, `.pre_feedforward_layernorm.output`
//!   (Gemma's MLP input), under `model.layers`, `model.language_model.layers`, `transformer.h` or
//!   `gpt_neox.layers`.
//!
//! Anything else is an error naming the hook, since a silently misplaced SAE gives plausible
//! but meaningless features.

use crate::error::Result;
use crate::invalid;
use crate::site::{Component, Site};

/// TransformerLens hook suffixes (after `blocks.L.`) and the components they are.
const TL_HOOKS: &[(&str, Component)] = &[
    ("hook_resid_pre", Component::BlockInput),
    ("hook_resid_post", Component::BlockOutput),
    ("hook_attn_out", Component::AttentionOutput),
    ("hook_mlp_out", Component::MlpOutput),
    ("attn.hook_z", Component::AttentionValueOutput),
    ("hook_z", Component::AttentionValueOutput),
    ("mlp.hook_post", Component::MlpActivation),
];

/// Hugging Face module suffixes (after the layer index) and the components they are.
const HF_HOOKS: &[(&str, Component)] = &[
    ("output", Component::BlockOutput),
    ("input", Component::BlockInput),
    ("self_attn.output", Component::AttentionOutput),
    ("attn.output", Component::AttentionOutput),
    ("attention.output", Component::AttentionOutput),
    ("mlp.output", Component::MlpOutput),
    ("mlp.input", Component::MlpInput),
    ("pre_feedforward_layernorm.output", Component::MlpInput),
    ("self_attn.o_proj.input", Component::AttentionValueOutput),
    ("attn.c_proj.input", Component::AttentionValueOutput),
    ("mlp.c_proj.input", Component::MlpActivation),
];

/// Prefixes of Hugging Face decoder layer lists.
const HF_PREFIXES: &[&str] = &[
    "model.language_model.layers.",
    "model.layers.",
    "transformer.h.",
    "gpt_neox.layers.",
];

/// Maps a SAELens/TransformerLens hook name or a Hugging Face module path to a vene site.
pub fn site_for_hook(hook: &str) -> Result<Site> {
    let known = || {
        format!(
            "vene maps blocks.L.{{{}}} (SAELens/TransformerLens) and <layers>.L.{{{}}} (Hugging Face; <layers> is {})",
            TL_HOOKS.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", "),
            HF_HOOKS.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", "),
            HF_PREFIXES.iter().map(|p| p.trim_end_matches('.')).collect::<Vec<_>>().join(", ")
        )
    };
    let (rest, table) = if let Some(r) = hook.strip_prefix("blocks.") {
        (r, TL_HOOKS)
    } else if let Some(r) = HF_PREFIXES.iter().find_map(|p| hook.strip_prefix(p)) {
        (r, HF_HOOKS)
    } else {
        return Err(invalid!(
            "SAE hook '{hook}' is not a site vene can map: {}",
            known()
        ));
    };
    let (layer, suffix) = rest
        .split_once('.')
        .ok_or_else(|| invalid!("SAE hook '{hook}' has no part after the layer index"))?;
    let layer: usize = layer
        .parse()
        .map_err(|_| invalid!("SAE hook '{hook}': '{layer}' is not a layer index"))?;
    let component = table
        .iter()
        .find(|(s, _)| *s == suffix)
        .map(|(_, c)| *c)
        .ok_or_else(|| {
            invalid!(
                "SAE hook '{hook}': vene has no site for '{suffix}'; {}",
                known()
            )
        })?;
    Ok(Site::new(layer, component))
}

/// Families whose blocks normalize the attention and MLP outputs before adding them to the
/// residual stream (Gemma 2 and 3, OLMo 2). TransformerLens's `hook_attn_out` / `hook_mlp_out`
/// on them come after those norms, where vene has no site (its `attention_output` /
/// `mlp_output` are the modules' outputs, as pyvene's).
const POST_NORM_FAMILIES: &[&str] = &["gemma2", "gemma3", "gemma3_text", "olmo2"];

/// Families whose MLP is `down(act(up x))`: there `mlp.hook_post` is vene's `mlp_activation`.
/// Gated MLPs (`down(act(gate x) * up x)`) have no site for the product.
const UNGATED_MLP_FAMILIES: &[&str] = &["gpt2", "gpt_neox", "gpt_neo"];

/// An error when a TransformerLens hook means a different place on this model family than the
/// vene site it maps to.
pub fn check_family(hook: &str, model_type: &str) -> Result<()> {
    if hook.ends_with(".mlp.hook_post") && !UNGATED_MLP_FAMILIES.contains(&model_type) {
        return Err(invalid!(
            "SAE hook '{hook}' on a {model_type} model is TransformerLens's act(gate) * up, the down projection's input, which vene has no site for (vene's mlp_activation is act(gate) alone, as pyvene's)"
        ));
    }
    let post_norm = hook.ends_with(".hook_attn_out") || hook.ends_with(".hook_mlp_out");
    if post_norm && hook.starts_with("blocks.") && POST_NORM_FAMILIES.contains(&model_type) {
        return Err(invalid!(
            "SAE hook '{hook}' on a {model_type} model is TransformerLens's output after the post-attention/post-feedforward norm, which vene has no site for (vene's attention_output / mlp_output are before that norm)"
        ));
    }
    Ok(())
}

/// The SAELens hook name of a site, where one exists (for files vene writes and for `inspect`).
pub fn hook_for_site(site: Site) -> Option<String> {
    TL_HOOKS
        .iter()
        .find(|(s, c)| *c == site.component && *s != "hook_z")
        .map(|(s, _)| format!("blocks.{}.{s}", site.layer))
}

/// Gemma Scope's folder layout `.../layer_L/width_16k/average_l0_N` (or Gemma Scope 2's
/// `layer_L_width_16k_l0_small`): the layer, if the path names one.
pub fn layer_from_path(path: &str) -> Option<usize> {
    path.split(['/', '\\']).rev().find_map(|part| {
        let rest = part.strip_prefix("layer_")?;
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let after = &rest[digits.len()..];
        if digits.is_empty() || !(after.is_empty() || after.starts_with('_')) {
            return None;
        }
        digits.parse().ok()
    })
}

/// Gemma Scope 1's site kind from its repository folder (`gemma-scope-2b-pt-res`,
/// `..-mlp`, `..-att`), if the path names one.
pub fn component_from_gemma_scope_path(path: &str) -> Option<Component> {
    path.split(['/', '\\']).find_map(|part| {
        if !part.starts_with("gemma-scope") {
            return None;
        }
        if part.ends_with("-res") || part.contains("-res-") {
            Some(Component::BlockOutput)
        } else if part.ends_with("-mlp") || part.contains("-mlp-") {
            Some(Component::MlpOutput)
        } else if part.ends_with("-att") || part.contains("-att-") {
            Some(Component::AttentionValueOutput)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_saelens_and_hf_hooks() {
        let s = site_for_hook("blocks.3.hook_resid_post").unwrap();
        assert_eq!(s, Site::new(3, Component::BlockOutput));
        let s = site_for_hook("blocks.0.attn.hook_z").unwrap();
        assert_eq!(s, Site::new(0, Component::AttentionValueOutput));
        let s = site_for_hook("model.layers.12.output").unwrap();
        assert_eq!(s, Site::new(12, Component::BlockOutput));
        let s = site_for_hook("model.layers.2.pre_feedforward_layernorm.output").unwrap();
        assert_eq!(s, Site::new(2, Component::MlpInput));
        let e = site_for_hook("blocks.1.hook_resid_mid").unwrap_err();
        assert!(e.to_string().contains("hook_resid_mid"), "{e}");
        let e = site_for_hook("model.layers.1.post_feedforward_layernorm.output").unwrap_err();
        assert!(e.to_string().contains("post_feedforward_layernorm"), "{e}");
        assert!(site_for_hook("embed.hook_embed").is_err());
    }

    #[test]
    fn reads_layer_and_kind_from_gemma_scope_paths() {
        let p = "gemma-scope-2b-pt-res/layer_20/width_16k/average_l0_71/params.npz";
        assert_eq!(layer_from_path(p), Some(20));
        assert_eq!(
            component_from_gemma_scope_path(p),
            Some(Component::BlockOutput)
        );
        assert_eq!(
            layer_from_path("resid_post/layer_7_width_16k_l0_small"),
            Some(7)
        );
        assert_eq!(layer_from_path("somewhere/else"), None);
    }
}

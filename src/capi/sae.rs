//! Sparse autoencoders through C: load an SAE file (SAELens, Gemma Scope 1 and 2), encode and
//! reconstruct activations, read a prompt's feature activations, steer generation with a
//! feature, and sweep feature ablations against a target logit. Edits inside intervenable
//! runs go through the JSON config: intervention type `"vene/sae"` (see the README).

use super::error::*;
use super::handle::{self, Handle, Kind};
use super::model::{fill_text, vene_model};
use crate::generate::{generate, GenerateOptions};
use crate::model::Model;
use crate::sae::ops::{ablation_sweep, check_model, feature_acts, Edit, SaeHooks};
use crate::sae::{self, LoadHints, Sae};
use candle_core::{Device, Tensor};
use std::borrow::Cow;
use std::os::raw::c_char;

/// A loaded SAE or transcoder (weights in f32 on the CPU).
pub struct vene_sae {
    sae: Sae,
}

impl Handle for vene_sae {
    const KIND: Kind = Kind::Sae;
}

/// The SAE on the model's device.
fn on_model<'a>(s: &'a Sae, m: &Model) -> crate::Result<Cow<'a, Sae>> {
    if m.device().same_device(&Device::Cpu) {
        return Ok(Cow::Borrowed(s));
    }
    Ok(Cow::Owned(s.to_device(m.device())?))
}

/// Loads an SAE: a SAELens folder (cfg.json + sae_weights.safetensors), a Gemma Scope
/// `params.npz` (or its folder; the site comes from the `layer_L` folder) or a Gemma Scope 2
/// folder (params.safetensors + config.json). `hook` may be NULL; else it names or overrides
/// the site: a SAELens hook (`blocks.12.hook_resid_post`), a Hugging Face module
/// (`model.layers.12.output`) or a vene site (`12.block_output`). Free with `vene_sae_free`.
#[no_mangle]
pub unsafe extern "C" fn vene_sae_load(
    path: *const c_char,
    hook: *const c_char,
    out: *mut *mut vene_sae,
) -> vene_status {
    guard("vene_sae_load", || {
        let path = arg_str(path, "path")?;
        let hook = if hook.is_null() {
            None
        } else {
            Some(arg_str(hook, "hook")?.to_string())
        };
        arg_out(out, "out")?;
        let sae = sae::load(path, &LoadHints { hook }, &Device::Cpu)?;
        *out = handle::publish(vene_sae { sae });
        Ok(())
    })
}

/// Frees an SAE. NULL is fine.
#[no_mangle]
pub unsafe extern "C" fn vene_sae_free(sae: *mut vene_sae) -> vene_status {
    guard("vene_sae_free", || {
        drop(handle::take(sae, "sae")?);
        Ok(())
    })
}

/// The SAE's sizes: input width, number of features, output width (equal to `d_in` except for
/// transcoders). Any out-parameter may be NULL.
#[no_mangle]
pub unsafe extern "C" fn vene_sae_sizes(
    sae: *const vene_sae,
    d_in: *mut usize,
    d_sae: *mut usize,
    d_out: *mut usize,
) -> vene_status {
    guard("vene_sae_sizes", || {
        let s = &handle::get(sae, "sae")?.sae;
        for (p, v) in [(d_in, s.d_in), (d_sae, s.d_sae), (d_out, s.d_out)] {
            if !p.is_null() {
                *p = v;
            }
        }
        Ok(())
    })
}

/// A JSON description: format, architecture, d_in, d_sae, d_out, hook_in, layer_in,
/// component_in, hook_out, layer_out, component_out, apply_b_dec_to_input,
/// normalize_activations. Buffer protocol of `vene_detokenize`.
#[no_mangle]
pub unsafe extern "C" fn vene_sae_info(
    sae: *const vene_sae,
    buf: *mut c_char,
    capacity: usize,
    len: *mut usize,
) -> vene_status {
    guard("vene_sae_info", || {
        let s = &handle::get(sae, "sae")?.sae;
        arg_out(len, "len")?;
        let v = serde_json::json!({
            "format": s.format, "architecture": s.architecture.name(),
            "d_in": s.d_in, "d_sae": s.d_sae, "d_out": s.d_out,
            "hook_in": s.hook_in.name, "layer_in": s.hook_in.site.layer,
            "component_in": s.hook_in.site.component.name(),
            "hook_out": s.hook_out.name, "layer_out": s.hook_out.site.layer,
            "component_out": s.hook_out.site.component.name(),
            "apply_b_dec_to_input": s.apply_b_dec_to_input,
            "normalize_activations": s.normalization.name(),
        });
        fill_text(v.to_string(), buf, capacity, len)
    })
}

/// Rows of `width` f32 values as a (n, width) tensor.
unsafe fn rows(p: *const f32, n: usize, width: usize, name: &str) -> Outcome<Tensor> {
    let len = product(&[n, width], name)?;
    let x = arg_slice(p, len, name)?;
    Ok(Tensor::from_slice(x, (n, width), &Device::Cpu).map_err(crate::Error::from)?)
}

/// Copies `t` into a caller's buffer of `capacity` floats.
unsafe fn write_out(t: &Tensor, out: *mut f32, capacity: usize, name: &str) -> Outcome<()> {
    let v: Vec<f32> = t
        .flatten_all()
        .and_then(|t| t.to_vec1())
        .map_err(crate::Error::from)?;
    if capacity < v.len() {
        return Err(Failure::new(
            VENE_ERR_BUFFER_TOO_SMALL,
            format!("{name} holds {capacity} floats, {} are needed", v.len()),
        ));
    }
    arg_out(out, name)?;
    std::ptr::copy_nonoverlapping(v.as_ptr(), out, v.len());
    Ok(())
}

/// Feature activations of `n` activation rows `x` (n x d_in floats, row-major) into `out`
/// (n x d_sae floats; `capacity` is its length in floats).
#[no_mangle]
pub unsafe extern "C" fn vene_sae_encode(
    sae: *const vene_sae,
    x: *const f32,
    n: usize,
    out: *mut f32,
    capacity: usize,
) -> vene_status {
    guard("vene_sae_encode", || {
        let s = &handle::get(sae, "sae")?.sae;
        let acts = s.encode(&rows(x, n, s.d_in, "x")?)?;
        write_out(&acts, out, capacity, "out")
    })
}

/// The SAE's reconstruction of `n` rows `x` (n x d_in) into `out` (n x d_out floats).
#[no_mangle]
pub unsafe extern "C" fn vene_sae_reconstruct(
    sae: *const vene_sae,
    x: *const f32,
    n: usize,
    out: *mut f32,
    capacity: usize,
) -> vene_status {
    guard("vene_sae_reconstruct", || {
        let s = &handle::get(sae, "sae")?.sae;
        let r = s.reconstruct(&rows(x, n, s.d_in, "x")?)?;
        write_out(&r, out, capacity, "out")
    })
}

/// Feature activations of a prompt's `n_ids` tokens at the SAE's site of `model` into `out`
/// (n_ids x d_sae floats). An SAE that does not fit the model (site, width) is
/// `VENE_ERR_INVALID_INPUT` naming both.
#[no_mangle]
pub unsafe extern "C" fn vene_sae_feature_acts(
    model: *const vene_model,
    sae: *const vene_sae,
    ids: *const u32,
    n_ids: usize,
    out: *mut f32,
    capacity: usize,
) -> vene_status {
    guard("vene_sae_feature_acts", || {
        let m = &handle::get(model, "model")?.model;
        let s = on_model(&handle::get(sae, "sae")?.sae, m)?;
        let ids = arg_slice(ids, n_ids, "ids")?;
        let acts = feature_acts(m, &s, ids)?;
        write_out(&acts, out, capacity, "out")
    })
}

/// Greedy generation of up to `max_new_tokens` after the prompt `ids`, adding
/// `coeff * W_dec[feature]` at the SAE's site at every position. The new ids go to `out_ids`
/// (`capacity` entries), their count to `*n_out`.
#[no_mangle]
pub unsafe extern "C" fn vene_sae_generate_steered(
    model: *const vene_model,
    sae: *const vene_sae,
    feature: usize,
    coeff: f32,
    ids: *const u32,
    n_ids: usize,
    max_new_tokens: usize,
    out_ids: *mut u32,
    capacity: usize,
    n_out: *mut usize,
) -> vene_status {
    guard("vene_sae_generate_steered", || {
        let m = &handle::get(model, "model")?.model;
        let s = on_model(&handle::get(sae, "sae")?.sae, m)?;
        let ids = arg_slice(ids, n_ids, "ids")?;
        arg_out(n_out, "n_out")?;
        check_model(m, &s)?;
        let mut hooks = SaeHooks::new(&s, Edit::steer(feature, coeff))?;
        let opts = GenerateOptions {
            max_new_tokens,
            ..Default::default()
        };
        let new = generate(m, ids, &mut hooks, &opts, |_| Ok(()))?;
        if capacity < new.len() {
            return Err(Failure::new(
                VENE_ERR_BUFFER_TOO_SMALL,
                format!("out_ids holds {capacity} ids, {} were generated", new.len()),
            ));
        }
        arg_out(out_ids, "out_ids")?;
        std::ptr::copy_nonoverlapping(new.as_ptr(), out_ids, new.len());
        *n_out = new.len();
        Ok(())
    })
}

/// For each of `n_features` features, the change of token `target`'s logit at `position` when
/// the feature is ablated at every position (the SAE's error term kept), `batch` features per
/// forward. Effects go to `effects` (n_features floats), the unedited logit to `*base_logit`.
#[no_mangle]
pub unsafe extern "C" fn vene_sae_ablation_sweep(
    model: *const vene_model,
    sae: *const vene_sae,
    ids: *const u32,
    n_ids: usize,
    position: usize,
    target: u32,
    features: *const usize,
    n_features: usize,
    batch: usize,
    effects: *mut f32,
    base_logit: *mut f32,
) -> vene_status {
    guard("vene_sae_ablation_sweep", || {
        let m = &handle::get(model, "model")?.model;
        let s = on_model(&handle::get(sae, "sae")?.sae, m)?;
        let ids = arg_slice(ids, n_ids, "ids")?;
        let features = arg_slice(features, n_features, "features")?;
        arg_out(effects, "effects")?;
        arg_out(base_logit, "base_logit")?;
        let (base, out) = ablation_sweep(m, &s, ids, position, target, features, batch)?;
        for (i, a) in out.iter().enumerate() {
            *effects.add(i) = a.effect;
        }
        *base_logit = base;
        Ok(())
    })
}

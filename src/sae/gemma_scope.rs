//! Gemma Scope 1 (Gemma 2 SAEs): `params.npz` with `W_enc` (d_in, d_sae), `W_dec`
//! (d_sae, d_in), `b_enc`, `b_dec`, `threshold`; JumpReLU, `b_dec` not subtracted from the
//! input. The file says nothing about its site: it comes from the folder path
//! (`gemma-scope-2b-pt-res/layer_20/width_16k/average_l0_71`: residual stream after block 20)
//! or from the caller's hint.

use super::npy::read_npz;
use super::saelens::hinted;
use super::sites::{component_from_gemma_scope_path, hook_for_site, layer_from_path};
use super::{f32_on, Architecture, Hook, LoadHints, Normalization, Sae};
use crate::error::{Error, Result};
use crate::site::{Component, Site};
use candle_core::{Device, Tensor};
use std::path::Path;

pub const PARAMS_FILE: &str = "params.npz";

/// Loads a Gemma Scope `params.npz`.
pub fn load(path: &Path, hints: &LoadHints, device: &Device) -> Result<Sae> {
    let mut w = read_npz(path, device)?;
    let mut take = |k: &str| -> Result<Tensor> {
        // Gemma Scope writes `W_enc`; some copies use the lower-case `w_enc`.
        let t = w
            .remove(k)
            .or_else(|| w.remove(&k.to_lowercase()))
            .ok_or_else(|| Error::file(path, format!("missing array '{k}'")))?;
        f32_on(&t, device)
    };
    let w_enc = take("W_enc")?;
    let w_dec = take("W_dec")?;
    let b_enc = take("b_enc")?;
    let b_dec = take("b_dec")?;
    let threshold = take("threshold")?;
    if let Some(k) = w.keys().next() {
        return Err(Error::file(
            path,
            format!("array '{k}' is not part of a Gemma Scope SAE"),
        ));
    }
    let (d_in, d_sae) = w_enc.dims2()?;
    let hook = match hinted(hints)? {
        Some(h) => h,
        None => site_from_path(path)?,
    };
    Ok(Sae {
        architecture: Architecture::JumpRelu,
        d_in,
        d_sae,
        d_out: d_in,
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        threshold: Some(threshold),
        gated: None,
        skip: None,
        apply_b_dec_to_input: false,
        normalization: Normalization::None,
        hook_in: hook.clone(),
        hook_out: hook,
        format: "gemma-scope",
        source: path.to_path_buf(),
    })
}

/// `layer_L` from the path, and the site kind from the repository folder (residual stream
/// when the path does not say).
fn site_from_path(path: &Path) -> Result<Hook> {
    let text = path.to_string_lossy();
    let layer = layer_from_path(&text).ok_or_else(|| {
        Error::file(
            path,
            "cannot tell the layer: the path has no layer_L folder (as in gemma-scope-2b-pt-res/layer_20/width_16k/average_l0_71); give the hook (e.g. blocks.20.hook_resid_post)",
        )
    })?;
    let component = component_from_gemma_scope_path(&text).unwrap_or(Component::BlockOutput);
    let site = Site::new(layer, component);
    Ok(Hook {
        name: hook_for_site(site).unwrap_or_else(|| site.to_string()),
        site,
    })
}

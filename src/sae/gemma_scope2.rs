//! Gemma Scope 2 (Gemma 3 SAEs and transcoders): `params.safetensors` with lower-case
//! `w_enc` (d_in, d_sae), `w_dec` (d_sae, d_out), `b_enc`, `b_dec`, `threshold`, and for skip
//! transcoders `affine_skip_connection` (d_in, d_out); next to it `config.json` whose
//! `hf_hook_point_in` / `hf_hook_point_out` name Hugging Face modules
//! (`model.layers.L.output`, ...). JumpReLU, `b_dec` not subtracted from the input.

use super::saelens::hinted;
use super::sites::layer_from_path;
use super::{f32_on, parse_hook, Architecture, LoadHints, Normalization, Sae};
use crate::error::{Error, Result};
use crate::site::{Component, Site};
use candle_core::{Device, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

pub const PARAMS_FILE: &str = "params.safetensors";
pub const CONFIG_FILE: &str = "config.json";

/// Loads a Gemma Scope 2 folder.
pub fn load(dir: &Path, hints: &LoadHints, device: &Device) -> Result<Sae> {
    let wpath = dir.join(PARAMS_FILE);
    let mut w: HashMap<String, Tensor> = candle_core::safetensors::load(&wpath, device)
        .map_err(|e| Error::file(&wpath, format!("cannot read safetensors: {e}")))?;
    let has_skip = w.contains_key("affine_skip_connection");
    let mut take = |k: &str| -> Result<Tensor> {
        let t = w
            .remove(k)
            .ok_or_else(|| Error::file(&wpath, format!("missing tensor '{k}'")))?;
        f32_on(&t, device)
    };
    let w_enc = take("w_enc")?;
    let w_dec = take("w_dec")?;
    let b_enc = take("b_enc")?;
    let b_dec = take("b_dec")?;
    let threshold = take("threshold")?;
    let skip = if has_skip {
        Some(take("affine_skip_connection")?)
    } else {
        None
    };
    if let Some(k) = w.keys().next() {
        return Err(Error::file(
            &wpath,
            format!("tensor '{k}' is not part of a Gemma Scope 2 SAE"),
        ));
    }
    let (d_in, d_sae) = w_enc.dims2()?;
    let d_out = w_dec.dim(1)?;

    let cpath = dir.join(CONFIG_FILE);
    let cfg: Option<Value> = if cpath.is_file() {
        let text = std::fs::read_to_string(&cpath).map_err(|e| Error::file(&cpath, e))?;
        Some(
            serde_json::from_str(&text)
                .map_err(|e| Error::file(&cpath, format!("invalid JSON: {e}")))?,
        )
    } else {
        None
    };
    let hf = |k: &str| -> Option<String> {
        cfg.as_ref()
            .and_then(|c| c.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if let Some(a) = cfg
        .as_ref()
        .and_then(|c| c.get("architecture"))
        .and_then(Value::as_str)
    {
        if a != "jump_relu" && a != "jumprelu" {
            return Err(Error::file(
                &cpath,
                format!("architecture '{a}': Gemma Scope 2 files vene reads are jump_relu"),
            ));
        }
    }
    let hook_in = match (hinted(hints)?, hf("hf_hook_point_in")) {
        (Some(h), _) => h,
        (None, Some(name)) => parse_hook(&name).map_err(|e| Error::file(&cpath, e))?,
        (None, None) => {
            // No config: the folder says the layer (`layer_L_width_16k_l0_small`).
            let layer = layer_from_path(&dir.to_string_lossy()).ok_or_else(|| {
                Error::file(
                    dir,
                    "no config.json with hf_hook_point_in and no layer_L in the path; give the hook",
                )
            })?;
            let site = Site::new(layer, Component::BlockOutput);
            super::Hook {
                name: format!("model.layers.{layer}.output"),
                site,
            }
        }
    };
    let hook_out = match hf("hf_hook_point_out") {
        Some(name) if hints.hook.is_none() || d_out != d_in => {
            parse_hook(&name).map_err(|e| Error::file(&cpath, e))?
        }
        _ => hook_in.clone(),
    };
    Ok(Sae {
        architecture: Architecture::JumpRelu,
        d_in,
        d_sae,
        d_out,
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        threshold: Some(threshold),
        gated: None,
        skip,
        apply_b_dec_to_input: false,
        normalization: Normalization::None,
        hook_in,
        hook_out,
        format: "gemma-scope-2",
        source: dir.to_path_buf(),
    })
}

//! SAELens's saved SAEs: a folder with `cfg.json` (the config's `to_dict()`: `architecture`,
//! `d_in`, `d_sae`, `apply_b_dec_to_input`, `normalize_activations`, `k`, `metadata.hook_name`,
//! ...) and `sae_weights.safetensors` (`W_enc` (d_in, d_sae), `b_enc`, `W_dec` (d_sae, d_in),
//! `b_dec`, plus `threshold` for jumprelu and `b_gate`, `b_mag`, `r_mag` for gated).
//! Transcoders (`transcoder`, `skip_transcoder`, `jumprelu_transcoder`,
//! `jumprelu_skip_transcoder`) add `d_out`, `hook_name_out` and `W_skip` (d_out, d_in).
//! Older SAELens versions keep `hook_name` at the top level; both are read.

use super::{f32_on, parse_hook, Architecture, Hook, LoadHints, Normalization, Sae};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

pub const CFG_FILE: &str = "cfg.json";
pub const WEIGHTS_FILE: &str = "sae_weights.safetensors";

/// Loads the SAELens folder `dir`.
pub fn load(dir: &Path, hints: &LoadHints, device: &Device) -> Result<Sae> {
    let cpath = dir.join(CFG_FILE);
    let text = std::fs::read_to_string(&cpath).map_err(|e| Error::file(&cpath, e))?;
    let cfg: Value = serde_json::from_str(&text)
        .map_err(|e| Error::file(&cpath, format!("invalid JSON: {e}")))?;
    let bad = |msg: String| Error::file(&cpath, msg);
    let field = |k: &str| -> Option<&Value> {
        cfg.get(k).filter(|v| !v.is_null()).or_else(|| {
            cfg.get("metadata")
                .and_then(|m| m.get(k))
                .filter(|v| !v.is_null())
        })
    };
    let uint = |k: &str| -> Result<usize> {
        field(k)
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| bad(format!("\"{k}\" must be a positive integer")))
    };
    let arch_name = field("architecture")
        .and_then(Value::as_str)
        .unwrap_or("standard");
    let (base, transcoder, skip) = match arch_name {
        "standard" => ("standard", false, false),
        "jumprelu" => ("jumprelu", false, false),
        "topk" => ("topk", false, false),
        "gated" => ("gated", false, false),
        "transcoder" => ("standard", true, false),
        "skip_transcoder" => ("standard", true, true),
        "jumprelu_transcoder" => ("jumprelu", true, false),
        "jumprelu_skip_transcoder" => ("jumprelu", true, true),
        other => {
            return Err(bad(format!(
                "architecture '{other}' is not supported; vene reads standard, jumprelu, topk, gated, transcoder, skip_transcoder, jumprelu_transcoder, jumprelu_skip_transcoder"
            )))
        }
    };
    let d_in = uint("d_in")?;
    let d_sae = uint("d_sae")?;
    let d_out = if transcoder { uint("d_out")? } else { d_in };
    let architecture = match base {
        "standard" => Architecture::Standard,
        "jumprelu" => Architecture::JumpRelu,
        "gated" => Architecture::Gated,
        _ => Architecture::TopK {
            k: uint("k")?,
            rescale_acts_by_decoder_norm: field("rescale_acts_by_decoder_norm")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
    };
    if let Some(h) = field("hook_head_index") {
        return Err(bad(format!(
            "hook_head_index {h}: SAEs on a single attention head are not supported"
        )));
    }
    let normalization =
        Normalization::parse(field("normalize_activations").and_then(Value::as_str))
            .map_err(|e| bad(e.to_string()))?;
    let apply_b_dec_to_input = field("apply_b_dec_to_input")
        .and_then(Value::as_bool)
        .unwrap_or(!transcoder);
    let hook_in = match &hints.hook {
        Some(h) => parse_hook(h)?,
        None => {
            let name = field("hook_name").and_then(Value::as_str).ok_or_else(|| {
                bad("no \"hook_name\" (nor metadata.hook_name); give the site".into())
            })?;
            parse_hook(name).map_err(|e| bad(e.to_string()))?
        }
    };
    let hook_out = if transcoder {
        let name = field("hook_name_out")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a transcoder needs \"hook_name_out\"".into()))?;
        parse_hook(name).map_err(|e| bad(e.to_string()))?
    } else {
        hook_in.clone()
    };

    let wpath = dir.join(WEIGHTS_FILE);
    let mut w: HashMap<String, Tensor> = candle_core::safetensors::load(&wpath, device)
        .map_err(|e| Error::file(&wpath, format!("cannot read safetensors: {e}")))?;
    let has_threshold = w.contains_key("threshold");
    let mut take = |k: &str| -> Result<Tensor> {
        let t = w
            .remove(k)
            .ok_or_else(|| Error::file(&wpath, format!("missing tensor '{k}'")))?;
        f32_on(&t, device)
    };
    let w_enc = take("W_enc")?;
    let w_dec = take("W_dec")?;
    let b_dec = take("b_dec")?;
    let (b_enc, gated) = if architecture == Architecture::Gated {
        (take("b_gate")?, Some((take("b_mag")?, take("r_mag")?)))
    } else {
        (take("b_enc")?, None)
    };
    let threshold = if base == "jumprelu" {
        Some(match has_threshold {
            true => take("threshold")?,
            false => take("log_threshold")?.exp()?,
        })
    } else {
        None
    };
    let skip = if skip {
        Some(take("W_skip")?.t()?.contiguous()?)
    } else {
        None
    };
    if let Some(k) = w.keys().next() {
        return Err(Error::file(
            &wpath,
            format!("tensor '{k}' is not part of a {arch_name} SAE as vene reads it"),
        ));
    }
    Ok(Sae {
        architecture,
        d_in,
        d_sae,
        d_out,
        w_enc,
        b_enc,
        w_dec,
        b_dec,
        threshold,
        gated,
        skip,
        apply_b_dec_to_input,
        normalization,
        hook_in,
        hook_out,
        format: "saelens",
        source: dir.to_path_buf(),
    })
}

/// The hook a caller gave, else `None` (used by the other loaders).
pub(crate) fn hinted(hints: &LoadHints) -> Result<Option<Hook>> {
    hints.hook.as_deref().map(parse_hook).transpose()
}

//! Sparse autoencoders (SAEs) and transcoders as researchers publish them, read into one
//! [`Sae`] whose math follows SAELens, mounted at the vene site its hook names.
//!
//! * [`saelens`]: `cfg.json` + `sae_weights.safetensors` (SAELens's `save_model`), architectures
//!   standard, jumprelu, topk, gated.
//! * [`gemma_scope`]: Gemma Scope 1's `params.npz` (JumpReLU), site from the folder path.
//! * [`gemma_scope2`]: Gemma Scope 2's `params.safetensors` + `config.json`, transcoders included.
//! * [`math`]: encode / decode; [`ops`]: edits as hooks (reconstruct, ablate, clamp, steer),
//!   feature activations, and the batched ablation sweep; [`intervention`]: the same edits as
//!   the `SaeIntervention` type of an intervenable config.
//!
//! ```no_run
//! # fn demo(model: &vene::Model) -> vene::Result<()> {
//! let sae = vene::sae::load("my-sae", &vene::sae::LoadHints::default(), model.device())?;
//! let acts = vene::sae::ops::feature_acts(model, &sae, &model.encode("Hello world")?)?;
//! # Ok(()) }
//! ```

pub mod gemma_scope;
pub mod gemma_scope2;
pub mod intervention;
pub mod math;
pub mod npy;
pub mod ops;
pub mod saelens;
pub mod sites;
pub mod train;

use crate::error::{Error, Result};
use crate::invalid;
use crate::site::Site;
use candle_core::{DType, Device, Tensor};
use std::path::{Path, PathBuf};

/// How pre-activations become feature activations (SAELens's `architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `relu(pre)`.
    Standard,
    /// `relu(pre) * (pre > threshold)`.
    JumpRelu,
    /// The `k` largest pre-activations per token, ReLU'd; the rest zero. With
    /// `rescale_acts_by_decoder_norm`, pre-activations are scaled by each decoder row's norm
    /// before the selection and divided by it again before decoding.
    TopK {
        k: usize,
        rescale_acts_by_decoder_norm: bool,
    },
    /// `(sae_in W_enc + b_gate > 0) * relu(sae_in (W_enc * exp(r_mag)) + b_mag)`.
    Gated,
}

impl Architecture {
    pub fn name(&self) -> &'static str {
        match self {
            Architecture::Standard => "standard",
            Architecture::JumpRelu => "jumprelu",
            Architecture::TopK { .. } => "topk",
            Architecture::Gated => "gated",
        }
    }
}

/// SAELens's `normalize_activations` at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalization {
    /// `none`, and `expected_average_only_in` (SAELens folds its factor into the weights when
    /// loading, so it is the identity at run time).
    None,
    /// `constant_norm_rescale`: each token scaled to norm `sqrt(d_in)`, the scale undone after
    /// decoding.
    ConstantNormRescale,
    /// `layer_norm`: each token centred and divided by (unbiased std + 1e-5); decoding multiplies
    /// by the std and adds the mean back.
    LayerNorm,
}

impl Normalization {
    pub fn parse(s: Option<&str>) -> Result<Normalization> {
        match s {
            None | Some("none") | Some("expected_average_only_in") => Ok(Normalization::None),
            Some("constant_norm_rescale") => Ok(Normalization::ConstantNormRescale),
            Some("layer_norm") => Ok(Normalization::LayerNorm),
            Some(other) => Err(invalid!(
                "normalize_activations '{other}' is not supported; vene reads none, expected_average_only_in, constant_norm_rescale and layer_norm"
            )),
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Normalization::None => "none",
            Normalization::ConstantNormRescale => "constant_norm_rescale",
            Normalization::LayerNorm => "layer_norm",
        }
    }
}

/// Where an SAE reads (and writes): the hook name as the file gives it and the vene site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    pub name: String,
    pub site: Site,
}

/// One SAE or transcoder, weights in f32, laid out as SAELens keeps them.
#[derive(Debug, Clone)]
pub struct Sae {
    pub architecture: Architecture,
    pub d_in: usize,
    pub d_sae: usize,
    /// Equal to `d_in` except for transcoders.
    pub d_out: usize,
    /// (d_in, d_sae)
    pub w_enc: Tensor,
    /// (d_sae); for gated SAEs this is `b_gate`.
    pub b_enc: Tensor,
    /// (d_sae, d_out)
    pub w_dec: Tensor,
    /// (d_out)
    pub b_dec: Tensor,
    /// JumpReLU threshold (d_sae).
    pub threshold: Option<Tensor>,
    /// Gated SAEs: `b_mag` and `r_mag` (d_sae each).
    pub gated: Option<(Tensor, Tensor)>,
    /// Skip transcoders: `x W_skip` added to the output, (d_in, d_out).
    pub skip: Option<Tensor>,
    pub apply_b_dec_to_input: bool,
    pub normalization: Normalization,
    /// Where the SAE reads.
    pub hook_in: Hook,
    /// Where its reconstruction goes (equal to `hook_in` except for transcoders).
    pub hook_out: Hook,
    /// The file format it was read from, e.g. "saelens".
    pub format: &'static str,
    /// The file or folder it was read from.
    pub source: PathBuf,
}

/// What a caller may say where the files do not.
#[derive(Debug, Clone, Default)]
pub struct LoadHints {
    /// The hook (SAELens or Hugging Face name) or a vene site `layer.component`, overriding
    /// the file's or the path's.
    pub hook: Option<String>,
}

impl Sae {
    /// Whether input and output sites differ (a transcoder).
    pub fn is_transcoder(&self) -> bool {
        self.hook_in.site != self.hook_out.site || self.d_in != self.d_out
    }

    /// Decoder row `feature` (d_out), the direction steering adds.
    pub fn decoder_row(&self, feature: usize) -> Result<Tensor> {
        self.check_feature(feature)?;
        Ok(self.w_dec.get(feature)?)
    }

    /// An error naming the feature when it is out of range.
    pub fn check_feature(&self, feature: usize) -> Result<()> {
        if feature >= self.d_sae {
            return Err(invalid!(
                "feature {feature} is out of range: the SAE at {} has {} features (0..{})",
                self.hook_in.name,
                self.d_sae,
                self.d_sae
            ));
        }
        Ok(())
    }

    /// Moves the weights to `device`.
    pub fn to_device(&self, device: &Device) -> Result<Sae> {
        let mv = |t: &Tensor| t.to_device(device);
        Ok(Sae {
            w_enc: mv(&self.w_enc)?,
            b_enc: mv(&self.b_enc)?,
            w_dec: mv(&self.w_dec)?,
            b_dec: mv(&self.b_dec)?,
            threshold: self.threshold.as_ref().map(mv).transpose()?,
            gated: match &self.gated {
                Some((a, b)) => Some((mv(a)?, mv(b)?)),
                None => None,
            },
            skip: self.skip.as_ref().map(mv).transpose()?,
            ..self.clone()
        })
    }

    /// Checks every tensor's shape against d_in / d_sae / d_out, naming the tensor at fault.
    pub(crate) fn check_shapes(&self) -> Result<()> {
        let want = |name: &str, t: &Tensor, dims: &[usize]| -> Result<()> {
            if t.dims() != dims {
                return Err(Error::file(
                    &self.source,
                    format!(
                        "{name} has shape {:?}, expected {dims:?} (d_in {}, d_sae {}, d_out {})",
                        t.dims(),
                        self.d_in,
                        self.d_sae,
                        self.d_out
                    ),
                ));
            }
            Ok(())
        };
        want("W_enc", &self.w_enc, &[self.d_in, self.d_sae])?;
        want("b_enc", &self.b_enc, &[self.d_sae])?;
        want("W_dec", &self.w_dec, &[self.d_sae, self.d_out])?;
        want("b_dec", &self.b_dec, &[self.d_out])?;
        if let Some(t) = &self.threshold {
            want("threshold", t, &[self.d_sae])?;
        }
        if let Some((m, r)) = &self.gated {
            want("b_mag", m, &[self.d_sae])?;
            want("r_mag", r, &[self.d_sae])?;
        }
        if let Some(s) = &self.skip {
            want("skip", s, &[self.d_in, self.d_out])?;
        }
        if self.apply_b_dec_to_input && self.d_in != self.d_out {
            return Err(Error::file(
                &self.source,
                "apply_b_dec_to_input needs d_in == d_out (b_dec is subtracted from the input)",
            ));
        }
        if let Architecture::TopK { k, .. } = self.architecture {
            if k == 0 || k > self.d_sae {
                return Err(Error::file(
                    &self.source,
                    format!("topk k = {k} must be between 1 and d_sae = {}", self.d_sae),
                ));
            }
        }
        Ok(())
    }
}

/// A tensor in f32 on `device`.
pub(crate) fn f32_on(t: &Tensor, device: &Device) -> Result<Tensor> {
    Ok(t.to_dtype(DType::F32)?.to_device(device)?)
}

/// Resolves a hook given by the caller: a SAELens / Hugging Face hook name, or a vene site
/// written `layer.component` (e.g. `3.block_output`).
pub fn parse_hook(hook: &str) -> Result<Hook> {
    if let Some((l, c)) = hook.split_once('.') {
        if let (Ok(layer), Ok(component)) = (l.parse::<usize>(), crate::site::Component::parse(c)) {
            let site = Site::new(layer, component);
            let name = sites::hook_for_site(site).unwrap_or_else(|| hook.to_string());
            return Ok(Hook { name, site });
        }
    }
    Ok(Hook {
        name: hook.to_string(),
        site: sites::site_for_hook(hook)?,
    })
}

/// Which format a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    SaeLens,
    GemmaScope,
    GemmaScope2,
}

/// Detects the format: a folder with `cfg.json` (SAELens), `params.npz` (Gemma Scope) or
/// `params.safetensors` (Gemma Scope 2), or one of those files given directly.
pub fn detect(path: &Path) -> Result<(Format, PathBuf)> {
    let dir = if path.is_file() {
        path.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        path.to_path_buf()
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if path.is_file() && name.ends_with(".npz") {
        return Ok((Format::GemmaScope, path.to_path_buf()));
    }
    if dir.join(saelens::CFG_FILE).is_file() {
        return Ok((Format::SaeLens, dir));
    }
    if path.is_file() && name == gemma_scope2::PARAMS_FILE {
        return Ok((Format::GemmaScope2, dir));
    }
    if dir.join(gemma_scope::PARAMS_FILE).is_file() {
        return Ok((Format::GemmaScope, dir.join(gemma_scope::PARAMS_FILE)));
    }
    if dir.join(gemma_scope2::PARAMS_FILE).is_file() {
        return Ok((Format::GemmaScope2, dir));
    }
    if !path.exists() {
        return Err(Error::file(path, "no such SAE file or folder"));
    }
    Err(Error::file(
        path,
        format!(
            "not an SAE vene reads: expected {} + {} (SAELens), {} (Gemma Scope) or {} + config.json (Gemma Scope 2)",
            saelens::CFG_FILE,
            saelens::WEIGHTS_FILE,
            gemma_scope::PARAMS_FILE,
            gemma_scope2::PARAMS_FILE
        ),
    ))
}

/// Loads an SAE in any format vene reads, onto `device`.
pub fn load(path: impl AsRef<Path>, hints: &LoadHints, device: &Device) -> Result<Sae> {
    let path = path.as_ref();
    let (format, at) = detect(path)?;
    let sae = match format {
        Format::SaeLens => saelens::load(&at, hints, device)?,
        Format::GemmaScope => gemma_scope::load(&at, hints, device)?,
        Format::GemmaScope2 => gemma_scope2::load(&at, hints, device)?,
    };
    sae.check_shapes()?;
    Ok(sae)
}

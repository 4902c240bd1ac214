//! Encode and decode as SAELens defines them (`process_sae_in`, each architecture's `encode`
//! and `decode`, `run_time_activation_norm_fn_in/out`). Inputs are any shape (..., d_in) and
//! are computed in f32.

use super::{Architecture, Normalization, Sae};
use crate::error::Result;
use crate::invalid;
use candle_core::{DType, Tensor, D};

/// What input normalization removed from each token, which decoding puts back.
#[derive(Debug, Clone)]
pub enum NormState {
    None,
    /// constant_norm_rescale: the factor each token was multiplied by, (n, 1).
    Scale(Tensor),
    /// layer_norm: each token's mean and unbiased std, (n, 1) each.
    Shift {
        mu: Tensor,
        std: Tensor,
    },
}

/// Feature activations (n, d_sae) of n tokens, with the normalization state of those tokens.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub acts: Tensor,
    pub norm: NormState,
}

/// (..., d) -> (n, d) and the leading shape.
fn flatten(x: &Tensor, d: usize, what: &str) -> Result<(Tensor, Vec<usize>)> {
    let dims = x.dims().to_vec();
    match dims.last() {
        Some(&last) if last == d => {}
        _ => {
            return Err(invalid!(
                "SAE {what} must end in a feature axis of {d}, got shape {dims:?}"
            ))
        }
    }
    let lead = dims[..dims.len() - 1].to_vec();
    let n: usize = lead.iter().product();
    Ok((x.to_dtype(DType::F32)?.reshape((n, d))?, lead))
}

fn unflatten(x: &Tensor, lead: &[usize]) -> Result<Tensor> {
    let mut dims = lead.to_vec();
    dims.push(x.dim(D::Minus1)?);
    Ok(x.reshape(dims)?)
}

impl Sae {
    /// `process_sae_in`: normalization, then `- b_dec` if `apply_b_dec_to_input`. x is (n, d_in).
    fn sae_in(&self, x: &Tensor) -> Result<(Tensor, NormState)> {
        let (x, norm) = match self.normalization {
            Normalization::None => (x.clone(), NormState::None),
            Normalization::ConstantNormRescale => {
                let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?;
                let scale = norm.recip()?.affine((self.d_in as f64).sqrt(), 0.0)?;
                (x.broadcast_mul(&scale)?, NormState::Scale(scale))
            }
            Normalization::LayerNorm => {
                let mu = x.mean_keepdim(1)?;
                let centred = x.broadcast_sub(&mu)?;
                let n = self.d_in as f64;
                let var = centred
                    .sqr()?
                    .sum_keepdim(1)?
                    .affine(1.0 / (n - 1.0), 0.0)?;
                let std = var.sqrt()?;
                let out = centred.broadcast_div(&(&std + 1e-5)?)?;
                (out, NormState::Shift { mu, std })
            }
        };
        let x = if self.apply_b_dec_to_input {
            x.broadcast_sub(&self.b_dec)?
        } else {
            x
        };
        Ok((x, norm))
    }

    /// Feature activations of n tokens (n, d_in) and their normalization state.
    pub fn encode_rows(&self, x: &Tensor) -> Result<Encoded> {
        let (sae_in, norm) = self.sae_in(x)?;
        let pre = sae_in.matmul(&self.w_enc)?.broadcast_add(&self.b_enc)?;
        let acts = match self.architecture {
            Architecture::Standard => pre.relu()?,
            Architecture::JumpRelu => {
                let th = self
                    .threshold
                    .as_ref()
                    .ok_or_else(|| invalid!("a JumpReLU SAE needs a threshold"))?;
                let on = pre.broadcast_gt(th)?.to_dtype(DType::F32)?;
                (pre.relu()? * on)?
            }
            Architecture::TopK {
                k,
                rescale_acts_by_decoder_norm,
            } => {
                let pre = if rescale_acts_by_decoder_norm {
                    pre.broadcast_mul(&self.decoder_norms()?)?
                } else {
                    pre
                };
                top_k_relu(&pre, k)?
            }
            Architecture::Gated => {
                let (b_mag, r_mag) = self
                    .gated
                    .as_ref()
                    .ok_or_else(|| invalid!("a gated SAE needs b_mag and r_mag"))?;
                let gate = pre.gt(0.0)?.to_dtype(DType::F32)?;
                let w_mag = self.w_enc.broadcast_mul(&r_mag.exp()?)?;
                let mag = sae_in.matmul(&w_mag)?.broadcast_add(b_mag)?.relu()?;
                (gate * mag)?
            }
        };
        Ok(Encoded { acts, norm })
    }

    /// Reconstruction (n, d_out) from activations (n, d_sae), undoing the normalization
    /// recorded when the same tokens were encoded.
    pub fn decode_rows(&self, acts: &Tensor, norm: &NormState) -> Result<Tensor> {
        let acts = match self.architecture {
            Architecture::TopK {
                rescale_acts_by_decoder_norm: true,
                ..
            } => acts.broadcast_div(&self.decoder_norms()?)?,
            _ => acts.clone(),
        };
        let out = acts.matmul(&self.w_dec)?.broadcast_add(&self.b_dec)?;
        Ok(match norm {
            NormState::None => out,
            NormState::Scale(s) => out.broadcast_div(s)?,
            NormState::Shift { mu, std } => out.broadcast_mul(std)?.broadcast_add(mu)?,
        })
    }

    /// The skip connection's contribution `x W_skip` (zeros without one), x (n, d_in).
    pub fn skip_rows(&self, x: &Tensor) -> Result<Option<Tensor>> {
        Ok(match &self.skip {
            Some(w) => Some(x.matmul(w)?),
            None => None,
        })
    }

    /// Feature activations (..., d_sae) of activations (..., d_in).
    pub fn encode(&self, x: &Tensor) -> Result<Tensor> {
        let (rows, lead) = flatten(x, self.d_in, "input")?;
        unflatten(&self.encode_rows(&rows)?.acts, &lead)
    }

    /// Decodes activations (..., d_sae) with no input normalization to undo (SAELens's
    /// `decode` after an `encode` of an SAE without `normalize_activations`).
    pub fn decode(&self, acts: &Tensor) -> Result<Tensor> {
        if self.normalization != Normalization::None {
            return Err(invalid!(
                "this SAE normalizes its input ({}), so decoding needs the inputs: use reconstruct",
                self.normalization.name()
            ));
        }
        let (rows, lead) = flatten(acts, self.d_sae, "feature activations")?;
        unflatten(&self.decode_rows(&rows, &NormState::None)?, &lead)
    }

    /// `decode(encode(x))` (plus the skip connection of a skip transcoder), (..., d_out).
    pub fn reconstruct(&self, x: &Tensor) -> Result<Tensor> {
        let (rows, lead) = flatten(x, self.d_in, "input")?;
        let enc = self.encode_rows(&rows)?;
        let mut out = self.decode_rows(&enc.acts, &enc.norm)?;
        if let Some(s) = self.skip_rows(&rows)? {
            out = (out + s)?;
        }
        unflatten(&out, &lead)
    }

    /// Each decoder row's L2 norm (d_sae).
    pub fn decoder_norms(&self) -> Result<Tensor> {
        Ok(self.w_dec.sqr()?.sum(1)?.sqrt()?)
    }
}

/// SAELens's `TopK`: per row, the k largest values ReLU'd, all others zero. Ties at the k-th
/// value keep every tied entry (torch keeps an arbitrary k of them).
fn top_k_relu(pre: &Tensor, k: usize) -> Result<Tensor> {
    let sorted = pre.sort_last_dim(false)?.0;
    let kth = sorted.narrow(1, k - 1, 1)?;
    let keep = pre.broadcast_ge(&kth)?.to_dtype(DType::F32)?;
    Ok((pre.relu()? * keep)?)
}

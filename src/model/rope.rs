//! Rotary position embeddings: the inverse frequencies (plain or scaled as `rope_scaling`
//! asks), and cos/sin at each row's positions in the rotate-half layout Hugging Face uses.

use crate::config_err;
use crate::error::Result;
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

/// The `rope_scaling` kinds of Hugging Face configs that vene implements.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor`.
    Linear {
        factor: f64,
    },
    /// NTK-aware base growth once a forward reaches past `original_max` positions.
    Dynamic {
        factor: f64,
        original_max: usize,
    },
    /// Llama 3.1's smooth interpolation between scaled and unscaled frequencies.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max: usize,
    },
    /// YaRN: per-frequency ramp between interpolation and extrapolation, cos/sin scaled.
    Yarn {
        factor: f64,
        original_max: usize,
        beta_fast: f64,
        beta_slow: f64,
        /// Multiplies cos and sin.
        attention_factor: f64,
    },
}

impl RopeScaling {
    /// Reads config.json's `rope_scaling` (absent, null or `"default"` mean none); a kind vene
    /// does not implement is an error naming it. `max_positions` is the config's
    /// `max_position_embeddings`.
    pub fn parse(v: Option<&Value>, max_positions: usize) -> Result<RopeScaling> {
        let Some(v) = v.filter(|v| !v.is_null()) else {
            return Ok(RopeScaling::None);
        };
        let kind = v
            .get("rope_type")
            .or_else(|| v.get("type"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| config_err!("config.json: rope_scaling {v} names no rope_type"))?;
        let num = |key: &str| v.get(key).and_then(|x| x.as_f64());
        let need = |key: &str| {
            num(key).ok_or_else(|| {
                config_err!("config.json: rope_scaling of type '{kind}' needs a number '{key}'")
            })
        };
        let original = num("original_max_position_embeddings").map(|x| x as usize);
        Ok(match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: need("factor")?,
            },
            "dynamic" => RopeScaling::Dynamic {
                factor: need("factor")?,
                original_max: max_positions,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max: need("original_max_position_embeddings")? as usize,
            },
            "yarn" => {
                // With the pretrained context given, the factor is the ratio of the two
                // contexts (transformers >= 4.50).
                let (factor, original_max) = match original {
                    Some(o) => (max_positions as f64 / o as f64, o),
                    None => (need("factor")?, max_positions),
                };
                let mscale = |m: f64| {
                    if factor <= 1.0 {
                        1.0
                    } else {
                        0.1 * m * factor.ln() + 1.0
                    }
                };
                let attention_factor = match (num("attention_factor"), num("mscale"), num("mscale_all_dim")) {
                    (Some(a), _, _) => a,
                    (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => mscale(m) / mscale(all),
                    _ => mscale(1.0),
                };
                RopeScaling::Yarn {
                    factor,
                    original_max,
                    beta_fast: num("beta_fast").unwrap_or(32.0),
                    beta_slow: num("beta_slow").unwrap_or(1.0),
                    attention_factor,
                }
            }
            other => {
                return Err(config_err!(
                    "config.json: rope_scaling type '{other}' is not supported (supported: default, linear, dynamic, llama3, yarn)"
                ))
            }
        })
    }
}

/// One rotary embedding: `dim` rotated features per head (all of head_dim, or a fraction).
#[derive(Debug, Clone)]
pub struct Rope {
    dim: usize,
    base: f64,
    scaling: RopeScaling,
    /// (1, dim / 2) inverse frequencies; for `Dynamic`, those of short inputs.
    inv_freq: Tensor,
    /// Multiplies cos and sin (YaRN), else 1.
    attention_factor: f64,
}

impl Rope {
    pub fn new(dim: usize, base: f64, scaling: RopeScaling, device: &Device) -> Result<Rope> {
        if dim == 0 || !dim.is_multiple_of(2) {
            return Err(config_err!(
                "config.json: the rotary dimension {dim} must be even and positive"
            ));
        }
        let plain = inverse_frequencies(dim, base);
        let (freqs, attention_factor) = match &scaling {
            RopeScaling::None | RopeScaling::Dynamic { .. } => (plain, 1.0),
            RopeScaling::Linear { factor } => {
                (plain.iter().map(|f| f / *factor as f32).collect(), 1.0)
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max,
            } => (
                llama3_frequencies(
                    &plain,
                    *factor,
                    *low_freq_factor,
                    *high_freq_factor,
                    *original_max,
                ),
                1.0,
            ),
            RopeScaling::Yarn {
                factor,
                original_max,
                beta_fast,
                beta_slow,
                attention_factor,
            } => {
                let freqs =
                    yarn_frequencies(dim, base, *factor, *original_max, *beta_fast, *beta_slow);
                (freqs, *attention_factor)
            }
        };
        Ok(Rope {
            dim,
            base,
            scaling,
            inv_freq: to_row(&freqs, device)?,
            attention_factor,
        })
    }

    /// Rotated features per head.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// (cos, sin) at positions (batch, seq), each (batch, 1, seq, dim).
    pub fn at(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, s) = positions.dims2()?;
        let inv = match &self.scaling {
            RopeScaling::Dynamic {
                factor,
                original_max,
            } => {
                // As transformers: the base grows with the longest position of this forward.
                let seq_len = positions.flatten_all()?.max(0)?.to_scalar::<u32>()? as usize + 1;
                if seq_len > *original_max {
                    let d = self.dim as f64;
                    let grown = self.base
                        * ((factor * seq_len as f64 / *original_max as f64) - (factor - 1.0))
                            .powf(d / (d - 2.0));
                    to_row(&inverse_frequencies(self.dim, grown), positions.device())?
                } else {
                    self.inv_freq.clone()
                }
            }
            _ => self.inv_freq.clone(),
        };
        let pos = positions.to_dtype(DType::F32)?.reshape((b * s, 1))?;
        let freqs = pos.broadcast_mul(&inv)?;
        let freqs = Tensor::cat(&[&freqs, &freqs], 1)?;
        let (mut cos, mut sin) = (freqs.cos()?, freqs.sin()?);
        if self.attention_factor != 1.0 {
            cos = (cos * self.attention_factor)?;
            sin = (sin * self.attention_factor)?;
        }
        Ok((
            cos.reshape((b, 1, s, self.dim))?,
            sin.reshape((b, 1, s, self.dim))?,
        ))
    }
}

fn to_row(freqs: &[f32], device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(freqs.to_vec(), (1, freqs.len()), device)?)
}

/// 1 / base^(2i / dim) for i in 0..dim/2, rounded to f32 as transformers stores them.
fn inverse_frequencies(dim: usize, base: f64) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| 1.0 / base.powf(2.0 * i as f64 / dim as f64) as f32)
        .collect()
}

fn llama3_frequencies(
    plain: &[f32],
    factor: f64,
    low: f64,
    high: f64,
    original: usize,
) -> Vec<f32> {
    let original = original as f64;
    let (low_wavelen, high_wavelen) = (original / low, original / high);
    plain
        .iter()
        .map(|&f| {
            let f = f as f64;
            let wavelen = 2.0 * std::f64::consts::PI / f;
            let out = if wavelen < high_wavelen {
                f
            } else if wavelen > low_wavelen {
                f / factor
            } else {
                // Between the two wavelengths: blend the scaled and unscaled frequency.
                let smooth = (original / wavelen - low) / (high - low);
                (1.0 - smooth) * f / factor + smooth * f
            };
            out as f32
        })
        .collect()
}

fn yarn_frequencies(
    dim: usize,
    base: f64,
    factor: f64,
    original: usize,
    beta_fast: f64,
    beta_slow: f64,
) -> Vec<f32> {
    let d = dim as f64;
    // The dimension whose wavelength makes `rotations` turns over the original context.
    let correction = |rotations: f64| {
        d * (original as f64 / (rotations * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln())
    };
    let low = correction(beta_fast).floor().max(0.0);
    let high = correction(beta_slow).ceil().min(d - 1.0);
    let high = if low == high { high + 0.001 } else { high };
    (0..dim / 2)
        .map(|i| {
            let pos_freq = base.powf(2.0 * i as f64 / d) as f32 as f64;
            let extrapolation = 1.0 / pos_freq;
            let interpolation = 1.0 / (factor * pos_freq);
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            let keep = 1.0 - ramp;
            (interpolation * (1.0 - keep) + extrapolation * keep) as f32
        })
        .collect()
}

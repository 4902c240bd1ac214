//! `NoiseIntervention` and the random numbers it is made of: numpy's legacy `RandomState`
//! (MT19937, `random_sample`, the polar Box-Muller `randn` with its cached second value),
//! reproduced bit for bit so that pyvene's fixed noise comes out identical.

use super::parametrised::{Args, Buffers, StateIn};
use super::{Intervention, Spec};
use crate::error::Result;
use crate::invalid;
use crate::subspace::Dims;
use candle_core::{DType, Device, Tensor, D};
use std::collections::HashMap;

/// pyvene's default `noise_level`.
pub const DEFAULT_NOISE_LEVEL: f64 = 0.13462981581687927;
/// pyvene draws noise for exactly this many units (`randn(1, 4, embed_dim)`).
const NOISE_UNITS: usize = 4;

const N: usize = 624;
const M: usize = 397;

/// numpy's legacy `np.random.RandomState(seed)` (MT19937 with `init_genrand` seeding).
pub struct RandomState {
    mt: [u32; N],
    pos: usize,
    gauss: Option<f64>,
}

impl RandomState {
    /// `np.random.RandomState(seed)` for an integer seed.
    pub fn new(seed: u32) -> Self {
        let mut mt = [0u32; N];
        mt[0] = seed;
        for i in 1..N {
            let prev = mt[i - 1];
            mt[i] = 1812433253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        RandomState {
            mt,
            pos: N,
            gauss: None,
        }
    }

    fn twist(&mut self) {
        for i in 0..N {
            let y = (self.mt[i] & 0x8000_0000) | (self.mt[(i + 1) % N] & 0x7fff_ffff);
            let mut v = self.mt[(i + M) % N] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.mt[i] = v;
        }
        self.pos = 0;
    }

    /// The next raw 32-bit output (`genrand_int32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= N {
            self.twist();
        }
        let mut y = self.mt[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `random_sample()`: a 53-bit uniform double in [0, 1).
    pub fn random_sample(&mut self) -> f64 {
        let a = (self.next_u32() >> 5) as f64;
        let b = (self.next_u32() >> 6) as f64;
        (a * 67108864.0 + b) / 9007199254740992.0
    }

    /// `randn()`: numpy's legacy Gaussian (polar method; every second value is the cached one).
    pub fn randn(&mut self) -> f64 {
        if let Some(g) = self.gauss.take() {
            return g;
        }
        loop {
            let x1 = 2.0 * self.random_sample() - 1.0;
            let x2 = 2.0 * self.random_sample() - 1.0;
            let r2 = x1 * x1 + x2 * x2;
            if r2 < 1.0 && r2 != 0.0 {
                let f = (-2.0 * r2.ln() / r2).sqrt();
                self.gauss = Some(f * x1);
                return f * x2;
            }
        }
    }

    /// `randn(n)` flattened in row-major order.
    pub fn randn_vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.randn()).collect()
    }

    /// `uniform(lo, hi, n)`.
    pub fn uniform_vec(&mut self, lo: f64, hi: f64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| lo + (hi - lo) * self.random_sample())
            .collect()
    }
}

/// Reads `intervention_args.seed` (a numpy seed: 0 ..= 2^32-1), 0 when absent.
pub fn seed_arg(args: &Args) -> Result<u32> {
    match args.u64("seed")? {
        None => Ok(0),
        Some(s) => u32::try_from(s)
            .map_err(|_| invalid!("intervention_args.seed must be between 0 and 2^32-1, got {s}")),
    }
}

/// pyvene's `NoiseIntervention`: adds `noise * noise_level` to the first `interchange_dim`
/// features, where `noise = RandomState(1).randn(1, 4, embed_dim)` is fixed at construction.
/// Subspaces are ignored; no source is used.
pub struct NoiseIntervention {
    buffers: Buffers,
    /// (1, 4, embed_dim), f64 as in pyvene.
    noise: Tensor,
    /// Held as pyvene holds it: a float32 scalar.
    level: f32,
}

impl NoiseIntervention {
    pub fn new(spec: &Spec) -> Result<Self> {
        let args = Args::new(spec, "NoiseIntervention", &["noise_level", "noise_leve"])?;
        let level = match (args.f64("noise_level")?, args.f64("noise_leve")?) {
            (Some(_), Some(_)) => {
                return Err(invalid!(
                    "give noise_level or pyvene's misspelt noise_leve, not both"
                ))
            }
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => DEFAULT_NOISE_LEVEL,
        };
        let e = spec.embed_dim;
        Ok(NoiseIntervention {
            buffers: Buffers::prefix(spec)?,
            noise: Self::fixed_noise(e, spec.device)?,
            level: level as f32,
        })
    }

    /// pyvene's fixed noise buffer: `np.random.RandomState(1).randn(1, 4, embed_dim)` (f64).
    pub fn fixed_noise(embed_dim: usize, device: &Device) -> Result<Tensor> {
        let v = RandomState::new(1).randn_vec(NOISE_UNITS * embed_dim);
        Ok(Tensor::from_vec(v, (1, NOISE_UNITS, embed_dim), device)?)
    }
}

/// Whether `from` broadcasts onto `to` without changing `to` (torch's rule for in-place ops).
fn broadcasts_in_place(from: &[usize], to: &[usize]) -> bool {
    from.len() <= to.len()
        && from
            .iter()
            .rev()
            .zip(to.iter().rev())
            .all(|(&f, &t)| f == 1 || f == t)
}

impl Intervention for NoiseIntervention {
    fn type_name(&self) -> &str {
        "NoiseIntervention"
    }
    fn needs_source(&self) -> bool {
        false
    }
    fn apply(&self, base: &Tensor, _source: Option<&Tensor>, _dims: &Dims) -> Result<Tensor> {
        let d = base.dim(D::Minus1)?;
        let k = self.buffers.prefix_len()?.min(d);
        let mut slice = base.dims()[..base.rank() - 1].to_vec();
        slice.push(k);
        let noise_shape = self.noise.dims().to_vec();
        if !broadcasts_in_place(&noise_shape, &slice) {
            return Err(invalid!(
                "pyvene adds its fixed noise of shape {noise_shape:?} to base[..., :{k}] of shape {slice:?}, which does not broadcast (pyvene fails here too): \
                 the units need exactly {NOISE_UNITS} positions (dim -2), and interchange_dim must cover embed_dim = {} features of each unit (so max_number_of_units = 1)",
                noise_shape[2]
            ));
        }
        // torch computes `base += noise * level` in float64 (the noise is f64) and rounds back.
        let scaled = (&self.noise * self.level as f64)?;
        let b64 = base.to_dtype(DType::F64)?;
        let head = b64.narrow(D::Minus1, 0, k)?.broadcast_add(&scaled)?;
        let out = if k < d {
            Tensor::cat(&[&head, &b64.narrow(D::Minus1, k, d - k)?], D::Minus1)?
        } else {
            head
        };
        Ok(out.to_dtype(base.dtype())?)
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut s = self.buffers.state();
        s.push(("noise".into(), self.noise.clone()));
        if let Ok(t) = Tensor::new(self.level, self.noise.device()) {
            s.push(("noise_level".into(), t));
        }
        s
    }
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let mut r = StateIn::new("NoiseIntervention", state);
        let buffers = self.buffers.read(&mut r)?;
        let noise = r.opt_dtype("noise", self.noise.dims(), DType::F64, self.noise.device())?;
        let level = r.opt_scalar("noise_level")?;
        r.finish()?;
        self.buffers = buffers;
        if let Some(n) = noise {
            self.noise = n;
        }
        if let Some(l) = level {
            self.level = l as f32;
        }
        Ok(())
    }
}

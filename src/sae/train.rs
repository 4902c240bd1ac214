//! Training a standard (ReLU) SAE on a model's activations, with SAELens's standard objective:
//! mean squared reconstruction error plus `l1 * sum_i |f_i| * ||W_dec[i]||`, optimized by the
//! training module's Adam ([`crate::train::GroupedOptimizer`]). The result is an ordinary
//! [`Sae`] and saves as a SAELens folder ([`save_saelens`]).
//!
//! Activations are scaled so their mean norm is `sqrt(d_in)` while training (SAELens's
//! `expected_average_only_in`), and the scale is folded into the weights afterwards, so the
//! saved SAE reads raw activations.

use super::{Architecture, Hook, Normalization, Sae};
use crate::error::{Error, Result};
use crate::invalid;
use crate::model::{ForwardOptions, Input, LogitPositions, Model, Recorder};
use crate::train::{GroupedOptimizer, OptimizerKind, Param};
use candle_core::{DType, Device, Tensor, Var};
use std::collections::HashMap;
use std::path::Path;

/// How to train.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub d_sae: usize,
    pub l1: f64,
    pub lr: f64,
    pub batch_size: usize,
    pub steps: usize,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            d_sae: 2048,
            l1: 5.0,
            lr: 4e-4,
            batch_size: 1024,
            steps: 2000,
            seed: 0,
        }
    }
}

/// Quality of an SAE on held-out activations.
#[derive(Debug, Clone, PartialEq)]
pub struct Quality {
    /// `1 - sum ||x - recon||^2 / sum ||x - mean x||^2`.
    pub explained_variance: f64,
    /// Mean number of active features per token.
    pub l0: f64,
    /// Features that never fire on these activations.
    pub dead: usize,
    pub tokens: usize,
}

/// Activations at `hook` for every token of `texts` (each cut into chunks of at most `ctx`
/// tokens), leaving out the first position of each chunk (the attention sink, whose
/// activations are outliers). Returns (tokens, d).
pub fn collect_activations(
    model: &Model,
    hook: &Hook,
    texts: &[String],
    ctx: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Tensor> {
    let ids: Vec<u32> = texts
        .iter()
        .map(|t| model.encode(t))
        .collect::<Result<Vec<_>>>()?
        .concat();
    let chunks: Vec<&[u32]> = ids.chunks(ctx.max(2)).filter(|c| c.len() > 1).collect();
    let mut rows = Vec::new();
    let opts = ForwardOptions {
        logits: LogitPositions::None,
        stop_after_layer: Some(hook.site.layer),
        ..Default::default()
    };
    for (i, c) in chunks.iter().enumerate() {
        let mut rec = Recorder::new(vec![hook.site]);
        model.forward(&Input::from_tokens(c, model.device())?, &mut rec, &opts)?;
        let x = rec
            .get(hook.site)
            .ok_or_else(|| invalid!("the model never reached {}", hook.site))?;
        let x = x.squeeze(0)?.flatten_from(1)?;
        rows.push(x.narrow(0, 1, c.len() - 1)?.to_dtype(DType::F32)?);
        progress(i + 1, chunks.len());
    }
    if rows.is_empty() {
        return Err(invalid!("the texts give no tokens to train on"));
    }
    Ok(Tensor::cat(&rows, 0)?)
}

/// A small deterministic generator for the initialization and the batch order.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn uniform(&mut self) -> f32 {
        (self.next() as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }
}

/// Trains a standard SAE on `acts` (tokens, d); `hook` is where they came from.
/// `progress(step, loss, mse)` may stop training by returning false.
pub fn train_standard(
    acts: &Tensor,
    hook: Hook,
    opts: &TrainOptions,
    mut progress: impl FnMut(usize, f32, f32) -> bool,
) -> Result<Sae> {
    let (n, d) = acts.dims2()?;
    if n < opts.batch_size || opts.d_sae == 0 || opts.steps == 0 {
        return Err(invalid!(
            "training needs at least batch_size = {} activations (got {n}), d_sae > 0 and steps > 0",
            opts.batch_size
        ));
    }
    let dev = acts.device().clone();
    let k = opts.d_sae;
    // Scale so the mean norm is sqrt(d).
    let mean_norm = acts.sqr()?.sum(1)?.sqrt()?.mean_all()?.to_scalar::<f32>()? as f64;
    let scale = (d as f64).sqrt() / mean_norm.max(1e-12);
    let data = acts.affine(scale, 0.0)?;
    let mut rng = Lcg(opts.seed ^ 0x5AE5AE);
    // W_dec rows random with norm 0.1, W_enc its transpose, b_dec the data mean (SAELens's
    // standard initialization with b_dec at the mean).
    let raw: Vec<f32> = (0..k * d).map(|_| rng.uniform()).collect();
    let w = Tensor::from_vec(raw, (k, d), &dev)?;
    let w = w
        .broadcast_div(&w.sqr()?.sum_keepdim(1)?.sqrt()?)?
        .affine(0.1, 0.0)?;
    let w_dec = Var::from_tensor(&w)?;
    let w_enc = Var::from_tensor(&w.t()?.contiguous()?)?;
    let b_enc = Var::zeros(k, DType::F32, &dev)?;
    let b_dec = Var::from_tensor(&data.mean(0)?)?;
    let params = [
        ("W_enc", &w_enc),
        ("b_enc", &b_enc),
        ("W_dec", &w_dec),
        ("b_dec", &b_dec),
    ]
    .iter()
    .map(|(name, v)| Param {
        name: name.to_string(),
        var: (*v).clone(),
    })
    .collect::<Vec<_>>();
    let mut optim = GroupedOptimizer::new(&params, opts.lr, &[], OptimizerKind::Adam)?;
    for step in 0..opts.steps {
        let idx: Vec<u32> = (0..opts.batch_size)
            .map(|_| (rng.next() % n as u64) as u32)
            .collect();
        let x = data.index_select(&Tensor::new(idx, &dev)?, 0)?;
        let pre = x
            .broadcast_sub(b_dec.as_tensor())?
            .matmul(w_enc.as_tensor())?
            .broadcast_add(b_enc.as_tensor())?;
        let f = pre.relu()?;
        let recon = f
            .matmul(w_dec.as_tensor())?
            .broadcast_add(b_dec.as_tensor())?;
        let mse = (recon - &x)?.sqr()?.sum(1)?.mean_all()?;
        let dec_norm = w_dec.as_tensor().sqr()?.sum(1)?.sqrt()?;
        let sparsity = f.broadcast_mul(&dec_norm)?.sum(1)?.mean_all()?;
        let loss = (&mse + sparsity.affine(opts.l1, 0.0)?)?;
        // Linear warm-up over the first 5% of steps, then a constant rate.
        let warm = ((step + 1) as f64 / (opts.steps as f64 * 0.05).max(1.0)).min(1.0);
        optim.set_factor(warm);
        optim.step(&loss.backward()?)?;
        if !progress(step + 1, loss.to_scalar()?, mse.to_scalar()?) {
            break;
        }
    }
    // Fold the scale: the SAE reads raw activations.
    let w_enc = w_enc.as_tensor().affine(scale, 0.0)?;
    let b_dec = b_dec.as_tensor().affine(1.0 / scale, 0.0)?;
    let w_dec = w_dec.as_tensor().affine(1.0 / scale, 0.0)?;
    let sae = Sae {
        architecture: Architecture::Standard,
        d_in: d,
        d_sae: k,
        d_out: d,
        w_enc: w_enc.detach(),
        b_enc: b_enc.as_tensor().detach(),
        w_dec: w_dec.detach(),
        b_dec: b_dec.detach(),
        threshold: None,
        gated: None,
        skip: None,
        apply_b_dec_to_input: true,
        normalization: Normalization::None,
        hook_in: hook.clone(),
        hook_out: hook,
        format: "vene-trained",
        source: Default::default(),
    };
    sae.check_shapes()?;
    Ok(sae)
}

/// Reconstruction quality of `sae` on `acts` (tokens, d_in).
pub fn quality(sae: &Sae, acts: &Tensor) -> Result<Quality> {
    let enc = sae.encode_rows(acts)?;
    let recon = sae.decode_rows(&enc.acts, &enc.norm)?;
    let err = (recon - acts)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    let centred = acts.broadcast_sub(&acts.mean_keepdim(0)?)?;
    let total = centred.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    let on = enc.acts.gt(0.0)?.to_dtype(DType::F32)?;
    let l0 = on.sum(1)?.mean_all()?.to_scalar::<f32>()? as f64;
    let fired: Vec<f32> = on.sum(0)?.to_vec1()?;
    Ok(Quality {
        explained_variance: 1.0 - err / total.max(1e-30),
        l0,
        dead: fired.iter().filter(|&&c| c == 0.0).count(),
        tokens: acts.dim(0)?,
    })
}

/// Writes `sae` (a standard SAE) as SAELens saves one: `cfg.json` and
/// `sae_weights.safetensors`, so SAELens's `SAE.load_from_disk` and vene both read it.
pub fn save_saelens(sae: &Sae, dir: &Path, model_name: &str) -> Result<()> {
    if sae.architecture != Architecture::Standard || sae.is_transcoder() {
        return Err(invalid!("only standard SAEs are written in SAELens form"));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    // The flat form (hook_name and model_name at the top level, no sae_lens_version), which
    // SAELens 6 reads through its pre-6.0 path, since vene is not SAELens 6.
    let cfg = serde_json::json!({
        "architecture": "standard",
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        "normalize_activations": sae.normalization.name(),
        "hook_name": sae.hook_in.name,
        "model_name": model_name,
    });
    let cpath = dir.join(super::saelens::CFG_FILE);
    std::fs::write(&cpath, serde_json::to_string_pretty(&cfg)? + "\n")
        .map_err(|e| Error::file(&cpath, e))?;
    let cpu = |t: &Tensor| -> Result<Tensor> { Ok(t.to_device(&Device::Cpu)?.contiguous()?) };
    let tensors: HashMap<String, Tensor> = [
        ("W_enc", cpu(&sae.w_enc)?),
        ("b_enc", cpu(&sae.b_enc)?),
        ("W_dec", cpu(&sae.w_dec)?),
        ("b_dec", cpu(&sae.b_dec)?),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let wpath = dir.join(super::saelens::WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors, &wpath).map_err(|e| Error::file(&wpath, e))?;
    Ok(())
}

//! Steering vectors (activation addition, "control vectors"): a direction per layer computed
//! from contrastive prompt pairs, added to the residual stream with a coefficient.
//!
//! - **Training**: each prompt of each (positive, negative) pair runs once; the block output at
//!   its last token is read at every layer asked for. Per layer, the direction is the mean of
//!   the differences `positive - negative` ([`Method::MeanDiff`], as CAA), or their first
//!   principal component ([`Method::Pca`]: uncentered, unit length, like llama.cpp's
//!   cvector-generator and repeng's `pca_center`; [`Method::PcaCentered`]: the differences minus
//!   their mean first, repeng's `pca_diff`). A principal component's sign is chosen as repeng
//!   does: so that most pairs project higher on the positive prompt.
//! - **Applying**: `block_output[layer] += coeff * direction[layer]` at every position, with
//!   optional norm keeping (repeng's `normalize`: each position is rescaled to its norm before
//!   the addition). [`SteeringVector::hooks`] gives hooks for `Model::forward` and generation;
//!   [`SteeringVector::intervenable_config`] gives the same edit as pyvene-style
//!   `AdditionIntervention`s for `IntervenableModel`.
//! - **Files**: llama.cpp's control-vector GGUF (`general.architecture = controlvector`,
//!   `controlvector.model_hint`, `controlvector.layer_count`, one f32 tensor `direction.{k}` per
//!   layer). llama.cpp adds `direction.k` to the output of block k (0-based) at every position,
//!   which is exactly `block_output[k]` here, so files move both ways unchanged. llama.cpp
//!   rejects `direction.0`, so layer 0 is never written.

use crate::analysis::Progress;
use crate::config::{IntervenableConfig, RepresentationConfig};
use crate::error::{Error, Result};
use crate::invalid;
use crate::model::{ForwardOptions, Hooks, Input, LogitPositions, Model, Recorder};
use crate::site::{Component, Site};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, IndexOp, Tensor, D};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// How a direction is computed from the per-pair activation differences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Mean of `positive - negative` (keeps the activations' scale).
    MeanDiff,
    /// First principal component of the differences, uncentered; unit length.
    Pca,
    /// First principal component of the differences minus their mean; unit length.
    PcaCentered,
}

impl Method {
    pub fn parse(s: &str) -> Result<Method> {
        match s {
            "mean-diff" | "mean_diff" | "mean" => Ok(Method::MeanDiff),
            "pca" => Ok(Method::Pca),
            "pca-centered" | "pca_centered" => Ok(Method::PcaCentered),
            other => Err(invalid!(
                "unknown steering method '{other}'; use mean-diff, pca or pca-centered"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::MeanDiff => "mean-diff",
            Method::Pca => "pca",
            Method::PcaCentered => "pca-centered",
        }
    }
}

/// One contrastive pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContrastPair {
    pub positive: String,
    pub negative: String,
}

/// Reads pairs from a JSON file: a list of `{"positive": .., "negative": ..}` objects or of
/// `[positive, negative]` arrays; or JSON Lines with one such item per line.
pub fn read_pairs(path: &Path) -> Result<Vec<ContrastPair>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
    let items: Vec<serde_json::Value> = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Array(a)) => a,
        Ok(v @ serde_json::Value::Object(_)) => vec![v],
        Ok(_) => {
            return Err(Error::file(
                path,
                "expected a JSON list of {\"positive\": .., \"negative\": ..} pairs",
            ))
        }
        Err(_) => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| Error::file(path, format!("line {}: invalid JSON: {e}", i + 1)))
            })
            .collect::<Result<_>>()?,
    };
    let mut pairs = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let pair = match it {
            serde_json::Value::Array(a) if a.len() == 2 => match (a[0].as_str(), a[1].as_str()) {
                (Some(p), Some(n)) => Some(ContrastPair {
                    positive: p.into(),
                    negative: n.into(),
                }),
                _ => None,
            },
            serde_json::Value::Object(o) => {
                match (
                    o.get("positive").and_then(|v| v.as_str()),
                    o.get("negative").and_then(|v| v.as_str()),
                ) {
                    (Some(p), Some(n)) => Some(ContrastPair {
                        positive: p.into(),
                        negative: n.into(),
                    }),
                    _ => None,
                }
            }
            _ => None,
        };
        pairs.push(pair.ok_or_else(|| {
            Error::file(
                path,
                format!("pair {i}: expected {{\"positive\": \"...\", \"negative\": \"...\"}} or [\"positive\", \"negative\"]"),
            )
        })?);
    }
    if pairs.is_empty() {
        return Err(Error::file(path, "the file holds no pairs"));
    }
    Ok(pairs)
}

/// Block outputs at the last token of each text, for each layer: `[layer][text][hidden]`.
pub fn last_token_activations(
    model: &Model,
    texts: &[String],
    layers: &[usize],
    batch_size: usize,
    progress: Progress<'_>,
) -> Result<Vec<Vec<Vec<f32>>>> {
    if layers.is_empty() {
        return Err(invalid!("no layers to read"));
    }
    let sites: Vec<Site> = layers
        .iter()
        .map(|&l| Site::new(l, Component::BlockOutput))
        .collect();
    for &s in &sites {
        model.check_site(s)?;
    }
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| {
            let ids = model.encode(t)?;
            if ids.is_empty() {
                return Err(invalid!("the prompt '{t}' encodes to no tokens"));
            }
            Ok(ids)
        })
        .collect::<Result<_>>()?;
    let sp = model.special_tokens();
    let pad = sp.pad.or(sp.eos).unwrap_or(0);
    let mut out = vec![Vec::with_capacity(texts.len()); layers.len()];
    let opts = ForwardOptions {
        logits: LogitPositions::None,
        stop_after_layer: layers.iter().max().copied(),
        differentiable: false,
    };
    progress(0, texts.len());
    let mut done = 0;
    for chunk in ids.chunks(batch_size.max(1)) {
        let input = Input::padded(chunk, pad, false, model.device())?;
        let last = input.last_positions()?;
        let mut rec = Recorder::new(sites.clone());
        model.forward(&input, &mut rec, &opts)?;
        for (li, &site) in sites.iter().enumerate() {
            let t = rec
                .get(site)
                .ok_or_else(|| invalid!("the forward never reached {site}"))?;
            for (row, &p) in last.iter().enumerate() {
                out[li].push(t.i((row, p))?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
            }
        }
        done += chunk.len();
        progress(done, texts.len());
    }
    Ok(out)
}

/// A direction per layer, as llama.cpp's control vectors hold them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SteeringVector {
    /// The model type it was made for (`llama`, `gpt2`, ...); llama.cpp does not check it.
    pub model_hint: String,
    pub hidden_size: usize,
    /// Layer (0-based block index) -> direction of `hidden_size` values.
    pub directions: BTreeMap<usize, Vec<f32>>,
}

impl SteeringVector {
    /// Computes a direction at each of `layers` (all layers when `None`) from `pairs`.
    pub fn train(
        model: &Model,
        pairs: &[ContrastPair],
        layers: Option<&[usize]>,
        method: Method,
        progress: Progress<'_>,
    ) -> Result<SteeringVector> {
        if pairs.is_empty() {
            return Err(invalid!("steering needs at least one contrastive pair"));
        }
        let n_layers = model.info().n_layers;
        let layers: Vec<usize> = match layers {
            Some(l) => l.to_vec(),
            None => (0..n_layers).collect(),
        };
        let texts: Vec<String> = pairs
            .iter()
            .flat_map(|p| [p.positive.clone(), p.negative.clone()])
            .collect();
        let acts = last_token_activations(model, &texts, &layers, 16, progress)?;
        let mut directions = BTreeMap::new();
        for (li, &l) in layers.iter().enumerate() {
            let diffs: Vec<Vec<f32>> = acts[li]
                .chunks(2)
                .map(|pn| pn[0].iter().zip(&pn[1]).map(|(a, b)| a - b).collect())
                .collect();
            let dir = direction(&diffs, method).map_err(|e| invalid!("layer {l}: {e}"))?;
            directions.insert(l, dir);
        }
        Ok(SteeringVector {
            model_hint: model.info().model_type.clone(),
            hidden_size: model.info().hidden_size,
            directions,
        })
    }

    pub fn direction(&self, layer: usize) -> Option<&[f32]> {
        self.directions.get(&layer).map(Vec::as_slice)
    }

    /// Every direction times `k`.
    pub fn scaled(&self, k: f32) -> SteeringVector {
        let mut v = self.clone();
        for d in v.directions.values_mut() {
            d.iter_mut().for_each(|x| *x *= k);
        }
        v
    }

    /// Only the given layers.
    pub fn select(&self, layers: &[usize]) -> Result<SteeringVector> {
        let mut v = self.clone();
        v.directions.retain(|l, _| layers.contains(l));
        if let Some(l) = layers.iter().find(|l| !self.directions.contains_key(l)) {
            let have: Vec<String> = self.directions.keys().map(|k| k.to_string()).collect();
            return Err(invalid!(
                "the steering vector has no direction for layer {l}; it has layers {}",
                have.join(", ")
            ));
        }
        Ok(v)
    }

    /// Checks the vector fits `model`: the hidden size and every layer.
    pub fn check_model(&self, model: &Model) -> Result<()> {
        let info = model.info();
        if self.hidden_size != info.hidden_size {
            return Err(invalid!(
                "the steering vector has {} values per layer, but this model's hidden size is {} (it was made for a '{}' model); build or load a vector for this model",
                self.hidden_size,
                info.hidden_size,
                self.model_hint
            ));
        }
        if let Some(&l) = self.directions.keys().find(|&&l| l >= info.n_layers) {
            return Err(invalid!(
                "the steering vector has a direction for layer {l}, but this model has {} layers (0..={})",
                info.n_layers,
                info.n_layers - 1
            ));
        }
        Ok(())
    }

    /// Hooks that add `coeff * direction` to `block_output` of every layer the vector has,
    /// at every position; with `keep_norm` each position keeps its norm from before.
    pub fn hooks(&self, coeff: f32, keep_norm: bool, device: &Device) -> Result<SteerHooks> {
        let mut add = HashMap::new();
        for (&l, d) in &self.directions {
            let v: Vec<f32> = d.iter().map(|x| x * coeff).collect();
            add.insert(l, Tensor::from_vec(v, d.len(), device)?);
        }
        Ok(SteerHooks { add, keep_norm })
    }

    /// The same edit as [`SteeringVector::hooks`] without norm keeping, as an
    /// `IntervenableConfig` of `AdditionIntervention`s on `block_output` (one per layer, each
    /// with a constant source named `steer.{layer}` in the returned tensors). Use it with
    /// `IntervenableModel::with_tensors` and a request without locations (every position).
    pub fn intervenable_config(
        &self,
        coeff: f32,
        device: &Device,
    ) -> Result<(IntervenableConfig, HashMap<String, Tensor>)> {
        let mut reps = Vec::new();
        let mut tensors = HashMap::new();
        for (&l, d) in &self.directions {
            let name = format!("steer.{l}");
            let v: Vec<f32> = d.iter().map(|x| x * coeff).collect();
            tensors.insert(name.clone(), Tensor::from_vec(v, d.len(), device)?);
            reps.push(RepresentationConfig {
                layer: l,
                component: "block_output".into(),
                unit: "pos".into(),
                intervention_type: Some("AdditionIntervention".into()),
                source_representation: Some(serde_json::Value::String(name)),
                ..Default::default()
            });
        }
        Ok((IntervenableConfig::new(reps), tensors))
    }

    /// Writes llama.cpp's control-vector GGUF. Returns the layers written (layer 0, which
    /// llama.cpp rejects, is left out).
    pub fn write_gguf(&self, path: &Path) -> Result<Vec<usize>> {
        let written: Vec<usize> = self.directions.keys().copied().filter(|&l| l > 0).collect();
        if written.is_empty() {
            return Err(invalid!(
                "the steering vector has no direction for a layer above 0; llama.cpp never steers layer 0, so there is nothing to write"
            ));
        }
        let arch = Value::String("controlvector".into());
        let hint = Value::String(self.model_hint.clone());
        let count = Value::U32(written.len() as u32);
        let meta: Vec<(&str, &Value)> = vec![
            ("general.architecture", &arch),
            ("controlvector.model_hint", &hint),
            ("controlvector.layer_count", &count),
        ];
        let mut qts = Vec::with_capacity(written.len());
        for &l in &written {
            let d = &self.directions[&l];
            let t = Tensor::from_slice(d, d.len(), &Device::Cpu)?;
            qts.push((
                format!("direction.{l}"),
                QTensor::quantize(&t, GgmlDType::F32)?,
            ));
        }
        let tensors: Vec<(&str, &QTensor)> = qts.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut f = std::fs::File::create(path).map_err(|e| Error::file(path, e))?;
        gguf_file::write(&mut f, &meta, &tensors).map_err(|e| Error::file(path, e))?;
        Ok(written)
    }

    /// Reads a control-vector GGUF (llama.cpp's or repeng's). Several tensors for one layer are
    /// summed, as llama.cpp does.
    pub fn read_gguf(path: &Path) -> Result<SteeringVector> {
        let mut f = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
        let content = gguf_file::Content::read(&mut f)
            .map_err(|e| Error::file(path, format!("not a readable GGUF control vector: {e}")))?;
        match content.metadata.get("general.architecture") {
            Some(Value::String(a)) if a == "controlvector" => {}
            Some(Value::String(a)) => {
                return Err(Error::file(
                    path,
                    format!("general.architecture is '{a}', not 'controlvector': this is a model file, not a control vector"),
                ))
            }
            _ => {}
        }
        let model_hint = match content.metadata.get("controlvector.model_hint") {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        let mut directions: BTreeMap<usize, Vec<f32>> = BTreeMap::new();
        let mut hidden = None;
        let mut names: Vec<&String> = content.tensor_infos.keys().collect();
        names.sort();
        for name in names {
            let layer = name
                .strip_prefix("direction.")
                .and_then(|k| k.parse::<usize>().ok())
                .ok_or_else(|| {
                    Error::file(
                        path,
                        format!("tensor '{name}' is not named direction.<layer>"),
                    )
                })?;
            let q = content
                .tensor(&mut f, name, &Device::Cpu)
                .map_err(|e| Error::file(path, format!("{name}: {e}")))?;
            if q.shape().rank() != 1 {
                return Err(Error::file(
                    path,
                    format!(
                        "{name} has shape {:?}; directions are 1-D",
                        q.shape().dims()
                    ),
                ));
            }
            let v: Vec<f32> = q
                .dequantize(&Device::Cpu)
                .map_err(|e| Error::file(path, format!("{name}: {e}")))?
                .to_vec1()?;
            match hidden {
                None => hidden = Some(v.len()),
                Some(h) if h != v.len() => {
                    return Err(Error::file(
                        path,
                        format!("{name} has {} values, other directions {h}", v.len()),
                    ))
                }
                _ => {}
            }
            let e = directions
                .entry(layer)
                .or_insert_with(|| vec![0.0; v.len()]);
            e.iter_mut().zip(&v).for_each(|(a, b)| *a += b);
        }
        let hidden_size =
            hidden.ok_or_else(|| Error::file(path, "the file holds no direction tensors"))?;
        Ok(SteeringVector {
            model_hint,
            hidden_size,
            directions,
        })
    }
}

/// Computes one direction from per-pair differences.
pub fn direction(diffs: &[Vec<f32>], method: Method) -> Result<Vec<f32>> {
    let n = diffs.len();
    if n == 0 {
        return Err(invalid!("no pairs"));
    }
    let d = diffs[0].len();
    let mean: Vec<f64> = (0..d)
        .map(|j| diffs.iter().map(|r| r[j] as f64).sum::<f64>() / n as f64)
        .collect();
    if method == Method::MeanDiff {
        return Ok(mean.iter().map(|&x| x as f32).collect());
    }
    let rows: Vec<Vec<f64>> = diffs
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(j, &x)| {
                    if method == Method::PcaCentered {
                        x as f64 - mean[j]
                    } else {
                        x as f64
                    }
                })
                .collect()
        })
        .collect();
    if method == Method::PcaCentered && n < 2 {
        return Err(invalid!(
            "pca-centered needs at least 2 pairs (one centered difference is zero)"
        ));
    }
    // The top eigenvector of the n x n Gram matrix gives the top right singular vector.
    let mut gram = vec![0f64; n * n];
    for a in 0..n {
        for b in a..n {
            let g: f64 = rows[a].iter().zip(&rows[b]).map(|(x, y)| x * y).sum();
            gram[a * n + b] = g;
            gram[b * n + a] = g;
        }
    }
    let (vals, vecs) = jacobi_eigen(&mut gram, n);
    let top = (0..n)
        .max_by(|&a, &b| vals[a].total_cmp(&vals[b]))
        .unwrap_or(0);
    if vals[top] <= 1e-12 {
        return Err(invalid!(
            "the activation differences are all zero (are the positive and negative prompts identical?)"
        ));
    }
    let mut v = vec![0f64; d];
    for (i, r) in rows.iter().enumerate() {
        let u = vecs[i * n + top];
        v.iter_mut().zip(r).for_each(|(a, x)| *a += u * x);
    }
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    // repeng's sign rule: most pairs should project higher on the positive prompt.
    let proj: Vec<f64> = diffs
        .iter()
        .map(|r| r.iter().zip(&v).map(|(&x, y)| x as f64 * y).sum())
        .collect();
    let up = proj.iter().filter(|&&p| p > 0.0).count();
    let down = proj.iter().filter(|&&p| p < 0.0).count();
    let along_mean: f64 = mean.iter().zip(&v).map(|(a, b)| a * b).sum();
    if down > up || (down == up && along_mean < 0.0) {
        v.iter_mut().for_each(|x| *x = -*x);
    }
    Ok(v.iter().map(|&x| x as f32).collect())
}

/// Eigen-decomposition of a symmetric `n x n` matrix (row-major, destroyed) by cyclic Jacobi
/// rotations. Returns the eigenvalues and the eigenvectors as columns of a row-major matrix.
fn jacobi_eigen(a: &mut [f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        let scale: f64 = (0..n).map(|i| a[i * n + i] * a[i * n + i]).sum::<f64>() + 1e-300;
        if off <= 1e-24 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a[k * n + p];
                    let akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p * n + k];
                    let aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

/// Adds a steering direction to `block_output` at every position of every forward it sees
/// (prompt and each generated token).
pub struct SteerHooks {
    add: HashMap<usize, Tensor>,
    keep_norm: bool,
}

impl Hooks for SteerHooks {
    fn wants(&self, site: Site) -> bool {
        site.component == Component::BlockOutput && self.add.contains_key(&site.layer)
    }

    fn visit(&mut self, site: Site, value: &Tensor) -> Result<Option<Tensor>> {
        let Some(dir) = self.add.get(&site.layer) else {
            return Ok(None);
        };
        let dir = dir.to_dtype(value.dtype())?;
        let out = value.broadcast_add(&dir)?;
        if !self.keep_norm {
            return Ok(Some(out));
        }
        let before = value.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
        let after = out.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
        let ratio = (before / (after + 1e-12)?)?;
        Ok(Some(out.broadcast_mul(&ratio)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_finds_top_eigenvector() {
        // [[2, 1], [1, 2]] has eigenvalues 3 (along [1, 1]) and 1.
        let mut a = vec![2.0, 1.0, 1.0, 2.0];
        let (vals, vecs) = jacobi_eigen(&mut a, 2);
        let top = if vals[0] > vals[1] { 0 } else { 1 };
        assert!((vals[top] - 3.0).abs() < 1e-12);
        assert!((vecs[top].abs() - vecs[2 + top].abs()).abs() < 1e-12);
    }

    #[test]
    fn pca_of_parallel_differences_is_their_direction() {
        let diffs = vec![
            vec![2.0, 0.0, 0.0],
            vec![1.0, 0.0, 0.0],
            vec![3.0, 0.1, 0.0],
        ];
        let d = direction(&diffs, Method::Pca).unwrap();
        assert!(d[0] > 0.99, "{d:?}");
        let m = direction(&diffs, Method::MeanDiff).unwrap();
        assert!((m[0] - 2.0).abs() < 1e-6);
        // Flipping every pair flips the principal direction's sign.
        let neg: Vec<Vec<f32>> = diffs
            .iter()
            .map(|r| r.iter().map(|x| -x).collect())
            .collect();
        assert!(direction(&neg, Method::Pca).unwrap()[0] < -0.99);
        assert!(direction(&[vec![1.0, 0.0]], Method::PcaCentered).is_err());
    }
}

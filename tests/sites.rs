//! Hook sites: what `Model::sites()` reports, the shapes hooks see, and that replacements are
//! checked and actually used downstream. Runs on the fixtures of tests/oracle/make_fixtures.py.

use candle_core::{DType, Tensor};
use vene::model::Recorder;
use vene::{Component, ForwardOptions, Hooks, Input, Model, NoHooks, Site};

mod hf_fixtures;
use hf_fixtures::*;

const MODELS: [&str; 6] = [
    "gpt2",
    "gpt_neox",
    "gpt_neox_sequential",
    "llama",
    "qwen2",
    "mistral",
];

fn load(name: &str) -> Model {
    Model::load(fixture(name)).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// The left-padded batch of a fixture and its mask.
fn batch(name: &str) -> (Input, Vec<Vec<u32>>) {
    let text = std::fs::read_to_string(fixture(name).join("inputs.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = rows(&v["left"]["ids"]);
    let mask = rows(&v["left"]["attention_mask"]);
    (
        Input::from_ids(tensor2(&ids)).with_mask(tensor2(&mask)),
        mask,
    )
}

/// Max |a - b| over the real (unmasked) positions of (batch, seq, vocab) logits.
fn logits_diff(a: &Tensor, b: &Tensor, mask: &[Vec<u32>]) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let a: Vec<Vec<Vec<f32>>> = a.to_vec3().unwrap();
    let b: Vec<Vec<Vec<f32>>> = b.to_vec3().unwrap();
    let mut worst = 0f32;
    for (r, m) in mask.iter().enumerate() {
        for (p, &keep) in m.iter().enumerate() {
            if keep != 0 {
                for (x, y) in a[r][p].iter().zip(&b[r][p]) {
                    worst = worst.max((x - y).abs());
                }
            }
        }
    }
    worst
}

struct Shape {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    intermediate: usize,
    max_positions: usize,
}

/// The shapes make_fixtures.py builds.
fn expected_shape(name: &str) -> Shape {
    let gqa = matches!(name, "llama" | "qwen2" | "mistral");
    Shape {
        hidden: 32,
        heads: 4,
        kv_heads: if gqa { 2 } else { 4 },
        head_dim: 8,
        intermediate: 48,
        max_positions: 32,
    }
}

#[test]
fn sites_report_the_16_components_with_their_dims() {
    use Component::*;
    for name in MODELS {
        let model = load(name);
        let e = expected_shape(name);
        let sites = model.sites();
        let mut names: Vec<Component> = sites.iter().map(|s| s.component).collect();
        names.sort();
        let mut all = Component::ALL.to_vec();
        all.sort();
        assert_eq!(names, all, "{name}: the 16 pyvene components, once each");
        for s in &sites {
            let (dim, heads) = match s.component {
                BlockInput | BlockOutput | MlpInput | MlpOutput | AttentionInput
                | AttentionOutput => (e.hidden, None),
                MlpActivation => (e.intermediate, None),
                AttentionValueOutput | QueryOutput => (e.heads * e.head_dim, None),
                KeyOutput | ValueOutput => (e.kv_heads * e.head_dim, None),
                HeadAttentionValueOutput | HeadQueryOutput => (e.head_dim, Some(e.heads)),
                HeadKeyOutput | HeadValueOutput => (e.head_dim, Some(e.kv_heads)),
                AttentionWeight => (e.max_positions, Some(e.heads)),
                gru => panic!("{name}: {gru} is not a transformer site"),
            };
            assert_eq!(s.dim, dim, "{name} {}: dim", s.component);
            assert_eq!(s.heads, heads, "{name} {}: heads", s.component);
            assert_eq!(model.site_info(s.component).unwrap(), *s);
            for l in 0..model.info().n_layers {
                assert_eq!(model.check_site(Site::new(l, s.component)).unwrap(), *s);
            }
        }
        let info = model.info();
        assert_eq!(info.n_heads, e.heads, "{name}");
        assert_eq!(info.n_kv_heads, e.kv_heads, "{name}");
        assert_eq!(info.head_dim, e.head_dim, "{name}");
        assert_eq!(info.hidden_size, e.hidden, "{name}");
    }
}

#[test]
fn hooks_see_the_shapes_sites_report() {
    for name in MODELS {
        let model = load(name);
        let (input, mask) = batch(name);
        let (b, s) = (mask.len(), mask[0].len());
        let sites: Vec<Site> = Component::ALL.iter().map(|&c| Site::new(1, c)).collect();
        let mut rec = Recorder::new(sites.clone());
        model
            .forward(&input, &mut rec, &ForwardOptions::default())
            .unwrap();
        for info in model.sites() {
            let t = rec.get(Site::new(1, info.component)).unwrap();
            let want: Vec<usize> = match (info.component, info.heads) {
                (Component::AttentionWeight, Some(h)) => vec![b, h, s, s],
                (_, Some(h)) => vec![b, h, s, info.dim],
                (_, None) => vec![b, s, info.dim],
            };
            assert_eq!(t.dims(), want.as_slice(), "{name} {}", info.component);
            assert_eq!(t.dtype(), DType::F32);
        }
        // Execution order: block_input first and block_output last within a layer.
        let order: Vec<Component> = rec.values.iter().map(|(s, _)| s.component).collect();
        assert_eq!(order.first(), Some(&Component::BlockInput), "{name}");
        assert_eq!(order.last(), Some(&Component::BlockOutput), "{name}");
    }
}

/// Replaces the tensor at one site with `f(value)`.
struct Replace<F: FnMut(&Tensor) -> Tensor> {
    site: Site,
    f: F,
    calls: usize,
}

impl<F: FnMut(&Tensor) -> Tensor> Hooks for Replace<F> {
    fn wants(&self, site: Site) -> bool {
        site == self.site
    }
    fn visit(&mut self, _site: Site, value: &Tensor) -> vene::Result<Option<Tensor>> {
        self.calls += 1;
        Ok(Some((self.f)(value)))
    }
}

fn replace<F: FnMut(&Tensor) -> Tensor>(site: Site, f: F) -> Replace<F> {
    Replace { site, f, calls: 0 }
}

/// A fixed perturbation that varies along every axis (so no norm can cancel it).
fn wiggle(like: &Tensor) -> Tensor {
    let n = like.elem_count();
    let v: Vec<f32> = (0..n).map(|i| 0.3 * ((i as f32) * 0.7).sin()).collect();
    Tensor::from_vec(v, like.dims(), like.device()).unwrap()
}

#[test]
fn a_replacement_of_the_wrong_shape_is_an_error() {
    for name in MODELS {
        let model = load(name);
        let (input, _) = batch(name);
        for &c in Component::ALL.iter() {
            let site = Site::new(0, c);
            let mut hook = replace(site, |v: &Tensor| {
                let mut dims = v.dims().to_vec();
                *dims.last_mut().unwrap() += 1;
                Tensor::zeros(dims, DType::F32, v.device()).unwrap()
            });
            let err = model
                .forward(&input, &mut hook, &ForwardOptions::default())
                .err()
                .unwrap_or_else(|| panic!("{name} {site}: a wrong shape must be an error"));
            let msg = err.to_string();
            assert!(
                msg.contains(c.name()),
                "{name}: message names the site: {msg}"
            );
            assert!(msg.contains("shape"), "{name}: message says shape: {msg}");
        }
    }
}

#[test]
fn a_replacement_of_the_wrong_dtype_is_an_error() {
    let model = load("llama");
    let (input, _) = batch("llama");
    for &c in Component::ALL.iter() {
        let site = Site::new(1, c);
        let mut hook = replace(site, |v: &Tensor| v.to_dtype(DType::F64).unwrap());
        let err = model
            .forward(&input, &mut hook, &ForwardOptions::default())
            .err()
            .unwrap_or_else(|| panic!("{site}: a wrong dtype must be an error"));
        let msg = err.to_string();
        assert!(msg.contains(c.name()) && msg.contains("dtype"), "{msg}");
    }
}

#[test]
fn every_replacement_changes_the_logits_and_identity_changes_nothing() {
    for name in MODELS {
        let model = load(name);
        let (input, mask) = batch(name);
        let base = model.logits(&input).unwrap();
        for l in 0..model.info().n_layers {
            for &c in Component::ALL.iter() {
                let site = Site::new(l, c);

                let mut same = replace(site, |v: &Tensor| v.clone());
                let out = model
                    .forward(&input, &mut same, &ForwardOptions::default())
                    .unwrap();
                assert_eq!(same.calls, 1, "{name} {site}: visited once");
                let d = logits_diff(&out.logits.unwrap(), &base, &mask);
                assert_eq!(d, 0.0, "{name} {site}: identity replacement changed logits");

                let mut moved = replace(site, |v: &Tensor| (v + wiggle(v)).unwrap());
                let out = model
                    .forward(&input, &mut moved, &ForwardOptions::default())
                    .unwrap();
                let d = logits_diff(&out.logits.unwrap(), &base, &mask);
                assert!(d > 1e-3, "{name} {site}: replacement had no effect ({d})");
            }
        }
    }
}

/// (batch, seq, heads * d) -> (batch, heads, seq, d), pyvene's split_head_and_permute.
fn split_heads(x: &Tensor, heads: usize) -> Tensor {
    let (b, s, hd) = x.dims3().unwrap();
    x.reshape((b, s, heads, hd / heads))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
}

#[test]
fn merged_and_per_head_sites_share_one_layout() {
    use Component::*;
    // Adding delta at the merged site equals adding split_heads(delta) at the head site.
    let pairs = [
        (QueryOutput, HeadQueryOutput),
        (KeyOutput, HeadKeyOutput),
        (ValueOutput, HeadValueOutput),
        (AttentionValueOutput, HeadAttentionValueOutput),
    ];
    for name in MODELS {
        let model = load(name);
        let (input, mask) = batch(name);
        for (merged, head) in pairs {
            let heads = model.site_info(head).unwrap().heads.unwrap();
            let mut a = replace(Site::new(0, merged), |v: &Tensor| (v + wiggle(v)).unwrap());
            let la = model
                .forward(&input, &mut a, &ForwardOptions::default())
                .unwrap()
                .logits
                .unwrap();
            let mut b = replace(Site::new(0, head), |v: &Tensor| {
                let (bs, _, s, d) = v.dims4().unwrap();
                let delta =
                    wiggle(&Tensor::zeros((bs, s, heads * d), DType::F32, v.device()).unwrap());
                (v + split_heads(&delta, heads)).unwrap()
            });
            let lb = model
                .forward(&input, &mut b, &ForwardOptions::default())
                .unwrap()
                .logits
                .unwrap();
            let d = logits_diff(&la, &lb, &mask);
            assert!(d <= 1e-5, "{name} {merged} vs {head}: {d}");
        }
    }
}

#[test]
fn no_hooks_equals_a_recorder_with_no_sites() {
    for name in MODELS {
        let model = load(name);
        let (input, _) = batch(name);
        let a = model
            .forward(&input, &mut NoHooks, &ForwardOptions::default())
            .unwrap();
        let mut rec = Recorder::new(vec![]);
        let b = model
            .forward(&input, &mut rec, &ForwardOptions::default())
            .unwrap();
        assert!(rec.values.is_empty());
        let (la, lb) = (a.logits.unwrap(), b.logits.unwrap());
        let d = (&la - &lb)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0, "{name}");
        // A recorder that records everything still gives the same logits.
        let all: Vec<Site> = (0..model.info().n_layers)
            .flat_map(|l| Component::ALL.iter().map(move |&c| Site::new(l, c)))
            .collect();
        let mut rec = Recorder::new(all);
        let c = model
            .forward(&input, &mut rec, &ForwardOptions::default())
            .unwrap();
        let d = (c.logits.unwrap() - &lb)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0, "{name}: recording changes nothing");
    }
}

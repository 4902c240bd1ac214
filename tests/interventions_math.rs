//! The parametrised interventions against pyvene 0.1.8 itself.
//!
//! tests/fixtures/interventions/*.safetensors come from tests/oracle/make_intervention_math.py:
//! real pyvene intervention objects with seeded non-trivial parameters, called as
//! `forward(base, source, subspaces)`, saved with their state_dict under pyvene's names. Here
//! each is rebuilt with `vene::intervention::build`, loaded by those names, and applied with
//! the `Dims` vene's resolver gives for the same subspaces.
//!
//! Run: cargo test --release --test interventions_math

use candle_core::{DType, Device, Tensor, D};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use vene::config::RepresentationConfig;
use vene::intervention::noise::{NoiseIntervention, RandomState};
use vene::intervention::orthogonal::{matrix_exp, orthogonal_weight};
use vene::intervention::{build, Intervention, Spec};
use vene::subspace::{resolve, Dims};

const TOL: f64 = 1e-5;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/interventions")
}

struct Case {
    name: String,
    t: HashMap<String, Tensor>,
    meta: Value,
}

impl Case {
    fn load(name: &str) -> Case {
        let path = dir().join(format!("{name}.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta: Value = serde_json::from_str(&md.metadata().as_ref().unwrap()["case"]).unwrap();
        let t = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        Case {
            name: name.to_string(),
            t,
            meta,
        }
    }

    fn all() -> Vec<Case> {
        let mut names: Vec<String> = std::fs::read_dir(dir())
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                (p.extension()? == "safetensors")
                    .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
            })
            .collect();
        names.sort();
        assert!(
            names.len() >= 20,
            "fixtures missing: run tests/oracle/make_intervention_math.py"
        );
        names.iter().map(|n| Case::load(n)).collect()
    }

    fn ty(&self) -> &str {
        self.meta["type"].as_str().unwrap()
    }
    fn embed_dim(&self) -> usize {
        self.meta["embed_dim"].as_u64().unwrap() as usize
    }

    fn rep(&self) -> RepresentationConfig {
        let m = &self.meta;
        let opt = |k: &str| m[k].as_u64().map(|x| x as usize);
        let nonnull = |k: &str| Some(m[k].clone()).filter(|v| !v.is_null());
        RepresentationConfig {
            intervention_type: Some(self.ty().to_string()),
            max_number_of_units: 1,
            low_rank_dimension: opt("low_rank_dimension"),
            latent_dim: opt("latent_dim"),
            interchange_dim: nonnull("interchange_dim"),
            intervention_args: nonnull("intervention_args"),
            subspace_partition: nonnull("subspace_partition")
                .map(|v| serde_json::from_value(v).unwrap()),
            ..Default::default()
        }
    }

    /// pyvene's state_dict, by its names.
    fn state(&self) -> HashMap<String, Tensor> {
        self.t
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("state.").map(|n| (n.to_string(), v.clone())))
            .collect()
    }

    /// Built from the representation alone (intervention_args, seeds), no state loaded.
    fn build_fresh(&self) -> Box<dyn Intervention> {
        let rep = self.rep();
        let spec = Spec {
            rep: &rep,
            embed_dim: self.embed_dim(),
            device: &Device::Cpu,
        };
        build(&spec).unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// Whether the parameters come from intervention_args / construction rather than a state.
    fn built_from_args(&self) -> bool {
        self.ty() == "NoiseIntervention"
            || self.meta["intervention_args"]
                .get("pca_components")
                .is_some()
    }

    fn build(&self) -> Box<dyn Intervention> {
        let mut iv = self.build_fresh();
        if !self.built_from_args() {
            iv.load_state(&self.state())
                .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        }
        iv
    }

    fn dims(&self) -> Dims {
        let rows: Option<Vec<Vec<usize>>> =
            serde_json::from_value(self.meta["subspaces"].clone()).unwrap();
        let partition: Option<Vec<Vec<usize>>> =
            serde_json::from_value(self.meta["subspace_partition"].clone()).unwrap();
        let inter = self.meta["interchange_dim"]
            .as_u64()
            .map(|x| x as usize)
            .or(Some(self.embed_dim()));
        let dims = resolve(rows.as_deref(), partition.as_deref(), inter).unwrap();
        let kind = match dims {
            Dims::Prefix(_) => "prefix",
            Dims::Shared(_) => "shared",
            Dims::PerUnit(_) => "per_unit",
            Dims::PerExample(_) => "per_example",
        };
        assert_eq!(
            kind,
            self.meta["dims"].as_str().unwrap(),
            "{}: resolved {dims:?}",
            self.name
        );
        dims
    }

    fn run(&self, iv: &dyn Intervention) -> Tensor {
        iv.apply(&self.t["base"], self.t.get("source"), &self.dims())
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }
}

/// A deterministic N(0, 1) f32 tensor.
fn gaussian(shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = RandomState::new(seed)
        .randn_vec(n)
        .into_iter()
        .map(|x| x as f32)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn orthonormality_error(w: &Tensor) -> f64 {
    let w = w.to_dtype(DType::F64).unwrap();
    let k = w.dim(1).unwrap();
    let wtw = w.t().unwrap().matmul(&w).unwrap();
    max_diff(&wtw, &Tensor::eye(k, DType::F64, &Device::Cpu).unwrap())
}

#[test]
fn every_fixture_matches_pyvene() {
    let mut worst = 0f64;
    for c in Case::all() {
        let iv = c.build();
        assert_eq!(iv.type_name(), c.ty());
        let out = c.run(iv.as_ref());
        let d = max_diff(&out, &c.t["out"]);
        println!(
            "{:<24} {:<38} max |vene - pyvene| = {d:.3e}",
            c.name,
            c.ty()
        );
        assert!(d < TOL, "{}: output differs from pyvene by {d}", c.name);
        assert_eq!(out.dtype(), c.t["base"].dtype());
        worst = worst.max(d);
    }
    println!("worst output difference: {worst:.3e}");
}

#[test]
fn distributed_flags_follow_pyvene_flattening() {
    for c in Case::all() {
        let expect = !matches!(
            c.ty(),
            "NoiseIntervention" | "SigmoidMaskIntervention" | "JumpReLUAutoencoderIntervention"
        );
        let iv = c.build_fresh();
        assert_eq!(iv.distributed(), expect, "{}", c.ty());
        assert_eq!(
            iv.needs_source(),
            c.ty() != "NoiseIntervention",
            "{}",
            c.ty()
        );
    }
}

#[test]
fn rotation_weight_rebuilt_from_original_and_base() {
    let mut n_square = 0;
    let mut n_tall = 0;
    for c in Case::all()
        .into_iter()
        .filter(|c| c.t.contains_key("weight"))
    {
        let s = c.state();
        let original = &s["rotate_layer.parametrizations.weight.original"];
        let base = &s["rotate_layer.parametrizations.weight.0.base"];
        let w = orthogonal_weight(original, base).unwrap();
        let d = max_diff(&w, &c.t["weight"]);
        let (n, k) = w.dims2().unwrap();
        if n == k {
            n_square += 1
        } else {
            n_tall += 1
        }
        println!("{:<24} W {n}x{k}: max |W - torch W| = {d:.3e}", c.name);
        assert!(d < TOL, "{}: W differs from torch's by {d}", c.name);
        if c.meta["orthogonal"].as_bool().unwrap() {
            let o = orthonormality_error(&w);
            println!("{:<24} max |W^T W - I| = {o:.3e}", c.name);
            assert!(o < TOL, "{}: W^T W - I = {o}", c.name);
        }
    }
    assert!(n_square >= 6 && n_tall >= 4);
}

#[test]
fn noise_matches_numpy_exactly() {
    for c in Case::all()
        .into_iter()
        .filter(|c| c.ty() == "NoiseIntervention")
    {
        let ours = NoiseIntervention::fixed_noise(c.embed_dim(), &Device::Cpu).unwrap();
        let d = max_diff(&ours, &c.t["numpy_noise"]);
        println!(
            "{:<24} noise (1, 4, {}): max |vene - numpy| = {d:.3e}",
            c.name,
            c.embed_dim()
        );
        assert!(d <= 1e-7, "{}: {d}", c.name);
        assert_eq!(ours.dtype(), DType::F64);
        let state: HashMap<String, Tensor> = c.build_fresh().state().into_iter().collect();
        assert!(max_diff(&state["noise"], &c.t["state.noise"]) <= 1e-7);
        assert!(max_diff(&state["noise_level"], &c.t["state.noise_level"]) == 0.0);
    }
    // numpy: np.random.RandomState(0).random_sample(), .randn() x3 after a fresh seed
    let mut rs = RandomState::new(0);
    assert_eq!(rs.random_sample(), 0.5488135039273248);
    let mut rs = RandomState::new(0);
    let g: Vec<f64> = (0..3).map(|_| rs.randn()).collect();
    assert_eq!(
        g,
        vec![1.764052345967664, 0.4001572083672233, 0.9787379841057392]
    );
}

#[test]
fn state_names_shapes_and_dtypes_match_pyvene_and_round_trip() {
    for c in Case::all() {
        let theirs = c.state();
        let mut fresh = c.build_fresh();
        if c.ty() == "PCARotatedSpaceIntervention" && !c.built_from_args() {
            // No basis until one is given: only the buffers.
            let names: Vec<String> = fresh.state().into_iter().map(|(k, _)| k).collect();
            assert_eq!(names, ["embed_dim", "interchange_dim"]);
            fresh.load_state(&theirs).unwrap();
        }
        let ours: HashMap<String, Tensor> = fresh.state().into_iter().collect();
        let mut a: Vec<&String> = ours.keys().collect();
        let mut b: Vec<&String> = theirs.keys().collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{}: state names", c.name);
        for (k, t) in &theirs {
            let o = &ours[k];
            assert_eq!(o.dims(), t.dims(), "{}: shape of {k}", c.name);
            assert_eq!(o.dtype(), t.dtype(), "{}: dtype of {k}", c.name);
        }
        // Loading pyvene's state and reading it back gives the same tensors.
        let mut iv = c.build_fresh();
        iv.load_state(&theirs).unwrap();
        let back: HashMap<String, Tensor> = iv.state().into_iter().collect();
        for (k, t) in &theirs {
            assert_eq!(
                max_diff(&back[k], t),
                0.0,
                "{}: {k} after a round trip",
                c.name
            );
        }
        // And vene's own state carries an intervention over exactly.
        let mut other = c.build_fresh();
        other.load_state(&back).unwrap();
        let (x, y) = (c.run(iv.as_ref()), c.run(other.as_ref()));
        assert_eq!(max_diff(&x, &y), 0.0, "{}", c.name);
    }
}

#[test]
fn an_effective_rotate_layer_weight_is_accepted() {
    for name in ["rotated_prefix", "lowrank_full", "boundless"] {
        let c = Case::load(name);
        let mut state = c.state();
        state.remove("rotate_layer.parametrizations.weight.original");
        state.remove("rotate_layer.parametrizations.weight.0.base");
        state.insert("rotate_layer.weight".into(), c.t["weight"].clone());
        let mut iv = c.build_fresh();
        iv.load_state(&state).unwrap();
        let d = max_diff(&c.run(iv.as_ref()), &c.t["out"]);
        println!("{name:<24} from rotate_layer.weight: max diff {d:.3e}");
        assert!(d < TOL, "{name}: {d}");
        // It is stored as pyvene's (original, base) pair.
        let back: HashMap<String, Tensor> = iv.state().into_iter().collect();
        let w = orthogonal_weight(
            &back["rotate_layer.parametrizations.weight.original"],
            &back["rotate_layer.parametrizations.weight.0.base"],
        )
        .unwrap();
        assert!(max_diff(&w, &c.t["weight"]) < TOL);
        assert!(orthonormality_error(&back["rotate_layer.parametrizations.weight.0.base"]) < TOL);
    }
}

fn spec_build(rep: &RepresentationConfig, embed_dim: usize) -> vene::Result<Box<dyn Intervention>> {
    build(&Spec {
        rep,
        embed_dim,
        device: &Device::Cpu,
    })
}

fn rep(ty: &str) -> RepresentationConfig {
    RepresentationConfig {
        intervention_type: Some(ty.into()),
        ..Default::default()
    }
}

#[test]
fn fresh_rotations_are_orthogonal_seeded_and_as_torch_initialises_them() {
    for (ty, k) in [
        ("RotatedSpaceIntervention", None),
        ("LowRankRotatedSpaceIntervention", Some(5)),
    ] {
        let mut r = rep(ty);
        r.low_rank_dimension = k;
        r.intervention_args = Some(json!({"seed": 7}));
        let a: HashMap<String, Tensor> = spec_build(&r, 16).unwrap().state().into_iter().collect();
        let b: HashMap<String, Tensor> = spec_build(&r, 16).unwrap().state().into_iter().collect();
        let orig = &a["rotate_layer.parametrizations.weight.original"];
        let base = &a["rotate_layer.parametrizations.weight.0.base"];
        assert_eq!(
            max_diff(base, &b["rotate_layer.parametrizations.weight.0.base"]),
            0.0
        );
        let kk = k.unwrap_or(16);
        // original = -I (n x k), W = base[:, :k]
        let neg_eye = Tensor::eye(16, DType::F32, &Device::Cpu)
            .unwrap()
            .narrow(1, 0, kk)
            .unwrap()
            .neg()
            .unwrap();
        assert_eq!(max_diff(orig, &neg_eye), 0.0);
        let w = orthogonal_weight(orig, base).unwrap();
        assert!(max_diff(&w, &base.narrow(1, 0, kk).unwrap()) < 1e-6);
        assert!(orthonormality_error(&w) < TOL);
        r.intervention_args = Some(json!({"seed": 8}));
        let c: HashMap<String, Tensor> = spec_build(&r, 16).unwrap().state().into_iter().collect();
        assert!(max_diff(base, &c["rotate_layer.parametrizations.weight.0.base"]) > 0.1);
    }
}

#[test]
fn matrix_exp_of_a_plane_rotation() {
    for t in [0.0, 0.3, 1.0, 7.5, 50.0] {
        let a = Tensor::from_vec(vec![0.0, -t, t, 0.0], (2, 2), &Device::Cpu).unwrap();
        let e = matrix_exp(&a).unwrap();
        let want = Tensor::from_vec(
            vec![f64::cos(t), -f64::sin(t), f64::sin(t), f64::cos(t)],
            (2, 2),
            &Device::Cpu,
        )
        .unwrap();
        let d = max_diff(&e, &want);
        assert!(d < 1e-12, "t = {t}: {d}");
    }
}

#[test]
fn gradients_reach_every_trainable_parameter() {
    for c in Case::all() {
        let iv = c.build();
        let vars = iv.trainable();
        let expect_trainable =
            !matches!(c.ty(), "NoiseIntervention" | "PCARotatedSpaceIntervention");
        assert_eq!(!vars.is_empty(), expect_trainable, "{}", c.name);
        if vars.is_empty() {
            continue;
        }
        let out = c.run(iv.as_ref());
        let probe = gaussian(out.dims(), 11);
        let loss = (out * probe).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        for (i, v) in vars.iter().enumerate() {
            // torch gives these no gradient either: JumpReLU's threshold only gates (a step),
            // and a boundary clamped at 1 is flat.
            let exempt = (c.ty() == "JumpReLUAutoencoderIntervention" && i == 2)
                || (c.name == "boundless_clamped" && i == 1);
            let norm = match grads.get(v.as_tensor()) {
                Some(g) => g
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap(),
                None => 0.0,
            };
            assert!(
                norm > 0.0 || exempt,
                "{}: no gradient for parameter {i} {:?}",
                c.name,
                v.dims()
            );
        }
    }
}

/// Directional finite differences of a scalar loss along a random direction in `original`.
#[test]
fn rotation_gradients_match_finite_differences() {
    for name in [
        "rotated_shared",
        "lowrank_full",
        "boundless",
        "sigmoid_mask_rotated",
    ] {
        let c = Case::load(name);
        let iv = c.build();
        let vars = iv.trainable();
        let probe = gaussian(c.t["base"].dims(), 12);
        let loss =
            |iv: &dyn Intervention| -> Tensor { (c.run(iv) * &probe).unwrap().sum_all().unwrap() };
        let grads = loss(iv.as_ref()).backward().unwrap();
        for (i, v) in vars.iter().enumerate() {
            let g = grads.get(v.as_tensor()).unwrap();
            let mut dir = gaussian(v.dims(), 13 + i as u32);
            if i == 0 {
                // Off the diagonal of `original`: torch reads it through trunc() (a step) for
                // tall weights, and not at all for square ones.
                let (n, k) = v.dims2().unwrap();
                let off: Vec<f32> = (0..n * k)
                    .map(|p| if p / k == p % k { 0.0 } else { 1.0 })
                    .collect();
                dir = (dir * Tensor::from_vec(off, (n, k), &Device::Cpu).unwrap()).unwrap();
            }
            let analytic = (g * &dir)
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            let x0 = v.as_tensor().copy().unwrap();
            let eps = 1e-2;
            let at = |s: f64| -> f64 {
                v.set(&(&x0 + (&dir * s).unwrap()).unwrap()).unwrap();
                loss(iv.as_ref()).to_scalar::<f32>().unwrap() as f64
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
            v.set(&x0).unwrap();
            let rel = (analytic - numeric).abs() / numeric.abs().max(1e-3);
            println!(
                "{name:<24} {:?}: analytic {analytic:.5} numeric {numeric:.5} rel {rel:.2e}",
                v.dims()
            );
            assert!(
                rel < 2e-2,
                "{name}: gradient {analytic} vs finite difference {numeric}"
            );
        }
    }
}

fn err(r: vene::Result<Box<dyn Intervention>>) -> String {
    match r {
        Ok(iv) => panic!("{} built, expected an error", iv.type_name()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn construction_errors_are_clear() {
    let e = err(spec_build(&rep("AutoencoderIntervention"), 8));
    assert!(e.contains("latent_dim"), "{e}");
    let e = err(spec_build(&rep("LowRankRotatedSpaceIntervention"), 8));
    assert!(e.contains("low_rank_dimension"), "{e}");
    let e = err(spec_build(&rep("JumpReLUAutoencoderIntervention"), 8));
    assert!(e.contains("low_rank_dimension"), "{e}");
    let mut r = rep("low_rank_rotated_space");
    r.low_rank_dimension = Some(9);
    let e = err(spec_build(&r, 8));
    assert!(e.contains("between 1 and embed_dim = 8"), "{e}");
    let mut r = rep("noise");
    r.intervention_args = Some(json!({"noise_levle": 0.2}));
    let e = err(spec_build(&r, 8));
    assert!(
        e.contains("noise_levle") && e.contains("noise_level"),
        "{e}"
    );
    let mut r = rep("rotated_space");
    r.interchange_dim = Some(json!([1, 2]));
    assert!(err(spec_build(&r, 8)).contains("interchange_dim"));
    let mut r = rep("pca_rotated_space");
    r.intervention_args =
        Some(json!({"pca_components": [[1.0, 0.0]], "pca_mean": 0.0, "pca_std": 1.0}));
    let e = err(spec_build(&r, 8));
    assert!(e.contains("(n_components, embed_dim = 8)"), "{e}");
}

#[test]
fn apply_errors_are_clear() {
    let x = |shape: &[usize]| gaussian(shape, 5);
    // A rotation over 2 units of 4 features (embed_dim 8) given 3 units: say what to set.
    let mut r = rep("rotated_space");
    r.max_number_of_units = 2;
    let iv = spec_build(&r, 8).unwrap();
    let e = iv
        .apply(&x(&[2, 12]), Some(&x(&[2, 12])), &Dims::Prefix(None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_number_of_units should be 3"), "{e}");
    assert!(iv
        .apply(&x(&[2, 8]), None, &Dims::Prefix(None))
        .unwrap_err()
        .to_string()
        .contains("needs a source"));
    // A localist mask on units of 4 features but embed_dim 8.
    let iv = spec_build(&r.clone_with("sigmoid_mask"), 8).unwrap();
    let e = iv
        .apply(&x(&[2, 3, 4]), Some(&x(&[2, 3, 4])), &Dims::Prefix(None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_number_of_units should be 1"), "{e}");
    // Noise needs exactly 4 units, as in pyvene.
    let iv = spec_build(&rep("noise"), 8).unwrap();
    let e = iv
        .apply(&x(&[2, 3, 8]), None, &Dims::Prefix(None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("exactly 4 positions"), "{e}");
    assert!(iv.apply(&x(&[4, 8]), None, &Dims::Prefix(None)).is_err());
    assert!(iv.apply(&x(&[1, 4, 8]), None, &Dims::Prefix(None)).is_ok());
    // The autoencoder's default interchange_dim (= embed_dim) as a latent id.
    let mut r = rep("autoencoder");
    r.latent_dim = Some(6);
    let iv = spec_build(&r, 8).unwrap();
    let e = iv
        .apply(&x(&[2, 8]), Some(&x(&[2, 8])), &Dims::Prefix(None))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("latent id 8") && e.contains("list of latent ids"),
        "{e}"
    );
    // Low-rank subspaces beyond its columns.
    let mut r = rep("low_rank_rotated_space");
    r.low_rank_dimension = Some(2);
    let iv = spec_build(&r, 8).unwrap();
    assert!(iv
        .apply(&x(&[2, 8]), Some(&x(&[2, 8])), &Dims::Shared(vec![3]))
        .is_err());
    // PCA without a basis.
    let iv = spec_build(&rep("pca_rotated_space"), 8).unwrap();
    let e = iv
        .apply(&x(&[2, 8]), Some(&x(&[2, 8])), &Dims::Prefix(None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no PCA basis"), "{e}");
}

trait CloneWith {
    fn clone_with(&self, ty: &str) -> RepresentationConfig;
}
impl CloneWith for RepresentationConfig {
    fn clone_with(&self, ty: &str) -> RepresentationConfig {
        let mut r = self.clone();
        r.intervention_type = Some(ty.into());
        r
    }
}

#[test]
fn state_errors_are_clear() {
    let c = Case::load("rotated_prefix");
    let mut iv = c.build_fresh();
    let mut s = c.state();
    s.insert(
        "rotate_layer.bogus".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let e = iv.load_state(&s).unwrap_err().to_string();
    assert!(
        e.contains("'rotate_layer.bogus'")
            && e.contains("rotate_layer.parametrizations.weight.original"),
        "{e}"
    );
    let mut s = c.state();
    s.insert(
        "rotate_layer.parametrizations.weight.0.base".into(),
        Tensor::zeros((12, 11), DType::F32, &Device::Cpu).unwrap(),
    );
    let e = iv.load_state(&s).unwrap_err().to_string();
    assert!(e.contains("[12, 11]") && e.contains("[12, 12]"), "{e}");
    let mut s = c.state();
    s.remove("rotate_layer.parametrizations.weight.0.base");
    assert!(iv
        .load_state(&s)
        .unwrap_err()
        .to_string()
        .contains("needs both"));
    let mut s = c.state();
    s.insert(
        "embed_dim".into(),
        Tensor::new(16i64, &Device::Cpu).unwrap(),
    );
    assert!(iv
        .load_state(&s)
        .unwrap_err()
        .to_string()
        .contains("embed_dim"));
    // A failed load changes nothing.
    let fresh: HashMap<String, Tensor> = c.build_fresh().state().into_iter().collect();
    for (k, t) in iv.state() {
        assert_eq!(max_diff(&t, &fresh[&k]), 0.0, "{k}");
    }
}

#[test]
fn temperature_is_settable() {
    let c = Case::load("boundless");
    let iv = c.build();
    iv.set_temperature(0.05).unwrap();
    let s: HashMap<String, Tensor> = iv.state().into_iter().collect();
    assert_eq!(s["temperature"].to_scalar::<f32>().unwrap(), 0.05);
    // A sharper boundary: mixing weights near 0/1, still differentiable.
    let out = c.run(iv.as_ref());
    assert!(out.dim(D::Minus1).unwrap() == 12);
    let c = Case::load("sigmoid_mask");
    let iv = c.build();
    iv.set_temperature(2.0).unwrap();
    let s: HashMap<String, Tensor> = iv.state().into_iter().collect();
    assert_eq!(s["temperature"].to_scalar::<f32>().unwrap(), 2.0);
}

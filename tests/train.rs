//! Training: the optimizers against torch's numbers, DAS on a task whose answer is known, and
//! the loop's options (gradient accumulation, early stop, schedules, datasets, errors).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use vene::config::IntervenableConfig;
use vene::intervenable::IntervenableModel;
use vene::model::mlp::{MlpClassifier, MlpConfig};
use vene::train::{
    self, evaluate, linear_schedule, temperature_schedule, Dataset, Example, GroupedOptimizer,
    Label, Loss, LrGroup, OptimizerKind, Param, Sequence, TrainOptions,
};
use vene::Model;

const D: usize = 8;

fn fixture() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/train/adam.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn mat(v: &Value) -> Vec<Vec<f32>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn tensor(rows: &[Vec<f32>]) -> Tensor {
    let (r, c) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (r, c), &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Steps a `GroupedOptimizer` with the fixture's gradients (fed through backward of
/// `sum(p * g)`, whose gradient is exactly g) and compares with torch after every step.
fn replay(kind: OptimizerKind, schedule: Option<(f64, usize)>, key: &str) {
    let fx = fixture();
    let lr = fx["adam_lr"].as_f64().unwrap();
    let var = candle_core::Var::from_tensor(&tensor(&mat(&fx["p0"]))).unwrap();
    let params = vec![Param {
        name: "p".into(),
        var: var.clone(),
    }];
    let mut opt = GroupedOptimizer::new(&params, lr, &[], kind).unwrap();
    let grads = fx["grads"].as_array().unwrap();
    let want = fx[key].as_array().unwrap();
    for (step, (g, w)) in grads.iter().zip(want).enumerate() {
        if let Some((warmup, total)) = schedule {
            opt.set_factor(linear_schedule(step, warmup, total, true));
        }
        let g = tensor(&mat(g));
        let store = (var.as_tensor() * &g)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        opt.step(&store).unwrap();
        let d = max_diff(var.as_tensor(), &tensor(&mat(w)));
        assert!(d < 1e-6, "{key}: step {step} differs from torch by {d}");
    }
}

#[test]
fn adam_matches_torch() {
    replay(OptimizerKind::Adam, None, "adam");
}

#[test]
fn adamw_matches_torch() {
    let wd = fixture()["adamw_weight_decay"].as_f64().unwrap();
    replay(OptimizerKind::AdamW { weight_decay: wd }, None, "adamw");
}

#[test]
fn linear_warmup_schedule_matches_transformers() {
    let fx = fixture();
    let warmup = fx["warmup_steps"].as_f64().unwrap();
    let total = fx["total_steps"].as_u64().unwrap() as usize;
    replay(
        OptimizerKind::Adam,
        Some((warmup, total)),
        "adam_linear_warmup",
    );
}

#[test]
fn temperature_schedule_matches_torch_bf16_linspace() {
    let want: Vec<f64> = serde_json::from_value(fixture()["temperature_schedule"].clone()).unwrap();
    let got = temperature_schedule(50.0, 0.1, want.len());
    assert_eq!(got, want);
}

#[test]
fn parameter_groups_get_their_own_learning_rate() {
    let a = candle_core::Var::new(&[1f32, 2.0], &Device::Cpu).unwrap();
    let b = candle_core::Var::new(&[1f32, 2.0], &Device::Cpu).unwrap();
    let params = vec![
        Param {
            name: "k.rotate_layer.parametrizations.weight.original".into(),
            var: a.clone(),
        },
        Param {
            name: "k.intervention_boundaries".into(),
            var: b.clone(),
        },
    ];
    let mut opt = GroupedOptimizer::new(
        &params,
        1e-3,
        &[LrGroup::new("intervention_boundaries", 1e-1)],
        OptimizerKind::Adam,
    )
    .unwrap();
    let loss = ((a.as_tensor() + b.as_tensor()).unwrap().sum_all()).unwrap();
    opt.step(&loss.backward().unwrap()).unwrap();
    // Adam's first step moves every entry by lr (the gradient's sign times lr).
    let da: Vec<f32> = (Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap() - a.as_tensor())
        .unwrap()
        .to_vec1()
        .unwrap();
    let db: Vec<f32> = (Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap() - b.as_tensor())
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(da.iter().all(|x| (x - 1e-3).abs() < 1e-6), "{da:?}");
    assert!(db.iter().all(|x| (x - 1e-1).abs() < 1e-6), "{db:?}");
}

/// A deterministic Gaussian stream.
struct Gauss(u64);
impl Gauss {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f32 {
        let (u1, u2) = (1.0 - self.unit(), self.unit());
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }
}

/// A random orthogonal D x D matrix (Gram-Schmidt of a Gaussian one), row-major.
fn orthogonal(seed: u64) -> Vec<Vec<f32>> {
    let mut g = Gauss(seed);
    let mut q: Vec<Vec<f64>> = Vec::new();
    while q.len() < D {
        let mut v: Vec<f64> = (0..D).map(|_| g.normal() as f64).collect();
        for u in &q {
            let d: f64 = u.iter().zip(&v).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(u).for_each(|(x, a)| *x -= d * a);
        }
        let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        q.push(v.iter().map(|x| x / n).collect());
    }
    q.into_iter()
        .map(|r| r.into_iter().map(|x| x as f32).collect())
        .collect()
}

/// The known-answer network: a linear 2-layer pyvene MLP whose first layer rotates the input
/// by Q (h = Q x) and whose head reads only x_0 (through Q e_0). The class is x_0 > 0. So the
/// causal variable "sign of x_0" lives, at layer 0's output, exactly on the direction Q e_0:
/// a one-dimensional DAS must find that direction.
fn known_answer_model() -> (Arc<Model>, Vec<f32>) {
    let q = orthogonal(99);
    let cfg = MlpConfig {
        h_dim: D,
        n_layer: 2,
        num_classes: 2,
        activation_function: "linear".into(),
        include_bias: false,
        pdrop: 0.0,
        ..Default::default()
    };
    let mut ts = HashMap::new();
    ts.insert("mlp.h.0.ff1.weight".to_string(), tensor(&q));
    ts.insert(
        "mlp.h.1.ff1.weight".to_string(),
        Tensor::eye(D, DType::F32, &Device::Cpu).unwrap(),
    );
    // Column 0 of Q: the direction that carries x_0 after layer 0.
    let dir: Vec<f32> = (0..D).map(|i| q[i][0]).collect();
    let neg: Vec<f32> = dir.iter().map(|x| -x * 4.0).collect();
    let pos: Vec<f32> = dir.iter().map(|x| x * 4.0).collect();
    ts.insert("score.weight".to_string(), tensor(&[neg, pos]));
    let vb = VarBuilder::from_tensors(ts, DType::F32, &Device::Cpu);
    let m = MlpClassifier::load(cfg, vb).unwrap();
    (Arc::new(m.into_model("known-answer mlp")), dir)
}

/// Inputs with x_0 = +-1 (the variable) and Gaussian noise elsewhere; every pair has
/// different classes, so a swap that does nothing scores 0.
fn sign_dataset(n: usize, seed: u64) -> Dataset {
    let mut g = Gauss(seed);
    let input = |sign: f32, g: &mut Gauss| -> Vec<f32> {
        let mut v: Vec<f32> = (0..D).map(|_| g.normal()).collect();
        v[0] = sign * (0.5 + g.unit() as f32);
        v
    };
    let examples = (0..n)
        .map(|i| {
            let s = if i % 2 == 0 { 1.0 } else { -1.0 };
            let base = input(-s, &mut g);
            let source = input(s, &mut g);
            Example::simple(
                Sequence::Vector(base),
                Sequence::Vector(source),
                &[0],
                1,
                Label::new(if s > 0.0 { 1 } else { 0 }),
            )
        })
        .collect();
    Dataset::new(examples)
}

fn das(model: &Arc<Model>, ty: &str, extra: &str) -> IntervenableModel {
    let cfg = format!(
        r#"{{"layer": 0, "component": "block_output", "intervention_type": "{ty}"{extra}}}"#
    );
    IntervenableModel::new(
        model.clone(),
        IntervenableConfig::from_json_str(&cfg).unwrap(),
    )
    .unwrap()
}

fn orthonormality_error(w: &Tensor) -> f32 {
    let (_, k) = w.dims2().unwrap();
    let wtw = w.t().unwrap().matmul(w).unwrap();
    max_diff(&wtw, &Tensor::eye(k, DType::F32, &Device::Cpu).unwrap())
}

/// The effective rotation weight, rebuilt from the saved state as torch does, checked to be
/// orthonormal to 1e-5.
fn rotation(iv: &IntervenableModel) -> Tensor {
    let state: HashMap<String, Tensor> = iv.intervention(0).state().into_iter().collect();
    let original = &state["rotate_layer.parametrizations.weight.original"];
    let base = &state["rotate_layer.parametrizations.weight.0.base"];
    let w = vene::intervention::orthogonal::orthogonal_weight(original, base).unwrap();
    assert!(
        orthonormality_error(&w) < 1e-5,
        "the rotation is no longer orthogonal: error {}",
        orthonormality_error(&w)
    );
    w
}

/// |cosine| between the first column of the rotation and the known direction.
fn alignment(iv: &IntervenableModel, dir: &[f32]) -> f32 {
    let w = rotation(iv);
    let col: Vec<f32> = w
        .narrow(1, 0, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    col.iter().zip(dir).map(|(a, b)| a * b).sum::<f32>().abs()
}

fn train_and_check(ty: &str, extra: &str, min_iia: f64, check_direction: bool) {
    let (model, dir) = known_answer_model();
    let train_set = sign_dataset(512, 1);
    let test_set = sign_dataset(256, 2);
    let mut iv = das(&model, ty, extra);
    let before = evaluate(&iv, &test_set, &Loss::CrossEntropy, 64).unwrap();
    let opts = TrainOptions {
        epochs: 6,
        batch_size: 32,
        lr: 2e-2,
        lr_groups: vec![LrGroup::new("intervention_boundaries", 5e-2)],
        seed: 3,
        ..Default::default()
    };
    let mut steps = 0;
    let report = train::train(&mut iv, &train_set, &Loss::CrossEntropy, &opts, &mut |p| {
        steps = p.step;
        assert!(p.loss.is_finite());
        true
    })
    .unwrap();
    assert_eq!(report.steps, 6 * 16);
    assert_eq!(steps, report.steps);
    assert!(report.completed);
    let after = evaluate(&iv, &test_set, &Loss::CrossEntropy, 64).unwrap();
    println!(
        "{ty}: IIA {:.3} -> {:.3}, loss {:.3} -> {:.3}",
        before.iia, after.iia, before.loss, after.loss
    );
    assert!(
        after.iia >= min_iia,
        "{ty}: IIA {} after training",
        after.iia
    );
    assert!(after.loss < before.loss);
    // Orthogonal to 1e-5 after training (every type here is a rotation).
    let w = rotation(&iv);
    println!("{ty}: |W^T W - I| = {:.2e}", orthonormality_error(&w));
    if check_direction {
        let a = alignment(&iv, &dir);
        println!("{ty}: |cos(first rotated axis, true direction)| = {a:.4}");
        assert!(a > 0.95, "{ty}: the learned axis is not the true one ({a})");
    }
}

#[test]
fn das_finds_the_known_direction() {
    train_and_check(
        "RotatedSpaceIntervention",
        r#", "interchange_dim": 1"#,
        0.97,
        true,
    );
}

#[test]
fn low_rank_das_finds_the_known_direction() {
    train_and_check(
        "LowRankRotatedSpaceIntervention",
        r#", "low_rank_dimension": 1"#,
        0.97,
        true,
    );
}

#[test]
fn boundless_das_reaches_high_iia() {
    train_and_check("BoundlessRotatedSpaceIntervention", "", 0.95, false);
}

#[test]
fn untrained_rotation_does_not_already_solve_the_task() {
    let (model, _) = known_answer_model();
    let iv = das(
        &model,
        "RotatedSpaceIntervention",
        r#", "interchange_dim": 1"#,
    );
    let e = evaluate(&iv, &sign_dataset(256, 2), &Loss::CrossEntropy, 64).unwrap();
    assert!(e.iia < 0.5, "IIA before training {}", e.iia);
}

/// Summing the gradients of 4 batches of 8 gives the same update as one batch of 32. (A
/// rank-1 rotation: every parameter of it has a real gradient. A square rotation also has
/// parameters that only turn the swapped subspace within itself, whose true gradient is 0;
/// Adam blows their float noise up to full-size steps, so those would differ by noise.)
#[test]
fn gradient_accumulation_equals_a_bigger_batch() {
    let (model, _) = known_answer_model();
    let data = sign_dataset(64, 5);
    let weights = |batch_size: usize, gas: usize| {
        let mut iv = das(
            &model,
            "LowRankRotatedSpaceIntervention",
            r#", "low_rank_dimension": 1"#,
        );
        let opts = TrainOptions {
            epochs: 2,
            batch_size,
            gradient_accumulation_steps: gas,
            shuffle: false,
            lr: 1e-2,
            ..Default::default()
        };
        let r = train::train(&mut iv, &data, &Loss::CrossEntropy, &opts, &mut |_| true).unwrap();
        assert_eq!(r.steps, 128 / (batch_size * gas));
        iv.intervention(0).trainable()[0]
            .as_tensor()
            .copy()
            .unwrap()
    };
    let a = weights(32, 1);
    let b = weights(8, 4);
    let d = max_diff(&a, &b);
    assert!(d < 1e-5, "accumulated update differs by {d}");
    let c = weights(16, 1);
    assert!(max_diff(&a, &c) > 1e-4, "different batching should differ");
}

#[test]
fn progress_callback_can_stop_training() {
    let (model, _) = known_answer_model();
    let mut iv = das(
        &model,
        "RotatedSpaceIntervention",
        r#", "interchange_dim": 1"#,
    );
    let opts = TrainOptions {
        epochs: 3,
        batch_size: 16,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let r = train::train(
        &mut iv,
        &sign_dataset(64, 1),
        &Loss::CrossEntropy,
        &opts,
        &mut |p| {
            seen.push((p.step, p.lr_factor, p.temperature));
            p.step < 5
        },
    )
    .unwrap();
    assert!(!r.completed);
    assert_eq!(r.steps, 5);
    assert_eq!(seen.len(), 5);
    // 12 steps, warmup 1.2: the first step runs at factor 0.
    assert_eq!(seen[0].1, 0.0);
    assert!(seen[1].1 > 0.8);
    // Temperature follows the bf16 linspace(50, 0.1, 12).
    let sched = temperature_schedule(50.0, 0.1, 12);
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s.2, Some(sched[i]));
    }
}

#[test]
fn boundless_temperature_anneals_to_the_end_value() {
    let (model, _) = known_answer_model();
    let mut iv = das(&model, "BoundlessRotatedSpaceIntervention", "");
    let opts = TrainOptions {
        epochs: 1,
        batch_size: 16,
        boundary_penalty: 1.0,
        ..Default::default()
    };
    train::train(
        &mut iv,
        &sign_dataset(64, 1),
        &Loss::CrossEntropy,
        &opts,
        &mut |_| true,
    )
    .unwrap();
    let state: HashMap<String, Tensor> = iv.intervention(0).state().into_iter().collect();
    let t = state["temperature"].to_scalar::<f32>().unwrap();
    assert!((t - 0.1).abs() < 1e-3, "temperature after training {t}");
}

#[test]
fn custom_loss_is_used() {
    let (model, _) = known_answer_model();
    let mut iv = das(
        &model,
        "RotatedSpaceIntervention",
        r#", "interchange_dim": 1"#,
    );
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = calls.clone();
    let loss = Loss::Custom(Arc::new(move |logits: &Tensor, targets: &Tensor| {
        c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(candle_nn::loss::cross_entropy(logits, targets)?.affine(2.0, 0.0)?)
    }));
    let opts = TrainOptions {
        epochs: 1,
        batch_size: 16,
        ..Default::default()
    };
    train::train(&mut iv, &sign_dataset(64, 1), &loss, &opts, &mut |_| true).unwrap();
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 4);
}

#[test]
fn jsonl_round_trip_and_forms() {
    let dir = std::env::temp_dir().join(format!("vene-train-jsonl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("d.jsonl");
    let data = Dataset::new(vec![
        Example {
            base: Sequence::Tokens(vec![1, 2, 3]),
            sources: vec![Some(Sequence::Tokens(vec![4, 5, 6])), None],
            locations: Some(vec![(vec![2], vec![2]), (vec![0], vec![1])]),
            subspaces: Some(vec![Some(vec![0, 1]), None]),
            labels: vec![Label::at(2, 9), Label::new(3)],
        },
        Example::simple(
            Sequence::Vector(vec![0.5, -1.0]),
            Sequence::Embeds(vec![vec![1.0, 2.0]]),
            &[0],
            1,
            Label::new(1),
        ),
    ]);
    data.to_jsonl(&p).unwrap();
    assert_eq!(Dataset::from_jsonl(&p).unwrap(), data);
    // Hand-written shorthand forms.
    std::fs::write(
        &p,
        "# comment\n{\"base\": [1, 2], \"source\": [3, 4], \"locations\": [1], \"label\": 7}\n\n",
    )
    .unwrap();
    let d = Dataset::from_jsonl(&p).unwrap();
    assert_eq!(
        d.examples[0],
        Example::simple(
            Sequence::Tokens(vec![1, 2]),
            Sequence::Tokens(vec![3, 4]),
            &[1],
            1,
            Label::new(7)
        )
    );
    // Errors name the line and the field.
    std::fs::write(
        &p,
        "{\"base\": [1], \"labels\": 1}\n{\"base\": [1], \"lables\": 2}\n",
    )
    .unwrap();
    let e = Dataset::from_jsonl(&p).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("lables"), "{e}");
    std::fs::write(&p, "{\"base\": [1, -2], \"labels\": 1}\n").unwrap();
    let e = Dataset::from_jsonl(&p).unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("token ids"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn clear_errors() {
    let (model, _) = known_answer_model();
    let data = sign_dataset(8, 1);
    let opts = TrainOptions::default();
    let err = |iv: &mut IntervenableModel, d: &Dataset, o: &TrainOptions| {
        train::train(iv, d, &Loss::CrossEntropy, o, &mut |_| true)
            .unwrap_err()
            .to_string()
    };
    // Nothing to train.
    let mut vanilla = das(&model, "VanillaIntervention", "");
    assert!(err(&mut vanilla, &data, &opts).contains("nothing to train"));
    // A label past the classes.
    let mut iv = das(
        &model,
        "RotatedSpaceIntervention",
        r#", "interchange_dim": 1"#,
    );
    let mut bad = data.clone();
    bad.examples[0].labels = vec![Label::new(5)];
    assert!(err(&mut iv, &bad, &opts).contains("out of range"));
    // A label position past the input (a classifier fed vectors has one position).
    let mut bad = data.clone();
    bad.examples[0].labels = vec![Label::at(1, 1)];
    let e = err(&mut iv, &bad, &opts);
    assert!(e.contains("label position 1 is past"), "{e}");
    // Mixed inputs in a batch.
    let mut bad = data.clone();
    bad.examples[1].base = Sequence::Tokens(vec![1]);
    assert!(err(&mut iv, &bad, &opts).contains("mixes"));
    // Penalty without boundaries.
    let o = TrainOptions {
        boundary_penalty: 1.0,
        ..Default::default()
    };
    assert!(err(&mut iv, &data, &o).contains("intervention_boundaries"));
    // Empty data, zero batch.
    assert!(err(&mut iv, &Dataset::default(), &opts).contains("empty"));
    let o = TrainOptions {
        batch_size: 0,
        ..Default::default()
    };
    assert!(err(&mut iv, &data, &o).contains("batch_size"));
}

/// Token models: labels at explicit positions and at the last token, through a real LM.
#[test]
fn trains_through_a_language_model() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/gpt2");
    let model = Arc::new(Model::load(&dir).unwrap());
    let cfg = r#"{"layer": 1, "component": "block_output", "intervention_type": "LowRankRotatedSpaceIntervention", "low_rank_dimension": 2}"#;
    let mut iv = IntervenableModel::new(
        model.clone(),
        IntervenableConfig::from_json_str(cfg).unwrap(),
    )
    .unwrap();
    // Teach the intervention to make the model say token 7 at position 2 and 11 at the end.
    let examples: Vec<Example> = (0..16u32)
        .map(|i| Example {
            base: Sequence::Tokens(vec![i + 3, 40, 50 + i % 5, 9]),
            sources: vec![Some(Sequence::Tokens(vec![60, i + 1, 20, 30 + i % 7]))],
            locations: Some(vec![(vec![1], vec![2])]),
            subspaces: None,
            labels: vec![Label::at(2, 7), Label::new(11)],
        })
        .collect();
    let data = Dataset::new(examples);
    let before = evaluate(&iv, &data, &Loss::CrossEntropy, 8).unwrap();
    let opts = TrainOptions {
        epochs: 30,
        batch_size: 8,
        lr: 5e-2,
        ..Default::default()
    };
    train::train(&mut iv, &data, &Loss::CrossEntropy, &opts, &mut |_| true).unwrap();
    let after = evaluate(&iv, &data, &Loss::CrossEntropy, 8).unwrap();
    println!("gpt2 loss {:.3} -> {:.3}", before.loss, after.loss);
    assert!(after.loss < before.loss - 0.05);
    // Ragged token rows are right-padded with a mask and still train.
    let mut ragged = data.clone();
    ragged.examples[0].base = Sequence::Tokens(vec![5, 40, 50]);
    ragged.examples[0].labels = vec![Label::at(2, 7), Label::at(1, 11)];
    train::train(
        &mut iv,
        &ragged,
        &Loss::CrossEntropy,
        &TrainOptions {
            epochs: 1,
            batch_size: 8,
            ..Default::default()
        },
        &mut |_| true,
    )
    .unwrap();
    let preds = train::predict(&iv, &ragged, 8).unwrap();
    assert_eq!(preds.len(), 16);
    assert!(preds.iter().all(|p| p.len() == 2));
}

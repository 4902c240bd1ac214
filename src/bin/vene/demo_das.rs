//! `vene demo-das`: the seed's causal-abstraction example, end to end.
//!
//! A network computes a + b + c; where does it represent (a + b)? We train pyvene's MLP
//! classifier (3 ReLU layers of 30 units) on every input a, b, c in 0..=9 (the three digits
//! one-hot: 30 inputs; 28 classes), then test three hypotheses, each a causal model that
//! computes the same output:
//! * a+b: S = a + b, O = S + c. Interchanging S from a source predicts (a' + b') + c.
//! * a+b+c: T = a + b + c, O = T. Interchanging T predicts a' + b' + c'.
//! * max(a,b): M = max(a, b), N = min(a, b), O = M + N + c. Interchanging M predicts
//!   max(a', b') + min(a, b) + c: a valid model of the task, but nothing makes a network
//!   compute a maximum here (the control).
//!
//! At the input and after each layer, three methods look for each variable:
//! 1. vanilla interchange interventions on groups of neurons (the 30 units in 6 groups of 5;
//!    every union of groups is tried on the training pairs, the best is scored on the test
//!    pairs);
//! 2. DAS: a learned rotation (RotatedSpaceIntervention) swapping its first k coordinates;
//! 3. Boundless DAS: a learned rotation and a learned boundary (the subspace size).
//!
//! Every number is IIA on held-out counterfactual pairs whose predicted output differs from
//! the base's own output, so an intervention that does nothing scores 0. Seeds are fixed.

use candle_core::{DType, Tensor};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use candle_nn::VarBuilder;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use vene::causal_model::{CausalModel, Counterfactual, CounterfactualOptions, Rng, Variable};
use vene::config::IntervenableConfig;
use vene::intervenable::IntervenableModel;
use vene::model::mlp::{MlpClassifier, MlpConfig};
use vene::model::Architecture;
use vene::train::{self, Dataset, Example, Label, Loss, LrGroup, Sequence, TrainOptions};
use vene::{ForwardOptions, Input, Model, NoHooks};

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:\n  vene demo-das\n  vene demo-das --json > das.json")]
pub struct Args {
    /// Print one JSON object (task accuracy; per site and method, the IIA of each variable)
    /// instead of tables.
    #[arg(long)]
    pub json: bool,
    /// A smaller, faster run (fewer pairs and epochs), for tests.
    #[arg(long)]
    pub quick: bool,
    /// Rotated coordinates DAS swaps.
    #[arg(long, default_value_t = 10)]
    pub das_dims: usize,
    /// Training epochs for DAS and Boundless DAS.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Seed for the network, the data and the interventions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl Default for Args {
    /// The defaults of the command line (for callers such as `vene demo das`).
    fn default() -> Self {
        Args {
            json: false,
            quick: false,
            das_dims: 10,
            epochs: 10,
            seed: 0,
        }
    }
}

const DIGITS: i64 = 10;
const H: usize = 30;
const LAYERS: usize = 3;
const CLASSES: usize = 28;
const GROUP: usize = 5;
/// Boundless DAS temperature, annealed from the first value to the second. pyvene's 50 -> 0.1
/// is sized for thousands of dimensions: over 30 coordinates `sigmoid(j / 50)` never leaves
/// 0.5..0.65, the mask cannot sharpen and the boundary drifts to "everything".
const TEMPERATURE: (f64, f64) = (2.0, 0.1);
/// Weight of the boundary penalty (pyvene's tutorial adds the boundaries to the loss).
const BOUNDARY_PENALTY: f64 = 0.1;

fn one_hot(a: i64, b: i64, c: i64) -> Vec<f32> {
    let mut v = vec![0f32; H];
    v[a as usize] = 1.0;
    v[10 + b as usize] = 1.0;
    v[20 + c as usize] = 1.0;
    v
}

/// The two hypotheses as causal models: (name, model, interchanged variable).
fn hypotheses() -> vene::Result<Vec<(&'static str, CausalModel, &'static str)>> {
    let d: Vec<i64> = (0..DIGITS).collect();
    let sums: Vec<i64> = (0..=3 * (DIGITS - 1)).collect();
    let ab = CausalModel::new(vec![
        Variable::input("a", d.clone()),
        Variable::input("b", d.clone()),
        Variable::input("c", d.clone()),
        Variable::new("S", (0..=2 * (DIGITS - 1)).collect(), &["a", "b"], |v| {
            v[0] + v[1]
        }),
        Variable::new("O", sums.clone(), &["S", "c"], |v| v[0] + v[1]),
    ])?;
    let max = CausalModel::new(vec![
        Variable::input("a", d.clone()),
        Variable::input("b", d.clone()),
        Variable::input("c", d.clone()),
        Variable::new("M", d.clone(), &["a", "b"], |v| v[0].max(v[1])),
        Variable::new("N", d, &["a", "b"], |v| v[0].min(v[1])),
        Variable::new("O", sums.clone(), &["M", "N", "c"], |v| v[0] + v[1] + v[2]),
    ])?;
    let total = CausalModel::new(vec![
        Variable::input("a", (0..DIGITS).collect()),
        Variable::input("b", (0..DIGITS).collect()),
        Variable::input("c", (0..DIGITS).collect()),
        Variable::new("T", sums.clone(), &["a", "b", "c"], |v| v[0] + v[1] + v[2]),
        Variable::new("O", sums.clone(), &["T"], |v| v[0]),
    ])?;
    Ok(vec![
        ("a+b", ab, "S"),
        ("a+b+c", total, "T"),
        ("max(a,b)", max, "M"),
    ])
}

/// Trains the classifier on all 1000 inputs (full batch, Adam); returns a frozen model.
fn train_network(seed: u64, steps: usize, log: &dyn Fn(&str)) -> vene::Result<(Arc<Model>, f64)> {
    let cfg = MlpConfig {
        h_dim: H,
        n_layer: LAYERS,
        num_classes: CLASSES,
        activation_function: "relu".into(),
        pdrop: 0.0,
        ..Default::default()
    };
    let dev = crate::common::device();
    let (net, vars) = MlpClassifier::new_random_on(cfg.clone(), seed, &dev)?;
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for a in 0..DIGITS {
        for b in 0..DIGITS {
            for c in 0..DIGITS {
                xs.extend(one_hot(a, b, c));
                ys.push((a + b + c) as u32);
            }
        }
    }
    let n = ys.len();
    let x = Tensor::from_vec(xs, (n, H), &dev)?;
    let y = Tensor::from_vec(ys.clone(), n, &dev)?;
    let input = Input::from_embeds(x);
    let mut opt = AdamW::new(
        vars.all_vars(),
        ParamsAdamW {
            lr: 1e-2,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let opts = ForwardOptions::default();
    let logits = |net: &MlpClassifier| -> vene::Result<Tensor> {
        net.forward(&input, &mut NoHooks, &opts, None)?
            .logits
            .ok_or_else(|| vene::invalid!("no logits"))
    };
    for step in 0..steps {
        let loss = candle_nn::loss::cross_entropy(&logits(&net)?, &y)?;
        opt.backward_step(&loss)?;
        if step % 500 == 0 || step + 1 == steps {
            log(&format!(
                "  network step {step:>4}: loss {:.4}",
                loss.to_scalar::<f32>()?
            ));
        }
    }
    let pred: Vec<u32> = logits(&net)?.argmax(1)?.to_vec1()?;
    let acc = pred.iter().zip(&ys).filter(|(p, y)| p == y).count() as f64 / n as f64;
    // A frozen copy: plain tensors, so training interventions never touches the network.
    let frozen: HashMap<String, Tensor> = net
        .named_tensors()
        .into_iter()
        .map(|(k, t)| (k, t.detach()))
        .collect();
    let vb = VarBuilder::from_tensors(frozen, DType::F32, &dev);
    let model = MlpClassifier::load(cfg, vb)?.into_model("demo-das: 3-digit sum MLP");
    Ok((Arc::new(model), acc))
}

fn to_examples(cfs: &[Counterfactual]) -> Dataset {
    let v = |s: &vene::causal_model::Setting| Sequence::Vector(one_hot(s["a"], s["b"], s["c"]));
    Dataset::new(
        cfs.iter()
            .map(|c| Example {
                base: v(&c.base),
                sources: vec![Some(v(&c.sources[0].1))],
                locations: Some(vec![(vec![0], vec![0])]),
                subspaces: None,
                labels: vec![Label::new(c.counterfactual_output["O"] as u32)],
            })
            .collect(),
    )
}

/// The sites: the input, then the output of each layer.
fn sites() -> Vec<(String, usize, &'static str)> {
    let mut v = vec![("input".to_string(), 0, "block_input")];
    for l in 0..LAYERS {
        v.push((format!("layer {l}"), l, "block_output"));
    }
    v
}

fn intervenable(model: &Arc<Model>, rep: Value) -> vene::Result<IntervenableModel> {
    IntervenableModel::new(model.clone(), IntervenableConfig::from_json(&rep)?)
}

/// Vanilla interchange over unions of neuron groups: the best union on `train`, scored on
/// `test`. Returns (test IIA, neurons of the best union).
fn vanilla(
    model: &Arc<Model>,
    layer: usize,
    component: &str,
    train_set: &Dataset,
    test_set: &Dataset,
) -> vene::Result<(f64, Vec<usize>)> {
    let groups = H / GROUP;
    let partition: Vec<[usize; 2]> = (0..groups).map(|g| [g * GROUP, (g + 1) * GROUP]).collect();
    let iv = intervenable(
        model,
        json!({"layer": layer, "component": component, "intervention_type": "VanillaIntervention",
               "subspace_partition": partition}),
    )?;
    let with = |d: &Dataset, ids: &[usize]| {
        let mut d = d.clone();
        for e in d.examples.iter_mut() {
            e.subspaces = Some(vec![Some(ids.to_vec())]);
        }
        d
    };
    let mut best = (-1.0, Vec::new());
    for mask in 1..(1usize << groups) - 1 {
        let ids: Vec<usize> = (0..groups).filter(|g| mask & (1 << g) != 0).collect();
        let e = train::evaluate(&iv, &with(train_set, &ids), &Loss::CrossEntropy, 1024)?;
        if e.iia > best.0 {
            best = (e.iia, ids);
        }
    }
    let test = train::evaluate(&iv, &with(test_set, &best.1), &Loss::CrossEntropy, 1024)?;
    let neurons = best
        .1
        .iter()
        .flat_map(|g| g * GROUP..(g + 1) * GROUP)
        .collect();
    Ok((test.iia, neurons))
}

struct Trained {
    iia: f64,
    train_iia: f64,
    boundary: Option<f64>,
}

fn das(
    model: &Arc<Model>,
    rep: Value,
    train_set: &Dataset,
    test_set: &Dataset,
    opts: &TrainOptions,
) -> vene::Result<Trained> {
    let mut iv = intervenable(model, rep)?;
    let report = train::train(&mut iv, train_set, &Loss::CrossEntropy, opts, &mut |_| true)?;
    let test = train::evaluate(&iv, test_set, &Loss::CrossEntropy, 1024)?;
    let boundary = iv
        .intervention(0)
        .state()
        .into_iter()
        .find(|(k, _)| k == "intervention_boundaries")
        .map(|(_, t)| -> vene::Result<f64> {
            Ok(t.flatten_all()?.to_vec1::<f32>()?[0].clamp(1e-3, 1.0) as f64)
        })
        .transpose()?;
    Ok(Trained {
        iia: test.iia,
        train_iia: report.epochs.last().map_or(0.0, |e| e.iia),
        boundary,
    })
}

pub fn run(a: Args) -> vene::Result<()> {
    let t0 = Instant::now();
    // Progress goes to stderr; stdout holds only the tables (or the JSON object).
    let log = |s: &str| eprintln!("{s}");
    if a.das_dims == 0 || a.das_dims > H {
        return Err(vene::invalid!("--das-dims must be between 1 and {H}"));
    }
    let (n_train, n_test, epochs, net_steps) = if a.quick {
        (1500, 500, a.epochs.min(5), 800)
    } else {
        (3000, 1000, a.epochs, 1500)
    };
    log("training the network on all 1000 inputs (a, b, c in 0..=9) ...");
    let (model, task_acc) = train_network(a.seed, net_steps, &log)?;
    log(&format!("  task accuracy {task_acc:.4}"));
    let mut results = Vec::new();
    let mut rows: Vec<(String, String, Vec<f64>, String)> = Vec::new();
    let hyps = hypotheses()?;
    let mut data = Vec::new();
    for (hi, (name, cm, var)) in hyps.iter().enumerate() {
        let mut rng = Rng::new(a.seed.wrapping_mul(31).wrapping_add(hi as u64 + 1));
        let opts = CounterfactualOptions {
            variables: vec![var.to_string()],
            only_effective: true,
            ..Default::default()
        };
        let cfs = cm.counterfactual_dataset(n_train + n_test, &mut rng, &opts)?;
        let all = to_examples(&cfs);
        let (tr, te) = all.split(n_test as f64 / (n_train + n_test) as f64);
        data.push((*name, tr, te));
    }
    let names: Vec<&str> = data.iter().map(|d| d.0).collect();
    for (site, layer, component) in sites() {
        // 1. Vanilla over neuron groups.
        let mut iia = Vec::new();
        let mut detail = serde_json::Map::new();
        for (name, tr, te) in &data {
            let (x, neurons) = vanilla(&model, layer, component, tr, te)?;
            log(&format!(
                "{site:>8} vanilla   {name:>9}: IIA {x:.3} (neurons {neurons:?})"
            ));
            iia.push(x);
            detail.insert(name.to_string(), json!({"neurons": neurons}));
        }
        results.push(json!({"site": site, "layer": layer, "component": component,
            "method": "vanilla", "iia": names.iter().zip(&iia).map(|(n, x)| (n.to_string(), json!(x))).collect::<serde_json::Map<_,_>>(),
            "best_neurons": Value::Object(detail)}));
        rows.push((
            site.clone(),
            "vanilla (best neuron groups)".into(),
            iia,
            String::new(),
        ));
        // 2. DAS and 3. Boundless DAS.
        for method in ["das", "boundless_das"] {
            let mut iia = Vec::new();
            let mut extra = serde_json::Map::new();
            for (vi, (name, tr, te)) in data.iter().enumerate() {
                let seed = a.seed * 1000 + (layer as u64) * 10 + vi as u64;
                let (rep, opts) = if method == "das" {
                    (
                        json!({"layer": layer, "component": component,
                               "intervention_type": "RotatedSpaceIntervention",
                               "interchange_dim": a.das_dims,
                               "intervention_args": {"seed": seed}}),
                        TrainOptions {
                            epochs,
                            batch_size: 64,
                            lr: 1e-2,
                            seed,
                            ..Default::default()
                        },
                    )
                } else {
                    (
                        json!({"layer": layer, "component": component,
                               "intervention_type": "BoundlessRotatedSpaceIntervention",
                               "intervention_args": {"seed": seed}}),
                        TrainOptions {
                            epochs,
                            batch_size: 64,
                            lr: 1e-2,
                            lr_groups: vec![LrGroup::new("intervention_boundaries", 1e-2)],
                            boundary_penalty: BOUNDARY_PENALTY,
                            temperature: Some(TEMPERATURE),
                            seed,
                            ..Default::default()
                        },
                    )
                };
                let t = das(&model, rep, tr, te, &opts)?;
                let dims = t.boundary.map(|b| b * H as f64);
                log(&format!(
                    "{site:>8} {method:<13} {name:>9}: IIA {:.3} (train {:.3}){}",
                    t.iia,
                    t.train_iia,
                    dims.map(|d| format!(", boundary {d:.1} of {H} dims"))
                        .unwrap_or_default()
                ));
                iia.push(t.iia);
                let mut e = serde_json::Map::new();
                e.insert("train_iia".into(), json!(t.train_iia));
                if let Some(d) = dims {
                    e.insert("subspace_dims".into(), json!(d));
                }
                extra.insert(name.to_string(), Value::Object(e));
            }
            let label = if method == "das" {
                format!("DAS (rotation, {} dims)", a.das_dims)
            } else {
                "Boundless DAS".to_string()
            };
            results.push(json!({"site": site, "layer": layer, "component": component,
                "method": method, "iia": names.iter().zip(&iia).map(|(n, x)| (n.to_string(), json!(x))).collect::<serde_json::Map<_,_>>(),
                "detail": Value::Object(extra)}));
            rows.push((site.clone(), label, iia, String::new()));
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        let out = json!({
            "task": {"description": "a + b + c, a, b, c in 0..=9, one-hot inputs (30), 28 classes",
                     "network": format!("pyvene MLP classifier, {LAYERS} ReLU layers of {H} units"),
                     "inputs": 1000, "accuracy": task_acc},
            "variables": {"a+b": "S = a + b; O = S + c (interchange S)",
                          "max(a,b)": "M = max(a, b), N = min(a, b); O = M + N + c (interchange M; the control)"},
            "pairs": {"train": data[0].1.len(), "test": data[0].2.len(), "only_effective": true},
            "das_dims": a.das_dims,
            "epochs": epochs,
            "seed": a.seed,
            "results": results,
            "seconds": secs,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!();
    println!("task: a + b + c (a, b, c in 0..=9, one-hot), pyvene MLP {LAYERS} x {H} ReLU");
    println!("task accuracy: {task_acc:.3} on all 1000 inputs");
    println!(
        "IIA on {} held-out counterfactual pairs per variable (pairs whose predicted output changes)",
        data[0].2.len()
    );
    println!();
    print!("{:<10} {:<30}", "site", "method");
    for n in &names {
        print!(" {n:>9}");
    }
    println!();
    for (site, method, iia, _) in &rows {
        print!("{site:<10} {method:<30}");
        for x in iia {
            print!(" {x:>9.3}");
        }
        println!();
    }
    println!("\n({secs:.0} s)");
    Ok(())
}

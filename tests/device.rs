//! Choosing the device a model runs on, in every front end but the C API (tests/c/test_api.c)
//! and the bindings (bindings/*): `cpu` loads and runs, a bad name is refused naming the field
//! and the names accepted, and a build without the `cuda` feature says how to get CUDA.
//!
//! The `#[ignore]`d tests need a GPU: tests/gpu/run.sh runs them with
//! `VENE_TEST_DEVICE=cuda:0` on a `--features cuda` build; they compare the device's results
//! with the CPU's on the same fixtures.

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use vene::model::{device_name, parse_device, LoadOptions, WeightMode};
use vene::Model;

mod hf_fixtures;
use hf_fixtures::{copy_task, fixture};

fn err_of(name: &str) -> String {
    parse_device(name)
        .err()
        .unwrap_or_else(|| panic!("'{name}' should be refused"))
        .to_string()
}

#[test]
fn cpu_parses_and_reads_back() {
    let d = parse_device("cpu").unwrap();
    assert!(d.is_cpu());
    assert_eq!(device_name(&d), "cpu");
    assert_eq!(device_name(&parse_device(&device_name(&d)).unwrap()), "cpu");
}

#[test]
fn bad_names_are_refused_with_the_names_accepted() {
    for name in ["gpu", "CPU", "Cuda", " cpu", "cuda0", "metal", ""] {
        let e = err_of(name);
        assert!(
            e.contains(&format!("unknown device '{name}'")) && e.contains("cpu, cuda, cuda:N"),
            "{name}: {e}"
        );
    }
    for name in ["cuda:", "cuda:x", "cuda:-1", "cuda:0.5", "cuda: 1"] {
        let e = err_of(name);
        assert!(
            e.contains(&format!("device '{name}'")) && e.contains("not a CUDA device number"),
            "{name}: {e}"
        );
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_on_a_build_without_it_says_how_to_get_it() {
    for name in ["cuda", "cuda:0", "cuda:3"] {
        let e = err_of(name);
        assert!(
            e.contains(&format!("device '{name}'"))
                && e.contains("vene was built without CUDA; rebuild with --features cuda"),
            "{name}: {e}"
        );
    }
}

#[test]
fn a_model_loads_on_the_device_asked() {
    let options = LoadOptions {
        device: parse_device("cpu").unwrap(),
        ..Default::default()
    };
    let model = Model::load_with(fixture("llama"), &options).unwrap();
    assert!(model.device().is_cpu());
}

/// `model_options.device` in a request: cpu opens; a bad value names the field.
#[test]
fn request_model_options_choose_the_device() {
    let dir = fixture("llama");
    let open = |options: Value| {
        let req = json!({
            "model": dir.to_str().unwrap(),
            "model_options": options,
            "base": {"ids": [[1, 2, 3]]},
        });
        vene::request::open(&req, Path::new("."))
    };
    let iv = open(json!({"device": "cpu", "weights": "f32"})).unwrap();
    assert!(iv.model().device().is_cpu());
    let refused = |options: Value| {
        open(options)
            .err()
            .expect("a bad device is refused")
            .to_string()
    };
    let e = refused(json!({"device": "gpu"}));
    assert!(
        e.contains("request field 'model_options.device'") && e.contains("unknown device 'gpu'"),
        "{e}"
    );
    let e = refused(json!({"device": 0}));
    assert!(e.contains("'model_options.device' must be a string"), "{e}");
    let e = refused(json!({"devices": "cpu"}));
    assert!(
        e.contains("model_options.devices") && e.contains("weights, device"),
        "{e}"
    );
    #[cfg(not(feature = "cuda"))]
    {
        let e = refused(json!({"device": "cuda:0"}));
        assert!(
            e.contains("model_options.device") && e.contains("rebuild with --features cuda"),
            "{e}"
        );
    }
}

/// `vene --device`: a global flag of every subcommand.
#[test]
fn cli_device_flag() {
    let vene = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_vene"))
            .args(args)
            .output()
            .expect("vene runs")
    };
    let model = fixture("llama");
    let model = model.to_str().unwrap();
    let ok = vene(&["info", model, "--device", "cpu"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = vene(&["--device", "tpu", "info", model]);
    let e = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && e.contains("--device") && e.contains("unknown device 'tpu'"),
        "{e}"
    );
    #[cfg(not(feature = "cuda"))]
    {
        let bad = vene(&["info", model, "--device", "cuda:0"]);
        let e = String::from_utf8_lossy(&bad.stderr);
        assert!(
            !bad.status.success() && e.contains("rebuild with --features cuda"),
            "{e}"
        );
    }
}

// ---- GPU (tests/gpu/run.sh) ----

/// The GPU under test.
fn test_device() -> Device {
    let name = std::env::var("VENE_TEST_DEVICE")
        .expect("set VENE_TEST_DEVICE (e.g. cuda:0) to run the GPU tests");
    parse_device(&name).unwrap_or_else(|e| panic!("VENE_TEST_DEVICE: {e}"))
}

fn load_on(device: &Device, weights: WeightMode) -> Arc<Model> {
    let options = LoadOptions {
        device: device.clone(),
        weights,
        ..Default::default()
    };
    Arc::new(Model::load_with(fixture("llama"), &options).unwrap())
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let b = b
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// pyvene fixture requests on the llama fixture (heads, collection, padding, generation under
/// an intervention) with f32, f16 and Q8_0 weights: the GPU's outputs equal the CPU's (floats
/// within 1e-3, token ids exactly). tests/pyvene_oracle.rs checks every case against pyvene.
#[test]
#[ignore = "needs a GPU: tests/gpu/run.sh"]
fn gpu_runs_match_cpu() {
    let gpu = test_device();
    let cases = [
        "heads_hpos_llama_head_value_output",
        "collect_llama",
        "pad_right_llama",
        "gen_llama_steer_default",
    ];
    for case in cases {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/pyvene")
            .join(case)
            .join("request.json");
        for mode in [WeightMode::F32, WeightMode::F16, WeightMode::Q8_0] {
            let run = |device: &Device| {
                let mut file = vene::request::RequestFile::read(&path).unwrap();
                file.model_options.device = device.clone();
                file.model_options.weights = mode;
                let mut iv = file.open().unwrap();
                assert!(iv.model().device().same_device(device));
                file.request(&mut iv).unwrap().run(&iv).unwrap()
            };
            let (cpu, dev) = (run(&Device::Cpu), run(&gpu));
            assert_eq!(cpu.len(), dev.len(), "{case}");
            for ((name, c), (dname, d)) in cpu.iter().zip(&dev) {
                let what = format!("{case} {} {name}", mode.name());
                assert_eq!(name, dname, "{what}");
                if c.dtype().is_float() {
                    let diff = max_diff(c, d);
                    println!("{what}: max diff {diff:.2e}");
                    assert!(diff <= 1e-3, "{what}: {diff}");
                } else {
                    let ids = |t: &Tensor| -> Vec<i64> {
                        t.to_device(&Device::Cpu)
                            .and_then(|t| t.to_dtype(DType::I64)?.flatten_all()?.to_vec1())
                            .unwrap()
                    };
                    assert_eq!(ids(c), ids(d), "{what}");
                }
            }
        }
    }
}

/// DAS on the GPU (the frozen-linear backward, the rotation's parametrisation, AdamW): the
/// same losses as on the CPU, step by step, for f32, f16 and Q8_0 weights.
#[test]
#[ignore = "needs a GPU: tests/gpu/run.sh"]
fn gpu_das_training_matches_cpu() {
    use vene::config::IntervenableConfig;
    use vene::intervenable::IntervenableModel;
    use vene::train::{self, Loss, TrainOptions};
    let gpu = test_device();
    let data = copy_task();
    let cfg = r#"{"layer": 0, "component": "block_output", "intervention_type": "RotatedSpaceIntervention", "interchange_dim": 16}"#;
    for mode in [WeightMode::F32, WeightMode::F16, WeightMode::Q8_0] {
        let losses = |device: &Device| {
            let model = load_on(device, mode);
            let mut iv =
                IntervenableModel::new(model, IntervenableConfig::from_json_str(cfg).unwrap())
                    .unwrap();
            let opts = TrainOptions {
                epochs: 2,
                batch_size: 8,
                lr: 5e-2,
                seed: 1,
                ..Default::default()
            };
            let mut out = Vec::new();
            train::train(&mut iv, &data, &Loss::CrossEntropy, &opts, &mut |p| {
                out.push(p.loss);
                true
            })
            .unwrap();
            out
        };
        let (cpu, dev) = (losses(&Device::Cpu), losses(&gpu));
        println!("{}: cpu {cpu:?}\n{}: gpu {dev:?}", mode.name(), mode.name());
        assert_eq!(cpu.len(), dev.len());
        for (i, (c, d)) in cpu.iter().zip(&dev).enumerate() {
            assert!(
                (c - d).abs() <= 1e-3,
                "{} step {i}: cpu {c} gpu {d}",
                mode.name()
            );
        }
    }
}

//! SAE math against SAELens: every file in tests/fixtures/sae (written by
//! tests/oracle/make_sae_fixtures.py with sae-lens 6.54.12) loads through vene's loaders, and
//! vene's encode, reconstruction and error-term ablation equal SAELens's within 1e-5.

use candle_core::{Device, Tensor};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use vene::sae::ops::{apply_edit, Edit};
use vene::sae::{self, LoadHints};
use vene::{Component, Site};

const TOL: f32 = 1e-5;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sae")
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
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

fn site_of(v: &Value) -> Site {
    Site::new(
        v[0].as_u64().unwrap() as usize,
        Component::parse(v[1].as_str().unwrap()).unwrap(),
    )
}

/// Loads a case and checks encode, reconstruct and ablation; returns the largest difference.
fn check_case(name: &str) -> f32 {
    let dir = root().join(name);
    let case: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let path = match case.get("path").and_then(Value::as_str) {
        Some(p) => dir.join(p),
        None => dir.clone(),
    };
    let sae = sae::load(&path, &LoadHints::default(), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let want: HashMap<String, Tensor> =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(sae.hook_in.site, site_of(&case["site"]), "{name}: site");
    if let Some(out) = case.get("site_out") {
        assert_eq!(sae.hook_out.site, site_of(out), "{name}: output site");
    }
    let x = &want["x"];
    let acts = sae.encode(x).unwrap();
    let d_acts = max_diff(&acts, &want["acts"]);
    let recon = sae.reconstruct(x).unwrap();
    let d_recon = max_diff(&recon, &want["recon"]);
    let ablate: Vec<usize> = case["ablate"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let x_out = want.get("x_out").unwrap_or(x);
    let ablated = apply_edit(&sae, &Edit::ablate(&ablate), x, x_out).unwrap();
    let d_abl = max_diff(&ablated, &want["ablated"]);
    println!(
        "{name:28} {:9} {:>10} d_sae {:3}: acts {d_acts:.2e} recon {d_recon:.2e} ablated {d_abl:.2e}",
        sae.format,
        sae.architecture.name(),
        sae.d_sae
    );
    // The fixture must exercise the features it ablates.
    let on: f32 = acts
        .flatten_to(1)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap()
        .iter()
        .map(|r| ablate.iter().map(|&f| r[f]).sum::<f32>())
        .sum();
    assert!(on > 0.0, "{name}: the ablated features never fire");
    for (what, d) in [("acts", d_acts), ("recon", d_recon), ("ablated", d_abl)] {
        assert!(d < TOL, "{name}: {what} differs from SAELens by {d}");
    }
    d_acts.max(d_recon).max(d_abl)
}

#[test]
fn every_format_and_architecture_matches_saelens() {
    let cases = [
        "standard",
        "standard_no_bdec_in",
        "standard_norm_rescale",
        "standard_layer_norm",
        "jumprelu",
        "topk",
        "topk_rescale",
        "gated",
        "gemma_scope",
        "gemma_scope2_res",
        "gemma_scope2_transcoder",
    ];
    let worst = cases.iter().map(|c| check_case(c)).fold(0f32, f32::max);
    println!("{} cases, largest difference {worst:.2e}", cases.len());
}

#[test]
fn decode_alone_matches_reconstruct_without_normalization() {
    let sae = sae::load(root().join("standard"), &LoadHints::default(), &Device::Cpu).unwrap();
    let want: HashMap<String, Tensor> =
        candle_core::safetensors::load(root().join("standard/expected.safetensors"), &Device::Cpu)
            .unwrap();
    let out = sae.decode(&want["acts"]).unwrap();
    assert!(max_diff(&out, &want["recon"]) < TOL);
    // A normalizing SAE refuses to decode without its inputs.
    let n = sae::load(
        root().join("standard_layer_norm"),
        &LoadHints::default(),
        &Device::Cpu,
    )
    .unwrap();
    let e = n.decode(&Tensor::zeros((1, 32), candle_core::DType::F32, &Device::Cpu).unwrap());
    assert!(e.unwrap_err().to_string().contains("layer_norm"));
}

#[test]
fn the_hook_can_be_given_and_bad_hooks_are_named() {
    let p =
        root().join("gemma_scope/gemma-scope-2b-pt-res/layer_2/width_16k/average_l0_5/params.npz");
    let hints = LoadHints {
        hook: Some("blocks.5.hook_mlp_out".into()),
    };
    let s = sae::load(&p, &hints, &Device::Cpu).unwrap();
    assert_eq!(s.hook_in.site, Site::new(5, Component::MlpOutput));
    let hints = LoadHints {
        hook: Some("3.block_input".into()),
    };
    let s = sae::load(&p, &hints, &Device::Cpu).unwrap();
    assert_eq!(s.hook_in.site, Site::new(3, Component::BlockInput));
    assert_eq!(s.hook_in.name, "blocks.3.hook_resid_pre");
    let hints = LoadHints {
        hook: Some("blocks.3.hook_resid_mid".into()),
    };
    let e = sae::load(&p, &hints, &Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains("blocks.3.hook_resid_mid") && e.contains("hook_resid_post"),
        "{e}"
    );
}

#[test]
fn broken_files_give_errors_that_name_the_problem() {
    let tmp = std::env::temp_dir().join(format!("vene-sae-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    // A SAELens folder with an unknown hook.
    let src = root().join("standard");
    std::fs::copy(
        src.join("sae_weights.safetensors"),
        tmp.join("sae_weights.safetensors"),
    )
    .unwrap();
    let cfg = std::fs::read_to_string(src.join("cfg.json"))
        .unwrap()
        .replace("blocks.1.hook_resid_post", "blocks.1.ln2.hook_normalized");
    std::fs::write(tmp.join("cfg.json"), &cfg).unwrap();
    let e = sae::load(&tmp, &LoadHints::default(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ln2.hook_normalized"), "{e}");
    // An architecture vene does not read.
    let cfg2 = std::fs::read_to_string(src.join("cfg.json"))
        .unwrap()
        .replace("\"standard\"", "\"matching_pursuit\"");
    std::fs::write(tmp.join("cfg.json"), cfg2).unwrap();
    let e = sae::load(&tmp, &LoadHints::default(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("matching_pursuit") && e.contains("cfg.json"),
        "{e}"
    );
    // A wrong d_sae names the tensor.
    let cfg3 = std::fs::read_to_string(src.join("cfg.json"))
        .unwrap()
        .replace("\"d_sae\": 32", "\"d_sae\": 33");
    std::fs::write(tmp.join("cfg.json"), cfg3).unwrap();
    let e = sae::load(&tmp, &LoadHints::default(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("W_enc") && e.contains("33"), "{e}");
    // A folder with nothing in it.
    std::fs::remove_file(tmp.join("cfg.json")).unwrap();
    let e = sae::load(&tmp, &LoadHints::default(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not an SAE"), "{e}");
    // Features out of range.
    let s = sae::load(&src, &LoadHints::default(), &Device::Cpu).unwrap();
    let e = Edit::ablate(&[32]).check(&s).unwrap_err().to_string();
    assert!(e.contains("feature 32") && e.contains("32 features"), "{e}");
    let _ = std::fs::remove_dir_all(&tmp);
}

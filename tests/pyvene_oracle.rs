//! The pyvene oracle suite: every case under tests/fixtures/pyvene/<case>/ was computed by real
//! pyvene 0.1.8 (tests/oracle/make_pyvene_fixtures.py; the sd_* cases, whole state dicts, by
//! tests/oracle/make_pyvene_fixtures_state.py). Each case is replayed through the `vene`
//! binary, `vene run --request <case>/request.json --out <tmp>/out.safetensors`, and every tensor
//! of the case's expected.safetensors is compared with vene's output:
//!   *.ids         (generated token ids)    exact
//!   collected.*   (collected activations)  max abs diff <= 1e-5
//!   anything else (logits, hidden states)  max abs diff <= 1e-4
//! Shapes must match exactly. All cases run; the test fails listing every failing case with its
//! max diffs (and fails if no case is found). VENE_ORACLE_FILTER=<substring> runs only the cases
//! whose name contains it; run with `--nocapture` to see every case's max diffs.
//! VENE_TEST_DEVICE=cuda:0 replays every case on that GPU (`vene run --device`), floats to 1e-3.

use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The device the cases run on: `VENE_TEST_DEVICE` (`cuda:0` in tests/gpu/run.sh, passed as
/// `vene run --device`), else the CPU.
fn test_device() -> Option<String> {
    std::env::var("VENE_TEST_DEVICE")
        .ok()
        .filter(|d| d != "cpu")
}

/// `None` means the tensor must match exactly. On a GPU every float is held to 1e-3.
fn tolerance(name: &str) -> Option<f64> {
    if name.ends_with(".ids") {
        None
    } else if test_device().is_some() {
        Some(1e-3)
    } else if name.starts_with("collected.") {
        Some(1e-5)
    } else {
        Some(1e-4)
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f64> {
    let a = a.to_dtype(DType::F64)?.flatten_all()?;
    let b = b.to_dtype(DType::F64)?.flatten_all()?;
    let d: Vec<f64> = (a - b)?.abs()?.to_vec1()?;
    // NaN anywhere makes the comparison fail.
    Ok(d.into_iter().fold(0.0, |m, x| {
        if x.is_nan() || m.is_nan() {
            f64::NAN
        } else {
            m.max(x)
        }
    }))
}

/// Compares one expected tensor; Ok(summary) when it passes, Err(summary) when it does not.
fn compare(name: &str, want: &Tensor, got: Option<&Tensor>) -> Result<String, String> {
    let Some(got) = got else {
        return Err(format!("{name}: missing from vene's output"));
    };
    if want.dims() != got.dims() {
        return Err(format!(
            "{name}: shape {:?}, expected {:?}",
            got.dims(),
            want.dims()
        ));
    }
    match tolerance(name) {
        None => {
            let w: Vec<i64> = want
                .to_dtype(DType::I64)
                .and_then(|t| t.flatten_all()?.to_vec1())
                .map_err(|e| format!("{name}: {e}"))?;
            let g: Vec<i64> = got
                .to_dtype(DType::I64)
                .and_then(|t| t.flatten_all()?.to_vec1())
                .map_err(|e| format!("{name}: {e}"))?;
            if w == g {
                Ok(format!("{name} exact"))
            } else {
                Err(format!("{name}: got {g:?}, expected {w:?}"))
            }
        }
        Some(tol) => {
            let d = max_abs_diff(want, got).map_err(|e| format!("{name}: {e}"))?;
            if d <= tol {
                Ok(format!("{name} {d:.1e}"))
            } else {
                Err(format!("{name}: max diff {d:.3e} > {tol:.0e}"))
            }
        }
    }
}

/// Runs one case; Ok(per-tensor summaries) or Err(everything that went wrong).
fn run_case(vene: &Path, case_dir: &Path, tmp: &Path) -> Result<Vec<String>, Vec<String>> {
    let out = tmp.join("out.safetensors");
    let _ = std::fs::remove_file(&out);
    std::fs::create_dir_all(tmp).map_err(|e| vec![format!("temp dir: {e}")])?;
    let output = Command::new(vene)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("run")
        .arg("--request")
        .arg(case_dir.join("request.json"))
        .arg("--out")
        .arg(&out)
        .args(
            test_device()
                .map(|d| ["--device".to_string(), d])
                .into_iter()
                .flatten(),
        )
        .output()
        .map_err(|e| vec![format!("could not start vene: {e}")])?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr = stderr.trim();
        let short: String = stderr.chars().take(400).collect();
        return Err(vec![format!(
            "vene run failed ({}): {short}",
            output.status
        )]);
    }
    let expected =
        candle_core::safetensors::load(case_dir.join("expected.safetensors"), &Device::Cpu)
            .map_err(|e| vec![format!("expected.safetensors: {e}")])?;
    let got: HashMap<String, Tensor> = candle_core::safetensors::load(&out, &Device::Cpu)
        .map_err(|e| vec![format!("vene's output: {e}")])?;
    let mut names: Vec<&String> = expected.keys().collect();
    names.sort();
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for name in names {
        match compare(name, &expected[name], got.get(name)) {
            Ok(s) => ok.push(s),
            Err(s) => bad.push(s),
        }
    }
    if bad.is_empty() {
        Ok(ok)
    } else {
        bad.extend(ok);
        Err(bad)
    }
}

fn case_dirs(root: &Path) -> Vec<PathBuf> {
    let filter = std::env::var("VENE_ORACLE_FILTER").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("request.json").is_file())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().contains(filter.as_str()))
                })
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

#[test]
fn pyvene_oracle_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pyvene");
    let vene = PathBuf::from(env!("CARGO_BIN_EXE_vene"));
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pyvene_oracle");
    let cases = case_dirs(&root);
    assert!(
        !cases.is_empty(),
        "no oracle cases found under {} (filter: {:?})",
        root.display(),
        std::env::var("VENE_ORACLE_FILTER").ok()
    );
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        match run_case(&vene, dir, &tmp.join(&name)) {
            Ok(lines) => println!("PASS {name}: {}", lines.join(", ")),
            Err(lines) => {
                println!("FAIL {name}: {}", lines.join("; "));
                failures.push(format!("{name}:\n    {}", lines.join("\n    ")));
            }
        }
    }
    println!(
        "{} of {} oracle cases pass",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} pyvene oracle cases fail:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}

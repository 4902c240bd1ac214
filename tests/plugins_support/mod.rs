//! Builds the example plugins (plugins/) and the test plugins (tests/fixtures/plugins/) once
//! per test binary, into target/plugins/. Each build is a separate cargo project or one gcc /
//! clang call; a missing toolchain fails the test with the command that installs it
//! (tests/run_all.sh installs everything).

#![allow(dead_code)]

use candle_core::Tensor;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where every plugin build goes.
pub fn out_dir() -> PathBuf {
    root().join("target/plugins")
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/plugins").join(name)
}

pub fn model_dir() -> PathBuf {
    root().join("tests/fixtures/hf/gpt2")
}

fn run(cmd: &mut Command, what: &str, hint: &str) {
    for k in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(k);
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("{what}: cannot run {:?}: {e}. {hint}", cmd.get_program()),
    };
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}\n{}\n{hint}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

fn cargo_build(example: &str, wasm: bool) {
    let dir = root().join("plugins/examples").join(example);
    let mut cmd = Command::new(cargo());
    cmd.current_dir(&dir)
        .args(["build", "--release", "--quiet", "--target-dir"])
        .arg(out_dir());
    if wasm {
        cmd.args(["--target", "wasm32-unknown-unknown"]);
    }
    run(
        &mut cmd,
        &format!("building plugins/examples/{example}"),
        if wasm {
            "Install the target with: rustup target add wasm32-unknown-unknown"
        } else {
            ""
        },
    );
}

fn dylib(name: &str) -> String {
    format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// plugins/examples/native-rust: plugin `rust_example` (types add, scale).
pub fn native_rust() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        cargo_build("native-rust", false);
        out_dir().join("release").join(dylib("rust_example"))
    })
    .clone()
}

/// plugins/examples/wasm-rust: `wasm/add_rust`.
pub fn wasm_rust() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        cargo_build("wasm-rust", true);
        out_dir().join("wasm32-unknown-unknown/release/add_rust.wasm")
    })
    .clone()
}

/// Builds into a temporary name, then renames, so concurrent builds never see half a file.
fn c_build(compiler: &str, args: &[&str], src: &Path, out: &Path, hint: &str) {
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let mut cmd = Command::new(compiler);
    cmd.args(args)
        .arg("-I")
        .arg(root().join("include"))
        .arg("-o")
        .arg(&tmp)
        .arg(src);
    run(&mut cmd, &format!("{compiler} {}", src.display()), hint);
    std::fs::rename(&tmp, out).unwrap();
}

const GCC_HINT: &str = "Install gcc (apt-get install -y gcc) or run tests/run_all.sh";
const CLANG_HINT: &str =
    "Install clang and lld (apt-get install -y clang lld) or run tests/run_all.sh";

/// plugins/examples/native-c: plugin `c_example` (types add, clamp).
pub fn native_c() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let out = out_dir().join("c").join(dylib("c_example"));
        c_build(
            "gcc",
            &["-O2", "-std=c11", "-Wall", "-Werror", "-shared", "-fPIC"],
            &root().join("plugins/examples/native-c/example_c.c"),
            &out,
            GCC_HINT,
        );
        out
    })
    .clone()
}

/// plugins/examples/wasm-c: `wasm/scale_c`.
pub fn wasm_c() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let out = out_dir().join("c/scale_c.wasm");
        c_build(
            "clang",
            &[
                "--target=wasm32",
                "-O3",
                "-nostdlib",
                "-fno-builtin",
                "-Wall",
                "-Werror",
                "-Wl,--no-entry",
            ],
            &root().join("plugins/examples/wasm-c/scale_c.c"),
            &out,
            CLANG_HINT,
        );
        out
    })
    .clone()
}

/// plugins/examples/wat/add_wat.wat: `wasm/add_wat` (no toolchain needed).
pub fn wat_example() -> PathBuf {
    root().join("plugins/examples/wat/add_wat.wat")
}

/// tests/fixtures/plugins/bad_native.c built with `-D<variant>`.
pub fn bad_native(variant: &str) -> PathBuf {
    let out = out_dir()
        .join("c")
        .join(dylib(&format!("bad_{}", variant.to_lowercase())));
    let define = format!("-D{variant}");
    c_build(
        "gcc",
        &["-O1", "-std=c11", "-shared", "-fPIC", &define],
        &fixture("bad_native.c"),
        &out,
        GCC_HINT,
    );
    out
}

/// Opens and runs a full `vene run` request; relative paths resolve against the repo root.
pub fn run_request(req: &Value) -> vene::Result<Vec<(String, Tensor)>> {
    let dir = root();
    let mut iv = vene::request::open(req, &dir)?;
    vene::request::run(&mut iv, req, &dir)
}

/// The tensor named `name` as a flat f32 vector.
pub fn output(out: &[(String, Tensor)], name: &str) -> Vec<f32> {
    out.iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no output '{name}'"))
        .1
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Asserts two runs gave bit-for-bit equal outputs (same names, same values).
pub fn assert_same(a: &[(String, Tensor)], b: &[(String, Tensor)], what: &str) {
    let names = |o: &[(String, Tensor)]| o.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(names(a), names(b), "{what}: output names differ");
    for (k, _) in a {
        let (x, y) = (output(a, k), output(b, k));
        assert_eq!(x.len(), y.len(), "{what}: {k} sizes differ");
        let bad = x.iter().zip(&y).position(|(p, q)| p != q);
        assert!(
            bad.is_none(),
            "{what}: {k} differs at {}: {} vs {}",
            bad.unwrap(),
            x[bad.unwrap()],
            y[bad.unwrap()]
        );
    }
}

/// A request on the tiny GPT-2 fixture: one representation at layer 0 block_output,
/// position 3 of the base taking position 3 of the source.
pub fn request(rep: Value) -> Value {
    serde_json::json!({
        "model": model_dir().to_str().unwrap(),
        "config": {"representations": [rep]},
        "base": {"input_ids": [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]},
        "sources": [{"input_ids": [[11, 12, 13, 14, 15], [16, 17, 18, 19, 20]]}],
        "unit_locations": {"sources->base": 3},
        "output_original_output": true
    })
}

/// Asserts an error message names every part (set VENE_SHOW_ERRORS=1 to print them).
pub fn assert_contains(msg: &str, parts: &[&str]) {
    if std::env::var_os("VENE_SHOW_ERRORS").is_some() {
        eprintln!("error message: {msg}");
    }
    for p in parts {
        assert!(msg.contains(p), "error '{msg}' should mention '{p}'");
    }
}

/// The error of a request that must fail.
pub fn request_err(req: &Value) -> String {
    match run_request(req) {
        Ok(_) => panic!("request should have failed: {req}"),
        Err(e) => e.to_string(),
    }
}

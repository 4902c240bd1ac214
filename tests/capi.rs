//! The C API from C and C++: compiles the programs under `tests/c/` against the library that
//! `cargo test --release` builds (target/release/libvene.so and libvene.a) and runs them,
//! natively and under valgrind memcheck (zero errors, zero definite or indirect leaks).
//!
//! gcc, g++ and valgrind are required: when one is missing these tests fail with a message,
//! they never skip. The tokenizer and SmolLM2 thread tests use the default model, fetched into
//! the cache (`vene::fetch::default_model`) when needed.

mod plugins_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const CHAT: &str =
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
/// SmolLM2's ids for CHAT (Hugging Face's tokenizer; tests/fixtures/smollm2/reference.json).
const CHAT_IDS: &str = "1,4093,198,1780,314,260,3575,282,4649,47,2,198,1,520,9531,198";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// target/<profile>, where cargo put the cdylib and staticlib next to this test's deps/.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf();
    let so = dir.join(if cfg!(target_os = "macos") {
        "libvene.dylib"
    } else {
        "libvene.so"
    });
    assert!(
        so.exists(),
        "{} is missing: the C API tests need the cdylib (cargo test --release builds it)",
        so.display()
    );
    dir
}

fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("capi");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn require(tool: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{tool} not found: the C API tests need gcc, g++ and valgrind (apt-get install build-essential valgrind)"
    );
}

fn show(what: &str, o: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Compiles one test program; `cpp` selects g++ -std=c++17, otherwise gcc -std=c99. Links the
/// shared library (with an rpath) or, with `static_lib`, libvene.a.
fn compile(src: &str, name: &str, cpp: bool, static_lib: bool) -> PathBuf {
    let (cc, std) = if cpp {
        ("g++", "-std=c++17")
    } else {
        ("gcc", "-std=c99")
    };
    require(cc);
    let lib = lib_dir();
    let exe = out_dir().join(name);
    let mut cmd = Command::new(cc);
    cmd.args([std, "-Wall", "-Wextra", "-Werror", "-pedantic", "-g", "-O1"])
        .arg(format!("-I{}", root().join("include").display()))
        .arg(format!("-I{}", root().join("tests/c").display()))
        .arg(root().join(src))
        .arg("-o")
        .arg(&exe);
    if static_lib {
        cmd.arg(lib.join("libvene.a"))
            .args(["-lm", "-lpthread", "-ldl", "-lgcc_s"]);
    } else {
        cmd.arg(format!("-L{}", lib.display()))
            .arg("-lvene")
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .args(["-lm", "-lpthread"]);
    }
    let o = cmd.output().unwrap_or_else(|e| panic!("{cc}: {e}"));
    assert!(
        o.status.success(),
        "{}",
        show(&format!("compiling {src}"), &o)
    );
    exe
}

/// Runs a program and requires success; returns its stdout.
fn run(exe: &Path, args: &[&str]) -> String {
    let o = Command::new(exe)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
    assert!(
        o.status.success(),
        "{}",
        show(&exe.display().to_string(), &o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs a program under valgrind memcheck: any invalid access, use of uninitialised memory or
/// definite/indirect leak fails the test. Returns valgrind's summary lines.
fn valgrind(exe: &Path, args: &[&str]) -> String {
    require("valgrind");
    let o = Command::new("valgrind")
        .args([
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect",
            "--show-leak-kinds=definite,indirect",
            "--track-origins=yes",
        ])
        .arg(exe)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("valgrind: {e}"));
    let text = show(&format!("valgrind {}", exe.display()), &o);
    assert!(o.status.success(), "{text}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("ERROR SUMMARY: 0 errors"),
        "valgrind reported errors:\n{text}"
    );
    let summary: Vec<&str> = err
        .lines()
        .filter(|l| {
            l.contains("ERROR SUMMARY")
                || l.contains("definitely lost")
                || l.contains("indirectly lost")
                || l.contains("possibly lost")
                || l.contains("total heap usage")
        })
        .collect();
    let s = summary.join("\n");
    println!("{s}");
    s
}

fn llama() -> String {
    root().join("tests/fixtures/hf/llama").display().to_string()
}

fn smollm2() -> String {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        vene::fetch::default_model(false)
            .unwrap_or_else(|e| panic!("cannot get the default model: {e}"))
    })
    .display()
    .to_string()
}

#[test]
fn api_suite() {
    let exe = compile("tests/c/test_api.c", "test_api", false, false);
    let out = run(&exe, &[&llama()]);
    assert!(out.contains("all checks passed"), "{out}");
}

#[test]
fn api_suite_under_valgrind() {
    let exe = compile("tests/c/test_api.c", "test_api_vg", false, false);
    valgrind(&exe, &[&llama()]);
}

#[test]
fn api_suite_against_the_static_library() {
    let exe = compile("tests/c/test_api.c", "test_api_static", false, true);
    let out = run(&exe, &[&llama()]);
    assert!(out.contains("all checks passed"), "{out}");
}

#[test]
fn header_is_valid_cpp17_with_frozen_layouts() {
    let exe = compile("tests/c/header_cpp.cpp", "header_cpp", true, false);
    let out = run(&exe, &[]);
    assert!(out.contains("valid C++17"), "{out}");
}

#[test]
fn threads_equal_serial_runs() {
    let exe = compile("tests/c/test_threads.c", "test_threads", false, false);
    let out = run(&exe, &[&llama(), "16"]);
    assert!(out.contains("16 threads"), "{out}");
}

#[test]
fn threads_under_valgrind() {
    let exe = compile("tests/c/test_threads.c", "test_threads_vg", false, false);
    valgrind(&exe, &[&llama(), "4"]);
}

#[test]
fn threads_on_smollm2() {
    let exe = compile("tests/c/test_threads.c", "test_threads_smol", false, false);
    let out = run(&exe, &[&smollm2(), "4"]);
    assert!(out.contains("4 threads"), "{out}");
}

#[test]
fn tokenize_smollm2_under_valgrind() {
    let exe = compile("tests/c/test_tokenize.c", "test_tokenize", false, false);
    let args = [
        smollm2(),
        CHAT.to_string(),
        CHAT_IDS.to_string(),
        CHAT.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&exe, &args);
    assert!(out.contains("16 tokens"), "{out}");
    valgrind(&exe, &args);
}

fn qwen2() -> String {
    root().join("tests/fixtures/hf/qwen2").display().to_string()
}

/// An empty scratch directory under the test's tmp dir.
fn scratch(name: &str) -> String {
    let d = out_dir().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d.display().to_string()
}

#[test]
fn training_and_knobs() {
    let exe = compile("tests/c/test_train.c", "test_train", false, false);
    let out = run(&exe, &[&llama(), &qwen2(), &scratch("train")]);
    assert!(out.contains("test_train: eval loss"), "{out}");
}

#[test]
fn training_and_knobs_under_valgrind() {
    let exe = compile("tests/c/test_train.c", "test_train_vg", false, false);
    valgrind(&exe, &[&llama(), &qwen2(), &scratch("train_vg")]);
}

// === C++ bindings (bindings/cpp) ===

fn compile_cpp_bindings(name: &str) -> PathBuf {
    require("g++");
    let lib = lib_dir();
    let exe = out_dir().join(name);
    let o = Command::new("g++")
        .args([
            "-std=c++17",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-g",
            "-O1",
        ])
        .arg(format!("-I{}", root().join("include").display()))
        .arg(format!(
            "-I{}",
            root().join("bindings/cpp/include").display()
        ))
        .arg(root().join("bindings/cpp/tests/test_vene.cpp"))
        .arg(root().join("bindings/cpp/tests/second_tu.cpp"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg("-lvene")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .output()
        .expect("g++");
    assert!(
        o.status.success(),
        "{}",
        show("compiling the C++ binding tests", &o)
    );
    exe
}

#[test]
fn cpp_bindings() {
    let exe = compile_cpp_bindings("test_vene");
    let out = run(&exe, &[&llama(), &smollm2(), &scratch("cpp")]);
    assert!(out.contains("all C++ binding checks passed"), "{out}");
    assert!(out.contains("tokenized"), "{out}");
}

#[test]
fn cpp_bindings_under_valgrind() {
    let exe = compile_cpp_bindings("test_vene_vg");
    valgrind(&exe, &[&llama(), "-", &scratch("cpp_vg")]);
}

fn cmd(program: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let o = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let what = format!("{program} {}", args.join(" "));
    assert!(o.status.success(), "{}", show(&what, &o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The CMake project of the bindings: configure, build, ctest (in-tree find_package), install,
/// then a separate consumer project against the installed package, and a C program compiled
/// with the installed pkg-config file.
#[test]
fn cpp_cmake_package_and_pkg_config() {
    require("cmake");
    require("pkg-config");
    let lib = lib_dir();
    let base = out_dir().join("cmake");
    let _ = std::fs::remove_dir_all(&base);
    let (build, prefix, consumer) = (
        base.join("build"),
        base.join("prefix"),
        base.join("consumer"),
    );
    let s = |p: &Path| p.display().to_string();
    cmd(
        "cmake",
        &[
            "-S",
            &s(&root().join("bindings/cpp")),
            "-B",
            &s(&build),
            &format!("-DCMAKE_INSTALL_PREFIX={}", s(&prefix)),
            &format!("-DVENE_LIBRARY_DIR={}", s(&lib)),
        ],
        &[],
    );
    cmd("cmake", &["--build", &s(&build)], &[]);
    let t = cmd(
        "ctest",
        &["--test-dir", &s(&build), "--output-on-failure"],
        &[],
    );
    assert!(t.contains("100% tests passed"), "{t}");
    cmd("cmake", &["--install", &s(&build)], &[]);
    for f in [
        "include/vene.h",
        "include/vene_plugin.h",
        "include/vene/vene.hpp",
        "lib/libvene.so",
        "lib/libvene.a",
        "lib/cmake/vene/veneConfig.cmake",
        "lib/pkgconfig/vene.pc",
    ] {
        assert!(prefix.join(f).exists(), "not installed: {f}");
    }
    // A consumer that only knows the install prefix.
    cmd(
        "cmake",
        &[
            "-S",
            &s(&root().join("bindings/cpp/examples")),
            "-B",
            &s(&consumer),
            &format!("-DCMAKE_PREFIX_PATH={}", s(&prefix)),
        ],
        &[],
    );
    cmd("cmake", &["--build", &s(&consumer)], &[]);
    let out = cmd(&s(&consumer.join("patching")), &[&smollm2()], &[]);
    assert!(out.contains("base answer: ' Paris'"), "{out}");
    assert!(
        out.contains("' Rome'"),
        "patching late layers should give the source's answer: {out}"
    );
    // pkg-config.
    let pc_path = s(&prefix.join("lib/pkgconfig"));
    let env = [("PKG_CONFIG_PATH", pc_path.as_str())];
    let cflags = cmd("pkg-config", &["--cflags", "vene"], &env);
    let libs = cmd("pkg-config", &["--libs", "vene"], &env);
    let mut args: Vec<String> = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
        .iter()
        .map(|x| x.to_string())
        .collect();
    args.extend(cflags.split_whitespace().map(str::to_string));
    args.push(format!("-I{}", s(&root().join("tests/c"))));
    args.push(s(&root().join("tests/c/test_api.c")));
    // Libraries after the source: the linker resolves left to right.
    args.extend(libs.split_whitespace().map(str::to_string));
    args.extend([
        "-lm".to_string(),
        "-o".to_string(),
        s(&base.join("test_api_pc")),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cmd("gcc", &args, &[]);
    // No LD_LIBRARY_PATH: vene.pc's rpath finds the installed libvene.so.
    let out = cmd(&s(&base.join("test_api_pc")), &[&llama()], &[]);
    assert!(out.contains("all checks passed"), "{out}");
}

// === Conveniences: positions, element counts, top-k, log sink, hints (tests/c/test_helpers.c) ===

fn log_wat() -> String {
    root()
        .join("tests/fixtures/plugins/log_wat.wat")
        .display()
        .to_string()
}

#[test]
fn helpers_top_k_locations_log_sink() {
    let exe = compile("tests/c/test_helpers.c", "test_helpers", false, false);
    let native = plugins_support::native_c().display().to_string();
    let out = run(&exe, &[&llama(), &native, &log_wat()]);
    assert!(out.contains("test_helpers: all checks passed"), "{out}");
}

#[test]
fn helpers_under_valgrind() {
    let exe = compile("tests/c/test_helpers.c", "test_helpers_vg", false, false);
    // No WASM under valgrind: memcheck reports false positives inside wasmtime's compiler.
    let native = plugins_support::native_c().display().to_string();
    valgrind(&exe, &[&llama(), &native, "-"]);
}

// === Plain runs and one request through every front end ===

fn requests(name: &str) -> String {
    root()
        .join("tests/fixtures/requests")
        .join(name)
        .display()
        .to_string()
}

/// `vene run --json` on a request file: (stdout as JSON, or the stderr message on failure).
fn vene_run_json(request: &str) -> Result<serde_json::Value, String> {
    let o = Command::new(env!("CARGO_BIN_EXE_vene"))
        .args(["run", "--request", request, "--json"])
        .output()
        .expect("vene run");
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).trim().to_string());
    }
    Ok(serde_json::from_slice(&o.stdout).expect("vene run --json prints JSON"))
}

/// A C program with an empty config: its logits are Model::forward's bit for bit; its sampled
/// generation gives `vene run`'s ids, and top_p = 1.5 `vene run`'s message. Also under valgrind.
#[test]
fn plain_runs_equal_the_model_and_vene_run() {
    use vene::{ForwardOptions, Input, Model, NoHooks};
    let exe = compile("tests/c/test_plain.c", "test_plain", false, false);
    let bin = out_dir().join("plain_logits.bin");
    let out = run(&exe, &[&llama(), bin.to_str().unwrap()]);
    assert!(out.contains("test_plain: all checks passed"), "{out}");

    let m = Model::load(llama()).unwrap();
    let ids = candle_core::Tensor::new(
        &[[1u32, 2, 3, 4, 5], [6, 7, 8, 9, 10]],
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let want: Vec<f32> = m
        .forward(
            &Input::from_ids(ids),
            &mut NoHooks,
            &ForwardOptions::default(),
        )
        .unwrap()
        .logits
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let got: Vec<f32> = std::fs::read(&bin)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(
        got.iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "plain C run differs from Model::forward"
    );

    let c_ids: Vec<i64> = out
        .lines()
        .find_map(|l| l.strip_prefix("ids:"))
        .expect("ids line")
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    let v = vene_run_json(&requests("plain_generate.json")).unwrap();
    let cli: Vec<i64> =
        serde_json::from_value(v["generated"]["intervened"][0]["ids"].clone()).unwrap();
    assert_eq!(c_ids[4..], cli[..], "C and vene run generate different ids");

    let c_msg = out
        .lines()
        .find_map(|l| l.strip_prefix("top_p error: "))
        .expect("top_p error line");
    let cli_msg = vene_run_json(&requests("bad_top_p.json")).unwrap_err();
    // The same message; the C API names the entry point first, as for every error.
    assert_eq!(
        format!(
            "error: vene_intervenable_generate: {}",
            cli_msg.trim_start_matches("error: ")
        ),
        format!("error: {c_msg}")
    );
    assert!(
        cli_msg.contains("top_p") && cli_msg.contains("1.5"),
        "{cli_msg}"
    );

    valgrind(
        &exe,
        &[&llama(), out_dir().join("plain_vg.bin").to_str().unwrap()],
    );
}

/// The SAE functions (tests/c/test_sae.c) on the tiny gpt2 with the SAELens SAE of
/// tests/fixtures/sae/gpt2_resid: feature activations and the ablation sweep equal SAELens's
/// (tests/oracle/make_sae_fixtures.py), natively and under valgrind.
#[test]
fn sae_suite_matches_saelens() {
    let gpt2 = root().join("tests/fixtures/hf/gpt2").display().to_string();
    let dir = root().join("tests/fixtures/sae/gpt2_resid");
    let exe = compile("tests/c/test_sae.c", "test_sae", false, false);
    let out = run(&exe, &[&gpt2, &dir.display().to_string()]);
    assert!(out.contains("all checks passed"), "{out}");
    let want: std::collections::HashMap<String, candle_core::Tensor> =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    use candle_core::IndexOp;
    let acts: Vec<f32> = want["acts"].i((0, 4)).unwrap().to_vec1().unwrap();
    let sweep: Vec<f32> = want["sweep"].to_vec1().unwrap();
    let mut checked = 0;
    for line in out.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let (expected, f) = match parts[..] {
            ["acts", f, _] => (&acts, f),
            ["effect", f, _] => (&sweep, f),
            _ => continue,
        };
        let f: usize = f.parse().unwrap();
        let got: f32 = parts[2].parse().unwrap();
        assert!(
            (got - expected[f]).abs() < 1e-4,
            "{line}: SAELens gives {}",
            expected[f]
        );
        checked += 1;
    }
    assert_eq!(checked, 128);
    valgrind(&exe, &[&gpt2, &dir.display().to_string()]);
}

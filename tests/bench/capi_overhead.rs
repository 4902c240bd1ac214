//! Overhead of one run through the C API and each binding against the Rust API, on the same
//! request, side by side: the Rust API runs in this process, and the C, C++ and Go programs
//! (tests/bench/capi_bench.c, capi_bench.cpp, capi_go/) run as child processes that time one
//! run per "run" line on stdin; the C API is also called from this process (same weights and
//! thread pool as the Rust side). Runs are interleaved one by one, in a new random order every
//! round, each language reports its own timing (the pipes cost nothing), and the overhead is
//! the median over rounds of a language's time over
//! the Rust time of the same round, so drift in machine speed cancels out. Each run reports
//! wall-clock time and process CPU time; on a busy machine CPU time is the steadier measure of
//! work done (with `--threads 1` it is exactly the forward's work plus the API's).
//!
//! ```text
//! cargo bench --bench capi -- [--model PATH] [--rounds N] [--logits all|last|both]
//!     [--threads N]
//! ```
//!
//! One run, in every language: build the typed request (base and source token ids, one
//! location), run it, read the "intervened.logits" values (the C API and the bindings copy
//! them out of the engine; the Go binding copies them again into Go memory), free the
//! result. The Rust side calls `IntervenableModel::forward` and reads the logits tensor
//! without copying. Default: SmolLM2-135M, batch 1, 16 tokens, a vanilla intervention at
//! layer 15. The Julia binding is not measured (no julia on the machines this runs on).
//! This is a benchmark, not a test: it checks nothing.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;
use vene::config::IntervenableConfig;
use vene::intervenable::{IntervenableModel, Request};
use vene::location::{Location, Units};
use vene::{capi, Input, LogitPositions, Model};

/// A vanilla intervention on the residual stream after `layer`.
fn config(layer: usize) -> String {
    format!(
        r#"[{{"layer": {layer}, "component": "block_output", "intervention_type": "vanilla"}}]"#
    )
}
const BASE: [u32; 16] = [
    1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198,
];
const POS: usize = 8;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn sh(cmd: &mut Command, what: &str) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        o.status.success(),
        "{what} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Builds the three programs; returns their paths.
fn build(out: &Path) -> Vec<(&'static str, PathBuf)> {
    let lib = lib_dir();
    assert!(
        lib.join("libvene.so").exists(),
        "build the cdylib first (cargo build --release)"
    );
    let inc = |p: &str| format!("-I{}", root().join(p).display());
    let link = [
        format!("-L{}", lib.display()),
        "-lvene".to_string(),
        format!("-Wl,-rpath,{}", lib.display()),
    ];
    let c = out.join("capi_bench_c");
    sh(
        Command::new("gcc")
            .args(["-std=c99", "-O2", &inc("include")])
            .arg(root().join("tests/bench/capi_bench.c"))
            .arg("-o")
            .arg(&c)
            .args(&link),
        "gcc capi_bench.c",
    );
    let cpp = out.join("capi_bench_cpp");
    sh(
        Command::new("g++")
            .args([
                "-std=c++17",
                "-O2",
                &inc("include"),
                &inc("bindings/cpp/include"),
            ])
            .arg(root().join("tests/bench/capi_bench.cpp"))
            .arg("-o")
            .arg(&cpp)
            .args(&link),
        "g++ capi_bench.cpp",
    );
    let go = out.join("capi_bench_go");
    sh(
        Command::new("go")
            .current_dir(root().join("tests/bench/capi_go"))
            .args(["build", "-o"])
            .arg(&go)
            .arg(".")
            .env("CGO_LDFLAGS", link.join(" ")),
        "go build capi_go",
    );
    vec![
        ("C API, separate process", c),
        ("C++ binding", cpp),
        ("Go binding", go),
    ]
}

struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Server {
    fn start(exe: &Path, args: &[String]) -> Server {
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "{} did not start", exe.display());
        Server {
            child,
            stdin,
            stdout,
        }
    }
    /// One run: (wall-clock µs, process CPU µs) as the program measured them.
    fn run(&mut self) -> (f64, f64) {
        writeln!(self.stdin, "run").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: Vec<f64> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap_or_else(|_| panic!("bad reply {line:?}")))
            .collect();
        assert_eq!(v.len(), 2, "bad reply {line:?}");
        (v[0], v[1])
    }
    fn stop(mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn csv(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// One (model, logits) configuration: returns per-language medians in microseconds.
fn measure(
    model_path: &Path,
    cfg: &str,
    vocab: usize,
    logits: &str,
    rounds: usize,
    progs: &[(&'static str, PathBuf)],
) -> Vec<Row> {
    let base: Vec<u32> = BASE.iter().map(|&t| t % vocab as u32).collect();
    let mut source = base.clone();
    source[POS] = (source[POS] + 7) % vocab as u32;
    let model = Arc::new(Model::load(model_path).expect("model"));
    let iv = IntervenableModel::new(
        model.clone(),
        IntervenableConfig::from_json_str(cfg).unwrap(),
    )
    .expect("intervenable");
    let which = if logits == "last" {
        LogitPositions::Last
    } else {
        LogitPositions::All
    };
    let rust_run = || -> (f64, f64) {
        let (t0, c0) = (Instant::now(), cpu_us());
        let req = Request {
            base: Some(Input::from_tokens(&base, model.device()).unwrap()),
            sources: vec![Some(Input::from_tokens(&source, model.device()).unwrap())],
            locations: Some(vec![Location {
                source: Units::same(&[POS], 1),
                base: Units::same(&[POS], 1),
            }]),
            logits: which.clone(),
            ..Default::default()
        };
        let out = iv.forward(&req).expect("forward");
        let l = out.intervened.logits.as_ref().expect("logits");
        std::hint::black_box(l);
        drop(out);
        (t0.elapsed().as_secs_f64() * 1e6, cpu_us() - c0)
    };
    // The C API called from this process (same thread pool, same model weights as the Rust
    // side), through the exported functions themselves.
    let c_base: Vec<i32> = base.iter().map(|&t| t as i32).collect();
    let c_source: Vec<i32> = source.iter().map(|&t| t as i32).collect();
    let c_cfg = std::ffi::CString::new(cfg).unwrap();
    let c_path = std::ffi::CString::new(model_path.display().to_string()).unwrap();
    let mut c_model = std::ptr::null_mut();
    let mut c_iv = std::ptr::null_mut();
    unsafe {
        assert_eq!(
            capi::vene_model_load(c_path.as_ptr(), std::ptr::null(), &mut c_model),
            capi::VENE_OK
        );
        assert_eq!(
            capi::vene_intervenable_create(c_model, c_cfg.as_ptr(), &mut c_iv),
            capi::VENE_OK
        );
    }
    let c_logits = if logits == "last" {
        capi::vene_logits::VENE_LOGITS_LAST
    } else {
        capi::vene_logits::VENE_LOGITS_ALL
    } as u32;
    let capi_run = || -> (f64, f64) {
        let (t0, c0) = (Instant::now(), cpu_us());
        let pos = POS as i64;
        let input = |ids: &[i32]| capi::vene_input {
            ids: ids.as_ptr(),
            embeds: std::ptr::null(),
            batch: 1,
            seq: ids.len(),
            embed_dim: 0,
            attention_mask: std::ptr::null(),
            position_ids: std::ptr::null(),
        };
        let (b, s) = (input(&c_base), input(&c_source));
        let units = capi::vene_units {
            kind: capi::vene_units_kind::VENE_UNITS_INDEX as u32,
            reserved: 0,
            rows: 1,
            n: 1,
            indices: &pos,
            n_positions: 0,
            positions: std::ptr::null(),
        };
        let loc = capi::vene_location {
            source: units,
            base: units,
        };
        unsafe {
            let mut req = std::mem::MaybeUninit::<capi::vene_request>::zeroed().assume_init();
            capi::vene_request_init(&mut req, std::mem::size_of::<capi::vene_request>() as u32);
            req.base = &b;
            req.sources = &s;
            req.n_sources = 1;
            req.locations = &loc;
            req.n_locations = 1;
            req.logits = c_logits;
            let mut r = std::ptr::null_mut();
            assert_eq!(
                capi::vene_intervenable_run(c_iv, &req, &mut r),
                capi::VENE_OK
            );
            let mut data = std::ptr::null();
            let name = c"intervened.logits";
            capi::vene_result_tensor(
                r,
                name.as_ptr(),
                &mut data,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
            std::hint::black_box(*data);
            capi::vene_result_free(r);
        }
        (t0.elapsed().as_secs_f64() * 1e6, cpu_us() - c0)
    };
    let args = vec![
        model_path.display().to_string(),
        cfg.to_string(),
        logits.to_string(),
        csv(&base),
        csv(&source),
        POS.to_string(),
    ];
    let mut servers: Vec<Server> = progs.iter().map(|(_, p)| Server::start(p, &args)).collect();
    // Warm up every side.
    for _ in 0..3 {
        rust_run();
        capi_run();
        for s in servers.iter_mut() {
            s.run();
        }
    }
    // Index 0: Rust API, 1: C API in process, 2..: the programs.
    let n = progs.len() + 2;
    let mut times: Vec<Vec<(f64, f64)>> = vec![Vec::new(); n];
    // A fresh random order every round (fixed seed): no side always follows the same one,
    // so none always finds the caches warmed by itself or cooled by another process.
    let mut rng: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut order: Vec<usize> = (0..n).collect();
    for _ in 0..rounds {
        for k in (1..n).rev() {
            rng = rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            order.swap(k, (rng >> 33) as usize % (k + 1));
        }
        for &i in &order {
            let t = match i {
                0 => rust_run(),
                1 => capi_run(),
                _ => servers[i - 2].run(),
            };
            times[i].push(t);
        }
    }
    for s in servers {
        s.stop();
    }
    unsafe {
        capi::vene_intervenable_free(c_iv);
        capi::vene_model_free(c_model);
    }
    let names: Vec<&'static str> = ["Rust API", "C API, in process"]
        .into_iter()
        .chain(progs.iter().map(|(n, _)| *n))
        .collect();
    // Each language's time over the Rust time of the same round, then the median of those
    // ratios: machine drift between rounds cancels out. Wall clock and CPU time alike.
    let stat = |i: usize, pick: fn(&(f64, f64)) -> f64| -> (f64, f64) {
        let mine: Vec<f64> = times[i].iter().map(pick).collect();
        let mut ratios: Vec<f64> = mine
            .iter()
            .zip(times[0].iter().map(pick))
            .map(|(t, rust)| t / rust - 1.0)
            .collect();
        (median(&mut mine.clone()), median(&mut ratios))
    };
    names
        .iter()
        .enumerate()
        .map(|(i, name)| Row {
            name,
            wall: stat(i, |t| t.0),
            cpu: stat(i, |t| t.1),
        })
        .collect()
}

/// One language's medians: (time µs, overhead vs Rust) for wall clock and process CPU time.
struct Row {
    name: &'static str,
    wall: (f64, f64),
    cpu: (f64, f64),
}

/// Process CPU time in µs (every thread of this process).
fn cpu_us() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.sec as f64 * 1e6 + t.nsec as f64 / 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let rounds: usize = get("--rounds").map_or(41, |s| s.parse().unwrap());
    // candle reads RAYON_NUM_THREADS once, at first use; the programs inherit it.
    if let Some(t) = get("--threads") {
        std::env::set_var("RAYON_NUM_THREADS", &t);
    }
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".into());
    let logits = get("--logits").unwrap_or_else(|| "both".into());
    let model_path = match get("--model") {
        Some(p) => PathBuf::from(p),
        None => vene::fetch::default_model(true).expect("default model"),
    };
    let info = Model::load(&model_path).expect("model").info().clone();
    let vocab = info.vocab_size.expect("a token model");
    let layer = 15.min(info.n_layers - 1);
    let cfg = config(layer);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("capi-bench");
    std::fs::create_dir_all(&out).unwrap();
    let progs = build(&out);
    let modes: Vec<&str> = match logits.as_str() {
        "both" => vec!["last", "all"],
        m => vec![if m == "last" { "last" } else { "all" }],
    };
    let started = Instant::now();
    println!(
        "model: {} (batch 1, {} tokens, vanilla at layer {layer}, position {POS}); {rounds} interleaved rounds; threads: {threads}\n",
        model_path.display(),
        BASE.len()
    );
    println!("| logits | language | wall clock per run | overhead (wall) | CPU time per run | overhead (CPU) |");
    println!("|---|---|---|---|---|---|");
    for mode in modes {
        for r in measure(&model_path, &cfg, vocab, mode, rounds, &progs) {
            let pct = |x: f64| {
                if r.name == "Rust API" {
                    "(baseline)".to_string()
                } else {
                    format!("{:+.2}%", x * 100.0)
                }
            };
            println!(
                "| {mode} | {} | {:.2} ms | {} | {:.2} ms | {} |",
                r.name,
                r.wall.0 / 1e3,
                pct(r.wall.1),
                r.cpu.0 / 1e3,
                pct(r.cpu.1)
            );
        }
    }
    println!("\nmeasured in {:.1} s", started.elapsed().as_secs_f64());
}

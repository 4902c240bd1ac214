//! Sandboxed WASM modules (wasmtime, ABI v1: scalars only).
//!
//! A module exports `memory`, `vene_abi_version() -> i32` (1), `vene_alloc(size) -> ptr`,
//! `vene_intervene(base, source, out, rows, dim) -> i32`, and optionally
//! `vene_init(args, args_len) -> i32` and `vene_flags() -> i32`. It may import only
//! `vene.log(ptr, len)`. The details are in `include/vene_plugin.h`.
//!
//! One [`Engine`] serves the process; a module is compiled once (cached by content hash) and
//! instantiated per intervention (and once more per thread using it at the same moment: a
//! pool). Each instance asks `vene_alloc` for its three buffers once and reuses them, asking
//! again only when a call needs more room. Every call into a module runs under a wall-clock
//! deadline (epoch interruption, one ticker thread for the process) and the instance's memory
//! under a cap (store limits). A trap, a timeout or an out-of-bounds access fails the call
//! with the module's name and the reason; the instance is dropped and the next call gets a
//! fresh one, so the model and the process carry on.

use super::abi::{
    self, VENE_PLUGIN_ABI_VERSION, VENE_TYPE_DISTRIBUTED, VENE_TYPE_NO_SOURCE, VENE_TYPE_ROW_WISE,
};
use super::{LoadedPlugin, PluginKind};
use crate::error::{Error, Result};
use crate::intervention::{registry, Intervention, Spec};
use crate::invalid;
use crate::subspace::Dims;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use wasmtime::{
    Caller, Config, Engine, ExternType, FuncType, InstancePre, Linker, Memory, Module, Store,
    StoreLimits, StoreLimitsBuilder, Trap, TypedFunc, UpdateDeadline,
};

/// Default wall-clock deadline of one call into a module.
pub const DEFAULT_DEADLINE_MS: u64 = 1000;
/// Default cap on a module instance's linear memory.
pub const DEFAULT_MEMORY_BYTES: u64 = 64 << 20;
/// How often the engine's epoch advances; a timeout is noticed within one tick.
const TICK: Duration = Duration::from_millis(5);
/// Rows per call for row-wise types: about this many bytes per buffer, so the copies in, the
/// call and the copy out stay in the CPU's cache.
const CHUNK_BYTES: usize = 64 << 10;
/// Most bytes of one `vene.log` message kept.
const MAX_LOG: usize = 4096;

/// Limits for WASM modules (the request field `"wasm_limits"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WasmLimits {
    /// Wall-clock deadline of each call into a module, in milliseconds.
    pub deadline_ms: u64,
    /// Cap on each instance's linear memory, in bytes.
    pub memory_bytes: u64,
}

impl Default for WasmLimits {
    fn default() -> Self {
        WasmLimits {
            deadline_ms: DEFAULT_DEADLINE_MS,
            memory_bytes: DEFAULT_MEMORY_BYTES,
        }
    }
}

impl WasmLimits {
    /// `{"deadline_ms": ..., "memory_bytes": ...}`; a missing field keeps its default.
    pub fn from_json(v: &Value) -> Result<WasmLimits> {
        let obj = v.as_object().ok_or_else(|| {
            invalid!("must be an object like {{\"deadline_ms\": 1000, \"memory_bytes\": 67108864}}, got {v}")
        })?;
        let mut limits = WasmLimits::default();
        for (k, x) in obj {
            let n = x
                .as_u64()
                .ok_or_else(|| invalid!("{k} must be a positive integer, got {x}"))?;
            match k.as_str() {
                "deadline_ms" => limits.deadline_ms = n,
                "memory_bytes" => limits.memory_bytes = n,
                _ => {
                    return Err(invalid!(
                        "unknown field '{k}'; fields are: deadline_ms, memory_bytes"
                    ))
                }
            }
        }
        limits.validate()?;
        Ok(limits)
    }

    pub fn validate(&self) -> Result<()> {
        if !(1..=3_600_000).contains(&self.deadline_ms) {
            return Err(invalid!(
                "deadline_ms must be between 1 and 3600000 (one hour), got {}",
                self.deadline_ms
            ));
        }
        if !(65_536..=(4u64 << 30)).contains(&self.memory_bytes) {
            return Err(invalid!(
                "memory_bytes must be between 65536 (one WASM page) and 4294967296, got {}",
                self.memory_bytes
            ));
        }
        Ok(())
    }
}

/// The process-wide engine, with its epoch ticker running.
fn engine() -> Result<&'static Engine> {
    static ENGINE: OnceLock<std::result::Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut c = Config::new();
            c.epoch_interruption(true)
                .cranelift_nan_canonicalization(true)
                .relaxed_simd_deterministic(true);
            let engine = Engine::new(&c).map_err(|e| format!("{e:#}"))?;
            let ticker = engine.clone();
            std::thread::Builder::new()
                .name("vene-wasm-epoch".into())
                .spawn(move || loop {
                    std::thread::sleep(TICK);
                    ticker.increment_epoch();
                })
                .map_err(|e| format!("cannot start the deadline thread: {e}"))?;
            Ok(engine)
        })
        .as_ref()
        .map_err(|e| invalid!("cannot start the WASM engine: {e}"))
}

/// Per-store host state.
struct HostState {
    limits: StoreLimits,
    deadline: Instant,
    timed_out: bool,
    label: Arc<str>,
    last_log: Option<String>,
}

/// A compiled, checked module (shared by every load of the same bytes).
pub struct Compiled {
    pre: InstancePre<HostState>,
    has_init: bool,
    has_flags: bool,
}

static CACHE: Mutex<Option<HashMap<[u8; 32], Arc<Compiled>>>> = Mutex::new(None);

fn signature(ft: &FuncType) -> String {
    let list = |it: &mut dyn Iterator<Item = wasmtime::ValType>| {
        it.map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
    };
    let params = list(&mut ft.params());
    let results: Vec<String> = ft.results().map(|v| v.to_string()).collect();
    match results.len() {
        0 => format!("({params})"),
        1 => format!("({params}) -> {}", results[0]),
        _ => format!("({params}) -> ({})", results.join(", ")),
    }
}

fn all_i32(it: impl ExactSizeIterator<Item = wasmtime::ValType>, n: usize) -> bool {
    it.len() == n && it.into_iter().all(|v| matches!(v, wasmtime::ValType::I32))
}

fn check_func(ft: &FuncType, params: usize, results: usize) -> bool {
    all_i32(ft.params(), params) && all_i32(ft.results(), results)
}

/// Refuses every import but `vene.log(i32, i32)`.
fn check_imports(module: &Module, label: &str) -> Result<()> {
    for imp in module.imports() {
        let ok = imp.module() == "vene"
            && imp.name() == "log"
            && matches!(imp.ty(), ExternType::Func(ref f) if check_func(f, 2, 0));
        if !ok {
            let what = match imp.ty() {
                ExternType::Func(f) => format!("function {}", signature(&f)),
                ExternType::Memory(_) => "a memory".into(),
                ExternType::Table(_) => "a table".into(),
                ExternType::Global(_) => "a global".into(),
                _ => "an item".into(),
            };
            return Err(invalid!(
                "WASM module '{label}' imports {}.{} ({what}), which is not allowed: a vene module may import only vene.log(ptr: i32, len: i32)",
                imp.module(),
                imp.name()
            ));
        }
    }
    Ok(())
}

/// Checks the ABI v1 exports; returns whether `vene_init` and `vene_flags` are present.
fn check_exports(module: &Module, label: &str) -> Result<(bool, bool)> {
    match module.get_export("memory") {
        Some(ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => {}
        Some(ExternType::Memory(_)) => {
            return Err(invalid!(
                "WASM module '{label}': its memory must be a plain 32-bit, unshared memory"
            ))
        }
        Some(_) => {
            return Err(invalid!(
                "WASM module '{label}': export 'memory' is not a memory"
            ))
        }
        None => {
            return Err(invalid!(
                "WASM module '{label}' does not export its memory as 'memory'"
            ))
        }
    }
    let funcs: [(&str, usize, usize, &str, bool); 5] = [
        ("vene_abi_version", 0, 1, "() -> i32", true),
        ("vene_alloc", 1, 1, "(size: i32) -> i32", true),
        (
            "vene_intervene",
            5,
            1,
            "(base: i32, source: i32, out: i32, rows: i32, dim: i32) -> i32",
            true,
        ),
        (
            "vene_init",
            2,
            1,
            "(args: i32, args_len: i32) -> i32",
            false,
        ),
        ("vene_flags", 0, 1, "() -> i32", false),
    ];
    let mut present = [false; 5];
    for (i, (name, np, nr, want, required)) in funcs.iter().enumerate() {
        match module.get_export(name) {
            Some(ExternType::Func(f)) => {
                if !check_func(&f, *np, *nr) {
                    return Err(invalid!(
                        "WASM module '{label}': export '{name}' has signature {}, but ABI v1 needs {want}",
                        signature(&f)
                    ));
                }
                present[i] = true;
            }
            Some(_) => {
                return Err(invalid!(
                    "WASM module '{label}': export '{name}' is not a function (ABI v1 needs {want})"
                ))
            }
            None if *required => {
                return Err(invalid!(
                    "WASM module '{label}' does not export '{name}' {want} (required by ABI v1)"
                ))
            }
            None => {}
        }
    }
    Ok((present[3], present[4]))
}

fn host_log(mut caller: Caller<'_, HostState>, ptr: i32, len: i32) {
    let text = match caller.get_export("memory").and_then(|e| e.into_memory()) {
        Some(mem) => {
            let (start, len) = (ptr as u32 as usize, (len as u32 as usize).min(MAX_LOG));
            mem.data(&caller)
                .get(start..start.saturating_add(len))
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_else(|| format!("<log message at {start}+{len} is outside memory>"))
        }
        None => "<no memory>".to_string(),
    };
    let label = caller.data().label.clone();
    super::log(&label, abi::VENE_LOG_INFO, &text);
    caller.data_mut().last_log = Some(text);
}

/// Compiles (or finds in the cache) a module given as binary WASM or WAT text, and checks its
/// imports and exports. `label` names it in errors.
pub fn compile(bytes: &[u8], label: &str) -> Result<Arc<Compiled>> {
    let key: [u8; 32] = Sha256::digest(bytes).into();
    if let Some(c) = CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .get(&key)
    {
        return Ok(c.clone());
    }
    let engine = engine()?;
    let module = Module::new(engine, bytes)
        .map_err(|e| invalid!("WASM module '{label}' is not a valid WebAssembly module: {e:#}"))?;
    check_imports(&module, label)?;
    let (has_init, has_flags) = check_exports(&module, label)?;
    let mut linker: Linker<HostState> = Linker::new(engine);
    linker
        .func_wrap("vene", "log", host_log)
        .map_err(|e| invalid!("WASM module '{label}': {e:#}"))?;
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| invalid!("WASM module '{label}': {e:#}"))?;
    let c = Arc::new(Compiled {
        pre,
        has_init,
        has_flags,
    });
    CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(key, c.clone());
    Ok(c)
}

/// One live instance with its buffers.
struct Instance {
    store: Store<HostState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    intervene: TypedFunc<(i32, i32, i32, i32, i32), i32>,
    /// (offset, capacity in bytes) of the base, source and out buffers; offset 0 = none yet.
    bufs: [(u32, usize); 3],
    deadline: Duration,
    /// The type is row-wise: calls go chunk by chunk.
    row_wise: bool,
}

impl Instance {
    /// Instantiates under `limits`, checks `vene_abi_version`, and calls `vene_init` with
    /// `args` when given and exported.
    fn new(
        c: &Compiled,
        label: &Arc<str>,
        limits: &WasmLimits,
        args: Option<&[u8]>,
    ) -> Result<(Instance, u32)> {
        let engine = engine()?;
        let state = HostState {
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes as usize)
                .memories(1)
                .tables(8)
                .table_elements(1 << 20)
                .instances(1)
                .trap_on_grow_failure(false)
                .build(),
            deadline: Instant::now(),
            timed_out: false,
            label: label.clone(),
            last_log: None,
        };
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|mut ctx| {
            let s = ctx.data_mut();
            if Instant::now() >= s.deadline {
                s.timed_out = true;
                Err(wasmtime::Error::msg("deadline exceeded"))
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        let deadline = Duration::from_millis(limits.deadline_ms);
        arm(&mut store, deadline);
        let instance = match c.pre.instantiate(&mut store) {
            Ok(i) => i,
            Err(e) => return Err(failure(&store, label, "instantiation", &e)),
        };
        let lookup_err = |e: wasmtime::Error| invalid!("WASM module '{label}': {e:#}");
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| invalid!("WASM module '{label}' has no memory export"))?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "vene_alloc")
            .map_err(lookup_err)?;
        let intervene = instance
            .get_typed_func::<(i32, i32, i32, i32, i32), i32>(&mut store, "vene_intervene")
            .map_err(lookup_err)?;
        let version = instance
            .get_typed_func::<(), i32>(&mut store, "vene_abi_version")
            .map_err(lookup_err)?;
        arm(&mut store, deadline);
        let v = version
            .call(&mut store, ())
            .map_err(|e| failure(&store, label, "vene_abi_version", &e))?;
        if v != VENE_PLUGIN_ABI_VERSION as i32 {
            return Err(invalid!(
                "WASM module '{label}' speaks plugin ABI v{v}, this host speaks v{VENE_PLUGIN_ABI_VERSION}"
            ));
        }
        let flags = if c.has_flags {
            let f = instance
                .get_typed_func::<(), i32>(&mut store, "vene_flags")
                .map_err(lookup_err)?;
            arm(&mut store, deadline);
            let flags =
                f.call(&mut store, ())
                    .map_err(|e| failure(&store, label, "vene_flags", &e))? as u32;
            let known = abi::VENE_TYPE_KNOWN_FLAGS;
            if flags & !known != 0 {
                return Err(invalid!(
                    "WASM module '{label}': vene_flags returned unknown bits {:#x}",
                    flags & !known
                ));
            }
            flags
        } else {
            0
        };
        let mut inst = Instance {
            store,
            memory,
            alloc,
            intervene,
            bufs: [(0, 0); 3],
            deadline,
            row_wise: flags & VENE_TYPE_ROW_WISE != 0,
        };
        if let (Some(args), true) = (args, c.has_init) {
            let init = instance
                .get_typed_func::<(i32, i32), i32>(&mut inst.store, "vene_init")
                .map_err(lookup_err)?;
            let ptr = if args.is_empty() {
                0
            } else {
                let p = inst.alloc_bytes(args.len())?;
                inst.write(p, args)?;
                p
            };
            arm(&mut inst.store, deadline);
            let rc = init
                .call(&mut inst.store, (ptr as i32, args.len() as i32))
                .map_err(|e| failure(&inst.store, label, "vene_init", &e))?;
            if rc != 0 {
                return Err(invalid!(
                    "WASM module '{label}': vene_init returned {rc}: {}",
                    last_log(&inst.store)
                ));
            }
        }
        Ok((inst, flags))
    }

    fn label(&self) -> Arc<str> {
        self.store.data().label.clone()
    }

    /// Asks the module for `bytes` bytes and checks what it returns.
    fn alloc_bytes(&mut self, bytes: usize) -> Result<u32> {
        let label = self.label();
        let size = i32::try_from(bytes).map_err(|_| {
            invalid!(
                "WASM module '{label}': a buffer of {bytes} bytes does not fit a 32-bit memory"
            )
        })?;
        arm(&mut self.store, self.deadline);
        let p = self
            .alloc
            .call(&mut self.store, size)
            .map_err(|e| failure(&self.store, &label, "vene_alloc", &e))? as u32;
        if p == 0 {
            return Err(invalid!(
                "WASM module '{label}': vene_alloc({bytes}) returned 0 (out of memory? the cap is wasm_limits.memory_bytes){}",
                log_suffix(&self.store)
            ));
        }
        if !p.is_multiple_of(4) {
            return Err(invalid!(
                "WASM module '{label}': vene_alloc({bytes}) returned {p}, which is not 4-byte aligned"
            ));
        }
        let end = p as usize + bytes;
        if end > self.memory.data_size(&self.store) {
            return Err(invalid!(
                "WASM module '{label}': vene_alloc({bytes}) returned {p}, but the buffer would end at {end}, past the memory's {} bytes",
                self.memory.data_size(&self.store)
            ));
        }
        Ok(p)
    }

    /// The offset of buffer `k` with room for `bytes` bytes (allocated on first need).
    fn buffer(&mut self, k: usize, bytes: usize) -> Result<u32> {
        let (p, cap) = self.bufs[k];
        if p != 0 && cap >= bytes {
            return Ok(p);
        }
        let p = self.alloc_bytes(bytes)?;
        self.bufs[k] = (p, bytes);
        Ok(p)
    }

    fn write(&mut self, ptr: u32, bytes: &[u8]) -> Result<()> {
        let label = self.label();
        let start = ptr as usize;
        self.memory
            .data_mut(&mut self.store)
            .get_mut(start..start + bytes.len())
            .ok_or_else(|| invalid!("WASM module '{label}': buffer at {ptr} is outside memory"))?
            .copy_from_slice(bytes);
        Ok(())
    }

    fn write_f32(&mut self, ptr: u32, x: &[f32]) -> Result<()> {
        let label = self.label();
        let start = ptr as usize;
        let dst = self
            .memory
            .data_mut(&mut self.store)
            .get_mut(start..start + 4 * x.len())
            .ok_or_else(|| invalid!("WASM module '{label}': buffer at {ptr} is outside memory"))?;
        copy_to_le(x, dst);
        Ok(())
    }

    /// Appends `n` floats read at `ptr` to `out`.
    fn read_f32(&self, ptr: u32, n: usize, out: &mut Vec<f32>) -> Result<()> {
        let start = ptr as usize;
        let src = self
            .memory
            .data(&self.store)
            .get(start..start + 4 * n)
            .ok_or_else(|| {
                invalid!(
                    "WASM module '{}': output buffer at {ptr} is outside memory",
                    self.label()
                )
            })?;
        extend_from_le(src, out);
        Ok(())
    }

    /// `vene_intervene` over rows x dim floats: one call, or, for row-wise types, one call
    /// per cache-sized chunk of rows. The deadline covers the whole of it.
    fn call(
        &mut self,
        base: &[f32],
        source: Option<&[f32]>,
        rows: usize,
        dim: usize,
    ) -> Result<Vec<f32>> {
        let label = self.label();
        let chunk = if self.row_wise {
            (CHUNK_BYTES / (4 * dim.max(1))).clamp(1, rows.max(1))
        } else {
            rows
        };
        let bytes = 4 * chunk * dim;
        if i32::try_from(bytes).is_err() || i32::try_from(dim).is_err() {
            return Err(invalid!(
                "WASM module '{label}': {chunk} x {dim} floats do not fit a 32-bit module"
            ));
        }
        let pb = self.buffer(0, bytes)?;
        let ps = match source {
            Some(_) => self.buffer(1, bytes)?,
            None => 0,
        };
        let po = self.buffer(2, bytes)?;
        let mut out = Vec::with_capacity(rows * dim);
        arm(&mut self.store, self.deadline);
        self.store.data_mut().last_log = None;
        let mut r0 = 0;
        while r0 < rows {
            let r = chunk.min(rows - r0);
            let span = r0 * dim..(r0 + r) * dim;
            self.write_f32(pb, &base[span.clone()])?;
            if let Some(s) = source {
                self.write_f32(ps, &s[span])?;
            }
            let rc = self
                .intervene
                .call(
                    &mut self.store,
                    (pb as i32, ps as i32, po as i32, r as i32, dim as i32),
                )
                .map_err(|e| failure(&self.store, &label, "vene_intervene", &e))?;
            if rc != 0 {
                return Err(invalid!(
                    "WASM module '{label}': vene_intervene returned {rc}: {}",
                    last_log(&self.store)
                ));
            }
            self.read_f32(po, r * dim, &mut out)?;
            r0 += r;
        }
        Ok(out)
    }
}

/// Starts the deadline clock for the next call.
fn arm(store: &mut Store<HostState>, deadline: Duration) {
    let s = store.data_mut();
    s.deadline = Instant::now() + deadline;
    s.timed_out = false;
    store.set_epoch_deadline(1);
}

fn last_log(store: &Store<HostState>) -> String {
    store
        .data()
        .last_log
        .clone()
        .unwrap_or_else(|| "no message (a module can explain a failure through vene.log)".into())
}

fn log_suffix(store: &Store<HostState>) -> String {
    match &store.data().last_log {
        Some(m) => format!("; its last log message: {m}"),
        None => String::new(),
    }
}

/// Turns an error from a call into the module into one that names the module and the reason.
fn failure(store: &Store<HostState>, label: &str, what: &str, e: &wasmtime::Error) -> Error {
    let data = store.data();
    if data.timed_out {
        return invalid!(
            "WASM module '{label}': {what} timed out (wall-clock deadline exceeded; raise wasm_limits.deadline_ms if the module is just slow)"
        );
    }
    if let Some(t) = e.downcast_ref::<Trap>() {
        let reason = match t {
            Trap::MemoryOutOfBounds => "out-of-bounds memory access".to_string(),
            Trap::UnreachableCodeReached => {
                "unreachable instruction (a panic or abort in the module)".to_string()
            }
            Trap::StackOverflow => "stack overflow".to_string(),
            other => other.to_string(),
        };
        return invalid!(
            "WASM module '{label}': {what} trapped: {reason}{}",
            log_suffix(store)
        );
    }
    invalid!(
        "WASM module '{label}': {what} failed: {e:#}{}",
        log_suffix(store)
    )
}

#[cfg(target_endian = "little")]
fn copy_to_le(x: &[f32], dst: &mut [u8]) {
    // SAFETY: f32 has no invalid bit patterns; the byte view covers exactly `x`.
    let src = unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), 4 * x.len()) };
    dst.copy_from_slice(src);
}

#[cfg(target_endian = "little")]
fn extend_from_le(src: &[u8], out: &mut Vec<f32>) {
    let n = src.len() / 4;
    out.reserve(n);
    // SAFETY: the reserved tail has room for `n` floats; every bit pattern is a valid f32, and
    // the length grows only after the bytes are written.
    unsafe {
        std::ptr::copy_nonoverlapping(
            src.as_ptr(),
            out.as_mut_ptr().add(out.len()).cast::<u8>(),
            4 * n,
        );
        out.set_len(out.len() + n);
    }
}
#[cfg(target_endian = "big")]
fn copy_to_le(x: &[f32], dst: &mut [u8]) {
    for (v, d) in x.iter().zip(dst.chunks_exact_mut(4)) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

#[cfg(target_endian = "big")]
fn extend_from_le(src: &[u8], out: &mut Vec<f32>) {
    out.extend(
        src.chunks_exact(4)
            .map(|s| f32::from_le_bytes([s[0], s[1], s[2], s[3]])),
    );
}

/// A module ready to build interventions: compiled code, its name, limits and flags.
#[derive(Clone)]
pub struct WasmType {
    /// The type name configs use: `wasm/<stem>`.
    pub name: String,
    label: Arc<str>,
    compiled: Arc<Compiled>,
    limits: WasmLimits,
    flags: u32,
}

impl WasmType {
    /// Compiles `bytes` (binary or WAT), checks the ABI by instantiating it once (without
    /// `vene_init`), and names the type `wasm/<stem>`. `label` names the module in errors.
    pub fn new(bytes: &[u8], stem: &str, label: &str, limits: &WasmLimits) -> Result<WasmType> {
        limits.validate()?;
        if stem.is_empty() || stem.contains('/') || stem.chars().any(char::is_whitespace) {
            return Err(invalid!(
                "WASM module '{label}': '{stem}' cannot be a type name (wasm/<stem>): it must be non-empty with no '/' or whitespace"
            ));
        }
        let compiled = compile(bytes, label)?;
        let label: Arc<str> = Arc::from(label);
        let (_, flags) = Instance::new(&compiled, &label, limits, None)?;
        Ok(WasmType {
            name: format!("wasm/{stem}"),
            label,
            compiled,
            limits: *limits,
            flags,
        })
    }

    pub fn compiled(&self) -> &Arc<Compiled> {
        &self.compiled
    }

    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Registers `wasm/<stem>` (replacing an earlier module with the same stem).
    pub fn register(&self) -> Result<()> {
        let t = self.clone();
        let factory: registry::Factory = Arc::new(move |spec: &Spec| {
            Ok(Box::new(WasmIntervention::new(&t, spec)?) as Box<dyn Intervention>)
        });
        registry::register(&self.name, factory)
    }

    /// Builds one intervention directly (the registry's factory does the same).
    pub fn build(&self, spec: &Spec) -> Result<WasmIntervention> {
        WasmIntervention::new(self, spec)
    }
}

/// Loads a `.wasm` or `.wat` file and registers it as `wasm/<file stem>`.
pub fn load(path: &Path, limits: &WasmLimits) -> Result<LoadedPlugin> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::file(path, format!("cannot read WASM module: {e}")))?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| Error::file(path, "the file name is not valid UTF-8"))?;
    let label = path.display().to_string();
    let t = WasmType::new(&bytes, stem, &label, limits)?;
    t.register()?;
    Ok(LoadedPlugin {
        name: "wasm".into(),
        version: String::new(),
        kind: PluginKind::Wasm,
        path: path.to_path_buf(),
        types: vec![t.name.clone()],
    })
}

/// An intervention backed by a WASM module: a pool of instances (one per concurrent caller),
/// each initialised with the representation's `intervention_args`.
pub struct WasmIntervention {
    t: WasmType,
    args: Vec<u8>,
    pool: Mutex<Vec<Instance>>,
}

impl WasmIntervention {
    fn new(t: &WasmType, spec: &Spec) -> Result<WasmIntervention> {
        let args = abi::args_json(spec)?.into_bytes();
        let iv = WasmIntervention {
            t: t.clone(),
            args,
            pool: Mutex::new(Vec::new()),
        };
        // One instance now, so bad arguments fail when the config is built.
        let first = iv.instance()?;
        iv.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(first);
        Ok(iv)
    }

    fn instance(&self) -> Result<Instance> {
        if let Some(i) = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(i);
        }
        Instance::new(
            &self.t.compiled,
            &self.t.label,
            &self.t.limits,
            Some(&self.args),
        )
        .map(|(i, _)| i)
    }

    /// The linear memory size, in bytes, of each idle instance in the pool (for tests and
    /// diagnostics: buffers are reused, so this stays flat across calls).
    pub fn memory_sizes(&self) -> Vec<usize> {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|i| i.memory.data_size(&i.store))
            .collect()
    }
}

impl Intervention for WasmIntervention {
    fn type_name(&self) -> &str {
        &self.t.name
    }
    fn distributed(&self) -> bool {
        self.t.flags & VENE_TYPE_DISTRIBUTED != 0
    }
    fn needs_source(&self) -> bool {
        self.t.flags & VENE_TYPE_NO_SOURCE == 0
    }
    fn apply(&self, base: &Tensor, source: Option<&Tensor>, dims: &Dims) -> Result<Tensor> {
        let mut inst = self.instance()?;
        let out = abi::apply_rows(base, source, dims, |b, s, rows, dim| {
            inst.call(b, s, rows, dim)
        });
        // A failed instance may be half-way through anything: drop it, the next call gets a
        // fresh one.
        if out.is_ok() {
            self.pool
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(inst);
        }
        out
    }
}

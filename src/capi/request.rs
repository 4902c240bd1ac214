//! The typed request: plain C structs for inputs, unit locations, subspaces and source
//! representations, and their conversion into the engine's `Request`. These structs hold
//! borrowed pointers only; vene copies what it needs during the call.

use super::error::*;
use crate::generate::{GenerateOptions, DEFAULT_MAX_NEW_TOKENS, DEFAULT_SEED};
use crate::intervenable::Request;
use crate::location::{Location, Units};
use crate::model::{Input, LogitPositions};
use crate::request::Generate;
use candle_core::{Device, Tensor};

/// One batch of inputs, row-major. Give token ids or embeddings; an input with neither (both
/// NULL) is "absent", which in `vene_request.sources` skips that group. The layout is frozen.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vene_input {
    /// `batch * seq` token ids, or NULL.
    pub ids: *const i32,
    /// `batch * seq * embed_dim` floats for models fed embeddings, or NULL.
    pub embeds: *const f32,
    pub batch: usize,
    pub seq: usize,
    /// Width of each embedding; ignored with `ids`.
    pub embed_dim: usize,
    /// `batch * seq`: 1 for real tokens, 0 for padding (left or right), or NULL (all 1).
    pub attention_mask: *const i32,
    /// `batch * seq` position ids, or NULL (derived from the mask as Hugging Face does).
    pub position_ids: *const i32,
}
const _: () = assert!(std::mem::size_of::<vene_input>() == 56);

/// How one side of a `vene_location` selects units (the values of `vene_units.kind`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum vene_units_kind {
    /// The whole site tensor (pyvene's `None` location).
    VENE_UNITS_WHOLE = 0,
    /// Indices along the unit axis: positions for unit "pos", heads for unit "h".
    VENE_UNITS_INDEX = 1,
    /// Heads, then positions within them, for unit "h.pos".
    VENE_UNITS_HEAD_POS = 2,
}
const WHOLE: u32 = vene_units_kind::VENE_UNITS_WHOLE as u32;
const INDEX: u32 = vene_units_kind::VENE_UNITS_INDEX as u32;
const HEAD_POS: u32 = vene_units_kind::VENE_UNITS_HEAD_POS as u32;

/// One side (source or base) of one intervention's unit locations. `rows` is the number of
/// examples described: 1 (the same indices for every example) or the batch size. The layout is
/// frozen.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vene_units {
    /// A `vene_units_kind`: `VENE_UNITS_WHOLE`, `VENE_UNITS_INDEX` or `VENE_UNITS_HEAD_POS`.
    pub kind: u32,
    /// Always 0.
    pub reserved: u32,
    pub rows: usize,
    /// Indices per row.
    pub n: usize,
    /// `rows * n` indices (positions, or heads), row-major.
    pub indices: *const i64,
    /// `VENE_UNITS_HEAD_POS` only: positions per row.
    pub n_positions: usize,
    /// `VENE_UNITS_HEAD_POS` only: `rows * n_positions` positions.
    pub positions: *const i64,
}
const _: () = assert!(std::mem::size_of::<vene_units>() == 48);

/// The units one intervention reads in its source run and writes in the base run (pyvene's
/// `unit_locations`, one entry per representation). A zeroed struct means whole tensors.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vene_location {
    pub source: vene_units,
    pub base: vene_units,
}

/// The subspace (feature indices) one intervention acts on, per example. `rows == 0` means
/// none (the whole feature axis, or the config's `interchange_dim`). The layout is frozen.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vene_subspace {
    /// 0 (no subspace), 1 (the same for every example) or the batch size.
    pub rows: usize,
    /// Indices per row.
    pub n: usize,
    /// `rows * n` feature indices (or subspace partition ids when the config has a
    /// `subspace_partition`).
    pub dims: *const i64,
}

/// A borrowed f32 tensor, row-major. `data == NULL` means "none". The layout is frozen.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vene_tensor {
    pub data: *const f32,
    /// `ndim` dimensions; their product is the number of floats at `data`.
    pub shape: *const i64,
    pub ndim: usize,
}

/// Which positions get logits (the values of `vene_request.logits`). Computing the LM head
/// only where needed saves most of its cost.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum vene_logits {
    /// Every position: "intervened.logits" is (batch, seq, vocab). The default.
    VENE_LOGITS_ALL = 0,
    /// The last real token of each row: (batch, 1, vocab).
    VENE_LOGITS_LAST = 1,
    /// No LM head: only "intervened.last_hidden_state".
    VENE_LOGITS_NONE = 2,
    /// The positions in `logit_positions`: (batch, n, vocab).
    VENE_LOGITS_AT = 3,
}
const ALL: u32 = vene_logits::VENE_LOGITS_ALL as u32;
const LAST: u32 = vene_logits::VENE_LOGITS_LAST as u32;
const NONE: u32 = vene_logits::VENE_LOGITS_NONE as u32;
const AT: u32 = vene_logits::VENE_LOGITS_AT as u32;

/// A typed run request, the structured form of `vene run`'s JSON. Initialize with
/// `vene_request_init`, then set what you need; every pointer is borrowed for the call only.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vene_request {
    /// `sizeof(vene_request)`, set by `vene_request_init`.
    pub struct_size: u32,
    /// A `vene_logits` value; default `VENE_LOGITS_ALL`.
    pub logits: u32,
    /// The base input (required).
    pub base: *const vene_input,
    /// One input per group, or a single input used for every group; an absent input (ids and
    /// embeds NULL) skips its group. NULL/0: no sources.
    pub sources: *const vene_input,
    pub n_sources: usize,
    /// One location per representation, or NULL/0 for whole tensors everywhere.
    pub locations: *const vene_location,
    pub n_locations: usize,
    /// One subspace per representation, or NULL/0 for none.
    pub subspaces: *const vene_subspace,
    pub n_subspaces: usize,
    /// One ready-made source activation per representation (data NULL: none, run the
    /// source); NULL/0 for none.
    pub source_representations: *const vene_tensor,
    pub n_source_representations: usize,
    /// Positions for `VENE_LOGITS_AT`.
    pub logit_positions: *const i64,
    pub n_logit_positions: usize,
    /// Non-zero: also run the base without interventions ("original.logits").
    pub output_original: u32,
    /// Always 0.
    pub reserved: u32,
}
const _: () = assert!(std::mem::size_of::<vene_request>() == 8 + 11 * 8 + 8);

pub(crate) const REQUEST_DEFAULT: vene_request = vene_request {
    struct_size: std::mem::size_of::<vene_request>() as u32,
    logits: ALL,
    base: std::ptr::null(),
    sources: std::ptr::null(),
    n_sources: 0,
    locations: std::ptr::null(),
    n_locations: 0,
    subspaces: std::ptr::null(),
    n_subspaces: 0,
    source_representations: std::ptr::null(),
    n_source_representations: 0,
    logit_positions: std::ptr::null(),
    n_logit_positions: 0,
    output_original: 0,
    reserved: 0,
};
pub(crate) const REQUEST_MIN: usize = std::mem::size_of::<vene_request>();

/// Fills `req` with the defaults (no sources, whole locations, all logits). Pass
/// `sizeof(vene_request)` as `struct_size`.
#[no_mangle]
pub unsafe extern "C" fn vene_request_init(
    req: *mut vene_request,
    struct_size: u32,
) -> vene_status {
    guard("vene_request_init", || {
        init_sized(req, struct_size, REQUEST_DEFAULT, REQUEST_MIN, "req")
    })
}

/// Options for `vene_intervenable_generate`. Initialize with `vene_generate_options_init`;
/// a zeroed struct (with `struct_size` set) also means greedy decoding, but of 0 tokens.
/// The defaults and checks are those of every front end (`vene run`'s "generate" object,
/// the bindings): a bad value gives the same message everywhere.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vene_generate_options {
    /// `sizeof(vene_generate_options)`, set by `vene_generate_options_init`.
    pub struct_size: u32,
    /// New tokens per row at most. Default 32.
    pub max_new_tokens: u32,
    /// 0 (the default): greedy. Above 0: sampling at this temperature.
    pub temperature: f64,
    /// Nucleus sampling threshold in (0, 1] when sampling; 0 = off. Default 0.
    pub top_p: f64,
    /// Keep only the k most likely tokens when sampling; 0 = off. Default 0.
    pub top_k: usize,
    /// Sampling seed. Default 0.
    pub seed: u64,
    /// Extra ids that end a row, besides end-of-sequence.
    pub stop_ids: *const i32,
    pub n_stop_ids: usize,
    /// Non-zero: intervene on the prompt only, as pyvene's `intervene_on_prompt=True`; zero
    /// (default): on every decoding step and not the prompt.
    pub intervene_on_prompt: u32,
    /// Non-zero: keep going after the end-of-sequence token. Default 0.
    pub ignore_eos: u32,
}
const _: () = assert!(std::mem::size_of::<vene_generate_options>() == 8 + 6 * 8 + 8);

pub(crate) const GENERATE_DEFAULT: vene_generate_options = vene_generate_options {
    struct_size: std::mem::size_of::<vene_generate_options>() as u32,
    max_new_tokens: DEFAULT_MAX_NEW_TOKENS as u32,
    temperature: 0.0,
    top_p: 0.0,
    top_k: 0,
    seed: DEFAULT_SEED,
    stop_ids: std::ptr::null(),
    n_stop_ids: 0,
    intervene_on_prompt: 0,
    ignore_eos: 0,
};
pub(crate) const GENERATE_MIN: usize = std::mem::size_of::<vene_generate_options>();

/// Fills `opts` with the defaults. Pass `sizeof(vene_generate_options)` as `struct_size`.
#[no_mangle]
pub unsafe extern "C" fn vene_generate_options_init(
    opts: *mut vene_generate_options,
    struct_size: u32,
) -> vene_status {
    guard("vene_generate_options_init", || {
        init_sized(opts, struct_size, GENERATE_DEFAULT, GENERATE_MIN, "opts")
    })
}

/// The library's generation options for C ones (0 turns top_k and top_p off), checked as
/// every front end checks them.
pub(crate) unsafe fn generate_options(o: &vene_generate_options) -> Outcome<Generate> {
    let stop_ids = arg_slice(o.stop_ids, o.n_stop_ids, "opts->stop_ids")?
        .iter()
        .map(|&t| u32::try_from(t).map_err(|_| invalid_input(format!("stop id {t} is negative"))))
        .collect::<Outcome<Vec<u32>>>()?;
    let options = GenerateOptions {
        max_new_tokens: o.max_new_tokens as usize,
        temperature: o.temperature,
        top_k: (o.top_k > 0).then_some(o.top_k),
        top_p: (o.top_p != 0.0).then_some(o.top_p),
        seed: o.seed,
        stop_ids,
        stop_at_eos: o.ignore_eos == 0,
    };
    options.validate()?;
    Ok(Generate {
        options,
        intervene_on_prompt: o.intervene_on_prompt != 0,
    })
}

fn invalid_input(msg: impl Into<String>) -> Failure {
    Failure::new(VENE_ERR_INVALID_INPUT, msg)
}

/// Non-negative indices as usize.
fn indices(v: &[i64], name: &str) -> Outcome<Vec<usize>> {
    v.iter()
        .map(|&x| {
            usize::try_from(x).map_err(|_| invalid_input(format!("{name}: index {x} is negative")))
        })
        .collect()
}

/// `rows * n` indices as one list per example (a single row is repeated `batch` times).
unsafe fn per_example(
    rows: usize,
    n: usize,
    p: *const i64,
    batch: usize,
    name: &str,
) -> Outcome<Vec<Vec<usize>>> {
    if rows != 1 && rows != batch {
        return Err(invalid_input(format!(
            "{name}: rows is {rows}, but must be 1 (same for every example) or the batch size {batch}"
        )));
    }
    let flat = indices(arg_slice(p, product(&[rows, n], name)?, name)?, name)?;
    let list: Vec<Vec<usize>> = if n == 0 {
        vec![Vec::new(); rows]
    } else {
        flat.chunks(n).map(<[usize]>::to_vec).collect()
    };
    Ok(if rows == 1 {
        vec![list[0].clone(); batch]
    } else {
        list
    })
}

unsafe fn units(u: &vene_units, batch: usize, name: &str) -> Outcome<Units> {
    match u.kind {
        WHOLE => Ok(Units::Whole),
        INDEX => Ok(Units::Index(per_example(
            u.rows,
            u.n,
            u.indices,
            batch,
            &format!("{name}.indices"),
        )?)),
        HEAD_POS => Ok(Units::HeadPos {
            heads: per_example(u.rows, u.n, u.indices, batch, &format!("{name}.indices"))?,
            positions: per_example(
                u.rows,
                u.n_positions,
                u.positions,
                batch,
                &format!("{name}.positions"),
            )?,
        }),
        k => Err(Failure::arg(format!(
            "{name}.kind is {k}; use VENE_UNITS_WHOLE (0), VENE_UNITS_INDEX (1) or VENE_UNITS_HEAD_POS (2)"
        ))),
    }
}

/// An f32 tensor from a borrowed view (None when `data` is NULL).
pub(crate) unsafe fn tensor(t: &vene_tensor, dev: &Device, name: &str) -> Outcome<Option<Tensor>> {
    if t.data.is_null() {
        return Ok(None);
    }
    let dims = indices(arg_slice(t.shape, t.ndim, &format!("{name}.shape"))?, name)?;
    let n = product(&dims, name)?;
    let data = arg_slice(t.data, n, &format!("{name}.data"))?;
    Ok(Some(
        Tensor::from_slice(data, dims, dev).map_err(crate::Error::from)?,
    ))
}

/// Reads a `batch * seq` array of non-negative i32s as a u32 (batch, seq) tensor.
unsafe fn grid(p: *const i32, b: usize, s: usize, dev: &Device, name: &str) -> Outcome<Tensor> {
    let v = arg_slice(p, product(&[b, s], name)?, name)?
        .iter()
        .map(|&x| {
            u32::try_from(x).map_err(|_| invalid_input(format!("{name}: value {x} is negative")))
        })
        .collect::<Outcome<Vec<u32>>>()?;
    Ok(Tensor::from_vec(v, (b, s), dev).map_err(crate::Error::from)?)
}

/// An input, or None for an absent one.
pub(crate) unsafe fn input(v: &vene_input, dev: &Device, name: &str) -> Outcome<Option<Input>> {
    if v.ids.is_null() && v.embeds.is_null() {
        return Ok(None);
    }
    let (b, s) = (v.batch, v.seq);
    if b == 0 || s == 0 {
        return Err(invalid_input(format!(
            "{name}: batch and seq must be at least 1, got batch {b}, seq {s}"
        )));
    }
    let mut inp = if !v.ids.is_null() {
        if !v.embeds.is_null() {
            return Err(Failure::arg(format!(
                "{name}: give ids or embeds, not both"
            )));
        }
        Input::from_ids(grid(v.ids, b, s, dev, &format!("{name}.ids"))?)
    } else {
        let n = product(&[b, s, v.embed_dim], name)?;
        if v.embed_dim == 0 {
            return Err(invalid_input(format!("{name}: embed_dim is 0")));
        }
        let data = arg_slice(v.embeds, n, &format!("{name}.embeds"))?;
        Input::from_embeds(
            Tensor::from_slice(data, (b, s, v.embed_dim), dev).map_err(crate::Error::from)?,
        )
    };
    if !v.attention_mask.is_null() {
        inp.attention_mask = Some(grid(
            v.attention_mask,
            b,
            s,
            dev,
            &format!("{name}.attention_mask"),
        )?);
    }
    if !v.position_ids.is_null() {
        inp.position_ids = Some(grid(
            v.position_ids,
            b,
            s,
            dev,
            &format!("{name}.position_ids"),
        )?);
    }
    Ok(Some(inp))
}

/// The engine request for a typed one. (`..Default::default()` keeps engine-only fields that
/// may be added to `Request` at their defaults.)
#[allow(clippy::needless_update)]
pub(crate) unsafe fn request(r: &vene_request, dev: &Device) -> Outcome<Request> {
    if r.base.is_null() {
        return Err(Failure::arg(
            "req->base is NULL: a request needs a base input",
        ));
    }
    let base = input(&*r.base, dev, "base")?
        .ok_or_else(|| Failure::arg("base has neither ids nor embeds"))?;
    let batch = r.base.as_ref().map_or(0, |b| b.batch);
    let sources = arg_slice(r.sources, r.n_sources, "req->sources")?
        .iter()
        .enumerate()
        .map(|(i, s)| input(s, dev, &format!("sources[{i}]")))
        .collect::<Outcome<Vec<_>>>()?;
    let locations = if r.n_locations == 0 {
        None
    } else {
        Some(
            arg_slice(r.locations, r.n_locations, "req->locations")?
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    Ok(Location {
                        source: units(&l.source, batch, &format!("locations[{i}].source"))?,
                        base: units(&l.base, batch, &format!("locations[{i}].base"))?,
                    })
                })
                .collect::<Outcome<Vec<_>>>()?,
        )
    };
    let subspaces = arg_slice(r.subspaces, r.n_subspaces, "req->subspaces")?
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if s.rows == 0 {
                Ok(None)
            } else {
                per_example(s.rows, s.n, s.dims, batch, &format!("subspaces[{i}]")).map(Some)
            }
        })
        .collect::<Outcome<Vec<_>>>()?;
    let source_representations = if r.n_source_representations == 0 {
        None
    } else {
        Some(
            arg_slice(
                r.source_representations,
                r.n_source_representations,
                "req->source_representations",
            )?
            .iter()
            .enumerate()
            .map(|(i, t)| tensor(t, dev, &format!("source_representations[{i}]")))
            .collect::<Outcome<Vec<_>>>()?,
        )
    };
    let logits = match r.logits {
        ALL => LogitPositions::All,
        LAST => LogitPositions::Last,
        NONE => LogitPositions::None,
        AT => LogitPositions::At(indices(
            arg_slice(
                r.logit_positions,
                r.n_logit_positions,
                "req->logit_positions",
            )?,
            "logit_positions",
        )?),
        k => {
            return Err(Failure::arg(format!(
                "req->logits is {k}; use VENE_LOGITS_ALL, _LAST, _NONE or _AT"
            )))
        }
    };
    Ok(Request {
        base: Some(base),
        sources,
        locations,
        subspaces,
        source_representations,
        output_original: r.output_original != 0,
        logits,
        ..Default::default()
    })
}

"""
    Vene

Julia bindings of vene, an engine for causal interventions on neural networks (pyvene's
interventions on a Rust engine), through its C API (`include/vene.h`) with `ccall`.

```julia
using Vene
m = Vene.load_model("model_dir")
iv = Vene.Intervenable(m, \"\"\"[{"layer": 0, "component": "block_output"}]\"\"\")
r = Vene.run(iv; base=[1, 2, 3, 4], sources=[[5, 6, 7, 8]], locations=[Vene.at(1)])
logits = Vene.tensor(r, "intervened.logits")   # Array{Float32,3}, (batch, seq, vocab)
```

Positions, heads and feature indices are 0-based, as in pyvene and the C API. Tensors come
back as Julia arrays in the C API's row-major index order (`logits[b, s, v]`). Errors raise
`VeneError` (status and message). Objects free their handles in finalizers; `close(x)` frees
them at once. Julia functions become interventions with `register_intervention`.

The library is found at `ENV["VENE_LIB"]`, else `<repo>/target/release/libvene.<ext>`.
"""
module Vene

using Libdl

export VeneError, load_model, Intervenable, run_json, tensor, ids, tensor_names,
       register_intervention, unregister_intervention, at, Units, Location, top_k, token_text

const ABI_VERSION = 1

# Fixed when the package is precompiled: set ENV["VENE_LIB"] before the first `using Vene`
# (or re-precompile) to use another library.
const libvene = get(ENV, "VENE_LIB",
    normpath(joinpath(@__DIR__, "..", "..", "..", "..", "target", "release", "libvene." * Libdl.dlext)))

# ---- status and errors ----

const VENE_OK = Int32(0)
const STATUS_NAMES = Dict(0 => :ok, -1 => :invalid_argument, -2 => :invalid_handle,
    -3 => :invalid_input, -4 => :io, -5 => :not_found, -6 => :buffer_too_small,
    -7 => :runtime, -8 => :internal)

"""A failed vene call: `status` (a Symbol such as `:invalid_input`), `code` and `message`."""
struct VeneError <: Exception
    code::Int32
    status::Symbol
    message::String
end
Base.showerror(io::IO, e::VeneError) = print(io, "VeneError(", e.status, "): ", e.message)

lasterror() = unsafe_string(ccall((:vene_last_error, libvene), Cstring, ()))

# vene_last_error is per OS thread; Julia tasks do not migrate during a ccall and the check
# below runs right after it on the same task without yielding.
function check(code::Int32)
    code == VENE_OK && return nothing
    throw(VeneError(code, get(STATUS_NAMES, Int(code), :unknown), lasterror()))
end

# ---- C structs (layouts of vene.h, ABI v1) ----

struct CInput
    ids::Ptr{Int32}
    embeds::Ptr{Float32}
    batch::Csize_t
    seq::Csize_t
    embed_dim::Csize_t
    attention_mask::Ptr{Int32}
    position_ids::Ptr{Int32}
end
const NO_INPUT = CInput(C_NULL, C_NULL, 0, 0, 0, C_NULL, C_NULL)

struct CUnits
    kind::UInt32
    reserved::UInt32
    rows::Csize_t
    n::Csize_t
    indices::Ptr{Int64}
    n_positions::Csize_t
    positions::Ptr{Int64}
end

struct CLocation
    source::CUnits
    base::CUnits
end

struct CSubspace
    rows::Csize_t
    n::Csize_t
    dims::Ptr{Int64}
end

struct CTensor
    data::Ptr{Float32}
    shape::Ptr{Int64}
    ndim::Csize_t
end

struct CRequest
    struct_size::UInt32
    logits::UInt32
    base::Ptr{CInput}
    sources::Ptr{CInput}
    n_sources::Csize_t
    locations::Ptr{CLocation}
    n_locations::Csize_t
    subspaces::Ptr{CSubspace}
    n_subspaces::Csize_t
    source_representations::Ptr{CTensor}
    n_source_representations::Csize_t
    logit_positions::Ptr{Int64}
    n_logit_positions::Csize_t
    output_original::UInt32
    reserved::UInt32
end

struct CGenerateOptions
    struct_size::UInt32
    max_new_tokens::UInt32
    temperature::Cdouble
    top_p::Cdouble
    top_k::Csize_t
    seed::UInt64
    stop_ids::Ptr{Int32}
    n_stop_ids::Csize_t
    intervene_on_prompt::UInt32
    ignore_eos::UInt32
end

struct CModelInfo
    struct_size::UInt32
    has_tokenizer::UInt32
    model_type::Ptr{UInt8}
    source::Ptr{UInt8}
    n_layers::Csize_t
    hidden_size::Csize_t
    vocab_size::Csize_t
    max_positions::Csize_t
    n_heads::Csize_t
    n_kv_heads::Csize_t
    head_dim::Csize_t
    intermediate_size::Csize_t
    n_params::Csize_t
    bos_id::Int64
    eos_id::Int64
    pad_id::Int64
    weight_bytes::Csize_t
end

struct CModelOptions
    struct_size::UInt32
    require_tokenizer::UInt32
    weights::Ptr{UInt8}
    device::Ptr{UInt8}
end

struct CSiteInfo
    struct_size::UInt32
    reserved::UInt32
    component::Ptr{UInt8}
    dim::Csize_t
    heads::Csize_t
    shape::Ptr{UInt8}
    meaning::Ptr{UInt8}
end

struct CHostIntervention
    struct_size::UInt32
    flags::UInt32
    name::Ptr{UInt8}
    user_data::Ptr{Cvoid}
    create::Ptr{Cvoid}
    apply::Ptr{Cvoid}
    last_error::Ptr{Cvoid}
    destroy::Ptr{Cvoid}
    release::Ptr{Cvoid}
end

struct CLrGroup
    pattern::Ptr{UInt8}
    lr::Cdouble
end

struct CTrainOptions
    struct_size::UInt32
    optimizer::UInt32
    epochs::Csize_t
    batch_size::Csize_t
    lr::Cdouble
    lr_groups::Ptr{CLrGroup}
    n_lr_groups::Csize_t
    weight_decay::Cdouble
    warmup_ratio::Cdouble
    warmup_steps::Csize_t
    gradient_accumulation_steps::Csize_t
    seed::UInt64
    temperature_start::Cdouble
    temperature_end::Cdouble
    boundary_penalty::Cdouble
    no_lr_decay::UInt32
    no_shuffle::UInt32
end

struct CTrainProgress
    struct_size::UInt32
    reserved::UInt32
    epoch::Csize_t
    step::Csize_t
    total_steps::Csize_t
    loss::Cdouble
    iia::Cdouble
    lr_factor::Cdouble
    temperature::Cdouble
end

struct CTrainReport
    struct_size::UInt32
    completed::UInt32
    steps::Csize_t
    epochs::Csize_t
    last_loss::Cdouble
    last_iia::Cdouble
end

struct CEvaluation
    struct_size::UInt32
    reserved::UInt32
    loss::Cdouble
    iia::Cdouble
    examples::Csize_t
end

# Sizes pinned by tests/c/header_cpp.cpp; checked again at load time.
const SIZES = (CInput => 56, CUnits => 48, CLocation => 96, CSubspace => 24, CTensor => 24,
    CRequest => 104, CGenerateOptions => 64, CModelInfo => 120, CSiteInfo => 48,
    CHostIntervention => 64, CTrainOptions => 120)

function __init__()
    isfile(libvene) || @warn "libvene not found at $(libvene): build it (cargo build --release) or set ENV[\"VENE_LIB\"]"
    for (T, n) in SIZES
        sizeof(T) == n || error("Vene.jl: sizeof($T) is $(sizeof(T)), vene.h says $n")
    end
    APPLY_PTR[] = @cfunction(_apply, Int32,
        (Ptr{Cvoid}, Ptr{Float32}, Ptr{Float32}, Ptr{Float32}, Csize_t, Csize_t))
    LAST_ERROR_PTR[] = @cfunction(_last_error, Ptr{UInt8}, (Ptr{Cvoid}, Ptr{Cvoid}))
    RELEASE_PTR[] = @cfunction(_release, Cvoid, (Ptr{Cvoid},))
    PROGRESS_PTR[] = @cfunction(_progress, Int32, (Ptr{CTrainProgress}, Ptr{Cvoid}))
    LOG_PTR[] = @cfunction(_log, Cvoid, (Ptr{Cvoid}, Int32, Cstring, Cstring))
end

"""The library's ABI version (must equal `Vene.ABI_VERSION`)."""
abi_version() = ccall((:vene_abi_version, libvene), UInt32, ())
version() = unsafe_string(ccall((:vene_version, libvene), Cstring, ()))

# ---- Model ----

"""A loaded model; shareable across Julia threads."""
mutable struct Model
    ptr::Ptr{Cvoid}
end

function Base.close(m::Model)
    if m.ptr != C_NULL
        ccall((:vene_model_free, libvene), Cvoid, (Ptr{Cvoid},), m.ptr)
        m.ptr = C_NULL
    end
    nothing
end

live(x) = x.ptr == C_NULL ? throw(VeneError(Int32(-2), :invalid_handle, "$(typeof(x)) is closed")) : x.ptr

"""
    load_model(path; require_tokenizer=false, weights=nothing, device=nothing) -> Model

Loads a Hugging Face model directory or a GGUF file. `weights`: "as-stored" (default),
"f32", "f16", "bf16", "q8_0" or "q4_k". `device`: "cpu" (default), "cuda" or "cuda:N" (a
libvene built with the cuda feature).
"""
function load_model(path::AbstractString; require_tokenizer::Bool=false,
                    weights::Union{Nothing,AbstractString}=nothing,
                    device::Union{Nothing,AbstractString}=nothing)
    w = weights === nothing ? nothing : String(weights)
    d = device === nothing ? nothing : String(device)
    cstr(s) = s === nothing ? Ptr{UInt8}(C_NULL) : pointer(s)  # Julia strings end in NUL
    out = Ref{Ptr{Cvoid}}(C_NULL)
    GC.@preserve w d begin
        opts = Ref(CModelOptions(UInt32(sizeof(CModelOptions)), UInt32(require_tokenizer),
                                 cstr(w), cstr(d)))
        check(ccall((:vene_model_load, libvene), Int32,
            (Cstring, Ptr{CModelOptions}, Ptr{Ptr{Cvoid}}), path, opts, out))
    end
    finalizer(close, Model(out[]))
end

"""Sizes, special tokens and tokenizer presence of a model, as a NamedTuple."""
function info(m::Model)
    i = Ref(CModelInfo(UInt32(sizeof(CModelInfo)), 0, C_NULL, C_NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    check(ccall((:vene_model_get_info, libvene), Int32, (Ptr{Cvoid}, Ptr{CModelInfo}), live(m), i))
    x = i[]
    (model_type=unsafe_string(x.model_type), source=unsafe_string(x.source),
     n_layers=Int(x.n_layers), hidden_size=Int(x.hidden_size), vocab_size=Int(x.vocab_size),
     max_positions=Int(x.max_positions), n_heads=Int(x.n_heads), n_kv_heads=Int(x.n_kv_heads),
     head_dim=Int(x.head_dim), intermediate_size=Int(x.intermediate_size),
     n_params=Int(x.n_params), bos_id=x.bos_id, eos_id=x.eos_id, pad_id=x.pad_id,
     has_tokenizer=x.has_tokenizer != 0, weight_bytes=Int(x.weight_bytes))
end

"""The model's site components: a vector of NamedTuples (component, dim, heads, shape, meaning)."""
function sites(m::Model)
    n = Ref{Csize_t}(0)
    check(ccall((:vene_model_site_count, libvene), Int32, (Ptr{Cvoid}, Ref{Csize_t}), live(m), n))
    map(0:Int(n[])-1) do k
        s = Ref(CSiteInfo(UInt32(sizeof(CSiteInfo)), 0, C_NULL, 0, 0, C_NULL, C_NULL))
        check(ccall((:vene_model_site, libvene), Int32, (Ptr{Cvoid}, Csize_t, Ptr{CSiteInfo}),
            live(m), k, s))
        x = s[]
        (component=unsafe_string(x.component), dim=Int(x.dim), heads=Int(x.heads),
         shape=unsafe_string(x.shape), meaning=unsafe_string(x.meaning))
    end
end

"""Token ids of `text` (no special tokens added)."""
function tokenize(m::Model, text::AbstractString)
    s = String(text)
    n = Ref{Csize_t}(0)
    f(buf, cap) = ccall((:vene_tokenize, libvene), Int32,
        (Ptr{Cvoid}, Ptr{UInt8}, Csize_t, Ptr{Int32}, Csize_t, Ref{Csize_t}),
        live(m), s, sizeof(s), buf, cap, n)
    check(f(C_NULL, 0))
    ids = Vector{Int32}(undef, n[])
    check(f(ids, length(ids)))
    ids
end

"""The text of token ids."""
function detokenize(m::Model, ids::AbstractVector{<:Integer})
    v = Vector{Int32}(ids)
    n = Ref{Csize_t}(0)
    f(buf, cap) = ccall((:vene_detokenize, libvene), Int32,
        (Ptr{Cvoid}, Ptr{Int32}, Csize_t, Ptr{UInt8}, Csize_t, Ref{Csize_t}),
        live(m), v, length(v), buf, cap, n)
    check(f(C_NULL, 0))
    buf = Vector{UInt8}(undef, n[] + 1)
    check(f(buf, length(buf)))
    String(buf[1:n[]])
end

"""The text of one token, e.g. `" Rome"`."""
token_text(m::Model, id::Integer) = detokenize(m, [id])

# ---- Results ----

"""The named output tensors of one run."""
mutable struct Result
    ptr::Ptr{Cvoid}
end

function Base.close(r::Result)
    if r.ptr != C_NULL
        ccall((:vene_result_free, libvene), Cvoid, (Ptr{Cvoid},), r.ptr)
        r.ptr = C_NULL
    end
    nothing
end

wrap_result(p) = finalizer(close, Result(p))

"""Names of the tensors of a result."""
function tensor_names(r::Result)
    n = Ref{Csize_t}(0)
    check(ccall((:vene_result_count, libvene), Int32, (Ptr{Cvoid}, Ref{Csize_t}), live(r), n))
    map(0:Int(n[])-1) do i
        name = Ref{Ptr{UInt8}}(C_NULL)
        check(ccall((:vene_result_name, libvene), Int32, (Ptr{Cvoid}, Csize_t, Ref{Ptr{UInt8}}),
            live(r), i, name))
        unsafe_string(name[])
    end
end

# A row-major C buffer as a Julia array with the same index order (a copy).
function rowmajor(ptr::Ptr{T}, shape::Vector{Int64}) where {T}
    dims = Tuple(Int.(shape))
    n = prod(dims; init=1)
    flat = copy(unsafe_wrap(Array, ptr, n))
    length(dims) <= 1 && return reshape(flat, dims)
    permutedims(reshape(flat, reverse(dims)), length(dims):-1:1)
end

function _fetch(r::Result, name::AbstractString, ::Type{T}, sym::Symbol) where {T}
    data = Ref{Ptr{T}}(C_NULL)
    shape = Ref{Ptr{Int64}}(C_NULL)
    nd = Ref{Csize_t}(0)
    code = if sym === :f32
        ccall((:vene_result_tensor, libvene), Int32,
            (Ptr{Cvoid}, Cstring, Ref{Ptr{T}}, Ref{Ptr{Int64}}, Ref{Csize_t}), live(r), name, data, shape, nd)
    else
        ccall((:vene_result_tensor_i64, libvene), Int32,
            (Ptr{Cvoid}, Cstring, Ref{Ptr{T}}, Ref{Ptr{Int64}}, Ref{Csize_t}), live(r), name, data, shape, nd)
    end
    check(code)
    s = nd[] == 0 ? Int64[] : copy(unsafe_wrap(Array, shape[], Int(nd[])))
    rowmajor(data[], s)
end

"""A Float32 copy of the tensor `name`, indexed like the C API's row-major layout."""
tensor(r::Result, name::AbstractString) = _fetch(r, name, Float32, :f32)
"""An Int64 copy of an integer tensor such as "generated.ids"."""
ids(r::Result, name::AbstractString="generated.ids") = _fetch(r, name, Int64, :i64)

"""
    top_k(r, k; name="intervened.logits", row=0, position=-1)

The `k` most likely tokens of the logits `name` for example `row` (0-based) at `position`
(0-based; negative counts from the end, -1 is the last and the only one with `logits=:last`),
most likely first, as `(id=..., prob=...)` (probability: softmax over the vocabulary).
"""
function top_k(r::Result, k::Integer; name::AbstractString="intervened.logits",
               row::Integer=0, position::Integer=-1)
    tok = Vector{Int32}(undef, k)
    prob = Vector{Float32}(undef, k)
    n = Ref{Csize_t}(0)
    check(ccall((:vene_result_top_k, libvene), Int32,
        (Ptr{Cvoid}, Cstring, Csize_t, Int64, Csize_t, Ptr{Int32}, Ptr{Float32}, Ref{Csize_t}),
        live(r), name, row, position, k, tok, prob, n))
    [(id=tok[i], prob=prob[i]) for i in 1:Int(n[])]
end

# ---- Requests ----

"""One side of a location: `nothing` for the whole tensor, or 0-based indices (one vector for
every example, or a matrix with one row per example); `positions` for unit "h.pos"."""
struct Units
    indices::Union{Nothing,Matrix{Int64}}
    positions::Union{Nothing,Matrix{Int64}}
end
Units() = Units(nothing, nothing)
torows(v::AbstractVector) = reshape(Vector{Int64}(v), 1, :)
torows(m::AbstractMatrix) = Matrix{Int64}(m)
Units(idx) = Units(torows(idx), nothing)
Units(heads, positions) = Units(torows(heads), torows(positions))

struct Location
    source::Units
    base::Units
end
"""The same 0-based positions (or heads) on both sides."""
at(idx::Integer...) = Location(Units(collect(idx)), Units(collect(idx)))

const LOGITS = Dict(:all => 0, :last => 1, :none => 2, :at => 3)

# Keeps every array a request points to alive during the ccall.
struct Lowered
    req::Base.RefValue{CRequest}
    keep::Vector{Any}
end

function cinput!(keep, x)
    x === nothing && return NO_INPUT
    if x isa AbstractVector{<:Integer}
        v = Vector{Int32}(x); push!(keep, v)
        return CInput(pointer(v), C_NULL, 1, length(v), 0, C_NULL, C_NULL)
    elseif x isa AbstractMatrix{<:Integer}          # (batch, seq)
        v = Vector{Int32}(vec(permutedims(x))); push!(keep, v)
        return CInput(pointer(v), C_NULL, size(x, 1), size(x, 2), 0, C_NULL, C_NULL)
    elseif x isa NamedTuple                           # (ids=matrix, attention_mask=matrix)
        base = cinput!(keep, x.ids)
        m = haskey(x, :attention_mask) ? Vector{Int32}(vec(permutedims(x.attention_mask))) : nothing
        m === nothing || push!(keep, m)
        return CInput(base.ids, C_NULL, base.batch, base.seq, 0,
            m === nothing ? C_NULL : pointer(m), C_NULL)
    end
    throw(ArgumentError("an input is token ids: a vector, a (batch, seq) matrix, or (ids=..., attention_mask=...)"))
end

function cunits!(keep, u::Units)
    u.indices === nothing && return CUnits(0, 0, 0, 0, C_NULL, 0, C_NULL)
    idx = vec(permutedims(u.indices)); push!(keep, idx)
    rows, n = size(u.indices)
    if u.positions === nothing
        return CUnits(1, 0, rows, n, pointer(idx), 0, C_NULL)
    end
    pos = vec(permutedims(u.positions)); push!(keep, pos)
    CUnits(2, 0, rows, n, pointer(idx), size(u.positions, 2), pointer(pos))
end

function carray!(keep, T, items)
    isempty(items) && return (Ptr{T}(C_NULL), 0)
    v = collect(T, items); push!(keep, v)
    (pointer(v), length(v))
end

function lower(; base, sources=[], locations=Location[], subspaces=[],
               source_representations=[], logits::Symbol=:all, logit_positions=Int[],
               output_original::Bool=false)
    keep = Any[]
    b = Ref(cinput!(keep, base)); push!(keep, b)
    srcs, ns = carray!(keep, CInput, [cinput!(keep, s) for s in sources])
    locs, nl = carray!(keep, CLocation,
        [CLocation(cunits!(keep, l.source), cunits!(keep, l.base)) for l in locations])
    subs, nsub = carray!(keep, CSubspace, map(subspaces) do s
        s === nothing && return CSubspace(0, 0, C_NULL)
        m = torows(s); d = vec(permutedims(m)); push!(keep, d)
        CSubspace(size(m, 1), size(m, 2), pointer(d))
    end)
    reps, nr = carray!(keep, CTensor, map(source_representations) do t
        t === nothing && return CTensor(C_NULL, C_NULL, 0)
        d = Vector{Float32}(vec(permutedims(t, ndims(t):-1:1))); sh = Int64[size(t)...]
        push!(keep, d); push!(keep, sh)
        CTensor(pointer(d), pointer(sh), length(sh))
    end)
    lp = Vector{Int64}(logit_positions); push!(keep, lp)
    req = Ref(CRequest(UInt32(sizeof(CRequest)), LOGITS[logits],
        Base.unsafe_convert(Ptr{CInput}, b), srcs, ns, locs, nl, subs, nsub, reps, nr,
        isempty(lp) ? C_NULL : pointer(lp), length(lp), output_original, 0))
    Lowered(req, keep)
end

# ---- Intervenable ----

"""A model plus a compiled intervention config (pyvene's IntervenableConfig as JSON)."""
mutable struct Intervenable
    ptr::Ptr{Cvoid}
    Intervenable(::Val{:adopt}, p::Ptr{Cvoid}) = finalizer(close, new(p))
    function Intervenable(m::Model, config::AbstractString)
        out = Ref{Ptr{Cvoid}}(C_NULL)
        check(ccall((:vene_intervenable_create, libvene), Int32,
            (Ptr{Cvoid}, Cstring, Ptr{Ptr{Cvoid}}), live(m), config, out))
        finalizer(close, new(out[]))
    end
end

function Base.close(iv::Intervenable)
    if iv.ptr != C_NULL
        ccall((:vene_intervenable_free, libvene), Cvoid, (Ptr{Cvoid},), iv.ptr)
        iv.ptr = C_NULL
    end
    nothing
end

"""Runs `vene run`'s request (without model and config) given as JSON."""
function run_json(iv::Intervenable, json::AbstractString)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    check(ccall((:vene_intervenable_run_json, libvene), Int32,
        (Ptr{Cvoid}, Cstring, Ptr{Ptr{Cvoid}}), live(iv), json, out))
    wrap_result(out[])
end

"""
    run(iv; base, sources=[], locations=[], subspaces=[], source_representations=[],
        logits=:all, logit_positions=[], output_original=false) -> Result

A typed run. `base` and each source: token ids (vector, or (batch, seq) matrix);
`nothing` in `sources` skips a group. Indices are 0-based.
"""
function run(iv::Intervenable; kw...)
    l = lower(; kw...)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    GC.@preserve l begin
        check(ccall((:vene_intervenable_run, libvene), Int32,
            (Ptr{Cvoid}, Ptr{CRequest}, Ptr{Ptr{Cvoid}}), live(iv), l.req, out))
    end
    wrap_result(out[])
end

"""Generates with the interventions in place; read `ids(result)`. The defaults are those of
every front end (`vene_generate_options_init`): greedy, 32 new tokens, seed 0."""
function generate(iv::Intervenable; max_new_tokens::Integer=32, temperature::Real=0.0,
                  top_p::Real=0.0, top_k::Integer=0, seed::Integer=0, stop_ids=Int32[],
                  intervene_on_prompt::Bool=false, ignore_eos::Bool=false, kw...)
    l = lower(; kw...)
    stops = Vector{Int32}(stop_ids)
    opts = Ref(CGenerateOptions(UInt32(sizeof(CGenerateOptions)), max_new_tokens, temperature,
        top_p, top_k, seed, isempty(stops) ? C_NULL : pointer(stops), length(stops),
        intervene_on_prompt, ignore_eos))
    out = Ref{Ptr{Cvoid}}(C_NULL)
    GC.@preserve l stops begin
        check(ccall((:vene_intervenable_generate, libvene), Int32,
            (Ptr{Cvoid}, Ptr{CRequest}, Ptr{CGenerateOptions}, Ptr{Ptr{Cvoid}}),
            live(iv), l.req, opts, out))
    end
    wrap_result(out[])
end

"""(representations, groups) of the config."""
function counts(iv::Intervenable)
    r = Ref{Csize_t}(0); g = Ref{Csize_t}(0)
    check(ccall((:vene_intervenable_counts, libvene), Int32,
        (Ptr{Cvoid}, Ref{Csize_t}, Ref{Csize_t}), live(iv), r, g))
    (Int(r[]), Int(g[]))
end

# ---- Julia functions as interventions ----

# Registered functions (in a Ref whose address is the user_data) by that address; kept here
# so the GC cannot free them while the engine holds the pointer. Removed when vene releases
# the type.
const HOST_FNS = Dict{Ptr{Cvoid},Any}()
const HOST_LOCK = ReentrantLock()
const HOST_ERROR = Ref{String}("")
const APPLY_PTR = Ref{Ptr{Cvoid}}(C_NULL)
const LAST_ERROR_PTR = Ref{Ptr{Cvoid}}(C_NULL)
const RELEASE_PTR = Ref{Ptr{Cvoid}}(C_NULL)
const PROGRESS_PTR = Ref{Ptr{Cvoid}}(C_NULL)

# state == user_data (no create function): the Ref holding the Julia function.
function _apply(state::Ptr{Cvoid}, base::Ptr{Float32}, source::Ptr{Float32}, out::Ptr{Float32},
                rows::Csize_t, dim::Csize_t)::Int32
    try
        f = lock(HOST_LOCK) do
            HOST_FNS[state][]
        end
        # Each column is one row of `dim` features (column-major view of row-major rows).
        b = unsafe_wrap(Array, base, (Int(dim), Int(rows)))
        o = unsafe_wrap(Array, out, (Int(dim), Int(rows)))
        s = source == C_NULL ? nothing : unsafe_wrap(Array, source, (Int(dim), Int(rows)))
        f(o, b, s)
        return Int32(0)
    catch e
        HOST_ERROR[] = sprint(showerror, e)
        return Int32(1)
    end
end

_last_error(::Ptr{Cvoid}, ::Ptr{Cvoid})::Ptr{UInt8} = pointer(HOST_ERROR[])

function _release(user_data::Ptr{Cvoid})::Cvoid
    lock(HOST_LOCK) do
        delete!(HOST_FNS, user_data)
    end
    nothing
end

"""
    register_intervention(f, plugin, name; flags=0)

Makes the Julia function `f(out, base, source)` the intervention type "<plugin>/<name>".
`base`, `out` (and `source`, or `nothing` without one) are `dim x rows` Float32 matrices
(each column one row of features) valid during the call only; write all of `out`. `flags`:
`Vene.NO_SOURCE` (never needs a source), `Vene.DISTRIBUTED` (all units of an example form
one row). An exception in `f` fails the run with its message.
"""
function register_intervention(f, plugin::AbstractString, name::AbstractString; flags::Integer=0)
    holder = Ref{Any}(f)            # its address is the user_data; HOST_FNS keeps it alive
    key = pointer_from_objref(holder)
    lock(HOST_LOCK) do
        HOST_FNS[key] = holder
    end
    cname = String(name)
    code = GC.@preserve cname begin
        h = Ref(CHostIntervention(UInt32(sizeof(CHostIntervention)), flags, pointer(cname), key,
            C_NULL, APPLY_PTR[], LAST_ERROR_PTR[], C_NULL, RELEASE_PTR[]))
        ccall((:vene_register_host_intervention, libvene), Int32,
            (Cstring, Ptr{CHostIntervention}), plugin, h)
    end
    if code != VENE_OK            # vene did not take user_data
        lock(HOST_LOCK) do
            delete!(HOST_FNS, key)
        end
        check(code)
    end
    nothing
end

const NO_SOURCE = 1
const DISTRIBUTED = 2

"""Removes the intervention type "<plugin>/<type>"."""
unregister_intervention(type_name::AbstractString) =
    check(ccall((:vene_unregister_intervention_type, libvene), Int32, (Cstring,), type_name))

"""Loads a native plugin or a .wasm/.wat module and registers its types."""
load_plugin(path::AbstractString) =
    check(ccall((:vene_plugin_load, libvene), Int32, (Cstring,), path))

# ---- Plugin log lines ----

const LOG_FN = Ref{Any}(nothing)
const LOG_PTR = Ref{Ptr{Cvoid}}(C_NULL)
const LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF = 0, 1, 2, 3, 4

function _log(::Ptr{Cvoid}, level::Int32, who::Cstring, msg::Cstring)::Cvoid
    f = LOG_FN[]
    try
        f === nothing || f(Int(level), unsafe_string(who), unsafe_string(msg))
    catch
        # an exception must not unwind into the engine: the line is lost
    end
    nothing
end

"""
    set_log_sink(f)

Sends plugin log lines to `f(level, who, message)` instead of stderr; `nothing` restores
stderr. Only lines at or above the log level arrive (`set_log_level`).
"""
function set_log_sink(f)
    if f === nothing
        check(ccall((:vene_set_log_sink, libvene), Int32, (Ptr{Cvoid}, Ptr{Cvoid}), C_NULL, C_NULL))
        LOG_FN[] = nothing
    else
        LOG_FN[] = f
        check(ccall((:vene_set_log_sink, libvene), Int32, (Ptr{Cvoid}, Ptr{Cvoid}), LOG_PTR[], C_NULL))
    end
    nothing
end

"""The lowest level logged: `Vene.LOG_DEBUG` .. `Vene.LOG_ERROR`, `Vene.LOG_OFF`, or -1 for
the environment variable VENE_PLUGIN_LOG (default: warnings and errors)."""
set_log_level(level::Integer) =
    check(ccall((:vene_set_log_level, libvene), Int32, (Int32,), level))

# ---- Training ----

mutable struct Dataset
    ptr::Ptr{Cvoid}
end

function Base.close(d::Dataset)
    if d.ptr != C_NULL
        ccall((:vene_dataset_free, libvene), Cvoid, (Ptr{Cvoid},), d.ptr)
        d.ptr = C_NULL
    end
    nothing
end

"""Parses JSONL examples (see vene_dataset_parse in vene.h)."""
function parse_dataset(jsonl::AbstractString)
    s = String(jsonl)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    check(ccall((:vene_dataset_parse, libvene), Int32, (Ptr{UInt8}, Csize_t, Ptr{Ptr{Cvoid}}),
        s, sizeof(s), out))
    finalizer(close, Dataset(out[]))
end

function Base.length(d::Dataset)
    n = Ref{Csize_t}(0)
    check(ccall((:vene_dataset_count, libvene), Int32, (Ptr{Cvoid}, Ref{Csize_t}), live(d), n))
    Int(n[])
end

function _progress(p::Ptr{CTrainProgress}, user_data::Ptr{Cvoid})::Int32
    ctx = unsafe_pointer_to_objref(user_data)::Base.RefValue{Any}
    x = unsafe_load(p)
    try
        keep = ctx[](( epoch=Int(x.epoch), step=Int(x.step), total_steps=Int(x.total_steps),
            loss=x.loss, iia=x.iia, lr_factor=x.lr_factor, temperature=x.temperature))
        return keep === false ? Int32(1) : Int32(0)
    catch
        return Int32(1)
    end
end

"""
    train!(iv, data; epochs=10, batch_size=32, lr=1e-3, warmup_ratio=0.1, seed=0,
           progress=nothing) -> NamedTuple

Trains the interventions' parameters with the built-in cross-entropy loss. `progress(p)` is
called after every step; returning `false` stops training.
"""
function train!(iv::Intervenable, data::Dataset; epochs::Integer=10, batch_size::Integer=32,
                lr::Real=1e-3, warmup_ratio::Real=0.1, warmup_steps::Integer=0,
                gradient_accumulation_steps::Integer=1, seed::Integer=0, adamw::Bool=false,
                weight_decay::Real=0.0, temperature::Tuple=(50.0, 0.1),
                boundary_penalty::Real=0.0, lr_decay::Bool=true, shuffle::Bool=true,
                progress=nothing)
    opts = Ref(CTrainOptions(UInt32(sizeof(CTrainOptions)), adamw ? 1 : 0, epochs, batch_size, lr,
        C_NULL, 0, weight_decay, warmup_ratio, warmup_steps, gradient_accumulation_steps, seed,
        temperature[1], temperature[2], boundary_penalty, !lr_decay, !shuffle))
    rep = Ref(CTrainReport(UInt32(sizeof(CTrainReport)), 0, 0, 0, 0.0, 0.0))
    ctx = Ref{Any}(progress)
    cb = progress === nothing ? C_NULL : PROGRESS_PTR[]
    GC.@preserve ctx begin
        check(ccall((:vene_intervenable_train, libvene), Int32,
            (Ptr{Cvoid}, Ptr{Cvoid}, Ptr{CTrainOptions}, Ptr{Cvoid}, Ptr{Cvoid}, Ptr{CTrainReport}),
            live(iv), live(data), opts, cb, pointer_from_objref(ctx), rep))
    end
    r = rep[]
    (completed=r.completed != 0, steps=Int(r.steps), epochs=Int(r.epochs),
     last_loss=r.last_loss, last_iia=r.last_iia)
end

"""Loss and interchange intervention accuracy over `data`."""
function evaluate(iv::Intervenable, data::Dataset; batch_size::Integer=32)
    e = Ref(CEvaluation(UInt32(sizeof(CEvaluation)), 0, 0.0, 0.0, 0))
    check(ccall((:vene_intervenable_evaluate, libvene), Int32,
        (Ptr{Cvoid}, Ptr{Cvoid}, Csize_t, Ptr{CEvaluation}), live(iv), live(data), batch_size, e))
    (loss=e[].loss, iia=e[].iia, examples=Int(e[].examples))
end

# ---- Knobs ----

"""Saves the interventions of `iv` (config, trained state, model fingerprint) as a knob directory."""
save_knob(iv::Intervenable, dir::AbstractString) =
    check(ccall((:vene_knob_save, libvene), Int32, (Ptr{Cvoid}, Cstring), live(iv), dir))

"""Loads a knob (vene directory, pyvene save directory or .wasm knob file) onto `m`."""
function load_knob(m::Model, path::AbstractString)
    out = Ref{Ptr{Cvoid}}(C_NULL)
    check(ccall((:vene_knob_load, libvene), Int32, (Ptr{Cvoid}, Cstring, Ptr{Ptr{Cvoid}}),
        live(m), path, out))
    iv = Intervenable(Val(:adopt), out[])
    iv
end

end # module

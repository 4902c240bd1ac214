// Package vene is the Go binding of vene, an engine for causal interventions on neural
// networks (pyvene's interventions on a Rust engine with a C API).
//
//	m, err := vene.LoadModel("model_dir")
//	if err != nil { ... }
//	defer m.Close()
//	iv, err := vene.NewIntervenable(m, `[{"layer": 0, "component": "block_output"}]`)
//	defer iv.Close()
//	res, err := iv.Run(&vene.Request{
//		Base:      vene.Tokens(1, 2, 3, 4),
//		Sources:   []*vene.Input{vene.Tokens(5, 6, 7, 8)},
//		Locations: []vene.Location{vene.At(1)},
//	})
//	defer res.Close()
//	logits, err := res.Tensor("intervened.logits") // a Go copy: Data []float32, Shape []int64
//
// Errors are values: every failing call returns an *Error with the C status and message
// (errors.As works; errors.Is(err, vene.ErrClosed) after Close). Objects hold C handles:
// call Close when done (idempotent); a finalizer frees what was forgotten. A Model may be
// shared by any number of goroutines; distinct Intervenables run concurrently, and one
// Intervenable may run from several goroutines at once. Go functions become interventions
// with RegisterIntervention.
//
// Building: the package carries its copy of vene.h (and vene_plugin.h), so it compiles
// anywhere, vendored too. It links libvene from ../../target/release when used inside a vene
// checkout (run `cargo build --release` first); anywhere else (a module cache, vendor/) tell
// cgo where libvene is: CGO_LDFLAGS="-L<dir> -Wl,-rpath,<dir>", or
// CGO_LDFLAGS="$(pkg-config --libs vene)" after installing the C++ package (README.md).
package vene

/*
#cgo CFLAGS: -I${SRCDIR}
#cgo LDFLAGS: -L${SRCDIR}/../../target/release -lvene -Wl,-rpath,${SRCDIR}/../../target/release
#include <stdlib.h>
#include <string.h>
#include "vene.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// call runs one C call and reads its error on the same OS thread: vene_last_error() is per
// thread, and a goroutine may move between threads between two cgo calls.
func call(f func() C.vene_status) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return check(f())
}

// ABIVersion is the ABI version of the loaded library; it must equal the header's.
func ABIVersion() uint32 { return uint32(C.vene_abi_version()) }

// HeaderABIVersion is VENE_ABI_VERSION of the vene.h this package was built with.
const HeaderABIVersion = uint32(C.VENE_ABI_VERSION)

// Version is the library's version string.
func Version() string { return C.GoString(C.vene_version()) }

// arena holds C memory for one call's arguments (cgo forbids handing C Go memory that itself
// holds Go pointers, and vene's request structs hold pointers).
type arena struct{ ptrs []unsafe.Pointer }

func (a *arena) alloc(n int) unsafe.Pointer {
	if n == 0 {
		n = 1
	}
	p := C.calloc(1, C.size_t(n))
	if p == nil {
		panic("vene: out of C memory")
	}
	a.ptrs = append(a.ptrs, p)
	return p
}

func (a *arena) free() {
	for _, p := range a.ptrs {
		C.free(p)
	}
	a.ptrs = nil
}

func (a *arena) str(s string) *C.char {
	p := (*C.char)(a.alloc(len(s) + 1))
	copy(unsafe.Slice((*byte)(unsafe.Pointer(p)), len(s)), s)
	return p
}

func cslice[T any](a *arena, v []T) *T {
	if len(v) == 0 {
		return nil
	}
	var zero T
	p := (*T)(a.alloc(len(v) * int(unsafe.Sizeof(zero))))
	copy(unsafe.Slice(p, len(v)), v)
	return p
}

// ---- Model ----

// Model is a loaded model (weights, tokenizer). Safe for concurrent use.
type Model struct {
	mu sync.RWMutex
	p  *C.vene_model
}

// ModelInfo describes a model.
type ModelInfo struct {
	ModelType, Source                                                 string
	Layers, Hidden, Vocab, MaxPositions, Heads, KVHeads, HeadDim, FFN int
	Params                                                            int
	WeightBytes                                                       int   // bytes the weights occupy in memory as loaded
	BOS, EOS, Pad                                                     int64 // -1 when absent
	HasTokenizer                                                      bool
}

// SiteInfo is one intervention site component.
type SiteInfo struct {
	Component, Shape, Meaning string
	Dim, Heads                int
}

// LoadModel loads a Hugging Face model directory or a GGUF file.
func LoadModel(path string) (*Model, error) { return LoadModelWith(path, ModelOptions{}) }

// LoadModelWithTokenizer is LoadModel, failing when the model has no tokenizer.
func LoadModelWithTokenizer(path string) (*Model, error) {
	return LoadModelWith(path, ModelOptions{RequireTokenizer: true})
}

// ModelOptions say how LoadModelWith loads a model; the zero value is LoadModel's defaults.
type ModelOptions struct {
	// RequireTokenizer fails the load when the model has no tokenizer.
	RequireTokenizer bool
	// Weights: "" or "as-stored" (f16/bf16 stay half, GGUF blocks stay quantized), "f32",
	// "f16", "bf16", or quantized at load to "q8_0" or "q4_k".
	Weights string
	// Device: "" or "cpu", "cuda" (GPU 0) or "cuda:N" (a libvene built with the cuda feature).
	Device string
}

// LoadModelWith loads a Hugging Face model directory or a GGUF file as o says.
func LoadModelWith(path string, o ModelOptions) (*Model, error) {
	var a arena
	defer a.free()
	opts := (*C.vene_model_options)(a.alloc(C.sizeof_vene_model_options))
	var p *C.vene_model
	err := call(func() C.vene_status {
		if s := C.vene_model_options_init(opts, C.sizeof_vene_model_options); s != C.VENE_OK {
			return s
		}
		if o.RequireTokenizer {
			opts.require_tokenizer = 1
		}
		if o.Weights != "" {
			opts.weights = a.str(o.Weights)
		}
		if o.Device != "" {
			opts.device = a.str(o.Device)
		}
		return C.vene_model_load(a.str(path), opts, &p)
	})
	if err != nil {
		return nil, err
	}
	m := &Model{p: p}
	runtime.SetFinalizer(m, (*Model).Close)
	return m, nil
}

// Close frees the model (intervenables made from it keep working). Idempotent.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.p != nil {
		C.vene_model_free(m.p)
		m.p = nil
		runtime.SetFinalizer(m, nil)
	}
	return nil
}

// use runs f with the live handle under the read lock.
func (m *Model) use(f func(p *C.vene_model) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.p == nil {
		return ErrClosed
	}
	return f(m.p)
}

// Info returns the model's sizes and special tokens.
func (m *Model) Info() (ModelInfo, error) {
	var out ModelInfo
	err := m.use(func(p *C.vene_model) error {
		var i C.vene_model_info
		i.struct_size = C.sizeof_vene_model_info
		if err := call(func() C.vene_status { return C.vene_model_get_info(p, &i) }); err != nil {
			return err
		}
		out = ModelInfo{
			ModelType: C.GoString(i.model_type), Source: C.GoString(i.source),
			Layers: int(i.n_layers), Hidden: int(i.hidden_size), Vocab: int(i.vocab_size),
			MaxPositions: int(i.max_positions), Heads: int(i.n_heads), KVHeads: int(i.n_kv_heads),
			HeadDim: int(i.head_dim), FFN: int(i.intermediate_size), Params: int(i.n_params),
			BOS: int64(i.bos_id), EOS: int64(i.eos_id), Pad: int64(i.pad_id),
			WeightBytes:  int(i.weight_bytes),
			HasTokenizer: i.has_tokenizer != 0,
		}
		return nil
	})
	return out, err
}

// Sites lists the model's intervention site components.
func (m *Model) Sites() ([]SiteInfo, error) {
	var out []SiteInfo
	err := m.use(func(p *C.vene_model) error {
		var n C.size_t
		if err := call(func() C.vene_status { return C.vene_model_site_count(p, &n) }); err != nil {
			return err
		}
		for k := C.size_t(0); k < n; k++ {
			var s C.vene_site_info
			s.struct_size = C.sizeof_vene_site_info
			if err := call(func() C.vene_status { return C.vene_model_site(p, k, &s) }); err != nil {
				return err
			}
			out = append(out, SiteInfo{C.GoString(s.component), C.GoString(s.shape),
				C.GoString(s.meaning), int(s.dim), int(s.heads)})
		}
		return nil
	})
	return out, err
}

// Tokenize encodes text (no special tokens added).
func (m *Model) Tokenize(text string) ([]int32, error) {
	var out []int32
	err := m.use(func(p *C.vene_model) error {
		var a arena
		defer a.free()
		ct := a.str(text)
		var n C.size_t
		err := call(func() C.vene_status {
			return C.vene_tokenize(p, ct, C.size_t(len(text)), nil, 0, &n)
		})
		if err != nil {
			return err
		}
		buf := (*C.int32_t)(a.alloc(int(n) * 4))
		err = call(func() C.vene_status {
			return C.vene_tokenize(p, ct, C.size_t(len(text)), buf, n, &n)
		})
		if err != nil {
			return err
		}
		out = make([]int32, int(n))
		copy(out, unsafe.Slice((*int32)(unsafe.Pointer(buf)), int(n)))
		return nil
	})
	return out, err
}

// Detokenize decodes token ids into text.
func (m *Model) Detokenize(ids []int32) (string, error) {
	var out string
	err := m.use(func(p *C.vene_model) error {
		var a arena
		defer a.free()
		cids := (*C.int32_t)(unsafe.Pointer(cslice(&a, ids)))
		var n C.size_t
		err := call(func() C.vene_status {
			return C.vene_detokenize(p, cids, C.size_t(len(ids)), nil, 0, &n)
		})
		if err != nil {
			return err
		}
		buf := (*C.char)(a.alloc(int(n) + 1))
		err = call(func() C.vene_status {
			return C.vene_detokenize(p, cids, C.size_t(len(ids)), buf, n+1, &n)
		})
		if err != nil {
			return err
		}
		out = C.GoStringN(buf, C.int(n))
		return nil
	})
	return out, err
}

// ---- Requests ----

// Input is one batch of token ids (Batch x Seq, row-major), optionally with a mask (1 =
// token, 0 = padding) and position ids, or of embeddings (Batch x Seq x EmbedDim).
type Input struct {
	IDs           []int32
	Embeds        []float32
	Batch, Seq    int
	EmbedDim      int
	AttentionMask []int32
	PositionIDs   []int32
}

// Tokens is a one-row input.
func Tokens(ids ...int32) *Input { return &Input{IDs: ids, Batch: 1, Seq: len(ids)} }

// Units selects units on one side of a location: nil Indices means the whole tensor. Rows is
// 1 (the same indices for every example) or the batch size; Indices has Rows*N entries. For
// unit "h.pos", Indices are heads and Positions the positions (Rows*len/Rows each).
type Units struct {
	Indices   []int64
	Rows      int
	Positions []int64
}

// Location is where one intervention reads (Source) and writes (Base).
type Location struct{ Source, Base Units }

// At is the same positions (or heads) on both sides, for every example.
func At(idx ...int64) Location {
	u := Units{Indices: idx, Rows: 1}
	return Location{u, u}
}

// Tensor is a float32 tensor, row-major.
type Tensor struct {
	Data  []float32
	Shape []int64
}

// IDs is an integer tensor (generated token ids), row-major.
type IDs struct {
	Data  []int64
	Shape []int64
}

// Logits selects where logits are computed.
type Logits uint32

const (
	LogitsAll  Logits = C.VENE_LOGITS_ALL  // every position (the default)
	LogitsLast Logits = C.VENE_LOGITS_LAST // the last real token of each row
	LogitsNone Logits = C.VENE_LOGITS_NONE // no LM head
	LogitsAt   Logits = C.VENE_LOGITS_AT   // LogitPositions
)

// Request is a typed run request; nil entries of Sources skip a group, nil entries of
// Subspaces and SourceRepresentations mean none.
type Request struct {
	Base                  *Input
	Sources               []*Input
	Locations             []Location
	Subspaces             [][][]int64 // per representation: per example (or one row) feature ids
	SourceRepresentations []*Tensor
	Logits                Logits
	LogitPositions        []int64
	OutputOriginal        bool
}

func lowerInput(a *arena, in *Input, dst *C.vene_input) {
	if in == nil {
		return
	}
	dst.ids = (*C.int32_t)(unsafe.Pointer(cslice(a, in.IDs)))
	dst.embeds = (*C.float)(unsafe.Pointer(cslice(a, in.Embeds)))
	dst.batch = C.size_t(in.Batch)
	dst.seq = C.size_t(in.Seq)
	dst.embed_dim = C.size_t(in.EmbedDim)
	dst.attention_mask = (*C.int32_t)(unsafe.Pointer(cslice(a, in.AttentionMask)))
	dst.position_ids = (*C.int32_t)(unsafe.Pointer(cslice(a, in.PositionIDs)))
}

func lowerUnits(a *arena, u Units, dst *C.vene_units) {
	if u.Indices == nil {
		dst.kind = C.VENE_UNITS_WHOLE
		return
	}
	rows := u.Rows
	if rows == 0 {
		rows = 1
	}
	dst.kind = C.VENE_UNITS_INDEX
	dst.rows = C.size_t(rows)
	dst.n = C.size_t(len(u.Indices) / rows)
	dst.indices = (*C.int64_t)(unsafe.Pointer(cslice(a, u.Indices)))
	if u.Positions != nil {
		dst.kind = C.VENE_UNITS_HEAD_POS
		dst.n_positions = C.size_t(len(u.Positions) / rows)
		dst.positions = (*C.int64_t)(unsafe.Pointer(cslice(a, u.Positions)))
	}
}

func lowerTensor(a *arena, t *Tensor, dst *C.vene_tensor) {
	if t == nil {
		return
	}
	dst.data = (*C.float)(unsafe.Pointer(cslice(a, t.Data)))
	if dst.data == nil { // an empty tensor is still a tensor
		dst.data = (*C.float)(a.alloc(4))
	}
	dst.shape = (*C.int64_t)(unsafe.Pointer(cslice(a, t.Shape)))
	dst.ndim = C.size_t(len(t.Shape))
}

// lower builds the C request in C memory.
func (r *Request) lower(a *arena) (*C.vene_request, error) {
	req := (*C.vene_request)(a.alloc(C.sizeof_vene_request))
	if s := C.vene_request_init(req, C.sizeof_vene_request); s != C.VENE_OK {
		return nil, &Error{Status(s), "vene_request_init failed"}
	}
	if r.Base == nil {
		return nil, &Error{ErrInvalidArgument, "Request.Base is nil"}
	}
	base := (*C.vene_input)(a.alloc(C.sizeof_vene_input))
	lowerInput(a, r.Base, base)
	req.base = base
	if n := len(r.Sources); n > 0 {
		srcs := unsafe.Slice((*C.vene_input)(a.alloc(n*C.sizeof_vene_input)), n)
		for i, s := range r.Sources {
			lowerInput(a, s, &srcs[i])
		}
		req.sources, req.n_sources = &srcs[0], C.size_t(n)
	}
	if n := len(r.Locations); n > 0 {
		locs := unsafe.Slice((*C.vene_location)(a.alloc(n*C.sizeof_vene_location)), n)
		for i, l := range r.Locations {
			lowerUnits(a, l.Source, &locs[i].source)
			lowerUnits(a, l.Base, &locs[i].base)
		}
		req.locations, req.n_locations = &locs[0], C.size_t(n)
	}
	if n := len(r.Subspaces); n > 0 {
		subs := unsafe.Slice((*C.vene_subspace)(a.alloc(n*C.sizeof_vene_subspace)), n)
		for i, rows := range r.Subspaces {
			if len(rows) == 0 {
				continue
			}
			var flat []int64
			for _, row := range rows {
				if len(row) != len(rows[0]) {
					return nil, &Error{ErrInvalidArgument, fmt.Sprintf("Subspaces[%d] is ragged", i)}
				}
				flat = append(flat, row...)
			}
			subs[i].rows = C.size_t(len(rows))
			subs[i].n = C.size_t(len(rows[0]))
			subs[i].dims = (*C.int64_t)(unsafe.Pointer(cslice(a, flat)))
		}
		req.subspaces, req.n_subspaces = &subs[0], C.size_t(n)
	}
	if n := len(r.SourceRepresentations); n > 0 {
		ts := unsafe.Slice((*C.vene_tensor)(a.alloc(n*C.sizeof_vene_tensor)), n)
		for i, t := range r.SourceRepresentations {
			lowerTensor(a, t, &ts[i])
		}
		req.source_representations, req.n_source_representations = &ts[0], C.size_t(n)
	}
	req.logits = C.uint32_t(r.Logits)
	req.logit_positions = (*C.int64_t)(unsafe.Pointer(cslice(a, r.LogitPositions)))
	req.n_logit_positions = C.size_t(len(r.LogitPositions))
	if r.OutputOriginal {
		req.output_original = 1
	}
	return req, nil
}

// ---- Intervenable ----

// Intervenable is a model plus a compiled intervention config.
type Intervenable struct {
	mu sync.RWMutex
	p  *C.vene_intervenable
}

// RepresentationInfo describes one representation of a config.
type RepresentationInfo struct {
	Key, Component, Unit, InterventionType string
	Layer, Group                           int
}

// NewIntervenable compiles a pyvene IntervenableConfig (JSON) for m. An empty string or "[]"
// is the plain model: its runs and generations equal the model's own.
func NewIntervenable(m *Model, configJSON string) (*Intervenable, error) {
	var p *C.vene_intervenable
	err := m.use(func(mp *C.vene_model) error {
		var a arena
		defer a.free()
		if configJSON == "" {
			configJSON = "[]" // the plain model
		}
		cfg := a.str(configJSON)
		return call(func() C.vene_status { return C.vene_intervenable_create(mp, cfg, &p) })
	})
	if err != nil {
		return nil, err
	}
	iv := &Intervenable{p: p}
	runtime.SetFinalizer(iv, (*Intervenable).Close)
	return iv, nil
}

// Close frees the intervenable. Idempotent.
func (iv *Intervenable) Close() error {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	if iv.p != nil {
		C.vene_intervenable_free(iv.p)
		iv.p = nil
		runtime.SetFinalizer(iv, nil)
	}
	return nil
}

func (iv *Intervenable) use(f func(p *C.vene_intervenable) error) error {
	iv.mu.RLock()
	defer iv.mu.RUnlock()
	if iv.p == nil {
		return ErrClosed
	}
	return f(iv.p)
}

func newResult(p *C.vene_result) *Result {
	r := &Result{p: p}
	runtime.SetFinalizer(r, (*Result).Close)
	return r
}

// RunJSON runs `vene run`'s request (without model and config) given as JSON.
func (iv *Intervenable) RunJSON(requestJSON string) (*Result, error) {
	var out *C.vene_result
	err := iv.use(func(p *C.vene_intervenable) error {
		var a arena
		defer a.free()
		js := a.str(requestJSON)
		return call(func() C.vene_status { return C.vene_intervenable_run_json(p, js, &out) })
	})
	if err != nil {
		return nil, err
	}
	return newResult(out), nil
}

// Run runs a typed request.
func (iv *Intervenable) Run(r *Request) (*Result, error) {
	var out *C.vene_result
	err := iv.use(func(p *C.vene_intervenable) error {
		var a arena
		defer a.free()
		req, err := r.lower(&a)
		if err != nil {
			return err
		}
		return call(func() C.vene_status { return C.vene_intervenable_run(p, req, &out) })
	})
	if err != nil {
		return nil, err
	}
	return newResult(out), nil
}

// GenerateOptions controls generation. The zero value means the defaults every front end
// shares (vene_generate_options_init): greedy decoding of 32 new tokens, stopping at
// end-of-sequence, seed 0. The library checks the options, with the same messages as
// `vene run` (e.g. TopP must be in (0, 1], TopK and TopP need a Temperature above 0).
type GenerateOptions struct {
	MaxNewTokens      int     // 0: the default (32)
	Temperature, TopP float64 // 0: greedy; 0: no nucleus
	TopK              int
	Seed              uint64
	StopIDs           []int32
	InterveneOnPrompt bool
	IgnoreEOS         bool
}

// Generate decodes from r.Base with the interventions in place; the result holds
// "generated.ids" (read it with IDs).
func (iv *Intervenable) Generate(r *Request, g GenerateOptions) (*Result, error) {
	var out *C.vene_result
	err := iv.use(func(p *C.vene_intervenable) error {
		var a arena
		defer a.free()
		req, err := r.lower(&a)
		if err != nil {
			return err
		}
		o := (*C.vene_generate_options)(a.alloc(C.sizeof_vene_generate_options))
		C.vene_generate_options_init(o, C.sizeof_vene_generate_options)
		if g.MaxNewTokens > 0 {
			o.max_new_tokens = C.uint32_t(g.MaxNewTokens)
		}
		o.temperature = C.double(g.Temperature)
		o.top_p = C.double(g.TopP)
		o.top_k = C.size_t(g.TopK)
		o.seed = C.uint64_t(g.Seed)
		o.stop_ids = (*C.int32_t)(unsafe.Pointer(cslice(&a, g.StopIDs)))
		o.n_stop_ids = C.size_t(len(g.StopIDs))
		if g.InterveneOnPrompt {
			o.intervene_on_prompt = 1
		}
		if g.IgnoreEOS {
			o.ignore_eos = 1
		}
		return call(func() C.vene_status { return C.vene_intervenable_generate(p, req, o, &out) })
	})
	if err != nil {
		return nil, err
	}
	return newResult(out), nil
}

// Counts returns the number of representations and of groups (sources) of the config.
func (iv *Intervenable) Counts() (reps, groups int, err error) {
	err = iv.use(func(p *C.vene_intervenable) error {
		var r, g C.size_t
		e := call(func() C.vene_status { return C.vene_intervenable_counts(p, &r, &g) })
		reps, groups = int(r), int(g)
		return e
	})
	return
}

// Representation describes representation i.
func (iv *Intervenable) Representation(i int) (RepresentationInfo, error) {
	var out RepresentationInfo
	err := iv.use(func(p *C.vene_intervenable) error {
		var r C.vene_representation_info
		r.struct_size = C.sizeof_vene_representation_info
		if err := call(func() C.vene_status {
			return C.vene_intervenable_representation(p, C.size_t(i), &r)
		}); err != nil {
			return err
		}
		out = RepresentationInfo{C.GoString(r.key), C.GoString(r.component), C.GoString(r.unit),
			C.GoString(r.intervention_type), int(r.layer), int(r.group)}
		return nil
	})
	return out, err
}

// State returns the parameters of representation i's intervention by pyvene state-dict name.
func (iv *Intervenable) State(i int) (map[string]*Tensor, error) {
	var res *C.vene_result
	err := iv.use(func(p *C.vene_intervenable) error {
		return call(func() C.vene_status { return C.vene_intervenable_state(p, C.size_t(i), &res) })
	})
	if err != nil {
		return nil, err
	}
	r := newResult(res)
	defer r.Close()
	names, err := r.Names()
	if err != nil {
		return nil, err
	}
	out := map[string]*Tensor{}
	for _, n := range names {
		if out[n], err = r.Tensor(n); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// LoadState sets the parameters of representation i's intervention (all of them).
func (iv *Intervenable) LoadState(i int, state map[string]*Tensor) error {
	return iv.use(func(p *C.vene_intervenable) error {
		var a arena
		defer a.free()
		n := len(state)
		names := unsafe.Slice((**C.char)(a.alloc(n*int(unsafe.Sizeof((*C.char)(nil))))), n)
		values := unsafe.Slice((*C.vene_tensor)(a.alloc(n*C.sizeof_vene_tensor)), n)
		k := 0
		for name, t := range state {
			names[k] = a.str(name)
			lowerTensor(&a, t, &values[k])
			k++
		}
		var np **C.char
		var vp *C.vene_tensor
		if n > 0 {
			np, vp = &names[0], &values[0]
		}
		return call(func() C.vene_status {
			return C.vene_intervenable_load_state(p, C.size_t(i), np, vp, C.size_t(n))
		})
	})
}

// ---- Result ----

// Result holds the named output tensors of one run.
type Result struct {
	mu sync.RWMutex
	p  *C.vene_result
}

// Close frees the result. Idempotent.
func (r *Result) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.p != nil {
		C.vene_result_free(r.p)
		r.p = nil
		runtime.SetFinalizer(r, nil)
	}
	return nil
}

func (r *Result) use(f func(p *C.vene_result) error) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.p == nil {
		return ErrClosed
	}
	return f(r.p)
}

// Names lists the tensors of the result.
func (r *Result) Names() ([]string, error) {
	var out []string
	err := r.use(func(p *C.vene_result) error {
		var n C.size_t
		if err := call(func() C.vene_status { return C.vene_result_count(p, &n) }); err != nil {
			return err
		}
		for i := C.size_t(0); i < n; i++ {
			var name *C.char
			if err := call(func() C.vene_status { return C.vene_result_name(p, i, &name) }); err != nil {
				return err
			}
			out = append(out, C.GoString(name))
		}
		return nil
	})
	return out, err
}

func shapeOf(s *C.int64_t, n C.size_t) ([]int64, int) {
	shape := make([]int64, int(n))
	count := 1
	if n > 0 {
		copy(shape, unsafe.Slice((*int64)(unsafe.Pointer(s)), int(n)))
	}
	for _, d := range shape {
		count *= int(d)
	}
	return shape, count
}

// Tensor copies the tensor `name` into Go memory.
func (r *Result) Tensor(name string) (*Tensor, error) {
	var out *Tensor
	err := r.use(func(p *C.vene_result) error {
		var a arena
		defer a.free()
		cn := a.str(name)
		var data *C.float
		var shape *C.int64_t
		var ndim C.size_t
		if err := call(func() C.vene_status {
			return C.vene_result_tensor(p, cn, &data, &shape, &ndim)
		}); err != nil {
			return err
		}
		s, n := shapeOf(shape, ndim)
		out = &Tensor{Data: make([]float32, n), Shape: s}
		if n > 0 {
			copy(out.Data, unsafe.Slice((*float32)(unsafe.Pointer(data)), n))
		}
		return nil
	})
	return out, err
}

// IDs copies the integer tensor `name` (such as "generated.ids") into Go memory.
func (r *Result) IDs(name string) (*IDs, error) {
	var out *IDs
	err := r.use(func(p *C.vene_result) error {
		var a arena
		defer a.free()
		cn := a.str(name)
		var data *C.int64_t
		var shape *C.int64_t
		var ndim C.size_t
		if err := call(func() C.vene_status {
			return C.vene_result_tensor_i64(p, cn, &data, &shape, &ndim)
		}); err != nil {
			return err
		}
		s, n := shapeOf(shape, ndim)
		out = &IDs{Data: make([]int64, n), Shape: s}
		if n > 0 {
			copy(out.Data, unsafe.Slice((*int64)(unsafe.Pointer(data)), n))
		}
		return nil
	})
	return out, err
}

// LoadPlugin loads a native plugin or a .wasm/.wat module and registers its types.
func LoadPlugin(path string) error {
	var a arena
	defer a.free()
	p := a.str(path)
	return call(func() C.vene_status { return C.vene_plugin_load(p) })
}

// UnregisterIntervention removes the intervention type "<plugin>/<type>".
func UnregisterIntervention(typeName string) error {
	var a arena
	defer a.free()
	p := a.str(typeName)
	return call(func() C.vene_status { return C.vene_unregister_intervention_type(p) })
}

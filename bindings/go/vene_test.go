package vene

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// The tiny random-weight Llama of the repository's fixtures (2 layers, hidden 32, vocab 96).
var fixture = filepath.Join("..", "..", "tests", "fixtures", "hf", "llama")

const vanilla = `[{"layer": 0, "component": "block_output", "intervention_type": "vanilla"}]`

func mustModel(t *testing.T) *Model {
	t.Helper()
	m, err := LoadModel(fixture)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func mustIV(t *testing.T, m *Model, cfg string) *Intervenable {
	t.Helper()
	iv, err := NewIntervenable(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iv.Close() })
	return iv
}

func standard() *Request {
	return &Request{
		Base:           Tokens(1, 2, 3, 4),
		Sources:        []*Input{Tokens(5, 6, 7, 8)},
		Locations:      []Location{At(1)},
		OutputOriginal: true,
	}
}

// logits(t)(iv.Run(req)) is the "intervened.logits" of a run that must succeed.
func logits(t *testing.T) func(*Result, error) []float32 {
	return func(r *Result, err error) []float32 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		x, err := r.Tensor("intervened.logits")
		if err != nil {
			t.Fatal(err)
		}
		return x.Data
	}
}

// near: same length, and every element within tol (relative to max(1, |b|)).
func near(a, b []float32, tol float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(float64(a[i]-b[i])) > tol*math.Max(1, math.Abs(float64(b[i]))) {
			return false
		}
	}
	return true
}

func equal(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func wantStatus(t *testing.T, err error, s Status, needle string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want a *vene.Error with status %v, got %v", s, err)
	}
	if e.Status != s || !strings.Contains(e.Message, needle) {
		t.Fatalf("want status %v and %q, got %v: %s", s, needle, e.Status, e.Message)
	}
}

// Weight modes through the model options: f16 halves the resident bytes of the f32 fixture,
// and a bad mode is an error naming the field.
func TestLoadOptionsWeights(t *testing.T) {
	size := func(mode string) int {
		m, err := LoadModelWith(fixture, ModelOptions{Weights: mode})
		if err != nil {
			t.Fatalf("weights %q: %v", mode, err)
		}
		defer m.Close()
		info, err := m.Info()
		if err != nil {
			t.Fatal(err)
		}
		return info.WeightBytes
	}
	f32, f16 := size("f32"), size("f16")
	if f32 <= 0 || f16 >= f32 || f16 < f32/3 {
		t.Fatalf("weight bytes: f32 %d, f16 %d", f32, f16)
	}
	if size("") != f32 {
		t.Fatalf("the f32 fixture as stored should hold f32 bytes")
	}
	if _, err := LoadModelWith(fixture, ModelOptions{Weights: "q3"}); err == nil ||
		!strings.Contains(err.Error(), "q3") {
		t.Fatalf("bad weight mode: %v", err)
	}
}

func TestVersion(t *testing.T) {
	if ABIVersion() != HeaderABIVersion {
		t.Fatalf("library ABI %d, header ABI %d", ABIVersion(), HeaderABIVersion)
	}
	if Version() == "" {
		t.Fatal("empty version")
	}
}

func TestModel(t *testing.T) {
	_, err := LoadModel("/no/such/model")
	wantStatus(t, err, ErrIO, "/no/such/model")
	_, err = LoadModelWithTokenizer(fixture)
	wantStatus(t, err, ErrInvalidInput, "no tokenizer")
	_, err = LoadModelWith(fixture, ModelOptions{Weights: "q3"})
	wantStatus(t, err, ErrInvalidInput, "q4_k")
	_, err = LoadModelWith(fixture, ModelOptions{Device: "gpu"})
	wantStatus(t, err, ErrInvalidInput, "opts->device: unknown device 'gpu'")
	if os.Getenv("VENE_TEST_DEVICE") == "" { // set by tests/gpu/run.sh on a CUDA build
		_, err = LoadModelWith(fixture, ModelOptions{Device: "cuda:0"})
		wantStatus(t, err, ErrInvalidInput, "rebuild with --features cuda")
	}
	q, err := LoadModelWith(fixture, ModelOptions{Weights: "q8_0", Device: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	q.Close()

	m := mustModel(t)
	info, err := m.Info()
	if err != nil || info.ModelType != "llama" || info.Layers != 2 || info.Vocab != 96 || info.BOS != 1 {
		t.Fatalf("info %+v, %v", info, err)
	}
	sites, err := m.Sites()
	if err != nil || len(sites) != 16 || sites[0].Component != "block_input" || sites[0].Dim != 32 {
		t.Fatalf("sites %+v, %v", sites, err)
	}
	_, err = m.Tokenize("hello")
	wantStatus(t, err, ErrInvalidInput, "tokenizer")

	m.Close()
	m.Close() // idempotent
	if _, err := m.Info(); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestRunTypedEqualsJSON(t *testing.T) {
	m := mustModel(t)
	iv := mustIV(t, m, vanilla)
	reps, groups, err := iv.Counts()
	if err != nil || reps != 1 || groups != 1 {
		t.Fatalf("counts %d %d %v", reps, groups, err)
	}
	ri, err := iv.Representation(0)
	if err != nil || ri.InterventionType != "VanillaIntervention" || ri.Component != "block_output" {
		t.Fatalf("%+v %v", ri, err)
	}
	typed := logits(t)(iv.Run(standard()))
	r, err := iv.RunJSON(`{"base": {"input_ids": [[1, 2, 3, 4]]}, "sources": [{"input_ids": [[5, 6, 7, 8]]}],
		"unit_locations": {"sources->base": 1}}`)
	js := logits(t)(r, err)
	if len(typed) != 4*96 || !equal(typed, js) {
		t.Fatal("typed and JSON runs differ")
	}
	res, err := iv.Run(standard())
	if err != nil {
		t.Fatal(err)
	}
	names, _ := res.Names()
	if strings.Join(names, ",") != "original.logits,intervened.logits,intervened.last_hidden_state" {
		t.Fatalf("names %v", names)
	}
	orig, _ := res.Tensor("original.logits")
	if orig.Data[5] != typed[5] || orig.Data[96+5] == typed[96+5] {
		t.Fatal("the intervention should change position 1 only")
	}
	_, err = res.Tensor("nope")
	wantStatus(t, err, ErrNotFound, "intervened.logits")
	res.Close()
	_, err = res.Tensor("intervened.logits")
	if !errors.Is(err, ErrClosed) {
		t.Fatal(err)
	}
}

func TestErrorsAreValues(t *testing.T) {
	m := mustModel(t)
	_, err := NewIntervenable(m, `[{"layer": 9, "component": "block_output"}]`)
	wantStatus(t, err, ErrInvalidInput, "layer 9 is out of range")
	_, err = NewIntervenable(m, `[{`)
	wantStatus(t, err, ErrInvalidInput, "JSON")
	iv := mustIV(t, m, vanilla)
	bad := standard()
	bad.Locations = []Location{At(1), At(1)}
	_, err = iv.Run(bad)
	wantStatus(t, err, ErrInvalidInput, "2 entries")
	bad = standard()
	bad.Base = Tokens(1, 200)
	_, err = iv.Run(bad)
	wantStatus(t, err, ErrInvalidInput, "200")
	_, err = iv.Run(&Request{})
	wantStatus(t, err, ErrInvalidArgument, "Base")
	_, err = iv.RunJSON(`{"base": `)
	wantStatus(t, err, ErrInvalidInput, "JSON")
}

func TestGenerate(t *testing.T) {
	m := mustModel(t)
	iv := mustIV(t, m, vanilla)
	req := standard()
	req.Locations = []Location{{Source: Units{Indices: []int64{3}, Rows: 1}, Base: Units{Indices: []int64{0}, Rows: 1}}}
	r, err := iv.Generate(req, GenerateOptions{MaxNewTokens: 5, IgnoreEOS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ids, err := r.IDs("generated.ids")
	if err != nil || ids.Shape[1] != 9 || ids.Data[0] != 1 || ids.Data[3] != 4 {
		t.Fatalf("%+v %v", ids, err)
	}
}

// A Go function as an intervention: copying the source is exactly a vanilla swap.
func TestGoIntervention(t *testing.T) {
	m := mustModel(t)
	calls := 0
	var mu sync.Mutex
	err := RegisterIntervention("go", "copy", 0, func(base, source, out []float32, rows, dim int) error {
		mu.Lock()
		calls++
		mu.Unlock()
		if dim != 32 || len(out) != rows*dim {
			return fmt.Errorf("bad shape %d x %d", rows, dim)
		}
		copy(out, source)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer UnregisterIntervention("go/copy")
	want := logits(t)(mustIV(t, m, vanilla).Run(standard()))
	got := logits(t)(mustIV(t, m, `[{"layer": 0, "component": "block_output", "intervention_type": "go/copy"}]`).Run(standard()))
	if !equal(want, got) || calls != 1 {
		t.Fatalf("Go copy differs from vanilla (calls %d)", calls)
	}

	// Errors and panics in Go code fail the run with their message.
	RegisterIntervention("go", "fail", NoSource, func(b, s, o []float32, r, d int) error {
		return errors.New("refused by Go")
	})
	RegisterIntervention("go", "panic", NoSource, func(b, s, o []float32, r, d int) error {
		panic("Go panic inside the model")
	})
	for name, msg := range map[string]string{"fail": "refused by Go", "panic": "Go panic inside the model"} {
		iv := mustIV(t, m, `[{"layer": 1, "component": "mlp_output", "intervention_type": "go/`+name+`"}]`)
		_, err := iv.Run(&Request{Base: Tokens(1, 2, 3)})
		wantStatus(t, err, ErrInvalidInput, msg)
		if err := UnregisterIntervention("go/" + name); err != nil {
			t.Fatal(err)
		}
	}
	wantStatus(t, UnregisterIntervention("go/fail"), ErrNotFound, "go/fail")
	wantStatus(t, RegisterIntervention("bad/plugin", "x", 0, nil), ErrInvalidInput, "bad/plugin")
}

// Goroutines sharing one model (each with its own intervenable, and all sharing one) get the
// same results as serial runs.
func TestConcurrentEqualsSerial(t *testing.T) {
	m := mustModel(t)
	const cfg = `[{"layer": 1, "component": "block_output", "intervention_type": "vanilla"}]`
	req := func(g int) *Request {
		return &Request{
			Base:      Tokens(int32(1+g%90), int32(2+g%80), 3, int32(4+g%70)),
			Sources:   []*Input{Tokens(9, int32(10+g), 11, 12)},
			Locations: []Location{At(int64(g % 4))},
		}
	}
	const n = 12
	serial := make([][]float32, n)
	one := mustIV(t, m, cfg)
	for g := 0; g < n; g++ {
		serial[g] = logits(t)(one.Run(req(g)))
	}
	shared := mustIV(t, m, cfg)
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for g := 0; g < n; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			own, err := NewIntervenable(m, cfg)
			if err != nil {
				errs <- err
				return
			}
			defer own.Close()
			for _, iv := range []*Intervenable{own, shared} {
				r, err := iv.Run(req(g))
				if err != nil {
					errs <- err
					return
				}
				x, err := r.Tensor("intervened.logits")
				r.Close()
				if err != nil {
					errs <- err
					return
				}
				if !equal(x.Data, serial[g]) {
					errs <- fmt.Errorf("goroutine %d differs from the serial run", g)
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestStateAndTraining(t *testing.T) {
	m := mustModel(t)
	iv := mustIV(t, m, `[{"layer": 1, "component": "block_output",
		"intervention_type": "low_rank_rotated_space", "low_rank_dimension": 4}]`)
	st, err := iv.State(0)
	if err != nil || len(st) == 0 {
		t.Fatalf("state %v %v", st, err)
	}
	if err := iv.LoadState(0, st); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for i := 0; i < 8; i++ {
		fmt.Fprintf(&b, `{"base": [%d, 10, 20, 30], "sources": [[%d, 50, 60, 70]], "locations": [[3]], "labels": [7]}`+"\n", 3+i, 40+i)
	}
	ds, err := ParseDataset(b.String())
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	if n, _ := ds.Len(); n != 8 {
		t.Fatalf("%d examples", n)
	}
	before, err := iv.Evaluate(ds, 0)
	if err != nil {
		t.Fatal(err)
	}
	o := DefaultTrainOptions()
	o.Epochs, o.BatchSize, o.LR, o.WarmupRatio = 15, 4, 5e-2, 0
	steps := 0
	rep, err := iv.Train(ds, o, func(p Progress) bool { steps = p.Step; return true })
	if err != nil || !rep.Completed || rep.Steps != 30 || steps != 30 {
		t.Fatalf("%+v %v (steps %d)", rep, err, steps)
	}
	after, _ := iv.Evaluate(ds, 0)
	if !(after.Loss < before.Loss) {
		t.Fatalf("loss %f -> %f", before.Loss, after.Loss)
	}
	rep, err = iv.Train(ds, o, func(p Progress) bool { return p.Step < 2 })
	if err != nil || rep.Completed || rep.Steps != 2 {
		t.Fatalf("stop early: %+v %v", rep, err)
	}
	_, err = ParseDataset("not json")
	wantStatus(t, err, ErrInvalidInput, "line 1")

	// Knobs: save, inspect, load back with the same outputs.
	dir := filepath.Join(t.TempDir(), "knob")
	if err := iv.SaveKnob(dir); err != nil {
		t.Fatal(err)
	}
	info, err := KnobInfo(dir)
	if err != nil || !strings.Contains(info, `"vene.knob"`) {
		t.Fatalf("%s %v", info, err)
	}
	again, err := LoadKnob(m, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	req := &Request{Base: Tokens(3, 10, 20, 30), Sources: []*Input{Tokens(40, 50, 60, 70)}, Locations: []Location{At(3)}}
	if !equal(logits(t)(iv.Run(req)), logits(t)(again.Run(req))) {
		t.Fatal("the loaded knob gives other logits")
	}
	_, err = LoadKnob(m, "/no/such/knob")
	wantStatus(t, err, ErrIO, "/no/such/knob")
}

// Forgotten objects are freed by finalizers.
func TestFinalizers(t *testing.T) {
	for i := 0; i < 3; i++ {
		m, err := LoadModel(fixture)
		if err != nil {
			t.Fatal(err)
		}
		iv, err := NewIntervenable(m, vanilla)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := iv.Run(standard()); err != nil {
			t.Fatal(err)
		}
	}
	runtime.GC()
	runtime.GC()
}

func TestMain(m *testing.M) {
	if _, err := os.Stat(fixture); err != nil {
		fmt.Fprintln(os.Stderr, "the llama fixture is missing:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// The vene binary next to the library (tests/run_all.sh builds both before the Go tests).
var veneBin = filepath.Join("..", "..", "target", "release", "vene")

// veneRun runs `vene run --request FILE --json`: stdout, or the stderr message on failure.
func veneRun(t *testing.T, request string) (map[string]any, string) {
	t.Helper()
	if _, err := os.Stat(veneBin); err != nil {
		t.Fatalf("%s is missing: build it with cargo build --release", veneBin)
	}
	cmd := exec.Command(veneBin, "run", "--request", filepath.Join("..", "..", "tests", "fixtures", "requests", request), "--json")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, strings.TrimSpace(stderr.String())
	}
	var v map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &v); err != nil {
		t.Fatalf("vene run --json: %v: %s", err, stdout.String())
	}
	return v, ""
}

// The options of tests/fixtures/requests/plain_generate.json.
var sampled = GenerateOptions{MaxNewTokens: 6, Temperature: 0.8, TopK: 20, TopP: 0.9, Seed: 7, IgnoreEOS: true}

// An empty config is the plain model: its logits are the model's own forward (the
// "original.logits" of any intervenable) and its generation the original's. Equal to float
// rounding, not bit for bit: with one source in parallel mode the original rides in the
// source's batch (so it stays bit-identical to the intervened run below the intervention),
// and candle's f32 matmul rounds differently at another batch size.
func TestPlainRuns(t *testing.T) {
	m := mustModel(t)
	ref := mustIV(t, m, vanilla)
	base := &Input{IDs: []int32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, Batch: 2, Seq: 5}
	r, err := ref.Run(&Request{Base: base, Sources: []*Input{base}, OutputOriginal: true})
	if err != nil {
		t.Fatal(err)
	}
	want, err := r.Tensor("original.logits")
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	prompt := Tokens(1, 2, 3, 4)
	o, err := ref.Generate(&Request{Base: prompt, Sources: []*Input{prompt}, Locations: []Location{At(0)}, OutputOriginal: true}, sampled)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	wantIDs, err := o.IDs("original.generated.ids")
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []string{"", "[]"} {
		iv := mustIV(t, m, cfg)
		if got := logits(t)(iv.Run(&Request{Base: base})); !near(got, want.Data, 1e-5) {
			t.Fatalf("config %q: plain logits differ from the model's", cfg)
		}
		g, err := iv.Generate(&Request{Base: prompt}, sampled)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := g.IDs("generated.ids")
		g.Close()
		if err != nil || fmt.Sprint(ids.Data) != fmt.Sprint(wantIDs.Data) {
			t.Fatalf("config %q: plain generation %v, the model's %v (%v)", cfg, ids, wantIDs, err)
		}
		_, err = iv.Run(&Request{Base: base, Sources: []*Input{base}})
		wantStatus(t, err, ErrInvalidInput, "no representations")
	}
}

// One generation request gives the same ids through Go and `vene run`, and an invalid one the
// same message.
func TestOneRequestEverywhere(t *testing.T) {
	m := mustModel(t)
	iv := mustIV(t, m, "")
	g, err := iv.Generate(&Request{Base: Tokens(1, 2, 3, 4)}, sampled)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ids, err := g.IDs("generated.ids")
	if err != nil {
		t.Fatal(err)
	}
	v, msg := veneRun(t, "plain_generate.json")
	if v == nil {
		t.Fatalf("vene run failed: %s", msg)
	}
	cli := v["generated"].(map[string]any)["intervened"].([]any)[0].(map[string]any)["ids"].([]any)
	var got []int64
	for _, x := range cli {
		got = append(got, int64(x.(float64)))
	}
	if fmt.Sprint(got) != fmt.Sprint(ids.Data[4:]) {
		t.Fatalf("vene run generated %v, Go %v", got, ids.Data[4:])
	}
	bad := sampled
	bad.TopP = 1.5
	_, err = iv.Generate(&Request{Base: Tokens(1, 2, 3, 4)}, bad)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("top_p 1.5: want an error, got %v", err)
	}
	// The same message; the C API names the entry point first, as for every error.
	_, cliMsg := veneRun(t, "bad_top_p.json")
	if "error: vene_intervenable_generate: "+strings.TrimPrefix(cliMsg, "error: ") != "error: "+e.Message ||
		!strings.Contains(cliMsg, "top_p") {
		t.Fatalf("messages differ:\n  vene run: %s\n  Go:       %s", cliMsg, e.Message)
	}
}

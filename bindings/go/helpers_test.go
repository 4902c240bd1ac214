package vene

import (
	"math"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// TopK against a sort and a softmax of the logits done here.
func TestTopK(t *testing.T) {
	m := mustModel(t)
	iv := mustIV(t, m, vanilla)
	res, err := iv.Run(standard())
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	logits, err := res.Tensor("intervened.logits")
	if err != nil {
		t.Fatal(err)
	}
	vocab := int(logits.Shape[2])
	row := logits.Data[2*vocab : 3*vocab] // position 2 of 4
	order := make([]int, vocab)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return row[order[a]] > row[order[b]] })
	var sum float64
	for _, x := range row {
		sum += math.Exp(float64(x - row[order[0]]))
	}
	for _, position := range []int{2, -2} {
		top, err := res.TopK("intervened.logits", 0, position, 5)
		if err != nil {
			t.Fatal(err)
		}
		if len(top) != 5 {
			t.Fatalf("%d tokens", len(top))
		}
		for i, tk := range top {
			want := math.Exp(float64(row[order[i]]-row[order[0]])) / sum
			if int(tk.ID) != order[i] || math.Abs(float64(tk.Prob)-want) > 1e-6 {
				t.Fatalf("position %d, rank %d: got %+v, want id %d p %.7f", position, i, tk, order[i], want)
			}
		}
	}
	_, err = res.TopK("intervened.logits", 0, 4, 5)
	wantStatus(t, err, ErrNotFound, "position 4 is out of range")
	_, err = res.TopK("nope", 0, -1, 5)
	wantStatus(t, err, ErrNotFound, "intervened.logits")
	if top, err := res.TopK("original.logits", 0, -1, 0); err != nil || len(top) != 0 {
		t.Fatalf("k = 0: %v %v", top, err)
	}
	res.Close()
	if _, err := res.TopK("intervened.logits", 0, -1, 5); err != ErrClosed {
		t.Fatalf("after Close: %v", err)
	}
	// TokenText needs a tokenizer, which this fixture lacks: an error, not a crash.
	_, err = m.TokenText(5)
	wantStatus(t, err, ErrInvalidInput, "tokenizer")
}

// A WASM module that logs one line per call reaches the Go sink at level info, and only when
// the level lets it through.
func TestLogSink(t *testing.T) {
	wat := filepath.Join("..", "..", "tests", "fixtures", "plugins", "log_wat.wat")
	if err := LoadPlugin(wat); err != nil {
		t.Fatal(err)
	}
	m := mustModel(t)
	iv := mustIV(t, m, `[{"layer": 0, "component": "block_output", "intervention_type": "wasm/log_wat"}]`)
	var mu sync.Mutex
	var lines []string
	err := SetLogSink(func(level LogLevel, who, msg string) {
		mu.Lock()
		defer mu.Unlock()
		if level == LogInfo && strings.Contains(who, "log_wat") {
			lines = append(lines, msg)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		SetLogSink(nil)
		SetLogLevel(LogEnv)
	})
	count := func(level LogLevel) int {
		t.Helper()
		if err := SetLogLevel(level); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		before := len(lines)
		mu.Unlock()
		res, err := iv.Run(&Request{Base: Tokens(1, 2, 3, 4)})
		if err != nil {
			t.Fatal(err)
		}
		res.Close()
		mu.Lock()
		defer mu.Unlock()
		return len(lines) - before
	}
	if n := count(LogWarn); n != 0 {
		t.Fatalf("%d info lines at level warn", n)
	}
	if n := count(LogInfo); n < 1 || lines[len(lines)-1] != "hello from wasm" {
		t.Fatalf("%d lines at level info: %q", n, lines)
	}
	if n := count(LogOff); n != 0 {
		t.Fatalf("%d lines with logging off", n)
	}
	wantStatus(t, SetLogLevel(7), ErrInvalidArgument, "VENE_LOG_OFF")
}

// Through the C API, the "unknown plugin type" error names vene_plugin_load (LoadPlugin), not
// the `vene run` request field.
func TestUnknownPluginTypeHint(t *testing.T) {
	m := mustModel(t)
	_, err := NewIntervenable(m, `[{"layer": 0, "component": "block_output", "intervention_type": "nowhere/x"}]`)
	wantStatus(t, err, ErrInvalidInput, "vene_plugin_load")
	if strings.Contains(err.Error(), "request field") {
		t.Fatalf("hint names the request field: %v", err)
	}
}

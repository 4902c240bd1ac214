package vene

/*
#include <stdlib.h>
#include "vene.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Top is one of the most likely tokens at a position: its id and its probability (softmax
// over the vocabulary). Model.TokenText decodes the id.
type Top struct {
	ID   int32
	Prob float32
}

// TopK returns the k most likely tokens of the logits `name` ("intervened.logits",
// "original.logits") for example `row` at `position`, most likely first. A negative position
// counts from the end: -1 is the last position, the only one with LogitsLast.
func (r *Result) TopK(name string, row, position, k int) ([]Top, error) {
	if k < 0 || row < 0 {
		return nil, &Error{ErrInvalidArgument, fmt.Sprintf("TopK: k (%d) and row (%d) must be >= 0", k, row)}
	}
	var out []Top
	err := r.use(func(p *C.vene_result) error {
		var a arena
		defer a.free()
		cn := a.str(name)
		ids := (*C.int32_t)(a.alloc(k * 4))
		probs := (*C.float)(a.alloc(k * 4))
		var n C.size_t
		if err := call(func() C.vene_status {
			return C.vene_result_top_k(p, cn, C.size_t(row), C.int64_t(position), C.size_t(k),
				ids, probs, &n)
		}); err != nil {
			return err
		}
		gids := unsafe.Slice((*int32)(unsafe.Pointer(ids)), int(n))
		gprobs := unsafe.Slice((*float32)(unsafe.Pointer(probs)), int(n))
		out = make([]Top, int(n))
		for i := range out {
			out[i] = Top{gids[i], gprobs[i]}
		}
		return nil
	})
	return out, err
}

// TokenText decodes one token id, e.g. " Rome".
func (m *Model) TokenText(id int32) (string, error) { return m.Detokenize([]int32{id}) }

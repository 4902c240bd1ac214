package vene

// The Go functions C calls back. A file with //export may only declare C functions in its
// preamble, so the C trampolines that take their addresses live in register.go.

/*
#include <stdint.h>
#include <stdlib.h>
#include "vene.h"
*/
import "C"

import (
	"fmt"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// hostType is what a registered Go intervention's user_data handle refers to.
type hostType struct {
	fn InterventionFunc
	mu sync.Mutex
	// The message of the last failed apply, in C memory (C reads it after we return).
	msg *C.char
}

func (h *hostType) setError(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.msg != nil {
		C.free(unsafe.Pointer(h.msg))
	}
	h.msg = C.CString(err.Error())
}

// A panic must not unwind into the engine's frames: it becomes the call's error.
func protect(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic in a Go intervention: %v", p)
		}
	}()
	return f()
}

//export veneGoApply
func veneGoApply(state unsafe.Pointer, base, source, out *C.float, rows, dim C.size_t) C.int32_t {
	h := cgo.Handle(uintptr(state)).Value().(*hostType)
	n := int(rows * dim)
	b := unsafe.Slice((*float32)(unsafe.Pointer(base)), n)
	o := unsafe.Slice((*float32)(unsafe.Pointer(out)), n)
	var s []float32
	if source != nil {
		s = unsafe.Slice((*float32)(unsafe.Pointer(source)), n)
	}
	if err := protect(func() error { return h.fn(b, s, o, int(rows), int(dim)) }); err != nil {
		h.setError(err)
		return 1
	}
	return 0
}

//export veneGoLastError
func veneGoLastError(userData, state unsafe.Pointer) *C.char {
	h := cgo.Handle(uintptr(userData)).Value().(*hostType)
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.msg
}

//export veneGoRelease
func veneGoRelease(userData unsafe.Pointer) {
	handle := cgo.Handle(uintptr(userData))
	h := handle.Value().(*hostType)
	h.mu.Lock()
	if h.msg != nil {
		C.free(unsafe.Pointer(h.msg))
		h.msg = nil
	}
	h.mu.Unlock()
	handle.Delete()
}

// progressCtx is what a training call's user_data handle refers to.
type progressCtx struct {
	fn       func(Progress) bool
	panicked any
}

//export veneGoProgress
func veneGoProgress(p *C.vene_train_progress, userData unsafe.Pointer) C.int32_t {
	ctx := cgo.Handle(uintptr(userData)).Value().(*progressCtx)
	keep := true
	func() {
		defer func() {
			if r := recover(); r != nil {
				ctx.panicked = r
				keep = false
			}
		}()
		keep = ctx.fn(Progress{
			Epoch: int(p.epoch), Step: int(p.step), TotalSteps: int(p.total_steps),
			Loss: float64(p.loss), IIA: float64(p.iia), LRFactor: float64(p.lr_factor),
			Temperature: float64(p.temperature),
		})
	}()
	if keep {
		return 0
	}
	return 1
}

//export veneGoLog
func veneGoLog(userData unsafe.Pointer, level C.int32_t, who, message *C.char) {
	fn := cgo.Handle(uintptr(userData)).Value().(LogFunc)
	// A panic must not unwind into the engine's frames: the line is lost instead.
	defer func() { _ = recover() }()
	fn(LogLevel(level), C.GoString(who), C.GoString(message))
}

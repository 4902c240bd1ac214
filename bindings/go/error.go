package vene

/*
#include "vene.h"
*/
import "C"

import (
	"errors"
	"fmt"
)

// Status is a vene_status code from the C API.
type Status int32

// The status codes of vene.h.
const (
	OK                 Status = C.VENE_OK                   // success
	ErrInvalidArgument Status = C.VENE_ERR_INVALID_ARGUMENT // NULL/bad pointer, count or struct_size
	ErrInvalidHandle   Status = C.VENE_ERR_INVALID_HANDLE   // NULL, freed or mistyped handle
	ErrInvalidInput    Status = C.VENE_ERR_INVALID_INPUT    // bad JSON, config, shapes, ids
	ErrIO              Status = C.VENE_ERR_IO               // missing or corrupt file
	ErrNotFound        Status = C.VENE_ERR_NOT_FOUND        // no such tensor, index out of range
	ErrBufferTooSmall  Status = C.VENE_ERR_BUFFER_TOO_SMALL // caller buffer too small
	ErrRuntime         Status = C.VENE_ERR_RUNTIME          // the engine failed while computing
	ErrInternal        Status = C.VENE_ERR_INTERNAL         // a bug in vene (a caught panic)
	errClosedStatus    Status = -1000                       // Go side only: used after Close
)

func (s Status) String() string {
	if s == errClosedStatus {
		return "closed"
	}
	return C.GoString(C.vene_status_string(C.int32_t(s)))
}

// Error is a failed vene call: the C status and the library's message.
type Error struct {
	Status  Status
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("vene: %s: %s", e.Status, e.Message) }

// Is lets errors.Is(err, vene.ErrClosed) and errors.Is(err, &vene.Error{Status: s}) match by
// status.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Status == e.Status && (t.Message == "" || t == e)
}

// ErrClosed is returned by methods called after Close.
var ErrClosed = &Error{Status: errClosedStatus, Message: "the object was closed"}

// check turns a status into nil or an *Error carrying vene_last_error(). It must run on the
// OS thread that made the call (the caller locks it; see call).
func check(s C.vene_status) error {
	if s == C.VENE_OK {
		return nil
	}
	return &Error{Status: Status(s), Message: C.GoString(C.vene_last_error())}
}

package vene

/*
#include <stdint.h>
#include "vene.h"

// The exported Go functions (callback.go), and C trampolines with vene's exact signatures.
extern int32_t veneGoApply(void *state, float *base, float *source, float *out, size_t rows,
                           size_t dim);
extern char *veneGoLastError(void *user_data, void *state);
extern void veneGoRelease(void *user_data);

static int32_t vene_go_apply(void *state, const float *base, const float *source, float *out,
                             size_t rows, size_t dim) {
  return veneGoApply(state, (float *)base, (float *)source, out, rows, dim);
}
static const char *vene_go_last_error(void *user_data, void *state) {
  return veneGoLastError(user_data, state);
}
static void vene_go_release(void *user_data) { veneGoRelease(user_data); }
// A cgo.Handle is an integer; C keeps it as an opaque pointer-sized value.
static void *vene_go_handle(uintptr_t h) { return (void *)h; }

static vene_status vene_go_register(const char *plugin, const char *name, uint32_t flags,
                                    uintptr_t handle) {
  vene_host_intervention h;
  vene_status s = vene_host_intervention_init(&h, sizeof h);
  if (s != VENE_OK) return s;
  h.flags = flags;
  h.name = name;
  h.user_data = vene_go_handle(handle);
  h.apply = vene_go_apply;
  h.last_error = vene_go_last_error;
  h.release = vene_go_release;
  return vene_register_host_intervention(plugin, &h);
}

*/
import "C"

import (
	"runtime/cgo"
)

// Type flags of interventions (vene_plugin.h).
const (
	// NoSource: the function never needs a source (steering, scaling, clamping).
	NoSource uint32 = 1
	// Distributed: all units of one example reach the function as one row.
	Distributed uint32 = 2
)

// InterventionFunc computes `out` (rows x dim, row-major) from `base` and `source` (nil when
// the run has none). The slices alias engine memory and are valid only during the call. It
// may be called from any goroutine's thread that runs a model, never concurrently for one
// intervention object. A returned error (or a panic) fails the run with its message.
type InterventionFunc func(base, source, out []float32, rows, dim int) error

// RegisterIntervention makes fn the intervention type "<plugin>/<name>", for configs'
// "intervention_type". fn is kept until the type is unregistered (UnregisterIntervention)
// and no intervention built from it is left.
func RegisterIntervention(plugin, name string, flags uint32, fn InterventionFunc) error {
	h := cgo.NewHandle(&hostType{fn: fn})
	var a arena
	defer a.free()
	cp, cn := a.str(plugin), a.str(name)
	err := call(func() C.vene_status {
		return C.vene_go_register(cp, cn, C.uint32_t(flags), C.uintptr_t(h))
	})
	if err != nil {
		h.Delete() // on failure vene does not take the handle
	}
	return err
}

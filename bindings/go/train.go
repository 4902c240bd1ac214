package vene

/*
#include <stdint.h>
#include "vene.h"

extern int32_t veneGoProgress(vene_train_progress *p, void *user_data);
static int32_t vene_go_progress2(const vene_train_progress *p, void *user_data) {
  return veneGoProgress((vene_train_progress *)p, user_data);
}
static vene_status vene_go_train2(vene_intervenable *iv, const vene_dataset *ds,
                                  const vene_train_options *o, uintptr_t handle, int with_cb,
                                  vene_train_report *rep) {
  return vene_intervenable_train(iv, ds, o, with_cb ? vene_go_progress2 : NULL, (void *)handle,
                                 rep);
}
*/
import "C"

import (
	"fmt"
	"runtime"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// Dataset holds training or evaluation examples (JSONL; see vene_dataset_parse in vene.h).
type Dataset struct {
	mu sync.RWMutex
	p  *C.vene_dataset
}

// ParseDataset reads JSONL text, one example per line, e.g.
// {"base": [12, 7, 30], "sources": [[12, 9, 30]], "locations": [[2]], "labels": [41]}.
func ParseDataset(jsonl string) (*Dataset, error) {
	var a arena
	defer a.free()
	text := a.str(jsonl)
	var p *C.vene_dataset
	if err := call(func() C.vene_status {
		return C.vene_dataset_parse(text, C.size_t(len(jsonl)), &p)
	}); err != nil {
		return nil, err
	}
	d := &Dataset{p: p}
	runtime.SetFinalizer(d, (*Dataset).Close)
	return d, nil
}

// LoadDataset reads a JSONL file.
func LoadDataset(path string) (*Dataset, error) {
	var a arena
	defer a.free()
	cp := a.str(path)
	var p *C.vene_dataset
	if err := call(func() C.vene_status { return C.vene_dataset_load(cp, &p) }); err != nil {
		return nil, err
	}
	d := &Dataset{p: p}
	runtime.SetFinalizer(d, (*Dataset).Close)
	return d, nil
}

// Len is the number of examples.
func (d *Dataset) Len() (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.p == nil {
		return 0, ErrClosed
	}
	var n C.size_t
	err := call(func() C.vene_status { return C.vene_dataset_count(d.p, &n) })
	return int(n), err
}

// Close frees the dataset. Idempotent.
func (d *Dataset) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.p != nil {
		C.vene_dataset_free(d.p)
		d.p = nil
		runtime.SetFinalizer(d, nil)
	}
	return nil
}

// TrainOptions mirror vene_train_options; DefaultTrainOptions gives pyvene's defaults.
type TrainOptions struct {
	Epochs, BatchSize, WarmupSteps, GradientAccumulationSteps int
	LR, WeightDecay, WarmupRatio                              float64
	AdamW, NoLRDecay, NoShuffle                               bool
	LRGroups                                                  map[string]float64
	Seed                                                      uint64
	TemperatureStart, TemperatureEnd, BoundaryPenalty         float64
}

// DefaultTrainOptions returns the library's defaults (10 epochs, batch 32, Adam at 1e-3,
// 10% warmup then linear decay, temperature 50 -> 0.1).
func DefaultTrainOptions() TrainOptions {
	return TrainOptions{Epochs: 10, BatchSize: 32, GradientAccumulationSteps: 1, LR: 1e-3,
		WarmupRatio: 0.1, TemperatureStart: 50, TemperatureEnd: 0.1}
}

// Progress is what the progress function sees after every optimizer step.
type Progress struct {
	Epoch, Step, TotalSteps          int
	Loss, IIA, LRFactor, Temperature float64
}

// TrainReport summarizes a training run.
type TrainReport struct {
	Completed         bool
	Steps, Epochs     int
	LastLoss, LastIIA float64
}

// Evaluation is the loss and interchange intervention accuracy over a dataset.
type Evaluation struct {
	Loss, IIA float64
	Examples  int
}

// Train trains the interventions' parameters with the built-in cross-entropy loss. progress
// (may be nil) is called after every step; returning false stops training (Completed is then
// false). A panic in progress stops training and is re-raised here.
func (iv *Intervenable) Train(d *Dataset, o TrainOptions, progress func(Progress) bool) (TrainReport, error) {
	var rep C.vene_train_report
	ctx := &progressCtx{fn: progress}
	err := iv.use(func(p *C.vene_intervenable) error {
		d.mu.RLock()
		defer d.mu.RUnlock()
		if d.p == nil {
			return ErrClosed
		}
		var a arena
		defer a.free()
		co := (*C.vene_train_options)(a.alloc(C.sizeof_vene_train_options))
		C.vene_train_options_init(co, C.sizeof_vene_train_options)
		co.epochs = C.size_t(o.Epochs)
		co.batch_size = C.size_t(o.BatchSize)
		co.warmup_steps = C.size_t(o.WarmupSteps)
		co.gradient_accumulation_steps = C.size_t(o.GradientAccumulationSteps)
		co.lr = C.double(o.LR)
		co.weight_decay = C.double(o.WeightDecay)
		co.warmup_ratio = C.double(o.WarmupRatio)
		co.seed = C.uint64_t(o.Seed)
		co.temperature_start = C.double(o.TemperatureStart)
		co.temperature_end = C.double(o.TemperatureEnd)
		co.boundary_penalty = C.double(o.BoundaryPenalty)
		if o.AdamW {
			co.optimizer = C.VENE_OPTIMIZER_ADAMW
		}
		if o.NoLRDecay {
			co.no_lr_decay = 1
		}
		if o.NoShuffle {
			co.no_shuffle = 1
		}
		if n := len(o.LRGroups); n > 0 {
			gs := unsafe.Slice((*C.vene_lr_group)(a.alloc(n*C.sizeof_vene_lr_group)), n)
			k := 0
			for pat, lr := range o.LRGroups {
				gs[k].pattern = a.str(pat)
				gs[k].lr = C.double(lr)
				k++
			}
			co.lr_groups, co.n_lr_groups = &gs[0], C.size_t(n)
		}
		h := cgo.NewHandle(ctx)
		defer h.Delete()
		withCb := C.int(0)
		if progress != nil {
			withCb = 1
		}
		rep.struct_size = C.sizeof_vene_train_report
		return call(func() C.vene_status {
			return C.vene_go_train2(p, d.p, co, C.uintptr_t(h), withCb, &rep)
		})
	})
	if ctx.panicked != nil {
		panic(fmt.Sprintf("vene: progress function panicked: %v", ctx.panicked))
	}
	if err != nil {
		return TrainReport{}, err
	}
	return TrainReport{rep.completed != 0, int(rep.steps), int(rep.epochs),
		float64(rep.last_loss), float64(rep.last_iia)}, nil
}

// Evaluate computes loss and IIA over d in batches of batchSize (0: 32).
func (iv *Intervenable) Evaluate(d *Dataset, batchSize int) (Evaluation, error) {
	var e C.vene_evaluation
	err := iv.use(func(p *C.vene_intervenable) error {
		d.mu.RLock()
		defer d.mu.RUnlock()
		if d.p == nil {
			return ErrClosed
		}
		e.struct_size = C.sizeof_vene_evaluation
		return call(func() C.vene_status {
			return C.vene_intervenable_evaluate(p, d.p, C.size_t(batchSize), &e)
		})
	})
	return Evaluation{float64(e.loss), float64(e.iia), int(e.examples)}, err
}

// SaveKnob saves the interventions (config, trained state, model fingerprint) as a knob
// directory.
func (iv *Intervenable) SaveKnob(dir string) error {
	return iv.use(func(p *C.vene_intervenable) error {
		var a arena
		defer a.free()
		d := a.str(dir)
		return call(func() C.vene_status { return C.vene_knob_save(p, d) })
	})
}

// LoadKnob loads a knob (vene directory, pyvene save directory, or .wasm knob file) onto m.
func LoadKnob(m *Model, path string) (*Intervenable, error) {
	var out *C.vene_intervenable
	err := m.use(func(mp *C.vene_model) error {
		var a arena
		defer a.free()
		cp := a.str(path)
		return call(func() C.vene_status { return C.vene_knob_load(mp, cp, &out) })
	})
	if err != nil {
		return nil, err
	}
	iv := &Intervenable{p: out}
	runtime.SetFinalizer(iv, (*Intervenable).Close)
	return iv, nil
}

// KnobInfo returns knob.json of a vene knob directory as JSON text.
func KnobInfo(dir string) (string, error) {
	var a arena
	defer a.free()
	d := a.str(dir)
	var n C.size_t
	if err := call(func() C.vene_status { return C.vene_knob_info(d, nil, 0, &n) }); err != nil {
		return "", err
	}
	buf := (*C.char)(a.alloc(int(n) + 1))
	if err := call(func() C.vene_status { return C.vene_knob_info(d, buf, n+1, &n) }); err != nil {
		return "", err
	}
	return C.GoStringN(buf, C.int(n)), nil
}

package vene

/*
#include <stdint.h>
#include "vene.h"

// The exported Go function (callback.go) and a C trampoline with vene_log_fn's signature.
extern void veneGoLog(void *user_data, int32_t level, char *who, char *message);

static void vene_go_log(void *user_data, int32_t level, const char *who, const char *message) {
  veneGoLog(user_data, level, (char *)who, (char *)message);
}
static vene_status vene_go_set_log_sink(uintptr_t handle) {
  return vene_set_log_sink(handle ? vene_go_log : NULL, (void *)handle);
}
*/
import "C"

import (
	"runtime/cgo"
	"sync"
)

// LogLevel is the level of a plugin log line (vene_plugin.h's VENE_LOG_*).
type LogLevel int32

const (
	LogDebug LogLevel = 0
	LogInfo  LogLevel = 1 // a WASM module's vene.log lines
	LogWarn  LogLevel = 2 // the default level: warnings and errors are logged
	LogError LogLevel = 3
	LogOff   LogLevel = 4  // nothing is logged
	LogEnv   LogLevel = -1 // SetLogLevel(LogEnv): back to $VENE_PLUGIN_LOG
)

// LogFunc receives one plugin log line: its level, the plugin's name (or a WASM module's
// path) and the text. It may be called from any thread, several at once.
type LogFunc func(level LogLevel, who, message string)

var logSink struct {
	sync.Mutex
	handle cgo.Handle
}

// SetLogSink sends plugin log lines to fn instead of stderr; nil restores stderr. Only lines
// at or above the log level arrive (SetLogLevel).
func SetLogSink(fn LogFunc) error {
	logSink.Lock()
	defer logSink.Unlock()
	var h cgo.Handle
	if fn != nil {
		h = cgo.NewHandle(fn)
	}
	if err := call(func() C.vene_status { return C.vene_go_set_log_sink(C.uintptr_t(h)) }); err != nil {
		if h != 0 {
			h.Delete()
		}
		return err
	}
	// vene no longer calls the previous sink once the call has returned.
	if logSink.handle != 0 {
		logSink.handle.Delete()
	}
	logSink.handle = h
	return nil
}

// SetLogLevel sets the lowest level logged (to stderr or the sink): LogDebug .. LogError,
// LogOff, or LogEnv for the environment variable VENE_PLUGIN_LOG (default: warn).
func SetLogLevel(level LogLevel) error {
	return call(func() C.vene_status { return C.vene_set_log_level(C.int32_t(level)) })
}

/*
 * vene_plugin.h — the plugin ABI of vene (version 1).
 *
 * A vene plugin adds intervention types to the engine. There are two routes:
 *
 *   1. Native plugins (this header): a shared library (.so / .dylib / .dll) that exports one
 *      symbol, `vene_plugin_entry`. Native plugins are trusted code: they run in the host
 *      process with no sandbox. Use them for speed, or to wrap existing C/C++ code.
 *   2. WASM modules (documented at the end of this file): a WebAssembly module with a small set
 *      of exports over f32 rows in its linear memory. They run sandboxed (no imports but a log
 *      function, a wall-clock deadline per call, a memory cap), so a module from a stranger
 *      cannot touch the host. Use them to share interventions.
 *
 * A config names a plugin type as "intervention_type": "<plugin name>/<type name>" with its
 * arguments in "intervention_args": {...} (handed to `create` as JSON text). A `vene run`
 * request loads plugins with "plugins": ["<path>", ...].
 *
 * ABI rules: the structs below only ever grow at their end. Every struct starts with (or, for
 * vene_plugin_info, carries) a `struct_size`: the host reads a field only when the size covers
 * it, so a plugin built against an older header keeps working. Never reorder fields.
 *
 * Host guarantees (native):
 *   - Plugins are loaded under a process-wide lock; `vene_plugin_entry` runs once per library.
 *   - Magic, ABI version and struct sizes are checked before any other field is read.
 *   - A library is never unloaded while an intervention created from it is alive (vene keeps
 *     loaded libraries for the life of the process).
 *   - `apply` is never called concurrently on the same state: one state, one call at a time.
 *     Different states of the same type may be used from different threads at once.
 *   - `destroy` is called exactly once per state that `create` returned successfully.
 *   - Strings are UTF-8. `args_json` is followed by a NUL for convenience; `args_len` does not
 *     count it.
 */
#ifndef VENE_PLUGIN_H
#define VENE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* ABI v1 (this prefix is fixed: fields are appended, never reordered)                         */
/* ------------------------------------------------------------------------------------------ */

#define VENE_PLUGIN_MAGIC 0x56454E45u          /* "VENE" */
#define VENE_PLUGIN_ABI_VERSION 1

/* What the host offers the plugin. Valid for the life of the process. */
typedef struct vene_host_api {
  uint32_t struct_size; uint32_t abi_version;
  /* Writes a message to the host's log. `level` is one of VENE_LOG_*; `msg` is NUL-terminated
   * UTF-8 and only borrowed for the call. Thread-safe. */
  void (*log)(void *host_ctx, int32_t level, const char *msg);
  void *host_ctx;                                                /* pass it back to `log` */
} vene_host_api;

/* One intervention type. The table must stay valid while the library is loaded (make it
 * static). All functions must be thread-safe across different states. */
typedef struct vene_intervention_type {
  uint32_t struct_size;                                          /* sizeof(vene_intervention_type) */
  const char *name;                                              /* unique within the plugin */
  /* Builds a state from the representation's "intervention_args" (JSON text, "null" when the
   * config gives none) for rows of `dim` features (the feature count of one unit of the site).
   * Returns 0 and sets *state on success; on failure returns non-zero, and the host asks
   * last_error(*state) when *state was set (then destroys it), else last_error(NULL). */
  int32_t (*create)(const char *args_json, size_t args_len, size_t dim, void **state); /* 0 = ok */
  /* Writes rows x dim floats at `out` from `base` (and `source`, when the run has one; its
   * shape is the base's). `out` never aliases `base` or `source`. The host keeps only the
   * features the config's subspaces select from `out` and the base's values elsewhere. */
  int32_t (*apply)(void *state, const float *base, const float *source /* NULL: no source */,
                   float *out, size_t rows, size_t dim);          /* rows x dim, row-major; 0 = ok */
  /* The message for the last non-zero return on this state (NULL state: the last failed
   * create on this thread). Borrowed until the next call on the state. */
  const char *(*last_error)(void *state);                        /* may be NULL */
  void (*destroy)(void *state);
  /* ---- appended in ABI v1 after the fixed prefix (read only when struct_size covers it) ---- */
  uint32_t flags;                                                /* VENE_TYPE_* bits */
} vene_intervention_type;

/* Flags of an intervention type. */
#define VENE_TYPE_NO_SOURCE   1u  /* apply never needs a source (steering, scaling, clamping) */
#define VENE_TYPE_DISTRIBUTED 2u  /* several units of one example reach apply as one row
                                     (pyvene's "distributed" interventions); otherwise one unit
                                     is one row */
#define VENE_TYPE_ROW_WISE    4u  /* each output row depends only on the same row of base and
                                     source: the host may split a call into calls over fewer
                                     rows (for WASM modules: cache-sized chunks, less memory) */

typedef struct vene_plugin_info {
  uint32_t magic; uint32_t abi_version; uint32_t struct_size;
  const char *name; const char *version;                         /* name: no '/', not "wasm" */
  size_t n_types; const vene_intervention_type *types;
} vene_plugin_info;

/* Log levels for vene_host_api.log. The host drops lines below its log level, `warn` unless
 * changed: set the environment variable VENE_PLUGIN_LOG=debug|info|warn|error|off, or call
 * vene_set_log_level() (vene.h). Kept lines go to stderr as "[plugin <name>] <level>: <text>",
 * or to the host program's vene_set_log_sink() callback. WASM modules' vene.log lines are
 * VENE_LOG_INFO, so they only appear at level info or debug. */
#define VENE_LOG_DEBUG 0
#define VENE_LOG_INFO  1
#define VENE_LOG_WARN  2
#define VENE_LOG_ERROR 3

/* The one symbol a native plugin exports. Return NULL when `host_abi_version` is one you cannot
 * speak. The returned struct (and everything it points to) must stay valid while the library is
 * loaded. The `host` pointer stays valid for the life of the process: keep it to log later. */
#if defined(_WIN32)
#define VENE_PLUGIN_EXPORT __declspec(dllexport)
#else
#define VENE_PLUGIN_EXPORT __attribute__((visibility("default")))
#endif
VENE_PLUGIN_EXPORT
const vene_plugin_info *vene_plugin_entry(uint32_t host_abi_version, const vene_host_api *host);

/* ------------------------------------------------------------------------------------------ */
/* WASM modules, ABI v1 (scalars only: i32 offsets and lengths into the module's memory)       */
/* ------------------------------------------------------------------------------------------ */
/*
 * Exports (checked at load; a missing one or a wrong signature is an error):
 *   memory                                                   the linear memory
 *   vene_abi_version() -> i32                                returns 1
 *   vene_alloc(size: i32) -> i32                             `size` bytes, 4-byte aligned; 0 = fail
 *   vene_intervene(base: i32, source: i32, out: i32,
 *                  rows: i32, dim: i32) -> i32               0 = ok; source 0 = no source
 *   vene_init(args: i32, args_len: i32) -> i32               optional: JSON args, 0 = ok
 *   vene_flags() -> i32                                      optional: VENE_TYPE_* bits
 * Imports: only
 *   vene.log(ptr: i32, len: i32)                             UTF-8 text, logged at
 *                                                            VENE_LOG_INFO (shown when
 *                                                            VENE_PLUGIN_LOG=info or lower);
 *                                                            the last message is quoted in
 *                                                            errors
 * Anything else imported is refused at load. No WASI, no filesystem, no network, no clock.
 *
 * The host compiles a module once, instantiates it per intervention (and per thread using it at
 * the same moment), calls vene_init once per instance, asks vene_alloc for its three buffers
 * (base, source, out) once per instance and reuses them, asking again only for bigger calls.
 * Each call copies rows in, runs vene_intervene and copies rows x dim floats back from `out`;
 * for a VENE_TYPE_ROW_WISE module it does so in chunks of about 64 KiB of rows per buffer (faster,
 * and the module's memory stays small whatever the batch size).
 * Limits per call: a wall-clock deadline (default 1 s) and a memory cap (default 64 MiB); a
 * trap, a timeout or an out-of-bounds access fails the call with the module's name and the
 * reason, and that instance is thrown away. Float results are deterministic (NaNs are
 * canonicalized, relaxed SIMD is deterministic).
 *
 * A module loaded from a path registers one type, "wasm/<file stem>"; `.wat` text works too.
 * Minimal C build (no libc):
 *   clang --target=wasm32 -O3 -nostdlib -Wl,--no-entry -Wl,--export-dynamic -o m.wasm m.c
 */

#ifdef __cplusplus
}
#endif

#endif /* VENE_PLUGIN_H */

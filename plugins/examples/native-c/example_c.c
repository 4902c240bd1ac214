/*
 * An example native vene plugin in C. Build it with
 *   gcc -O2 -shared -fPIC -I../../../include -o libc_example.so example_c.c
 * Types, as configs name them:
 *   c_example/add    out = base + source (pyvene's AdditionIntervention)
 *   c_example/clamp  out = min(max(base, lo), hi), no source; args {"min": -1, "max": 1}
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vene_plugin.h"

static const vene_host_api *host;
static _Thread_local char create_error[256];

/* ---- add: stateless (state stays NULL) -------------------------------------------------- */

static int32_t add_create(const char *args, size_t len, size_t dim, void **state) {
  (void)args; (void)len; (void)dim;
  *state = NULL;
  return 0;
}

static int32_t add_apply(void *state, const float *base, const float *source, float *out,
                         size_t rows, size_t dim) {
  (void)state;
  if (!source) return 1; /* last_error(NULL-state) explains */
  size_t n = rows * dim;
  for (size_t i = 0; i < n; i++) out[i] = base[i] + source[i];
  return 0;
}

static const char *add_last_error(void *state) {
  (void)state;
  return "c_example/add needs a source";
}

static void add_destroy(void *state) { (void)state; }

/* ---- clamp: reads its bounds from the JSON args ----------------------------------------- */

typedef struct {
  float lo, hi;
} clamp_state;

/* The number after "key": in a flat JSON object (enough for an example). */
static int json_number(const char *json, const char *key, float *value) {
  char pattern[64];
  snprintf(pattern, sizeof pattern, "\"%s\"", key);
  const char *p = strstr(json, pattern);
  if (!p) return 0;
  p = strchr(p + strlen(pattern), ':');
  if (!p) return -1;
  char *end;
  double v = strtod(p + 1, &end);
  if (end == p + 1) return -1;
  *value = (float)v;
  return 1;
}

static int32_t clamp_create(const char *args, size_t len, size_t dim, void **state) {
  (void)len; (void)dim; /* args is NUL-terminated */
  clamp_state s = {-INFINITY, INFINITY};
  if (json_number(args, "min", &s.lo) < 0 || json_number(args, "max", &s.hi) < 0) {
    snprintf(create_error, sizeof create_error, "clamp: min and max must be numbers");
    return 1;
  }
  if (!(s.lo <= s.hi)) {
    snprintf(create_error, sizeof create_error, "clamp: min %g is above max %g", s.lo, s.hi);
    return 1;
  }
  clamp_state *p = malloc(sizeof *p);
  if (!p) return 2;
  *p = s;
  *state = p;
  if (host && host->log) host->log(host->host_ctx, VENE_LOG_DEBUG, "clamp created");
  return 0;
}

static int32_t clamp_apply(void *state, const float *base, const float *source, float *out,
                           size_t rows, size_t dim) {
  (void)source;
  const clamp_state *s = state;
  size_t n = rows * dim;
  for (size_t i = 0; i < n; i++) out[i] = fminf(fmaxf(base[i], s->lo), s->hi);
  return 0;
}

static const char *clamp_last_error(void *state) {
  return state ? "clamp failed" : create_error;
}

static void clamp_destroy(void *state) { free(state); }

/* ---- the plugin ------------------------------------------------------------------------- */

static const vene_intervention_type types[] = {
    {sizeof(vene_intervention_type), "add", add_create, add_apply, add_last_error, add_destroy,
     VENE_TYPE_ROW_WISE},
    {sizeof(vene_intervention_type), "clamp", clamp_create, clamp_apply, clamp_last_error,
     clamp_destroy, VENE_TYPE_NO_SOURCE | VENE_TYPE_ROW_WISE},
};

static const vene_plugin_info info = {
    VENE_PLUGIN_MAGIC, VENE_PLUGIN_ABI_VERSION, sizeof(vene_plugin_info),
    "c_example", "0.1.0", sizeof types / sizeof types[0], types,
};

VENE_PLUGIN_EXPORT
const vene_plugin_info *vene_plugin_entry(uint32_t host_abi_version, const vene_host_api *h) {
  if (host_abi_version != VENE_PLUGIN_ABI_VERSION) return NULL;
  if (h && h->struct_size >= sizeof(vene_host_api)) host = h;
  return &info;
}

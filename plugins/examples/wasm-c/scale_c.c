/*
 * An example vene WASM module in C, without libc: out = factor * base (no source).
 * Build it with Debian's clang and lld:
 *   clang --target=wasm32 -O3 -nostdlib -fno-builtin -Wl,--no-entry -o scale_c.wasm scale_c.c
 * It registers as wasm/scale_c; its args are {"factor": 2.5}.
 */
#define EXPORT(name) __attribute__((export_name(name)))

__attribute__((import_module("vene"), import_name("log"))) void vene_log(const char *msg, int len);

static void log_str(const char *s) {
  int n = 0;
  while (s[n]) n++;
  vene_log(s, n);
}

static float factor = 1.0f;

EXPORT("vene_abi_version") int vene_abi_version(void) { return 1; }

/* VENE_TYPE_NO_SOURCE | VENE_TYPE_ROW_WISE */
EXPORT("vene_flags") int vene_flags(void) { return 1 | 4; }

/* Buffers on fresh pages: the module needs no allocator. */
EXPORT("vene_alloc") int vene_alloc(int size) {
  if (size <= 0) return 0;
  int pages = (size + 65535) / 65536;
  int old = __builtin_wasm_memory_grow(0, pages);
  return old < 0 ? 0 : old * 65536;
}

/* Parses [-]digits[.digits]; returns the number of bytes read (0: none). */
static int parse_float(const char *s, int n, float *out) {
  int i = 0, neg = 0, digits = 0;
  float v = 0.0f, scale = 1.0f;
  if (i < n && (s[i] == '-' || s[i] == '+')) neg = s[i++] == '-';
  while (i < n && s[i] >= '0' && s[i] <= '9') { v = v * 10.0f + (float)(s[i++] - '0'); digits++; }
  if (i < n && s[i] == '.') {
    i++;
    while (i < n && s[i] >= '0' && s[i] <= '9') { scale /= 10.0f; v += scale * (float)(s[i++] - '0'); digits++; }
  }
  if (!digits) return 0;
  *out = neg ? -v : v;
  return i;
}

/* args: JSON like {"factor": 2.5}; anything without "factor" keeps 1.0. */
EXPORT("vene_init") int vene_init(const char *args, int len) {
  static const char key[] = "\"factor\"";
  for (int i = 0; i + 8 <= len; i++) {
    int match = 1;
    for (int k = 0; k < 8; k++) if (args[i + k] != key[k]) { match = 0; break; }
    if (!match) continue;
    int j = i + 8;
    while (j < len && (args[j] == ' ' || args[j] == ':')) j++;
    if (!parse_float(args + j, len - j, &factor)) {
      log_str("scale_c: factor must be a number like 2.5");
      return 1;
    }
    return 0;
  }
  return 0;
}

EXPORT("vene_intervene")
int vene_intervene(const float *base, const float *source, float *out, int rows, int dim) {
  (void)source;
  int n = rows * dim;
  for (int i = 0; i < n; i++) out[i] = factor * base[i];
  return 0;
}

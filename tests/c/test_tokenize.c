/* Tokenize and detokenize through the C API, with the caller-buffer protocol (measure, too
 * small, exact), against ids known from an independent tokenizer.
 *
 *   usage: test_tokenize <model> <text> <comma-separated expected ids> <expected decoded text> */
#include <stdint.h>

#include "check.h"

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s <model> <text> <ids> <decoded>\n", argv[0]);
    return 2;
  }
  const char *text = argv[2];
  int32_t want[256];
  size_t n_want = 0;
  for (char *p = argv[3]; *p && n_want < 256;) {
    want[n_want++] = (int32_t)strtol(p, &p, 10);
    if (*p == ',') p++;
  }

  vene_model *m;
  vene_model_options opts;
  OK(vene_model_options_init(&opts, sizeof opts));
  opts.require_tokenizer = 1;
  OK(vene_model_load(argv[1], &opts, &m));
  vene_model_info info;
  info.struct_size = sizeof info;
  OK(vene_model_get_info(m, &info));
  CHECK(info.has_tokenizer == 1);

  /* Measure, then a buffer one too small, then the exact size. */
  size_t n = 0;
  OK(vene_tokenize(m, text, strlen(text), NULL, 0, &n));
  CHECK(n == n_want);
  int32_t *ids = (int32_t *)malloc((n + 1) * sizeof *ids);
  size_t n2 = 0;
  ids[n - 1] = -77;
  FAILS(vene_tokenize(m, text, strlen(text), ids, n - 1, &n2), VENE_ERR_BUFFER_TOO_SMALL,
        "needed");
  CHECK(n2 == n && ids[n - 1] == -77); /* the size is reported, the buffer untouched */
  OK(vene_tokenize(m, text, strlen(text), ids, n, &n2));
  CHECK(n2 == n && memcmp(ids, want, n * sizeof *ids) == 0);
  /* The text need not be NUL-terminated: a prefix by length. */
  size_t n3 = 0;
  OK(vene_tokenize(m, text, 0, NULL, 0, &n3));
  CHECK(n3 == 0);
  FAILS(vene_tokenize(m, "\xc3\x28", 2, ids, n, &n3), VENE_ERR_INVALID_ARGUMENT, "UTF-8");
  FAILS(vene_tokenize(m, NULL, 3, ids, n, &n3), VENE_ERR_INVALID_ARGUMENT, "NULL");
  FAILS(vene_tokenize(m, text, strlen(text), NULL, 5, &n3), VENE_ERR_INVALID_ARGUMENT, "NULL");

  size_t len = 0;
  OK(vene_detokenize(m, ids, n, NULL, 0, &len));
  CHECK(len == strlen(argv[4]));
  char *buf = (char *)malloc(len + 1);
  size_t len2 = 0;
  FAILS(vene_detokenize(m, ids, n, buf, len, &len2), VENE_ERR_BUFFER_TOO_SMALL, "NUL");
  CHECK(len2 == len);
  OK(vene_detokenize(m, ids, n, buf, len + 1, &len2));
  CHECK(len2 == len && strcmp(buf, argv[4]) == 0);
  int32_t bad[2] = {1, -5};
  FAILS(vene_detokenize(m, bad, 2, buf, len + 1, &len2), VENE_ERR_INVALID_INPUT, "-5");
  bad[1] = (int32_t)info.vocab_size;
  FAILS(vene_detokenize(m, bad, 2, buf, len + 1, &len2), VENE_ERR_INVALID_INPUT, "out of range");

  free(ids);
  free(buf);
  vene_model_free(m);
  printf("test_tokenize: %zu tokens, round trip ok\n", n);
  return 0;
}

/* The C API's sparse autoencoders on the tiny gpt2 fixture with the SAELens SAE of
 * tests/fixtures/sae/gpt2_resid: load, sizes, info, encode = feature activations of the
 * site's activation, reconstruct, steering changes generation, the ablation sweep, and errors
 * (a bad path, a feature out of range, a small buffer). Prints "acts <f> <value>" for position 4
 * and "effect <f> <value>" per feature, which tests/capi.rs compares with SAELens's numbers.
 *
 *   usage: test_sae <gpt2 fixture dir> <sae dir> */
#include <stdint.h>

#include "check.h"

static const uint32_t IDS[7] = {3, 17, 42, 5, 60, 8, 11};

int main(int argc, char **argv) {
  CHECK(argc == 3);
  vene_model *model = NULL;
  vene_sae *sae = NULL;
  OK(vene_model_load(argv[1], NULL, &model));
  OK(vene_sae_load(argv[2], NULL, &sae));
  size_t d_in = 0, d_sae = 0, d_out = 0;
  OK(vene_sae_sizes(sae, &d_in, &d_sae, &d_out));
  CHECK(d_in == 32 && d_sae == 64 && d_out == 32);

  char info[1024];
  size_t len = 0;
  OK(vene_sae_info(sae, info, sizeof info, &len));
  CHECK(strstr(info, "\"format\":\"saelens\"") != NULL);
  CHECK(strstr(info, "\"component_in\":\"block_input\"") != NULL);

  /* Feature activations of the prompt. */
  float acts[7 * 64];
  OK(vene_sae_feature_acts(model, sae, IDS, 7, acts, 7 * 64));
  for (size_t f = 0; f < 64; f++) printf("acts %zu %.7g\n", f, acts[4 * 64 + f]);
  FAILS(vene_sae_feature_acts(model, sae, IDS, 7, acts, 10), VENE_ERR_BUFFER_TOO_SMALL, "10 floats");

  /* encode and reconstruct on rows given directly: decoding one-hot activations is b_dec + W_dec row. */
  float x[2 * 32], codes[2 * 64], recon[2 * 32];
  for (size_t i = 0; i < 64; i++) x[i] = (float)((int)(i % 7) - 3) * 0.25f;
  OK(vene_sae_encode(sae, x, 2, codes, 2 * 64));
  OK(vene_sae_reconstruct(sae, x, 2, recon, 2 * 32));
  for (size_t i = 0; i < 2 * 64; i++) CHECK(codes[i] >= 0.0f);
  FAILS(vene_sae_encode(sae, x, 2, codes, 64), VENE_ERR_BUFFER_TOO_SMALL, "needed");

  /* Steering by a feature changes the greedy continuation. */
  uint32_t plain[8], steered[8];
  size_t n_plain = 0, n_steered = 0;
  OK(vene_sae_generate_steered(model, sae, 5, 0.0f, IDS, 7, 8, plain, 8, &n_plain));
  OK(vene_sae_generate_steered(model, sae, 5, 30.0f, IDS, 7, 8, steered, 8, &n_steered));
  CHECK(n_plain > 0 && n_steered > 0);
  CHECK(memcmp(plain, steered, (n_plain < n_steered ? n_plain : n_steered) * sizeof(uint32_t)) != 0);
  FAILS(vene_sae_generate_steered(model, sae, 64, 1.0f, IDS, 7, 8, plain, 8, &n_plain),
        VENE_ERR_INVALID_INPUT, "feature 64");

  /* The ablation sweep over every feature, 16 per forward. */
  size_t features[64];
  float effects[64], base = 0.0f;
  for (size_t f = 0; f < 64; f++) features[f] = f;
  OK(vene_sae_ablation_sweep(model, sae, IDS, 7, 4, 7, features, 64, 16, effects, &base));
  printf("base %.7g\n", base);
  for (size_t f = 0; f < 64; f++) printf("effect %zu %.7g\n", f, effects[f]);

  FAILS(vene_sae_load("/no/such/sae", NULL, &sae), VENE_ERR_IO, "/no/such/sae");
  vene_sae *bad = NULL;
  FAILS(vene_sae_load(argv[2], "blocks.0.hook_resid_mid", &bad), VENE_ERR_INVALID_INPUT,
        "hook_resid_mid");
  OK(vene_sae_free(sae));
  FAILS(vene_sae_free(sae), VENE_ERR_INVALID_HANDLE, "vene_sae");
  vene_model_free(model);
  printf("all checks passed\n");
  return 0;
}

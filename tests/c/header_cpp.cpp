// vene.h compiled as C++17 (with -Wall -Wextra -Werror -pedantic): the header must be valid
// C++, its enums usable as C++ types, and its struct layouts frozen. The static_asserts pin the
// ABI v1 layouts: a change that moves a field fails here (fields may only be appended).
#include <cstddef>
#include <cstdio>
#include <cstring>

#include "vene.h"
#include "vene_plugin.h"  // included twice on purpose: the guards must hold

static_assert(VENE_ABI_VERSION == 1, "ABI v1");
static_assert(sizeof(vene_status) == 4 && VENE_OK == 0 && VENE_ERR_INTERNAL == -8, "status");
static_assert(sizeof(vene_model_options) == 24, "vene_model_options v3 (v1: 8 bytes, v2: 16, no device)");
static_assert(offsetof(vene_model_options, weights) == 8, "weights");
static_assert(offsetof(vene_model_options, device) == 16, "device");
static_assert(sizeof(vene_model_info) == 128, "vene_model_info v2 (v1: 120 bytes, no weight_bytes)");
static_assert(offsetof(vene_model_info, weight_bytes) == 120, "weight_bytes");
static_assert(offsetof(vene_model_info, model_type) == 8, "model_type");
static_assert(offsetof(vene_model_info, pad_id) == 112, "pad_id");
static_assert(sizeof(vene_site_info) == 48, "vene_site_info v1");
static_assert(sizeof(vene_input) == 56 && offsetof(vene_input, position_ids) == 48, "input");
static_assert(sizeof(vene_units) == 48 && offsetof(vene_units, positions) == 40, "units");
static_assert(sizeof(vene_location) == 96, "location");
static_assert(sizeof(vene_subspace) == 24 && sizeof(vene_tensor) == 24, "subspace, tensor");
static_assert(sizeof(vene_request) == 104, "vene_request v1");
static_assert(offsetof(vene_request, base) == 8, "base");
static_assert(offsetof(vene_request, output_original) == 96, "output_original");
static_assert(sizeof(vene_generate_options) == 64, "vene_generate_options v1");
static_assert(offsetof(vene_generate_options, ignore_eos) == 60, "ignore_eos");
static_assert(sizeof(vene_representation_info) == 56, "vene_representation_info v1");
static_assert(sizeof(vene_host_intervention) == 64, "vene_host_intervention v1");
static_assert(offsetof(vene_host_intervention, release) == 56, "release");

int main() {
  if (vene_abi_version() != VENE_ABI_VERSION) return 1;
  vene_request req{};
  if (vene_request_init(&req, sizeof req) != VENE_OK) return 1;
  vene_status s = vene_model_site_count(nullptr, nullptr);  // an enum in C++
  if (s != VENE_ERR_INVALID_HANDLE) return 1;
  vene_units u{};
  u.kind = VENE_UNITS_HEAD_POS;
  req.logits = VENE_LOGITS_LAST;
  std::printf("header_cpp: vene.h is valid C++17, ABI %u, %s\n", vene_abi_version(),
              vene_status_string(s));
  return u.kind == 2 && req.logits == 1 ? 0 : 1;
}

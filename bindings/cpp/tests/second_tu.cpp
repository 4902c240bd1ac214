// A second translation unit including vene.hpp: linking it with test_vene.cpp checks that
// every function the header defines is inline (no duplicate symbols).
#include "vene/vene.hpp"

int other_translation_unit() { return static_cast<int>(vene::check_abi()); }

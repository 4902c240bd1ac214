// The C++ bindings' side of the overhead benchmark (see capi_bench.c): the same protocol
// through vene.hpp (Request with std::vectors, Intervenable::run, Result::tensor).
#include <chrono>
#include <ctime>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>

#include "vene/vene.hpp"

static std::vector<int32_t> parse_ids(const std::string &s) {
  std::vector<int32_t> v;
  std::stringstream ss(s);
  std::string tok;
  while (std::getline(ss, tok, ',')) v.push_back(std::stoi(tok));
  return v;
}

int main(int argc, char **argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s <model> <config> <all|last> <base> <source> <pos>\n", argv[0]);
    return 2;
  }
  try {
    vene::Model model = vene::Model::load(argv[1]);
    vene::Intervenable iv(model, argv[2]);
    bool last = std::string(argv[3]) == "last";
    std::vector<int32_t> base = parse_ids(argv[4]), src = parse_ids(argv[5]);
    int64_t pos = std::stoll(argv[6]);
    std::printf("ready\n");
    std::fflush(stdout);
    std::string line;
    double sink = 0;
    while (std::getline(std::cin, line) && line.rfind("run", 0) == 0) {
      auto t0 = std::chrono::steady_clock::now();
      std::clock_t c0 = std::clock();
      vene::Request req;
      req.base = vene::Input::tokens(base);
      req.sources = {vene::Input::tokens(src)};
      req.locations = {vene::Location::at({pos})};
      req.logits = last ? VENE_LOGITS_LAST : VENE_LOGITS_ALL;
      {
        vene::Result r = iv.run(req);
        sink += r.tensor("intervened.logits").data[0];
      }
      auto us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0);
      double cpu = 1e6 * double(std::clock() - c0) / CLOCKS_PER_SEC;
      std::printf("%.1f %.1f\n", us.count(), cpu);
      std::fflush(stdout);
    }
    return sink == 12345.678 ? 3 : 0;
  } catch (const vene::Error &e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}

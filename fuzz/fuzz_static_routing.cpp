// libFuzzer target: arbitrary bytes as the static routing files of `--static FILE` (a head list,
// "LAYER HEAD" per line) and of `--static-scores FILE` (one line of per-KV-head scores per
// layer). The first byte picks the model shape (1-8 layers, 1-8 KV heads) and the sparse ratio;
// the rest is written to a scratch file, since the readers take a path. Both readers must either
// reject the file with elastic::Error or return an [L][Hkv] table of 0/1; the top-scores table
// must have exactly round(ratio * L * Hkv) sparse heads.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include "elastic/error.h"
#include "elastic/routing.h"

namespace {

const std::string& scratch_path() {
  static const std::string p = "/tmp/fuzz_static_routing." + std::to_string(::getpid());
  return p;
}

void check_table(const std::vector<std::vector<uint8_t>>& a, int64_t layers, int64_t heads) {
  if (static_cast<int64_t>(a.size()) != layers) __builtin_trap();
  for (const auto& row : a) {
    if (static_cast<int64_t>(row.size()) != heads) __builtin_trap();
    for (uint8_t x : row)
      if (x > 1) __builtin_trap();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int64_t layers = 1 + (data[0] & 7), heads = 1 + ((data[0] >> 3) & 7);
  const double ratio = (data[0] >> 6) / 3.0;  // 0, 1/3, 2/3, 1
  const std::string& path = scratch_path();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) __builtin_trap();
  std::fwrite(data + 1, 1, size - 1, f);
  std::fclose(f);
  try {
    check_table(elastic::static_assignment_head_list(path, layers, heads), layers, heads);
  } catch (const elastic::Error&) {
  }
  try {
    auto a = elastic::static_assignment_top_scores(path, layers, heads, ratio);
    check_table(a, layers, heads);
    int64_t sparse = 0;
    for (const auto& row : a)
      for (uint8_t x : row) sparse += x == 0;
    if (sparse != std::llround(ratio * static_cast<double>(layers * heads))) __builtin_trap();
  } catch (const elastic::Error&) {
  }
  return 0;
}

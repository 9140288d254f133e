// libFuzzer target: arbitrary bytes as a whole safetensors file. safetensors_parse_buffer must
// either reject them with elastic::Error or return entries that satisfy every invariant of
// include/elastic/safetensors.h; then every tensor's bytes are read (converted to fp32 or int64)
// so ASan sees any access outside the buffer. Any other exception or a broken invariant is a
// finding (libFuzzer reports an uncaught exception or __builtin_trap as a crash).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "elastic/error.h"
#include "elastic/safetensors.h"

namespace {

bool is_float(elastic::DType t) {
  using elastic::DType;
  return t == DType::f32 || t == DType::f16 || t == DType::bf16 || t == DType::f64;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Copy into 8-byte aligned storage, as a page-aligned mapping of the file would be; the
  // exact size keeps ASan's bounds tight (the tail of the last word is never read).
  std::vector<uint64_t> words((size + 7) / 8);
  auto* buf = reinterpret_cast<unsigned char*>(words.data());
  if (size) std::memcpy(buf, data, size);
  std::vector<elastic::SafetensorsEntry> entries;
  try {
    entries = elastic::safetensors_parse_buffer(buf, size, "fuzz.safetensors");
  } catch (const elastic::Error&) {
    return 0;  // clean rejection
  }
  // Accepted: the header length is in bounds, so the data section starts at 8 + n.
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | buf[i];
  if (size < 8 || n > size - 8) __builtin_trap();
  const uint64_t data_bytes = size - 8 - n;
  const unsigned char* base = buf + 8 + n;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  double checksum = 0;
  for (const auto& e : entries) {
    if (e.begin > e.end || e.end > data_bytes) __builtin_trap();
    uint64_t numel = 1;
    for (int64_t d : e.shape) {
      if (d < 0) __builtin_trap();
      numel *= static_cast<uint64_t>(d);
    }
    if (numel * elastic::dtype_size(e.dtype) != e.end - e.begin) __builtin_trap();
    if ((8 + n + e.begin) % elastic::dtype_size(e.dtype) != 0) __builtin_trap();
    if (e.end > e.begin) spans.emplace_back(e.begin, e.end);
    elastic::TensorView t{e.name, e.dtype, e.shape, base + e.begin};
    if (static_cast<uint64_t>(t.numel()) != numel) __builtin_trap();
    if (is_float(e.dtype)) {
      for (float x : t.to_f32()) checksum += x;
    } else {
      for (int64_t x : t.to_i64()) checksum += static_cast<double>(x);
    }
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second) __builtin_trap();  // overlap accepted
  volatile double sink = checksum;  // keep the reads
  (void)sink;
  return 0;
}

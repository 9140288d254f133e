#include "train/rng.h"

namespace elastic::train {

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> c, std::array<uint32_t, 2> k) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;  // round multipliers
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;  // Weyl key increments
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = uint64_t(kM0) * c[0], p1 = uint64_t(kM1) * c[2];
    const uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
    const uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    c = {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
    k[0] += kW0;
    k[1] += kW1;
  }
  return c;
}

std::vector<double> gumbel_uniforms(uint64_t seed, int64_t step, int64_t sample, int64_t L,
                                    int64_t Hkv) {
  std::vector<double> u(static_cast<size_t>(L * Hkv * 2));
  const std::array<uint32_t, 2> key = {uint32_t(seed), uint32_t(seed >> 32)};
  for (int64_t l = 0; l < L; ++l)
    for (int64_t h = 0; h < Hkv; ++h) {
      // counter: (step, sample, layer * 65536 + head, stream 0x47554d42 "GUMB")
      const std::array<uint32_t, 4> r = philox4x32_10(
          {uint32_t(step), uint32_t(sample), uint32_t(l * 65536 + h), 0x47554d42u}, key);
      for (int c = 0; c < 2; ++c) {  // 53-bit uniform in [0, 1) from two words
        const uint64_t bits = (uint64_t(r[2 * c]) << 21) ^ (uint64_t(r[2 * c + 1]) >> 11);
        u[size_t((l * Hkv + h) * 2 + c)] = double(bits & ((uint64_t(1) << 53) - 1)) * 0x1p-53;
      }
    }
  return u;
}

}  // namespace elastic::train

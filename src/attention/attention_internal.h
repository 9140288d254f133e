// Pieces shared by the CPU attention files: a vectorisable exp2 and the tile sizes.
#pragma once

#include <cstdint>

#include "core/fast_exp.h"
#include "elastic/attention.h"

namespace elastic::attn_detail {

// Query rows and keys per tile of the CPU kernel. 64 x 64 scores (16 KiB) plus a 64-key K^T
// and V tile of d = 128 (64 KiB) stay in L2; the 64-wide key rows are four AVX-512 vectors.
constexpr int64_t kTileQueries = 64;
constexpr int64_t kTileKeys = 64;

// 2^x for x <= 0 (core/fast_exp.h), the softmax's exponential.
using detail::exp2_nonpositive;

// attention_cpu for one query (a.n == 1): split-KV decode over the cache rows in place
// (attention_decode_cpu.cpp). Same keys, same exact softmax as the tiled path.
void attention_cpu_decode(const AttnArgs& a);

}  // namespace elastic::attn_detail

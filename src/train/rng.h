// Counter-based random numbers for training (Philox4x32-10, Salmon et al. 2011, as cuRAND and
// Random123): the value at a counter depends only on (key, counter), so the Gumbel noise of
// (step, sample, layer, head) is reproducible whatever the batch layout, the backend, the
// number of workers or a resume in the middle of a run.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace elastic::train {

std::array<uint32_t, 4> philox4x32_10(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// Uniforms in [0, 1) for the Gumbel-softmax of one sample at one optimizer step: [L, Hkv, 2]
// (SA, FA per head). `sample` is the sample's index in the dataset (stable across epochs and
// packings); the epoch is part of the step count, so a sample seen twice gets fresh noise.
std::vector<double> gumbel_uniforms(uint64_t seed, int64_t step, int64_t sample, int64_t layers,
                                    int64_t kv_heads);

}  // namespace elastic::train

// The Attention Router (SPEC §5, router.h) on the device: a router's weights uploaded once, and
// one layer's boundary pooling + task MLP + router MLP in double (as the CPU reference), of which
// only z [Hkv][classes] comes back to the host. Used by the CUDA backend's router_prepare /
// router_forward (backend.h).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "elastic/router.h"

namespace elastic::cuda {

// Device pointers of one layer's router tensors (fp32, row-major [out, in] as RouterLayerWeights).
struct RouterDeviceLayer {
  const float *w1, *b1, *w2, *b2;  // task MLP: [4d, d] [4d] [d, 4d] [d]
  const float *w3, *b3, *w4, *b4;  // router MLP: [4d, d] [4d] [d, 4d] [d]
  const float *w5, *b5;            // [C, d] [C]
};

// A router on the device: every layer's tensors in one allocation, and the z buffer.
struct RouterDevice {
  int64_t head_dim = 0;
  int64_t classes = 2;
  std::shared_ptr<void> weights;          // all layers' fp32 tensors
  std::vector<RouterDeviceLayer> layers;  // [L] pointers into `weights`
  std::shared_ptr<void> z;                // [z_capacity] double, grow-only
  int64_t z_capacity = 0;
};

// Largest head_dim the router kernel takes (its activations live in shared memory: 7 d doubles).
constexpr int64_t kRouterMaxHeadDim = 512;

// Uploads `w` (plain device memory). Throws elastic::Error for a head_dim above kRouterMaxHeadDim.
std::shared_ptr<RouterDevice> router_device_upload(const RouterWeights& w);

// z_host: [Hkv, classes] = router outputs of `layer` for k: [n, Hkv, d] fp32 device (or managed)
// memory. Runs on `stream` and waits for it (the decisions are needed on the host).
void router_device_forward(double* z_host, RouterDevice& r, int64_t layer, const float* k,
                           int64_t n, int64_t num_kv_heads, int64_t pool_tokens,
                           cudaStream_t stream);

}  // namespace elastic::cuda

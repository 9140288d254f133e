// The CUDA backend behind the model forward pass (backend.h): device memory, bf16 weights on the
// device, cuBLASLt GEMMs (bf16 operands, fp32 accumulate and output), elementwise kernels, and the
// fused hybrid attention. Activations stay fp32 as the interface prescribes; linear layers and
// attention round their inputs to bf16 on the device.
//
// Attention support: whole-prompt prefill (pos0 = 0, any modes, stats filled like the CPU's) and
// single-token decode (n = 1) whose past K/V come from the forward's host KV cache (uploaded per
// call: a correctness path, not a fast one). Chunked prefill (pos0 > 0, n > 1) throws
// elastic::Error ("unsupported"), never computes something different.
#pragma once

#include <memory>

#include "elastic/backend.h"

namespace elastic {

struct CudaBackendOptions {
  // Managed memory and a device sync after every op, so host code may read and write the
  // buffers (today's forward reads k/v on the host for the KV cache and the router). Plain
  // cudaMalloc and asynchronous ops when false.
  bool host_visible = false;
};

// Throws elastic::Error when no CUDA device is present.
std::shared_ptr<Backend> backend_cuda(const CudaBackendOptions& opt = {});

}  // namespace elastic

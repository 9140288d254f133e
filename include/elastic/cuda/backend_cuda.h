// The CUDA backend behind the model forward pass (backend.h): device memory, bf16 weights on the
// device, cuBLASLt GEMMs (bf16 operands, fp32 accumulate and output), elementwise kernels, and the
// fused hybrid attention. Activations stay fp32 as the interface prescribes; linear layers and
// attention round their inputs to bf16 on the device.
//
// KV cache: the backend makes each request's KvStore (kv_store_create): bf16 K/V rows on the
// device (SSA heads as sink + window rings), appended after prefill and before each decode step,
// read in place by the decode kernel; k/v never go to the host.
//
// Attention support: head_dim 16, 32, 64, 128, every mode; prefill of a whole prompt (pos0 = 0)
// or of a chunk (pos0 > 0, n > 1: chunked prefill, a chat turn; XA heads need pos0 to be a
// multiple of the XA block, as on the CPU: the model's forward runs the XA heads of other chunks
// as FA, attn_call_modes in model.h), stats filled like the CPU's, and single-token decode
// (n = 1). The past comes from the KvStore (attention_forward_stored: gathered on the device for
// a chunk, read in place for decode) or, for a direct attention_forward call, from host
// KvHeadViews in AttnArgs::past (uploaded per call: a correctness path).
#pragma once

#include <memory>

#include "elastic/backend.h"

namespace elastic {

struct CudaBackendOptions {
  // Managed memory and a device sync after every op, so host code may read and write the
  // buffers directly (tests, debugging). Plain cudaMalloc and asynchronous ops when false: the
  // whole forward stays on the device, the Attention Router included (it returns only its
  // [Hkv][C] outputs; a custom RoutingPolicy gets k downloaded by RoutingPolicy::route_backend),
  // and sampling returns one token id.
  bool host_visible = false;
};

// Throws elastic::Error when no CUDA device is present.
std::shared_ptr<Backend> backend_cuda(const CudaBackendOptions& opt = {});

}  // namespace elastic

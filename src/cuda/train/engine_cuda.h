// The CUDA training engine: TrainEngine (src/train/engine.h) on one GPU, step by step the CPU
// reference TrainModel (model_train.h) in bf16 with fp32 accumulation, as llm.c's
// train_gpt2.cu mirrors train_gpt2.c.
//
//   memory     frozen backbone: bf16 on the device; trainable backbone (weight_grads): fp32
//              master weights, gradients and AdamW moments on the device plus the bf16 compute
//              copy (refreshed by the AdamW kernel); the router group (values, gradients,
//              moments) lives on the host, where its tiny MLPs run (below)
//   forward    the residual entering every layer is kept ([L + 1, rows, D] bf16); one layer's
//              activations at a time; attention in each (sample, KV head)'s chosen mode
//   backward   each layer recomputed from its stored input (no MLP forward: the MLP backward
//              recomputes gate/up per row tile); attention runs again in both modes (O_FA and
//              O_SA for dL/dz), its backward only in the chosen one
//   tiles      the MLP over row tiles of mlp_chunk_rows (no [rows, F] tensor), the fused
//              lm_head + CE over tiles of head_chunk_rows labelled rows (no [rows, V] tensor)
//   router     pooling and dL/dz reductions on the device; the MLPs (d -> 4d -> d -> 4d -> d ->
//              2 per sample and KV head, 0.26 M MACs) on the host in double with the CPU
//              functions of router_train.h: the pooled keys come down, dL/dpooled goes up (one
//              synchronisation per layer and pass). This keeps one implementation of the
//              router math and costs < 1 ms per layer.
//
// Supported: head_dim 16/32/64/128, FA and SSA modes (XA is not trainable), qk norms, q/k/v and
// o biases, tied or separate lm_head.
#pragma once

#include <cstdint>
#include <memory>

#include "elastic/config.h"
#include "train/engine.h"

namespace elastic::train {

struct CudaTrainOptions {
  int64_t mlp_chunk_rows = 16384;  // rows of one MLP tile ([rows, F] bf16 buffers x 6)
  int64_t head_chunk_rows = 4096;  // labelled rows of one lm_head tile ([rows, V] fp32 + bf16)
  bool profile = false;            // time every step's phases (CUDA events between phases)
};

// Device time of the last step by phase (CudaTrainOptions::profile): the step's stream timeline
// cut at every phase change, so the phases add up to the step. router: pooling, the transfers
// and the host MLPs (the device waits meanwhile); head: the lm_head GEMMs and the fused CE;
// elementwise: norms, RoPE, SwiGLU, conversions, reductions, memsets.
struct CudaTrainProfile {
  double gemm_ms = 0, attention_forward_ms = 0, attention_backward_ms = 0, head_ms = 0,
         router_ms = 0, elementwise_ms = 0;
};

// The CUDA engine from host parameters (fp32 values, converted to bf16 for compute). router may
// be empty (fixed routing only). Throws elastic::Error without a CUDA device or for an
// unsupported shape.
std::unique_ptr<TrainEngine> train_engine_cuda(const ModelConfig& c, ParamSet<float> backbone,
                                               ParamSet<float> router, const TrainOptions& opt,
                                               const CudaTrainOptions& copt = {});

// A random bf16 backbone made on the device (benchmarks of large shapes without a host copy):
// matrices ~ uniform with standard deviation `stddev`, norm weights 1. Frozen only
// (opt.weight_grads must be false).
std::unique_ptr<TrainEngine> train_engine_cuda_synthetic(const ModelConfig& c,
                                                         ParamSet<float> router,
                                                         const TrainOptions& opt, uint64_t seed,
                                                         float stddev,
                                                         const CudaTrainOptions& copt = {});

// Device bytes the engine holds (weights, state, activations, workspaces); its peak, since
// buffers are kept for the largest batch seen. 0 for an engine of another backend.
size_t train_engine_cuda_device_bytes(const TrainEngine& engine);
// The phases of the engine's last step (zeros unless profiling, or for another backend).
CudaTrainProfile train_engine_cuda_profile(const TrainEngine& engine);

}  // namespace elastic::train

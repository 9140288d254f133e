// Varlen attention for training on CUDA (attention_train.h is the CPU reference): a packed batch
// of sequences (cu_seqlens spans, causal inside each, never across), every (sequence, KV head)
// in its own mode, FA or SSA (the block rule of elastic/attention.h), GQA, head_dim 16/32/64/128.
//
//   forward:  out = softmax(scale q k^T) v per query head, and lse (natural log) per (row, head)
//   backward: FlashAttention-2: dsum = rowsum(dout * out) pre-pass, then one CTA per
//             (sequence, 64-key tile, KV head) loops over the G query heads and the query tiles
//             that can see its keys, recomputes P = exp(s - lse), accumulates dK, dV in registers
//             and adds dQ to an fp32 buffer with atomics.
//
// A plan (host, once per batch) uploads the spans and two work lists (forward: (sequence,
// query tile, query head); backward: (sequence, key tile, KV head)), ordered by their FA cost so
// that long tiles start first. Modes are device data per launch ([S, Hkv] uint8, AttnMode
// values), with mode_xor = 1 running every head in the other mode (the router's second output).
// run() never synchronises.
//
// Numerics: q, k, v, out, dout bf16; scores, softmax, lse and every accumulator fp32; P and dS
// are rounded to bf16 as tensor-core operands. Gradients are ADDED to dq, dk, dv (fp32), as the
// CPU reference adds.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "elastic/attention.h"
#include "elastic/batch.h"

namespace elastic::cuda {

struct AttnTrainShape {
  int64_t rows = 0;  // packed rows of the batch
  int num_heads = 0, num_kv_heads = 0, head_dim = 0;
  SsaOptions ssa;
  float scale = 0.f;  // 0 = 1/sqrt(head_dim)
};

// Device schedule of one packed batch (buffers owned by the plan).
class AttnTrainPlan {
 public:
  AttnTrainPlan() = default;
  // Throws elastic::Error for an unsupported shape (head_dim, heads) or a span with pos0 != 0.
  AttnTrainPlan(const AttnTrainShape& shape, const std::vector<BatchSeq>& seqs,
                cudaStream_t stream);
  ~AttnTrainPlan();
  AttnTrainPlan(const AttnTrainPlan&) = delete;
  AttnTrainPlan& operator=(const AttnTrainPlan&) = delete;

  const AttnTrainShape& shape() const { return shape_; }
  int num_seqs() const { return num_seqs_; }
  const int2* seqs_dev() const { return seqs_; }
  int forward_items() const { return fwd_count_; }
  int backward_items() const { return bwd_count_; }
  const int4* forward_work() const { return fwd_work_; }
  const int4* backward_work() const { return bwd_work_; }
  // The backward tile variant the work list was made for (attention_train_set_backward_variant
  // at construction).
  int backward_variant() const { return backward_variant_; }
  // Query-key pairs each mode would compute over the whole batch (per query head), for the cost
  // model of the benchmark: fa_pairs = sum n (n + 1) / 2, ssa_pairs = pairs of the SSA rule.
  int64_t fa_pairs = 0, ssa_pairs = 0;

 private:
  AttnTrainShape shape_;
  int num_seqs_ = 0, fwd_count_ = 0, bwd_count_ = 0, backward_variant_ = 0;
  int2* seqs_ = nullptr;      // [S] (begin, length)
  int4* fwd_work_ = nullptr;  // [fwd_count] (sequence, query tile, query head, 0)
  int4* bwd_work_ = nullptr;  // [bwd_count] (sequence, key tile, KV head, 0)
};

// out: [rows, Hq, d] bf16; lse: [rows, Hq] fp32 (natural log); q: [rows, Hq, d]; k, v:
// [rows, Hkv, d] bf16 (after RoPE); modes: [S, Hkv] device (AttnMode fa / ssa), xor'ed with
// mode_xor.
void attention_train_forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q,
                             const __nv_bfloat16* k, const __nv_bfloat16* v, const uint8_t* modes,
                             int mode_xor, const AttnTrainPlan& plan, cudaStream_t stream);

// dq: [rows, Hq, d], dk, dv: [rows, Hkv, d] fp32 (all +=); dsum: [rows, Hq] fp32 scratch;
// dout, out: [rows, Hq, d] bf16 and lse: [rows, Hq] from attention_train_forward with the same
// modes.
void attention_train_backward(float* dq, float* dk, float* dv, float* dsum,
                              const __nv_bfloat16* dout, const __nv_bfloat16* out, const float* lse,
                              const __nv_bfloat16* q, const __nv_bfloat16* k,
                              const __nv_bfloat16* v, const uint8_t* modes, int mode_xor,
                              const AttnTrainPlan& plan, cudaStream_t stream);

// Query rows per forward work item and keys per backward work item (plan and tests).
int attention_train_block_m(int head_dim);
int attention_train_block_n_backward(int head_dim);
// Backward tile variant at d = 128, taken by the plans made after the call (0: 4 warps, 64 keys
// per CTA, 32 query rows per step; 1: 64 query rows; 2 (default): 8 warps, 128 keys per CTA).
// Benchmarks and tests set it; not thread-safe.
constexpr int kAttentionTrainBackwardDefault = 2;
void attention_train_set_backward_variant(int variant);

}  // namespace elastic::cuda

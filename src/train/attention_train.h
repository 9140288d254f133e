// Attention of a packed batch for training, CPU reference (T = float or double): every
// (sequence, KV head) in its own mode, causal inside its sequence, never across sequences.
// Modes (SPEC §3): FA attends keys 0..p of the query's sequence; SSA the sink blocks and the
// local window of the block rule (ssa_key_ranges, the one rule shared with inference), cut at
// p. XA is not trained (an elastic::Error). The forward returns the log-sum-exp of every
// (row, query head) beside O, so the backward recomputes the probabilities without a second
// softmax pass (FlashAttention-2's backward):
//   P_ij = exp(s_ij - lse_i),  D_i = dO_i . O_i,
//   dV_j += P_ij dO_i,  dS_ij = P_ij (dO_i . V_j - D_i),  dQ_i += scale dS_ij K_j,
//   dK_j += scale dS_ij Q_i.
#pragma once

#include <cstdint>

#include "elastic/attention.h"
#include "elastic/batch.h"

namespace elastic::train {

template <typename T>
struct AttnTrainArgs {
  const T* q = nullptr;            // [rows, Hq, d] after RoPE
  const T* k = nullptr;            // [rows, Hkv, d] after RoPE
  const T* v = nullptr;            // [rows, Hkv, d]
  const BatchSeq* seqs = nullptr;  // [S], pos0 == 0 (whole samples)
  int64_t num_seqs = 0;
  const AttnMode* modes = nullptr;  // [S, Hkv] fa or ssa
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  SsaOptions ssa;
  double scale = 0;  // 0 = 1/sqrt(head_dim)
};

// out: [rows, Hq, d]; lse: [rows, Hq] (natural log).
template <typename T>
void attention_train_forward(T* out, T* lse, const AttnTrainArgs<T>& a);

// dq: [rows, Hq, d], dk, dv: [rows, Hkv, d] (all +=); dout, out: [rows, Hq, d]; lse: [rows, Hq]
// from attention_train_forward with the same modes.
template <typename T>
void attention_train_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const T* lse,
                              const AttnTrainArgs<T>& a);

}  // namespace elastic::train

// CPU reference attention for training (attention_train.h). Work items are (sequence, KV
// head): one item owns its sequence's rows of dK and dV, so the backward needs no atomics; each
// item serves the G query heads of its KV head. Scores and sums in double.
#include "train/attention_train.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "elastic/error.h"

namespace elastic::train {
namespace {

// Key ranges (sequence-relative rows) of the query at position p of a sequence in `mode`.
int key_ranges(AttnMode mode, const SsaOptions& ssa, int64_t p, KeyRange r[2]) {
  if (mode == AttnMode::fa) {
    r[0] = {0, p + 1};
    return 1;
  }
  const int count = ssa_key_ranges(ssa, p, r);
  for (int i = 0; i < count; ++i) r[i].end = std::min(r[i].end, p + 1);
  return count;
}

template <typename T>
void args_check(const AttnTrainArgs<T>& a) {
  ELASTIC_CHECK(a.num_kv_heads > 0 && a.num_heads % a.num_kv_heads == 0 && a.head_dim > 0);
  for (int64_t s = 0; s < a.num_seqs; ++s) {
    if (a.seqs[s].pos0 != 0)
      throw Error("training attention: sequence " + std::to_string(s) + " starts at position " +
                  std::to_string(a.seqs[s].pos0) + " (training samples start at 0)");
    for (int64_t h = 0; h < a.num_kv_heads; ++h) {
      const AttnMode m = a.modes[s * a.num_kv_heads + h];
      if (m != AttnMode::fa && m != AttnMode::ssa)
        throw Error(std::string("training attention: mode ") + attn_mode_name(m) +
                    " is not trainable (FA and SSA are)");
    }
  }
}

}  // namespace

template <typename T>
void attention_train_forward(T* out, T* lse, const AttnTrainArgs<T>& a) {
  args_check(a);
  const int64_t Hq = a.num_heads, Hkv = a.num_kv_heads, d = a.head_dim, G = Hq / Hkv;
  const double scale = a.scale > 0 ? a.scale : 1.0 / std::sqrt(static_cast<double>(d));
  const int64_t items = a.num_seqs * Hkv;
#pragma omp parallel
  {
    std::vector<double> s, acc(static_cast<size_t>(d));
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const BatchSeq& seq = a.seqs[item / Hkv];
      const int64_t kvh = item % Hkv;
      const AttnMode mode = a.modes[item];
      s.resize(static_cast<size_t>(seq.length));
      for (int64_t g = 0; g < G; ++g) {
        const int64_t h = kvh * G + g;
        for (int64_t i = 0; i < seq.length; ++i) {
          const int64_t row = seq.begin + i;
          const T* qi = a.q + (row * Hq + h) * d;
          KeyRange r[2];
          const int nr = key_ranges(mode, a.ssa, i, r);
          double mx = -std::numeric_limits<double>::infinity();
          for (int ri = 0; ri < nr; ++ri)
            for (int64_t j = r[ri].begin; j < r[ri].end; ++j) {
              const T* kj = a.k + ((seq.begin + j) * Hkv + kvh) * d;
              double dot = 0;
              for (int64_t e = 0; e < d; ++e) dot += static_cast<double>(qi[e]) * kj[e];
              s[j] = dot * scale;
              mx = std::max(mx, s[j]);
            }
          double sum = 0;
          std::fill(acc.begin(), acc.end(), 0.0);
          for (int ri = 0; ri < nr; ++ri)
            for (int64_t j = r[ri].begin; j < r[ri].end; ++j) {
              const double p = std::exp(s[j] - mx);
              sum += p;
              const T* vj = a.v + ((seq.begin + j) * Hkv + kvh) * d;
              for (int64_t e = 0; e < d; ++e) acc[e] += p * vj[e];
            }
          T* o = out + (row * Hq + h) * d;
          for (int64_t e = 0; e < d; ++e) o[e] = static_cast<T>(acc[e] / sum);
          lse[row * Hq + h] = static_cast<T>(mx + std::log(sum));
        }
      }
    }
  }
}

template <typename T>
void attention_train_backward(T* dq, T* dk, T* dv, const T* dout, const T* out, const T* lse,
                              const AttnTrainArgs<T>& a) {
  args_check(a);
  const int64_t Hq = a.num_heads, Hkv = a.num_kv_heads, d = a.head_dim, G = Hq / Hkv;
  const double scale = a.scale > 0 ? a.scale : 1.0 / std::sqrt(static_cast<double>(d));
  const int64_t items = a.num_seqs * Hkv;
#pragma omp parallel
  {
    std::vector<double> dk_acc, dv_acc, dq_acc(static_cast<size_t>(d));
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const BatchSeq& seq = a.seqs[item / Hkv];
      const int64_t kvh = item % Hkv;
      const AttnMode mode = a.modes[item];
      dk_acc.assign(static_cast<size_t>(seq.length * d), 0.0);  // [length, d] of this KV head
      dv_acc.assign(static_cast<size_t>(seq.length * d), 0.0);
      for (int64_t g = 0; g < G; ++g) {
        const int64_t h = kvh * G + g;
        for (int64_t i = 0; i < seq.length; ++i) {
          const int64_t row = seq.begin + i;
          const T* qi = a.q + (row * Hq + h) * d;
          const T* doi = dout + (row * Hq + h) * d;
          const T* oi = out + (row * Hq + h) * d;
          double D = 0;
          for (int64_t e = 0; e < d; ++e) D += static_cast<double>(doi[e]) * oi[e];
          const double li = lse[row * Hq + h];
          std::fill(dq_acc.begin(), dq_acc.end(), 0.0);
          KeyRange r[2];
          const int nr = key_ranges(mode, a.ssa, i, r);
          for (int ri = 0; ri < nr; ++ri)
            for (int64_t j = r[ri].begin; j < r[ri].end; ++j) {
              const T* kj = a.k + ((seq.begin + j) * Hkv + kvh) * d;
              const T* vj = a.v + ((seq.begin + j) * Hkv + kvh) * d;
              double sij = 0, dp = 0;
              for (int64_t e = 0; e < d; ++e) {
                sij += static_cast<double>(qi[e]) * kj[e];
                dp += static_cast<double>(doi[e]) * vj[e];
              }
              const double p = std::exp(sij * scale - li);
              const double ds = p * (dp - D) * scale;
              double* dkj = dk_acc.data() + j * d;
              double* dvj = dv_acc.data() + j * d;
              for (int64_t e = 0; e < d; ++e) {
                dvj[e] += p * doi[e];
                dq_acc[e] += ds * kj[e];
                dkj[e] += ds * qi[e];
              }
            }
          T* dqi = dq + (row * Hq + h) * d;
          for (int64_t e = 0; e < d; ++e) dqi[e] += static_cast<T>(dq_acc[e]);
        }
      }
      for (int64_t j = 0; j < seq.length; ++j)
        for (int64_t e = 0; e < d; ++e) {
          dk[((seq.begin + j) * Hkv + kvh) * d + e] += static_cast<T>(dk_acc[j * d + e]);
          dv[((seq.begin + j) * Hkv + kvh) * d + e] += static_cast<T>(dv_acc[j * d + e]);
        }
    }
  }
}

template void attention_train_forward<float>(float*, float*, const AttnTrainArgs<float>&);
template void attention_train_forward<double>(double*, double*, const AttnTrainArgs<double>&);
template void attention_train_backward<float>(float*, float*, float*, const float*, const float*,
                                              const float*, const AttnTrainArgs<float>&);
template void attention_train_backward<double>(double*, double*, double*, const double*,
                                               const double*, const double*,
                                               const AttnTrainArgs<double>&);

}  // namespace elastic::train

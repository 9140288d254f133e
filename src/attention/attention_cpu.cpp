// CPU attention, reference path. Algorithm: for each (query head, query) an online softmax over
// the keys the head's mode keeps. Invariant: keys are read from `past` for positions < pos0
// and from the new k/v otherwise. This first version implements FA; the sparse modes are
// rejected until they land.
#include <cmath>
#include <string>
#include <vector>

#include "elastic/attention.h"
#include "elastic/error.h"

namespace elastic {

const char* attn_mode_name(AttnMode m) {
  switch (m) {
    case AttnMode::fa: return "fa";
    case AttnMode::ssa: return "ssa";
    case AttnMode::xa: return "xa";
  }
  return "?";
}

void attention_cpu(const AttnArgs& a) {
  const int64_t n = a.n, Hq = a.num_heads, Hkv = a.num_kv_heads, d = a.head_dim;
  ELASTIC_CHECK(Hq % Hkv == 0 && n >= 0 && a.pos0 >= 0);
  ELASTIC_CHECK(a.pos0 == 0 || a.past != nullptr);
  const int64_t G = Hq / Hkv;
  const float scale = a.scale != 0.f ? a.scale : 1.0f / std::sqrt(static_cast<float>(d));
  for (int64_t h = 0; h < Hkv; ++h)
    if (a.modes && a.modes[h] != AttnMode::fa)
      throw Error(std::string("attention_cpu: mode ") + attn_mode_name(a.modes[h]) + " is not supported yet");
#pragma omp parallel for collapse(2) schedule(dynamic)
  for (int64_t hq = 0; hq < Hq; ++hq) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t hk = hq / G;
      const float* qi = a.q + (i * Hq + hq) * d;
      float* oi = a.out + (i * Hq + hq) * d;
      std::vector<float> acc(static_cast<size_t>(d), 0.f);
      float m = -INFINITY, l = 0.f;
      const int64_t p = a.pos0 + i;
      for (int64_t j = 0; j <= p; ++j) {
        const float *kj, *vj;
        if (j < a.pos0) {
          const KvHeadView& pv = a.past[hk];
          kj = pv.k + pv.row(j) * d;
          vj = pv.v + pv.row(j) * d;
        } else {
          kj = a.k + ((j - a.pos0) * Hkv + hk) * d;
          vj = a.v + ((j - a.pos0) * Hkv + hk) * d;
        }
        float s = 0.f;
        for (int64_t t = 0; t < d; ++t) s += qi[t] * kj[t];
        s *= scale;
        float m_new = std::max(m, s);
        float c = std::exp(m - m_new), w = std::exp(s - m_new);
        l = l * c + w;
        for (int64_t t = 0; t < d; ++t) acc[t] = acc[t] * c + w * vj[t];
        m = m_new;
      }
      for (int64_t t = 0; t < d; ++t) oi[t] = acc[t] / l;
    }
  }
  if (a.stats) a.stats->rho.assign(static_cast<size_t>(Hq), 0.0);
}

}  // namespace elastic

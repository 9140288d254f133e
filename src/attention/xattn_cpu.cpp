// XAttention block selection (SPEC §3, XA), CPU reference.
// Algorithm, for one query head; s = stride, B = block, N = pos0 + n keys:
//   1. Antidiagonal rows: Qr[i] = (q[i*s+s-1], q[i*s+s-2], .., q[i*s]) and
//      Kr[j] = (k[j*s], .., k[j*s+s-1]), each s*d floats, positions >= N read as zeros
//      (the padding). score(i, j) = Qr[i] . Kr[j] * scale / s for strided columns j <= i.
//   2. Softmax of each strided row over j <= i (double); block sums
//      A[a][b] += P(i, j) for query block a = i*s / B, key block b = j*s / B. Rows whose
//      queries are all padding (i*s >= N) do not exist here, which is the zeroing of padded rows.
//   3. Per query block a: keep key block 0 and the diagonal a; visit blocks 1..a-1 by
//      decreasing A[a][b] (ties by index) and keep each while kept mass < tau * sum_b A[a][b].
//      tau >= 1 keeps every causal block.
// Rows are processed in chunks of o.chunk / s; rows are independent, so chunking never
// changes the result. Cost: (N/s)^2 / 2 dot products of length s*d, i.e. ~N^2 d / s FLOPs,
// about 1/(2s) of causal FA.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "attention/attention_internal.h"
#include "elastic/attention.h"
#include "elastic/error.h"

namespace elastic {

namespace {

// Four rows of Qr against one column of Kr: out[r] = Qr[r] . kr over len floats.
inline void dot4(float out[4], const float* __restrict q0, int64_t len, const float* __restrict kr) {
  float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
  const float* q1 = q0 + len;
  const float* q2 = q1 + len;
  const float* q3 = q2 + len;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t e = 0; e < len; ++e) {
    const float k = kr[e];
    s0 += q0[e] * k;
    s1 += q1[e] * k;
    s2 += q2[e] * k;
    s3 += q3[e] * k;
  }
  out[0] = s0, out[1] = s1, out[2] = s2, out[3] = s3;
}

}  // namespace

std::vector<uint8_t> xa_select_blocks(const RowSource& q, const RowSource& k, int64_t pos0,
                                      int64_t n, int64_t head_dim, float scale, const XaOptions& o,
                                      int64_t* scores) {
  const int64_t s = o.stride, B = o.block, d = head_dim, N = pos0 + n, sd = s * d;
  ELASTIC_CHECK(s > 0 && B % s == 0 && pos0 % B == 0 && n > 0 && o.chunk % B == 0);
  const int64_t q_blocks = (n + B - 1) / B, k_blocks = (N + B - 1) / B;
  const int64_t cols = (N + s - 1) / s;           // strided key columns
  const int64_t row_begin = pos0 / s, row_end = cols;  // strided query rows of this chunk

  // Kr: [cols][s*d], antidiagonal key layout.
  std::vector<float> kr(static_cast<size_t>(cols * sd), 0.f);
  for (int64_t j = 0; j < cols; ++j)
    for (int64_t t = 0; t < s; ++t) {
      const int64_t p = j * s + t;
      if (p < N) std::copy(k.row(p), k.row(p) + d, kr.data() + j * sd + t * d);
    }

  std::vector<double> A(static_cast<size_t>(q_blocks * k_blocks), 0.0);
  const float score_scale = scale / static_cast<float>(s);
  const int64_t chunk_rows = o.chunk / s;
  std::vector<float> qr(static_cast<size_t>(4 * sd));
  std::vector<float> sc(static_cast<size_t>(4 * cols));
  int64_t computed = 0;
  for (int64_t c0 = row_begin; c0 < row_end; c0 += chunk_rows) {
    const int64_t c1 = std::min(row_end, c0 + chunk_rows);
    for (int64_t i0 = c0; i0 < c1; i0 += 4) {
      const int64_t nr = std::min<int64_t>(4, c1 - i0);
      std::fill(qr.begin(), qr.end(), 0.f);
      for (int64_t r = 0; r < nr; ++r)
        for (int64_t t = 0; t < s; ++t) {
          const int64_t p = (i0 + r) * s + s - 1 - t;
          if (p < N) std::copy(q.row(p), q.row(p) + d, qr.data() + r * sd + t * d);
        }
      const int64_t last = i0 + nr - 1;  // columns 0..last cover every row of the group
      for (int64_t j = 0; j <= last; ++j) {
        float out[4];
        dot4(out, qr.data(), sd, kr.data() + j * sd);
        for (int64_t r = 0; r < 4; ++r) sc[r * cols + j] = out[r] * score_scale;
      }
      for (int64_t r = 0; r < nr; ++r) {
        const int64_t i = i0 + r;
        const float* row = sc.data() + r * cols;
        double mx = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) mx = std::max(mx, static_cast<double>(row[j]));
        double sum = 0.0;
        for (int64_t j = 0; j <= i; ++j) sum += std::exp(static_cast<double>(row[j]) - mx);
        double* Arow = A.data() + ((i * s - pos0) / B) * k_blocks;
        for (int64_t j = 0; j <= i; ++j)
          Arow[j * s / B] += std::exp(static_cast<double>(row[j]) - mx) / sum;
        computed += i + 1;
      }
    }
  }
  if (scores) *scores += computed;

  std::vector<uint8_t> mask(static_cast<size_t>(q_blocks * k_blocks), 0);
  std::vector<int64_t> others;
  for (int64_t qb = 0; qb < q_blocks; ++qb) {
    const int64_t a = pos0 / B + qb;  // absolute query block = its diagonal key block
    const double* Arow = A.data() + qb * k_blocks;
    uint8_t* mrow = mask.data() + qb * k_blocks;
    if (o.threshold >= 1.0) {
      std::fill(mrow, mrow + a + 1, 1);
      continue;
    }
    const double total = std::accumulate(Arow, Arow + a + 1, 0.0);
    mrow[0] = 1;
    mrow[a] = 1;
    double kept = Arow[0] + (a > 0 ? Arow[a] : 0.0);
    others.clear();
    for (int64_t b = 1; b < a; ++b) others.push_back(b);
    std::stable_sort(others.begin(), others.end(),
                     [&](int64_t x, int64_t y) { return Arow[x] > Arow[y]; });
    for (int64_t b : others) {
      if (!(kept < o.threshold * total)) break;
      mrow[b] = 1;
      kept += Arow[b];
    }
  }
  return mask;
}

}  // namespace elastic

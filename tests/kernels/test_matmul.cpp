// matmul_cpu against a double-precision reference on the same (already rounded) weights, for
// F32 / F16 / BF16 storage, GEMV and GEMM row counts, odd K and N (panel and K-slice tails),
// with and without bias; thread-count independence; weight validation errors.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "elastic/cpu_matmul.h"
#include "elastic/error.h"

namespace elastic {
namespace {

// A weight in storage form plus its exact fp32 values (widening bf16/f16 is exact).
struct TestWeight {
  DType dtype;
  int64_t N, K;
  std::vector<float> f32;      // [N, K] stored values, widened
  std::vector<uint16_t> half;  // [N, K] bf16 / f16 storage
  TensorView view() const {
    TensorView v;
    v.name = "test.weight";
    v.dtype = dtype;
    v.shape = {N, K};
    v.data = dtype == DType::f32 ? static_cast<const void*>(f32.data())
                                 : static_cast<const void*>(half.data());
    return v;
  }
};

TestWeight make_weight(DType dtype, int64_t N, int64_t K, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  TestWeight w{dtype, N, K, std::vector<float>(static_cast<size_t>(N * K)), {}};
  if (dtype != DType::f32) w.half.resize(w.f32.size());
  for (size_t i = 0; i < w.f32.size(); ++i) {
    const float v = dist(rng);
    if (dtype == DType::bf16) {
      w.half[i] = f32_to_bf16(v);
      w.f32[i] = bf16_to_f32(w.half[i]);
    } else if (dtype == DType::f16) {
      w.half[i] = f32_to_f16(v);
      w.f32[i] = f16_to_f32(w.half[i]);
    } else {
      w.f32[i] = v;
    }
  }
  return w;
}

std::vector<float> random_vector(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

// Checks y against sum_k x*w + b in double. Bound: any fp32 evaluation order of K products
// (one rounding each with FMA) plus at most K/256 + 2 further additions (partial sums of the
// unrolled / K-sliced kernels, then the bias) has |error| <= gamma_m * (sum_k |x_k w_k| + |b|)
// with m = K + K/256 + 2 roundings and gamma_m = m*u/(1 - m*u), u = 2^-24 (Higham, Accuracy and
// Stability, ch. 3). The bound is rigorous, so exceeding it means a wrong term, not rounding;
// one missing or misplaced product (|x w| ~ 0.25 on average) exceeds it for every K tested.
void expect_matches_reference(const std::vector<float>& y, const std::vector<float>& x,
                              const TestWeight& w, const float* bias, int64_t n,
                              const std::string& what) {
  const double u = std::ldexp(1.0, -24);
  const double m = static_cast<double>(w.K + w.K / 256 + 2);
  const double gamma = m * u / (1 - m * u);
  int failures = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < w.N; ++j) {
      double ref = bias ? bias[j] : 0.0, mag = bias ? std::fabs(bias[j]) : 0.0;
      for (int64_t k = 0; k < w.K; ++k) {
        const double p = static_cast<double>(x[i * w.K + k]) * w.f32[j * w.K + k];
        ref += p;
        mag += std::fabs(p);
      }
      const double got = y[i * w.N + j];
      if (!(std::fabs(got - ref) <= gamma * mag) && failures++ < 5)
        ADD_FAILURE() << what << ": y[" << i << ", " << j << "] = " << got << ", reference "
                      << ref << ", bound " << gamma * mag;
    }
  }
}

struct Shape2 {
  int64_t N, K;
};

void run_case(DType dtype, int64_t n, Shape2 s, bool with_bias, std::mt19937& rng) {
  const TestWeight w = make_weight(dtype, s.N, s.K, rng);
  const std::vector<float> x = random_vector(static_cast<size_t>(n * s.K), rng);
  const std::vector<float> b = random_vector(static_cast<size_t>(s.N), rng);
  const float* bias = with_bias ? b.data() : nullptr;
  const CpuWeight cw = cpu_weight_prepare(w.view());
  const std::string what = std::string(dtype_name(dtype)) + " n=" + std::to_string(n) +
                           " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K) +
                           (with_bias ? " bias" : "");
  std::vector<float> y(static_cast<size_t>(n * s.N), std::nanf(""));
  matmul_cpu(y.data(), x.data(), cw, bias, n);
  expect_matches_reference(y, x, w, bias, n, what);
}

class MatmulDtype : public ::testing::TestWithParam<DType> {};

TEST_P(MatmulDtype, MatchesDoubleReferenceOnEdgeShapes) {
  std::mt19937 rng(1234);
  // N = 1, 13 (one partial panel), 33 (a full panel + 1), 257 (two N blocks, 1-column tail);
  // K = 1, 13 (tails of the unrolled GEMV loop), 100, 1000, 1031 (4 and 5 K slices of 256,
  // partial last slice).
  const Shape2 shapes[] = {{1, 1}, {13, 100}, {100, 13}, {33, 1000}, {257, 1031}};
  // n = 257 (3 row groups of the GEMM) skips the largest shape: the double reference would
  // dominate the suite's time, and n = 64 already covers that shape's blocks and K slices.
  for (int64_t n : {1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 64, 257})
    for (Shape2 s : shapes)
      for (bool with_bias : {false, true})
        if (n * s.N * s.K < 20'000'000) run_case(GetParam(), n, s, with_bias, rng);
}

TEST_P(MatmulDtype, NaiveBaselineMatchesReference) {
  std::mt19937 rng(99);
  const TestWeight w = make_weight(GetParam(), 45, 300, rng);
  const std::vector<float> x = random_vector(3 * 300, rng), b = random_vector(45, rng);
  std::vector<float> y(3 * 45);
  matmul_cpu_naive(y.data(), x.data(), cpu_weight_prepare(w.view()), b.data(), 3);
  expect_matches_reference(y, x, w, b.data(), 3, "naive");
}

INSTANTIATE_TEST_SUITE_P(Dtypes, MatmulDtype,
                         ::testing::Values(DType::f32, DType::f16, DType::bf16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// Every output is computed by one thread in a fixed order, so the thread count must not change
// a single bit (the golden tests rely on run-to-run reproducibility).
TEST(Matmul, ResultIndependentOfThreadCount) {
  std::mt19937 rng(7);
  const TestWeight w = make_weight(DType::bf16, 300, 777, rng);
  const CpuWeight cw = cpu_weight_prepare(w.view());
  for (int64_t n : {1, 4, 7, 100}) {
    const std::vector<float> x = random_vector(static_cast<size_t>(n * 777), rng);
    std::vector<float> y1(static_cast<size_t>(n * 300)), y2(y1.size());
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    matmul_cpu(y1.data(), x.data(), cw, nullptr, n);
    omp_set_num_threads(3);
    matmul_cpu(y2.data(), x.data(), cw, nullptr, n);
    omp_set_num_threads(saved);
    EXPECT_EQ(y1, y2) << "n=" << n;
  }
}

TEST(Matmul, EmptyInnerDimensionGivesBias) {
  TensorView v;
  v.name = "empty";
  v.dtype = DType::f32;
  v.shape = {3, 0};
  const CpuWeight cw = cpu_weight_prepare(v);
  const float bias[3] = {1.f, -2.f, 3.f};
  std::vector<float> y(6, std::nanf(""));
  matmul_cpu(y.data(), nullptr, cw, bias, 2);
  EXPECT_EQ(y, (std::vector<float>{1.f, -2.f, 3.f, 1.f, -2.f, 3.f}));
}

TEST(Matmul, PrepareRejectsNon2dAndNonFloatWeights) {
  std::vector<float> data(6);
  TensorView v;
  v.name = "model.layers.0.mlp.up_proj.weight";
  v.dtype = DType::f32;
  v.shape = {6};
  v.data = data.data();
  try {
    cpu_weight_prepare(v);
    ADD_FAILURE() << "1-D weight accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("up_proj.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("2-D"), std::string::npos) << e.what();
  }
  v.shape = {2, 3};
  v.dtype = DType::i32;
  try {
    cpu_weight_prepare(v);
    ADD_FAILURE() << "I32 weight accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("I32"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace elastic

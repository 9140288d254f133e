// Row-major bf16 GEMMs through cuBLASLt for the inference backend and the training engine:
// linear forward, dX and dW (accumulated with beta = 1), fp32 accumulation, fp32 or bf16 output.
// Descriptors and the heuristic's algorithm are cached per shape and operand alignment, so a
// forward or a step re-plans nothing once its shapes were seen (issue 11: no per-call heuristic).
// The cache holds at most kMaxPlans shapes (a server's varying batch rows would grow it without
// bound); past that it starts over.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>

namespace elastic::cuda {

enum class GemmOut { f32, bf16 };

class GemmLt {
 public:
  explicit GemmLt(size_t workspace_bytes = size_t(32) << 20);
  ~GemmLt();
  GemmLt(const GemmLt&) = delete;
  GemmLt& operator=(const GemmLt&) = delete;

  size_t plans_cached() const { return plans_.size(); }

  // C[M, N] = alpha op(A) op(B) + beta C, all row-major and packed. A: [M, K] ([K, M] when
  // trans_a), B: [K, N] ([N, K] when trans_b), bf16; C: fp32 or bf16 per `out`.
  void matmul(void* C, GemmOut out, const __nv_bfloat16* A, bool trans_a, const __nv_bfloat16* B,
              bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, float beta,
              cudaStream_t stream);

  // Linear layers (HF layout W: [N, K]).
  // y[n, N] (= or += with beta) = x[n, K] W^T.
  void linear_forward(void* y, GemmOut out, const __nv_bfloat16* x, const __nv_bfloat16* W,
                      int64_t n, int64_t N, int64_t K, float beta, cudaStream_t stream) {
    matmul(y, out, x, false, W, true, n, N, K, 1.f, beta, stream);
  }
  // dx[n, K] (= or += with beta) = dy[n, N] W.
  void linear_backward_input(void* dx, GemmOut out, const __nv_bfloat16* dy, const __nv_bfloat16* W,
                             int64_t n, int64_t N, int64_t K, float beta, cudaStream_t stream) {
    matmul(dx, out, dy, false, W, false, n, K, N, 1.f, beta, stream);
  }
  // dW[N, K] += dy[n, N]^T x[n, K] (fp32).
  void linear_backward_weight(float* dW, const __nv_bfloat16* dy, const __nv_bfloat16* x, int64_t n,
                              int64_t N, int64_t K, cudaStream_t stream) {
    matmul(dW, GemmOut::f32, dy, true, x, false, N, K, n, 1.f, 1.f, stream);
  }

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  // (M, N, K, trans_a, trans_b, out, alignment of A, B, C in bytes): cuBLASLt's heuristic
  // assumes 256-byte aligned operands unless told otherwise, and row tiles start anywhere.
  using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool, int, int, int, int>;
  const Plan& plan(const Key& key);
  void plans_clear();
  static constexpr size_t kMaxPlans = 4096;

  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, Plan> plans_;
};

}  // namespace elastic::cuda

// GemmLt (gemm_lt.h). Row-major C[M, N] = op(A) op(B) is the column-major product
// C^T[N, M] = op(B)^T op(A)^T, so cuBLASLt's first operand is B and its second A.
#include "cuda/gemm_lt.h"

#include <string>

#include "elastic/cuda/cuda_check.h"
#include "elastic/error.h"

#define ELASTIC_LT_CHECK(expr)                                                                     \
  do {                                                                                             \
    const cublasStatus_t elastic_lt_status_ = (expr);                                              \
    if (elastic_lt_status_ != CUBLAS_STATUS_SUCCESS)                                               \
      throw ::elastic::InternalError(std::string("cuBLASLt call failed: ") + #expr + " (status " + \
                                     std::to_string(int(elastic_lt_status_)) + ") at " +           \
                                     __FILE__ + ":" + std::to_string(__LINE__));                   \
  } while (0)

namespace elastic::cuda {

GemmLt::GemmLt(size_t workspace_bytes) : workspace_bytes_(workspace_bytes) {
  ELASTIC_LT_CHECK(cublasLtCreate(&lt_));
  ELASTIC_CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
}

void GemmLt::plans_clear() {
  for (auto& [key, p] : plans_) {
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatmulDescDestroy(p.op);
  }
  plans_.clear();
}

GemmLt::~GemmLt() {
  plans_clear();
  cudaFree(workspace_);
  cublasLtDestroy(lt_);
}

const GemmLt::Plan& GemmLt::plan(const Key& key) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  if (plans_.size() >= kMaxPlans) plans_clear();  // no plan is in use between calls
  const auto [M, N, K, ta, tb, out, align_a, align_b, align_c] = key;
  Plan p;
  ELASTIC_LT_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  // Column-major first operand: B (row-major [K, N] = col-major N x K, or [N, K] = K x N, T).
  const cublasOperation_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  ELASTIC_LT_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
  ELASTIC_LT_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
  if (tb)
    ELASTIC_LT_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, uint64_t(K), uint64_t(N), K));
  else
    ELASTIC_LT_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, uint64_t(N), uint64_t(K), N));
  if (ta)
    ELASTIC_LT_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, uint64_t(M), uint64_t(K), M));
  else
    ELASTIC_LT_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, uint64_t(K), uint64_t(M), K));
  const cudaDataType_t ct = out == int(GemmOut::f32) ? CUDA_R_32F : CUDA_R_16BF;
  ELASTIC_LT_CHECK(cublasLtMatrixLayoutCreate(&p.c, ct, uint64_t(N), uint64_t(M), N));
  cublasLtMatmulPreference_t pref = nullptr;
  ELASTIC_LT_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  ELASTIC_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_, sizeof workspace_bytes_));
  // cuBLASLt's operand A is our B (and its B our A).
  const uint32_t al[4] = {uint32_t(align_b), uint32_t(align_a), uint32_t(align_c),
                          uint32_t(align_c)};
  const cublasLtMatmulPreferenceAttributes_t attr[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; ++i)
    ELASTIC_LT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr[i], &al[i], sizeof al[i]));
  cublasLtMatmulHeuristicResult_t heur{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(lt_, p.op, p.a, p.b, p.c, p.c, pref, 1, &heur, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0)
    throw Error("cuBLASLt has no algorithm for a " + std::to_string(M) + "x" + std::to_string(N) +
                "x" + std::to_string(K) + " bf16 GEMM");
  p.algo = heur.algo;
  return plans_.emplace(key, p).first->second;
}

void GemmLt::matmul(void* C, GemmOut out, const __nv_bfloat16* A, bool trans_a,
                    const __nv_bfloat16* B, bool trans_b, int64_t M, int64_t N, int64_t K,
                    float alpha, float beta, cudaStream_t stream) {
  if (M == 0 || N == 0) return;
  ELASTIC_CHECK(K > 0 && A && B && C);
  auto align = [](const void* ptr) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(ptr);
    int b = 256;
    while (b > 2 && a % uintptr_t(b) != 0) b /= 2;
    return b;
  };
  const Plan& p = plan(Key{M, N, K, trans_a, trans_b, int(out), align(A), align(B), align(C)});
  ELASTIC_LT_CHECK(cublasLtMatmul(lt_, p.op, &alpha, B, p.a, A, p.b, &beta, C, p.c, C, p.c, &p.algo,
                                  workspace_, workspace_bytes_, stream));
}

}  // namespace elastic::cuda

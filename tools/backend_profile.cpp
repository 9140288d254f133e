#include "backend_profile.h"

#include <algorithm>
#include <cstdio>

#include "elastic/dtype.h"

namespace elastic::cli {

void ProfilingBackend::add(const std::string& op, Clock::time_point t0, double bytes) {
  OpTime& t = times_[op];
  t.seconds += std::chrono::duration<double>(Clock::now() - t0).count();
  t.calls += 1;
  t.bytes += bytes;
}

void ProfilingBackend::upload(void* dst, const void* src, size_t bytes) {
  const auto t0 = Clock::now();
  inner_->upload(dst, src, bytes);
  add("upload", t0);
}
void ProfilingBackend::download(void* dst, const void* src, size_t bytes) {
  const auto t0 = Clock::now();
  inner_->download(dst, src, bytes);
  add("download", t0);
}
void ProfilingBackend::embedding_forward(float* out, const int64_t* ids, int64_t n,
                                         const void* table, DType dtype, int64_t vocab,
                                         int64_t dim) {
  const auto t0 = Clock::now();
  inner_->embedding_forward(out, ids, n, table, dtype, vocab, dim);
  add("embedding", t0);
}
void ProfilingBackend::rmsnorm_forward(float* out, const float* inp, const float* weight,
                                       int64_t rows, int64_t dim, float eps) {
  const auto t0 = Clock::now();
  inner_->rmsnorm_forward(out, inp, weight, rows, dim, eps);
  add("rmsnorm", t0);
}
void ProfilingBackend::linear_forward(float* out, const float* inp, const Linear& w,
                                      const float* bias, int64_t n) {
  const auto t0 = Clock::now();
  inner_->linear_forward(out, inp, w, bias, n);
  add("linear " + std::to_string(w.cols) + "->" + std::to_string(w.rows), t0,
      static_cast<double>(w.rows * w.cols) * static_cast<double>(dtype_size(w.dtype)));
}
void ProfilingBackend::rope_forward(float* x, const float* cos, const float* sin, int64_t n,
                                    int64_t heads, int64_t head_dim) {
  const auto t0 = Clock::now();
  inner_->rope_forward(x, cos, sin, n, heads, head_dim);
  add("rope", t0);
}
void ProfilingBackend::swiglu_forward(float* out, const float* gate_up, int64_t rows, int64_t ffn) {
  const auto t0 = Clock::now();
  inner_->swiglu_forward(out, gate_up, rows, ffn);
  add("swiglu", t0);
}
void ProfilingBackend::qkv_split_forward(float* q, float* k, float* v, const float* qkv, int64_t n,
                                         int64_t q_dim, int64_t kv_dim) {
  const auto t0 = Clock::now();
  inner_->qkv_split_forward(q, k, v, qkv, n, q_dim, kv_dim);
  add("qkv split", t0);
}
void ProfilingBackend::residual_forward(float* x, const float* delta, int64_t count) {
  const auto t0 = Clock::now();
  inner_->residual_forward(x, delta, count);
  add("residual", t0);
}
void ProfilingBackend::attention_forward(const AttnArgs& args) {
  const auto t0 = Clock::now();
  inner_->attention_forward(args);
  add("attention", t0);
}
void ProfilingBackend::attention_forward_stored(const AttnArgs& args, KvStore& store,
                                                int64_t layer) {
  const auto t0 = Clock::now();
  inner_->attention_forward_stored(args, store, layer);
  add("attention", t0);
}

void ProfilingBackend::router_forward(double* z, const RouterWeights& w, void* prepared,
                                      int64_t layer, const float* k, int64_t n,
                                      int64_t num_kv_heads, int64_t pool_tokens) {
  const auto t0 = Clock::now();
  inner_->router_forward(z, w, prepared, layer, k, n, num_kv_heads, pool_tokens);
  add("router", t0);
}
int64_t ProfilingBackend::sample(const float* logits, int64_t vocab, const SamplingParams& params,
                                 double u) {
  const auto t0 = Clock::now();
  const int64_t token = inner_->sample(logits, vocab, params, u);
  add("sample", t0);
  return token;
}

std::string profile_table(const std::map<std::string, OpTime>& times, double total_seconds,
                          int64_t tokens) {
  std::vector<std::pair<std::string, OpTime>> rows(times.begin(), times.end());
  double ops = 0;
  for (const auto& r : rows) ops += r.second.seconds;
  rows.push_back({"other (outside backend ops)", OpTime{std::max(0.0, total_seconds - ops), 0, 0}});
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  std::string s =
      "| op                          | calls/token | ms/token | share  | weights GB/s |\n"
      "|-----------------------------|-------------|----------|--------|--------------|\n";
  char line[160];
  const double per = tokens > 0 ? 1.0 / static_cast<double>(tokens) : 0.0;
  for (const auto& [name, t] : rows) {
    char gbs[32] = "";
    if (t.bytes > 0 && t.seconds > 0)
      std::snprintf(gbs, sizeof gbs, "%.1f", t.bytes / t.seconds / 1e9);
    std::snprintf(line, sizeof line, "| %-27s | %11.1f | %8.3f | %5.1f%% | %12s |\n", name.c_str(),
                  static_cast<double>(t.calls) * per, t.seconds * 1e3 * per,
                  total_seconds > 0 ? 100.0 * t.seconds / total_seconds : 0.0, gbs);
    s += line;
  }
  return s;
}

}  // namespace elastic::cli

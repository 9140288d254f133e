// The forward pass over a packed batch (batch_forward.h), layer-outer over all rows:
//
//   x = embed(tokens)                                              x: [rows, D]
//   per layer: xn = rmsnorm(x); q,k,v = xn Wqkv^T (+b); q,k = rmsnorm per head (qwen3);
//              [sequences at their first prefill: modes = their policy(k of their span)];
//              q,k = rope(q,k at every row's position);
//              att = paged attention (each sequence: its past pages + its span, its modes),
//              which then writes k,v of every span into the pool; x += att Wo^T; x +=
//              MLP(rmsnorm(x)) (token tiles)
//   logits = rmsnorm(x[rows wanting logits]) Wlm^T                 [R, V]
//
// Invariants: span s holds positions seqs[s]->length.. of its sequence; a sequence's pool holds
// exactly its positions before the span when a layer's attention runs; rows of different
// sequences meet only in the row-wise ops (norms, projections, MLP), never in attention.
#include <algorithm>
#include <string>

#include "elastic/batch_forward.h"
#include "elastic/error.h"
#include "elastic/kv_cache.h"
#include "elastic/model.h"

namespace elastic {
namespace {

constexpr int64_t kMlpTileTokens = 512;  // as forward.cpp: bounds the [tile, 2F] scratch

float* f32(const std::shared_ptr<void>& p) { return static_cast<float*>(p.get()); }

void workspace_reserve(Backend& be, const ModelConfig& c, BatchWorkspace& ws, int64_t n,
                       int64_t logit_rows) {
  const int64_t D = c.hidden_size, d = c.head_dim, F = c.intermediate_size;
  const int64_t Hq = c.num_heads, Hkv = c.num_kv_heads;
  auto buf = [&](int64_t floats) { return be.alloc(static_cast<size_t>(floats) * sizeof(float)); };
  if (n > ws.rows) {
    ws.rows = n;
    const int64_t tile = std::min(n, kMlpTileTokens);
    ws.x = buf(n * D);
    ws.xn = buf(n * D);
    ws.qkv = buf(n * (Hq + 2 * Hkv) * d);
    ws.q = buf(n * Hq * d);
    ws.k = buf(n * Hkv * d);
    ws.v = buf(n * Hkv * d);
    ws.att = buf(n * Hq * d);
    ws.proj = buf(n * D);
    ws.gate_up = buf(tile * 2 * F);
    ws.act = buf(tile * F);
    ws.cos = buf(n * d / 2);
    ws.sin = buf(n * d / 2);
  }
  if (logit_rows > ws.logit_rows || !ws.logits) {
    ws.logit_rows = std::max<int64_t>(logit_rows, 1);
    ws.logits = buf(ws.logit_rows * c.vocab_size);
  }
}

// The forward up to the logits, which stay in ws.logits ([R, V] backend memory); returns R.
int64_t forward_batch_device(const Model& model, const Batch& batch, SeqState* const* seqs,
                             KvPool& pool, const AttnOptions& attn, BatchWorkspace& ws) {
  const ModelConfig& c = model.config;
  const ModelWeights& W = model.weights;
  Backend& be = *model.backend;
  if (model.tp)
    throw Error(model.source +
                ": a tensor-parallel shard runs model_prefill only (the batched "
                "forward of the serving engine does not all-reduce yet)");
  const int64_t D = c.hidden_size, Hq = c.num_heads, Hkv = c.num_kv_heads, d = c.head_dim;
  const int64_t L = c.num_layers, V = c.vocab_size, F = c.intermediate_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  batch_validate(batch);
  const int64_t n = batch.rows(), S = batch.num_seqs();
  if (n == 0) throw Error("batched forward needs at least one row");
  if (!attention_paged_supported(be))
    throw Error("batched forward: paged attention is not implemented on the " +
                std::string(be.name()) + " backend");
  if (pool.dtype() != be.kv_pool_dtype())
    throw Error("batched forward: the KV pool holds " + std::string(dtype_name(pool.dtype())) +
                " rows but the " + std::string(be.name()) + " backend attends over " +
                std::string(dtype_name(be.kv_pool_dtype())) +
                " (make the pool with the model's backend)");
  const std::vector<int64_t> logit_rows = batch.logit_rows();
  const int64_t R = static_cast<int64_t>(logit_rows.size());
  workspace_reserve(be, c, ws, n, R);
  float *x = f32(ws.x), *xn = f32(ws.xn), *qkv = f32(ws.qkv), *q = f32(ws.q), *k = f32(ws.k);
  float *v = f32(ws.v), *att = f32(ws.att), *proj = f32(ws.proj);

  // Sequences: positions continue, first prefills are whole prompts, recomputed ones reconfigure.
  DenseRouting dense;
  std::vector<uint8_t> routes_now(static_cast<size_t>(S), 0);  // routed in this pass
  std::vector<int64_t> cu = batch.cu_seqlens(), pos0(static_cast<size_t>(S));
  for (int64_t s = 0; s < S; ++s) {
    const BatchSeq& span = batch.seqs[static_cast<size_t>(s)];
    SeqState& st = *seqs[s];
    pos0[static_cast<size_t>(s)] = span.pos0;
    if (span.pos0 != st.length)
      throw Error("batch sequence " + std::to_string(s) + " starts at position " +
                  std::to_string(span.pos0) + " but its KV holds " + std::to_string(st.length));
    if (st.routes.empty()) {
      if (span.pos0 != 0)
        throw Error("batch sequence " + std::to_string(s) +
                    ": the first prefill of a sequence must be its whole prompt (pos0 = 0)");
      routes_now[static_cast<size_t>(s)] = 1;
      st.prompt_length = span.length;
      st.routes.resize(static_cast<size_t>(L));
      st.prefill_stats.assign(static_cast<size_t>(L), AttnStats{});
    }
  }

  // cos, sin: [n, d/2] at every row's position (host table, uploaded).
  {
    std::vector<float> hc(static_cast<size_t>(n * d / 2)), hs(hc.size());
    for (const BatchSeq& span : batch.seqs)
      rope_table_fill(hc.data() + span.begin * d / 2, hs.data() + span.begin * d / 2, model.rope,
                      span.pos0, span.length);
    be.upload(f32(ws.cos), hc.data(), hc.size() * sizeof(float));
    be.upload(f32(ws.sin), hs.data(), hs.size() * sizeof(float));
  }
  be.embedding_forward(x, batch.tokens.data(), n, W.embed_tokens.data, W.embed_tokens.dtype, V, D);

  std::vector<AttnMode> modes(static_cast<size_t>(S * Hkv));
  std::vector<KvHeadView> past(static_cast<size_t>(S * Hkv));
  std::vector<AttnStats*> stats(static_cast<size_t>(S), nullptr);
  for (int64_t l = 0; l < L; ++l) {
    const LayerWeights& w = W.layers[static_cast<size_t>(l)];
    be.rmsnorm_forward(xn, x, w.input_norm, n, D, eps);      // xn: [n, D]
    be.linear_forward(qkv, xn, w.qkv_proj, w.qkv_bias, n);   // qkv: [n, (Hq + 2 Hkv) d]
    be.qkv_split_forward(q, k, v, qkv, n, Hq * d, Hkv * d);  // q: [n, Hq, d]; k, v: [n, Hkv, d]
    if (w.q_norm) be.rmsnorm_forward(q, q, w.q_norm, n * Hq, d, eps);
    if (w.k_norm) be.rmsnorm_forward(k, k, w.k_norm, n * Hkv, d, eps);
    for (int64_t s = 0; s < S; ++s) {
      SeqState& st = *seqs[s];
      const BatchSeq& span = batch.seqs[static_cast<size_t>(s)];
      LayerRoute& route = st.routes[static_cast<size_t>(l)];
      if (routes_now[static_cast<size_t>(s)]) {
        RoutingPolicy& policy = st.routing ? *st.routing : static_cast<RoutingPolicy&>(dense);
        // k of the span: [length, Hkv, d] after k_norm, before RoPE (the whole prompt).
        route = policy.route_backend(be, l, k + span.begin * Hkv * d, span.length, Hkv, d);
        if (static_cast<int64_t>(route.modes.size()) != Hkv)
          throw Error("routing policy returned " + std::to_string(route.modes.size()) +
                      " modes for layer " + std::to_string(l) + " (expected " +
                      std::to_string(Hkv) + ")");
      }
      // The request path's rules (batch_forward.h): the pool keeps kv_cache_modes, the call
      // runs the prompt with the routed modes and later rows as decode steps. The routed modes
      // stay the report's.
      if (st.kv.lengths[static_cast<size_t>(l)] == 0 &&
          !st.kv.heads[static_cast<size_t>(l * Hkv)].configured)
        pool.configure_layer(st.kv, l, kv_cache_modes(route.modes, attn.decode_kv).data(),
                             attn.ssa);
      pool.reserve(st.kv, l, span.pos0 + span.length);  // the span's rows are written by attention
      std::vector<AttnMode> call = route.modes;
      if (span.pos0 > 0) {  // decode steps or their replay: one decode step's rule per row
        call = attn_call_modes(route.modes, false, span.pos0, 1, attn);
        for (AttnMode& m : call)
          if (m == AttnMode::xa) m = AttnMode::fa;
      }
      std::copy(call.begin(), call.end(), modes.begin() + s * Hkv);
      const std::vector<KvHeadView> views = pool.views(st.kv, l);
      std::copy(views.begin(), views.end(), past.begin() + s * Hkv);
      stats[static_cast<size_t>(s)] =
          routes_now[static_cast<size_t>(s)] ? &st.prefill_stats[static_cast<size_t>(l)] : nullptr;
    }
    be.rope_forward(q, f32(ws.cos), f32(ws.sin), n, Hq, d);
    be.rope_forward(k, f32(ws.cos), f32(ws.sin), n, Hkv, d);

    PagedAttnParams a;
    a.out = att;  // [n, Hq, d]
    a.q = q;
    a.k = k;
    a.v = v;
    a.cu_seqlens = cu.data();
    a.pos0 = pos0.data();
    a.modes = modes.data();
    a.past = past.data();
    a.num_seqs = S;
    a.num_heads = Hq;
    a.num_kv_heads = Hkv;
    a.head_dim = d;
    a.opt = attn;
    a.stats = stats.data();
    attention_paged_forward(be, a);  // attends, then writes the spans' k, v into the pool
    for (int64_t s = 0; s < S; ++s)
      pool.stored(seqs[s]->kv, l, batch.seqs[static_cast<size_t>(s)].pos0,
                  batch.seqs[static_cast<size_t>(s)].length);

    be.linear_forward(proj, att, w.o_proj, w.o_bias, n);  // proj: [n, D]
    be.residual_forward(x, proj, n * D);
    be.rmsnorm_forward(xn, x, w.post_attention_norm, n, D, eps);
    for (int64_t t0 = 0; t0 < n; t0 += kMlpTileTokens) {
      const int64_t m = std::min(kMlpTileTokens, n - t0);
      be.linear_forward(f32(ws.gate_up), xn + t0 * D, w.gate_up_proj, nullptr, m);  // [m, 2F]
      be.swiglu_forward(f32(ws.act), f32(ws.gate_up), m, F);                        // [m, F]
      be.linear_forward(proj + t0 * D, f32(ws.act), w.down_proj, nullptr, m);       // [m, D]
    }
    be.residual_forward(x, proj, n * D);
  }
  for (int64_t s = 0; s < S; ++s) seqs[s]->length += batch.seqs[static_cast<size_t>(s)].length;

  if (R > 0) {
    for (int64_t i = 0; i < R; ++i)  // xn: [R, D] the final norm of the rows wanting logits
      be.rmsnorm_forward(xn + i * D, x + logit_rows[static_cast<size_t>(i)] * D, W.final_norm, 1, D,
                         eps);
    be.linear_forward(f32(ws.logits), xn, W.lm_head, nullptr, R);  // [R, V]
  }
  return R;
}

}  // namespace

const std::vector<float>& model_forward_batch(const Model& model, const Batch& batch,
                                              SeqState* const* seqs, KvPool& pool,
                                              const AttnOptions& attn, BatchWorkspace& ws) {
  const int64_t R = forward_batch_device(model, batch, seqs, pool, attn, ws);
  const int64_t V = model.config.vocab_size;
  ws.logits_host.resize(static_cast<size_t>(R * V));
  if (R > 0)
    model.backend->download(ws.logits_host.data(), ws.logits.get(),
                            ws.logits_host.size() * sizeof(float));
  return ws.logits_host;
}

const std::vector<int64_t>& model_forward_batch_greedy(const Model& model, const Batch& batch,
                                                       SeqState* const* seqs, KvPool& pool,
                                                       const AttnOptions& attn,
                                                       BatchWorkspace& ws) {
  const int64_t R = forward_batch_device(model, batch, seqs, pool, attn, ws);
  ws.greedy.resize(static_cast<size_t>(R));
  if (R > 0)
    model.backend->argmax_rows(ws.greedy.data(), static_cast<const float*>(ws.logits.get()), R,
                               model.config.vocab_size);
  return ws.greedy;
}

}  // namespace elastic

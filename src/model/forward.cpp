// The forward pass of one chunk of a request, layer-outer over the whole chunk:
//
//   x = embed(ids)
//   per layer: xn = rmsnorm(x); q,k,v = xn Wqkv^T (+b); q,k = rmsnorm per head (qwen3);
//              [first prefill: routed = route(k before RoPE)]; q,k = rope(q,k);
//              att = attention(q, k, v, cache, attn_call_modes(routed)); cache += k,v;
//              x += att Wo^T;
//              xn = rmsnorm(x); g,u = xn Wgu^T; x += (silu(g) * u) Wd^T   (MLP in token tiles)
//   logits = rmsnorm(x) Wlm^T
//
// Invariants: all activations fp32; positions of the chunk are request.length.. ; the KV cache
// of every layer (the host KvCache, or the backend's KvStore when it makes one) holds exactly
// the positions before the chunk when its attention runs.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "elastic/error.h"
#include "elastic/model.h"
#include "elastic/tensor_parallel.h"

namespace elastic {
namespace {

// Tokens per MLP tile: bounds the [tile, F] gate/up scratch for long prompts while keeping the
// GEMMs large enough to run at full speed.
constexpr int64_t kMlpTileTokens = 512;

float* f32(const std::shared_ptr<void>& p) { return static_cast<float*>(p.get()); }

void workspace_reserve(Backend& be, const ModelConfig& c, Workspace& ws, int64_t n,
                       int64_t logits_rows) {
  const int64_t D = c.hidden_size, d = c.head_dim, F = c.intermediate_size;
  const int64_t Hq = c.num_heads, Hkv = c.num_kv_heads;
  auto buf = [&](int64_t floats) { return be.alloc(static_cast<size_t>(floats) * sizeof(float)); };
  if (n > ws.tokens) {
    ws.tokens = n;
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
  const size_t logits_floats = static_cast<size_t>(logits_rows * c.vocab_size);
  if (logits_floats > ws.logits_host.capacity() || !ws.logits) {
    ws.logits = buf(std::max<int64_t>(logits_rows, 1) * c.vocab_size);
    ws.logits_host.reserve(logits_floats);
  }
  ws.logits_host.resize(logits_floats);
}

void hidden_push(Backend& be, std::vector<std::vector<float>>* hidden, const float* x,
                 int64_t count) {
  if (!hidden) return;
  hidden->emplace_back(static_cast<size_t>(count));
  be.download(hidden->back().data(), x, static_cast<size_t>(count) * sizeof(float));
}

// x += MLP(rmsnorm(x)) for rows [0, n), in tiles of kMlpTileTokens rows.
// x: [n, D]; xn, proj: [n, D] scratch; gate_up: [tile, 2F], act: [tile, F] scratch.
void mlp_block_forward(Backend& be, float* x, float* xn, float* proj, float* gate_up, float* act,
                       const LayerWeights& w, const ModelConfig& c, int64_t n, TpComm* tp) {
  const int64_t D = c.hidden_size, F = c.intermediate_size;
  be.rmsnorm_forward(xn, x, w.post_attention_norm, n, D, static_cast<float>(c.rms_norm_eps));
  for (int64_t t0 = 0; t0 < n; t0 += kMlpTileTokens) {
    const int64_t m = std::min(kMlpTileTokens, n - t0);
    be.linear_forward(gate_up, xn + t0 * D, w.gate_up_proj, nullptr, m);  // gate_up: [m, 2F]
    be.swiglu_forward(act, gate_up, m, F);                                // act: [m, F]
    be.linear_forward(proj + t0 * D, act, w.down_proj, nullptr, m);       // proj: [m, D]
  }
  if (tp) tp->all_reduce_sum(proj, n * D);  // a shard's partial sum over its F/W columns
  be.residual_forward(x, proj, n * D);
}

// Non-finite logits: name the first layer whose output is non-finite. The re-check runs the
// chunk again on a fresh request with a check after every layer, which reproduces this chunk
// exactly when it is the request's first (pos0 == 0); a later chunk's context is gone, so there
// only the chunk's embedding rows are checked. Never returns.
[[noreturn]] void nonfinite_logits_fail(const Model& model, const Request& req, const int64_t* ids,
                                        int64_t n, int64_t pos0) {
  const std::string where = model.source + ": the logits at positions " + std::to_string(pos0) +
                            ".." + std::to_string(pos0 + n - 1) + " are not finite";
  if (pos0 == 0) {
    Request fresh = request_start(model, req.routing);
    fresh.attn = req.attn;
    PrefillOptions check;
    check.logits = LogitsOutput::none;
    check.check_layers = true;
    model_prefill(model, fresh, ids, n, check);  // throws naming the layer, if one is non-finite
    throw Error(where + ", while every layer's output is (NaN or Inf in model.norm.weight or " +
                (model.config.tie_word_embeddings
                     ? model.weights.embed_tokens.name + ", the tied lm_head)"
                     : std::string("lm_head.weight)")));
  }
  const TensorView& table = model.weights.embed_tokens;
  const int64_t D = model.config.hidden_size;
  std::vector<float> row(static_cast<size_t>(D));
  for (int64_t i = 0; i < n; ++i) {
    const size_t offset = static_cast<size_t>(ids[i] * D) * dtype_size(table.dtype);
    convert_to_f32(row.data(), static_cast<const unsigned char*>(table.data) + offset, table.dtype,
                   row.size());
    for (float v : row)
      if (!std::isfinite(v))
        throw Error(where + ": row " + std::to_string(ids[i]) + " of " + table.name +
                    " (the embedding of token " + std::to_string(ids[i]) + ") holds NaN or Inf");
  }
  throw Error(where +
              " (an earlier chunk was finite; NaN or Inf in the weights this chunk "
              "reached, or an overflow in its activations; `elastic inspect --check` scans "
              "the weights)");
}

}  // namespace

std::vector<AttnMode> attn_call_modes(const std::vector<AttnMode>& routed, bool first_prefill,
                                      int64_t pos0, int64_t n, const AttnOptions& attn) {
  if (first_prefill) return routed;
  std::vector<AttnMode> modes = routed;
  for (AttnMode& m : modes) {
    if (attn.decode_kv == DecodeKv::full)
      m = AttnMode::fa;
    else if (m == AttnMode::xa && n > 1 && pos0 % attn.xa.block != 0)
      m = AttnMode::fa;
  }
  return modes;
}

Request request_start(const Model& model, RoutingPolicy* routing) {
  const ModelConfig& c = model.config;
  Request r;
  r.kv_store = model.backend->kv_store_create(c.num_layers, c.num_kv_heads, c.head_dim);
  if (!r.kv_store) r.cache = KvCache(c.num_layers, c.num_kv_heads, c.head_dim);
  r.attn.ssa.sink_tokens = c.elastic.sink_size;
  r.attn.ssa.local_tokens = c.elastic.local_window_size;
  r.attn.ssa.block = c.elastic.block_size;
  r.routing = routing;
  return r;
}

const std::vector<float>& model_prefill(const Model& model, Request& req, const int64_t* ids,
                                        int64_t n, const PrefillOptions& opt) {
  const ModelConfig& c = model.config;
  const ModelWeights& W = model.weights;
  Backend& be = *model.backend;
  const int64_t D = c.hidden_size, Hq = c.num_heads, Hkv = c.num_kv_heads, d = c.head_dim;
  const int64_t L = c.num_layers, V = c.vocab_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  if (n <= 0) throw Error("prefill needs at least one token");
  attn_options_validate(req.attn);  // before attn_call_modes divides by the XA block
  const int64_t pos0 = req.length;
  const int64_t logits_rows = opt.logits == LogitsOutput::all    ? n
                              : opt.logits == LogitsOutput::last ? 1
                                                                 : 0;
  Workspace& ws = req.ws;
  workspace_reserve(be, c, ws, n, logits_rows);
  float *x = f32(ws.x), *xn = f32(ws.xn), *qkv = f32(ws.qkv), *q = f32(ws.q), *k = f32(ws.k);
  float* v = f32(ws.v);
  float *att = f32(ws.att), *proj = f32(ws.proj), *cos = f32(ws.cos), *sin = f32(ws.sin);

  DenseRouting dense;
  RoutingPolicy& routing = req.routing ? *req.routing : static_cast<RoutingPolicy&>(dense);
  const bool first_prefill = req.routes.empty();
  if (first_prefill) req.routes.resize(static_cast<size_t>(L));
  if (first_prefill) req.prefill_stats.assign(static_cast<size_t>(L), AttnStats{});

  // cos, sin: [n, d/2] for positions pos0..pos0+n-1 (host table, uploaded).
  {
    std::vector<float> hc(static_cast<size_t>(n * d / 2)), hs(hc.size());
    rope_table_fill(hc.data(), hs.data(), model.rope, pos0, n);
    be.upload(cos, hc.data(), hc.size() * sizeof(float));
    be.upload(sin, hs.data(), hs.size() * sizeof(float));
  }

  be.embedding_forward(x, ids, n, W.embed_tokens.data, W.embed_tokens.dtype, V, D);  // x: [n, D]
  if (opt.hidden) opt.hidden->clear();
  hidden_push(be, opt.hidden, x, n * D);
  if (opt.check_layers && !be.all_finite(x, n * D))
    throw Error(model.source + ": the embeddings of the prompt are not finite (NaN or Inf in " +
                W.embed_tokens.name + ")");

  for (int64_t l = 0; l < L; ++l) {
    const LayerWeights& w = W.layers[static_cast<size_t>(l)];
    be.rmsnorm_forward(xn, x, w.input_norm, n, D, eps);      // xn: [n, D]
    be.linear_forward(qkv, xn, w.qkv_proj, w.qkv_bias, n);   // qkv: [n, (Hq + 2 Hkv) d]
    be.qkv_split_forward(q, k, v, qkv, n, Hq * d, Hkv * d);  // q: [n, Hq, d]; k, v: [n, Hkv, d]
    if (w.q_norm) be.rmsnorm_forward(q, q, w.q_norm, n * Hq, d, eps);
    if (w.k_norm) be.rmsnorm_forward(k, k, w.k_norm, n * Hkv, d, eps);
    LayerRoute& route = req.routes[static_cast<size_t>(l)];
    if (first_prefill) {
      route =
          routing.route_backend(be, l, k, n, Hkv, d);  // k: [n, Hkv, d] after k_norm, before RoPE
      if (static_cast<int64_t>(route.modes.size()) != Hkv)
        throw Error("routing policy returned " + std::to_string(route.modes.size()) +
                    " modes for layer " + std::to_string(l) + " (expected " + std::to_string(Hkv) +
                    ")");
      const std::vector<AttnMode> kept = kv_cache_modes(route.modes, req.attn.decode_kv);
      if (req.kv_store)
        req.kv_store->configure_layer(l, kept, req.attn.ssa);
      else
        req.cache.configure_layer(l, kept, req.attn.ssa);
    }
    const std::vector<AttnMode> modes =
        attn_call_modes(route.modes, first_prefill, pos0, n, req.attn);  // [Hkv]
    be.rope_forward(q, cos, sin, n, Hq, d);
    be.rope_forward(k, cos, sin, n, Hkv, d);

    std::vector<KvHeadView> past;
    if (!req.kv_store) past = req.cache.views(l);
    AttnArgs a;
    a.out = att;  // [n, Hq, d]
    a.q = q;
    a.k = k;
    a.v = v;
    a.past = req.kv_store ? nullptr : past.data();
    a.modes = modes.data();
    a.n = n;
    a.pos0 = pos0;
    a.num_heads = Hq;
    a.num_kv_heads = Hkv;
    a.head_dim = d;
    a.opt = req.attn;
    a.stats = first_prefill ? &req.prefill_stats[static_cast<size_t>(l)] : nullptr;
    if (req.kv_store) {
      be.attention_forward_stored(a, *req.kv_store, l);  // appends k, v to the store
    } else {
      be.attention_forward(a);
      req.cache.append(l, k, v, pos0, n);
    }

    be.linear_forward(proj, att, w.o_proj, w.o_bias, n);  // proj: [n, D]
    if (model.tp) model.tp->all_reduce_sum(proj, n * D);  // a shard's partial sum over its heads
    be.residual_forward(x, proj, n * D);
    mlp_block_forward(be, x, xn, proj, f32(ws.gate_up), f32(ws.act), w, c, n, model.tp.get());
    hidden_push(be, opt.hidden, x, n * D);
    if (opt.check_layers && !be.all_finite(x, n * D))
      throw Error(model.source + ": the output of layer " + std::to_string(l) +
                  " is not finite (NaN or Inf in model.layers." + std::to_string(l) +
                  ".* or an overflow in its activations); the layers before it are finite");
    if (opt.on_layer) opt.on_layer(l + 1, L);
  }
  req.length = pos0 + n;

  if (logits_rows > 0) {
    const float* last = x + (n - logits_rows) * D;
    be.rmsnorm_forward(xn, last, W.final_norm, logits_rows, D, eps);
    be.linear_forward(f32(ws.logits), xn, W.lm_head, nullptr, logits_rows);  // [rows, V]
    // One reduction over the logits; the layers are re-checked only when it fails.
    if (!opt.check_layers && !be.all_finite(f32(ws.logits), logits_rows * V))
      nonfinite_logits_fail(model, req, ids, n, pos0);
    if (opt.logits_to_host)
      be.download(ws.logits_host.data(), ws.logits.get(), ws.logits_host.size() * sizeof(float));
    else
      ws.logits_host.clear();
  }
  return ws.logits_host;
}

}  // namespace elastic

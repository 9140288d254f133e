// A decoder-only transformer (Llama 3, Qwen3, Qwen2) loaded from an HF checkpoint, and its
// forward pass. Weights are a struct of per-layer views into the memory-mapped checkpoint
// (linear layers prepared by the backend; norms and biases as fp32 copies in backend memory).
//
// One request = one sequence with its KV cache and routing decisions (Request). prefill() runs
// a chunk of tokens through all layers, layer by layer over the whole chunk (the router needs
// the whole prompt's keys per layer): the first call routes every layer, later calls (chunked
// prefill, decode = one token, a chat's next turn) reuse those decisions, in the modes
// attn_call_modes gives (request.attn.decode_kv: bounded or full, SPEC §4).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "elastic/attention.h"
#include "elastic/backend.h"
#include "elastic/config.h"
#include "elastic/cpu_ops.h"
#include "elastic/kv_cache.h"
#include "elastic/routing.h"
#include "elastic/tensor.h"

namespace elastic {

class TpComm;       // tensor_parallel.h
class WeightStore;  // safetensors.h

// Projections that read the same input are stacked into one matrix (one pass over the input
// and one parallel region per pass): q/k/v and gate/up.
struct LayerWeights {
  const float* input_norm = nullptr;           // [D]
  Linear qkv_proj;                             // [(Hq + 2 Hkv) d, D]: q_proj, k_proj, v_proj rows
  const float* qkv_bias = nullptr;             // [(Hq + 2 Hkv) d] (attention_bias) or null
  const float* q_norm = nullptr;               // [d] (qwen3) or null
  const float* k_norm = nullptr;               // [d] (qwen3) or null
  Linear o_proj;                               // [D, Hq*d]
  const float* o_bias = nullptr;               // [D] (attention_out_bias) or null
  const float* post_attention_norm = nullptr;  // [D]
  Linear gate_up_proj;                         // [2F, D]: gate_proj rows, then up_proj rows
  Linear down_proj;                            // [D, F]
};

struct ModelWeights {
  TensorView embed_tokens;  // [V, D] as stored, host memory
  std::vector<LayerWeights> layers;
  const float* final_norm = nullptr;  // [D]
  Linear lm_head;                     // [V, D]; the embedding when tied
};

struct Model {
  ModelConfig config;
  std::string source;  // folder, or "synthetic:<name>"
  std::shared_ptr<Backend> backend;
  ModelWeights weights;
  RopeFrequencies rope;
  std::shared_ptr<const void> storage;         // keeps the checkpoint mapping alive
  std::vector<std::shared_ptr<void>> buffers;  // backend copies of norms and biases
  // A tensor-parallel shard's group (tensor_parallel.h): the forward all-reduces the partial
  // outputs of o_proj and down_proj through it. Null: the whole model.
  std::shared_ptr<TpComm> tp;

  // Parameters of the linear layers a forward pass reads (q/k/v/o, MLP, lm_head), and their
  // bytes as stored; the embedding is counted once when tied.
  int64_t matmul_params_per_token() const;
  uint64_t weight_bytes_per_token() const;
};

// Resolves a tensor name to a view, or nullopt when absent.
using TensorLookup = std::function<std::optional<TensorView>(const std::string&)>;

// The tensors of the checkpoint folder `dir` (opened as `store`) as a lookup, once the folder is
// checked to hold no layer past `config`'s (refused rather than run truncated): what
// model_load and the tensor-parallel shards read.
TensorLookup checkpoint_lookup(const ModelConfig& config, std::shared_ptr<const WeightStore> store,
                               const std::string& dir);

// Loads an HF folder (config.json + safetensors). Every tensor is checked against the config;
// a missing tensor or a wrong shape throws elastic::Error naming the tensor, the expected and
// the actual shape. Router tensors (...self_attn.mask_allocator.*) are not read here.
Model model_load(const std::string& dir, std::shared_ptr<Backend> backend = backend_cpu());
// Same from any tensor source; `storage` keeps the viewed memory alive.
Model model_build(const ModelConfig& config, const TensorLookup& lookup,
                  std::shared_ptr<const void> storage, const std::string& source,
                  std::shared_ptr<Backend> backend = backend_cpu());

// A model with the shape of a known checkpoint and deterministic random bf16 weights generated
// in memory (for benchmarks on a machine without downloads). Names: model_synthetic_names().
Model model_synthetic(const std::string& name, uint64_t seed = 1,
                      std::shared_ptr<Backend> backend = backend_cpu());
std::vector<std::string> model_synthetic_names();

// Scratch activations of a forward pass, in backend memory, sized for `tokens` rows.
struct Workspace {
  int64_t tokens = 0;  // capacity in rows
  std::shared_ptr<void> x, xn, qkv, q, k, v, att, proj, gate_up, act, cos, sin, logits;
  std::vector<float> logits_host;  // downloaded logits
};

// State of one sequence: KV cache, routing decisions, attention options, scratch.
struct Request {
  KvCache cache;                         // host KV cache (unused when kv_store is set)
  std::shared_ptr<KvStore> kv_store;     // the backend's own KV cache (device-resident), or null
  std::vector<LayerRoute> routes;        // [L] after the first prefill, empty before
  std::vector<AttnStats> prefill_stats;  // [L] attention stats of the first prefill (reports)
  AttnOptions attn;                      // SSA sink/window etc., from the config by default
  RoutingPolicy* routing = nullptr;      // null = DenseRouting
  int64_t length = 0;                    // positions processed
  Workspace ws;
};

// A fresh request for `model`; `routing` (may be null: dense) must outlive the request.
Request request_start(const Model& model, RoutingPolicy* routing = nullptr);

// The modes a request's attention runs in one layer for the call at positions pos0..pos0+n-1,
// from the modes its first prefill routed (routed: [Hkv]; SPEC §3-4):
//   the first prefill        the routed modes
//   a later call, full       FA on every head: the reference attends the whole cache with FA
//                            in every call after the first (decode steps and later chunks)
//   a later call, bounded    the routed modes (an SSA head attends its sinks and window),
//                            except an XA head in a chunk (n > 1) that does not start at a
//                            multiple of the XA block: FA, as the reference runs later chunks.
//                            A chunk that starts at a block boundary estimates XA as the whole
//                            sequence's prefill would; one that starts inside a block cannot
//                            (the earlier queries of that block are gone). A decode step runs
//                            XA heads as FA in the attention itself.
std::vector<AttnMode> attn_call_modes(const std::vector<AttnMode>& routed, bool first_prefill,
                                      int64_t pos0, int64_t n, const AttnOptions& attn);

enum class LogitsOutput { none, last, all };

struct PrefillOptions {
  LogitsOutput logits = LogitsOutput::last;
  // When set, receives L + 1 tensors [n, D]: the embeddings, then the residual stream after
  // each layer (the last one before the final norm).
  std::vector<std::vector<float>>* hidden = nullptr;
  // false: the logits stay in backend memory (request.ws.logits, [rows, V]) and the returned
  // vector is empty (the generate loop samples on the backend).
  bool logits_to_host = true;
  // Called after each layer with (layers done, layers): progress of a long prefill.
  std::function<void(int64_t, int64_t)> on_layer;
  // Check the embeddings and every layer's output for NaN / Inf and throw naming the first
  // non-finite one: the re-check pass run when the logits are not finite (every prefill that
  // computes logits checks them and throws naming the first non-finite layer).
  bool check_layers = false;
};

// Runs tokens ids[0..n) at positions request.length.. through the model and returns the
// logits [n, V] (all), [1, V] (last) or empty (none) as host fp32.
const std::vector<float>& model_prefill(const Model& model, Request& request, const int64_t* ids,
                                        int64_t n, const PrefillOptions& options = {});

}  // namespace elastic

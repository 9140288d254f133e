// Parameters for training (llm.c's ParameterTensors): every tensor of a group (the backbone,
// the routers) lives in one allocation of T, laid out by a ParamLayout of HF-named tensors, and
// is reached through structs of pointers into it. Gradients and optimizer moments use the same
// layout, so "every parameter" is one flat array for AdamW, clipping and checkpoints.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "elastic/config.h"
#include "elastic/safetensors.h"
#include "elastic/tensor.h"

namespace elastic::train {

struct ParamInfo {
  std::string name;  // HF tensor name
  Shape shape;
  int64_t offset = 0;  // elements from the start of the allocation
  int64_t numel() const { return shape_numel(shape); }
};

class ParamLayout {
 public:
  void add(const std::string& name, const Shape& shape);
  const std::vector<ParamInfo>& tensors() const { return tensors_; }
  int64_t total() const { return total_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const ParamInfo& at(const std::string& name) const;  // ELASTIC_CHECK that it exists

 private:
  std::vector<ParamInfo> tensors_;
  std::map<std::string, size_t> index_;
  int64_t total_ = 0;
};

template <typename T>
struct ParamSet {
  ParamLayout layout;
  std::vector<T> data;  // [layout.total()]

  ParamSet() = default;
  explicit ParamSet(ParamLayout l) : layout(std::move(l)), data(size_t(layout.total()), T(0)) {}
  T* ptr(const std::string& name) { return data.data() + layout.at(name).offset; }
  const T* ptr(const std::string& name) const { return data.data() + layout.at(name).offset; }
  // Null when the layout has no such tensor (optional biases and norms).
  T* find(const std::string& name) { return layout.contains(name) ? ptr(name) : nullptr; }
  void zero() { std::fill(data.begin(), data.end(), T(0)); }
};

// Backbone tensors of `c` (HF names; q/k/v biases for qwen2-style attention_bias, q/k norms for
// qwen3, no lm_head when the embedding is tied).
ParamLayout backbone_layout(const ModelConfig& c);
// Router tensors model.layers.{i}.self_attn.mask_allocator.* (SPEC §2), softmax variant.
ParamLayout router_layout(const ModelConfig& c);
std::string router_tensor_prefix(int64_t layer);

template <typename T>
struct LayerParams {
  T *input_norm = nullptr, *wq = nullptr, *wk = nullptr,
    *wv = nullptr;                                          // [D] [Hq d, D] [Hkv d, D] x2
  T *bq = nullptr, *bk = nullptr, *bv = nullptr;            // q/k/v biases or null
  T *q_norm = nullptr, *k_norm = nullptr;                   // [d] or null
  T *wo = nullptr, *bo = nullptr;                           // [D, Hq d], [D] or null
  T* post_norm = nullptr;                                   // [D]
  T *w_gate = nullptr, *w_up = nullptr, *w_down = nullptr;  // [F, D] [F, D] [D, F]
};

template <typename T>
struct BackboneParams {
  T* embed = nullptr;  // [V, D]
  std::vector<LayerParams<T>> layers;
  T* final_norm = nullptr;  // [D]
  T* lm_head = nullptr;     // [V, D]; == embed when tied
};

template <typename T>
struct RouterLayerParams {
  T *w1 = nullptr, *b1 = nullptr, *w2 = nullptr, *b2 = nullptr;  // task MLP [4d,d] [4d] [d,4d] [d]
  T *w3 = nullptr, *b3 = nullptr, *w4 = nullptr,
    *b4 = nullptr;                 // router MLP [4d,d] [4d] [d,4d] [d]
  T *w5 = nullptr, *b5 = nullptr;  // [2, d] [2]
};

// Pointers into any array of T laid out by `layout` (host or device memory: the CUDA engine binds
// its bf16 weights and fp32 gradients with it).
template <typename T>
BackboneParams<T> backbone_bind_at(T* base, const ParamLayout& layout, const ModelConfig& c) {
  auto at = [&](const std::string& name) { return base + layout.at(name).offset; };
  auto find = [&](const std::string& name) -> T* {
    return layout.contains(name) ? at(name) : nullptr;
  };
  BackboneParams<T> b;
  b.embed = at("model.embed_tokens.weight");
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    LayerParams<T> L;
    L.input_norm = at(p + "input_layernorm.weight");
    L.wq = at(p + "self_attn.q_proj.weight");
    L.wk = at(p + "self_attn.k_proj.weight");
    L.wv = at(p + "self_attn.v_proj.weight");
    L.bq = find(p + "self_attn.q_proj.bias");
    L.bk = find(p + "self_attn.k_proj.bias");
    L.bv = find(p + "self_attn.v_proj.bias");
    L.q_norm = find(p + "self_attn.q_norm.weight");
    L.k_norm = find(p + "self_attn.k_norm.weight");
    L.wo = at(p + "self_attn.o_proj.weight");
    L.bo = find(p + "self_attn.o_proj.bias");
    L.post_norm = at(p + "post_attention_layernorm.weight");
    L.w_gate = at(p + "mlp.gate_proj.weight");
    L.w_up = at(p + "mlp.up_proj.weight");
    L.w_down = at(p + "mlp.down_proj.weight");
    b.layers.push_back(L);
  }
  b.final_norm = at("model.norm.weight");
  b.lm_head = c.tie_word_embeddings ? b.embed : at("lm_head.weight");
  return b;
}

template <typename T>
BackboneParams<T> backbone_bind(ParamSet<T>& set, const ModelConfig& c) {
  return backbone_bind_at(set.data.data(), set.layout, c);
}
template <typename T>
std::vector<RouterLayerParams<T>> router_bind(ParamSet<T>& set, const ModelConfig& c);

// Fills `set` from a checkpoint, converting to T; every tensor must be present with its shape
// (elastic::Error naming the tensor, the expected and the actual shape). A tied model may store
// the shared matrix as lm_head.weight instead of model.embed_tokens.weight (as HF loads it).
template <typename T>
void params_load(ParamSet<T>& set, const WeightStore& store);

// The tensors of `set` as safetensors items in `dtype` (F32 or BF16), prefixed with `prefix`.
template <typename T>
std::vector<SafetensorsWriteItem> params_items(const ParamSet<T>& set, DType dtype,
                                               const std::string& prefix = "");

}  // namespace elastic::train

#include "train/params.h"

#include <cstring>

#include "elastic/dtype.h"
#include "elastic/error.h"

namespace elastic::train {

void ParamLayout::add(const std::string& name, const Shape& shape) {
  ELASTIC_CHECK_MSG(!index_.count(name), "duplicate parameter " + name);
  index_[name] = tensors_.size();
  tensors_.push_back(ParamInfo{name, shape, total_});
  total_ += shape_numel(shape);
}

const ParamInfo& ParamLayout::at(const std::string& name) const {
  auto it = index_.find(name);
  ELASTIC_CHECK_MSG(it != index_.end(), "no parameter " + name);
  return tensors_[it->second];
}

std::string router_tensor_prefix(int64_t layer) {
  return "model.layers." + std::to_string(layer) + ".self_attn.mask_allocator.";
}

ParamLayout backbone_layout(const ModelConfig& c) {
  const int64_t D = c.hidden_size, d = c.head_dim, F = c.intermediate_size, V = c.vocab_size;
  const int64_t Hq = c.num_heads, Hkv = c.num_kv_heads;
  ParamLayout l;
  l.add("model.embed_tokens.weight", {V, D});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    l.add(p + "input_layernorm.weight", {D});
    l.add(p + "self_attn.q_proj.weight", {Hq * d, D});
    l.add(p + "self_attn.k_proj.weight", {Hkv * d, D});
    l.add(p + "self_attn.v_proj.weight", {Hkv * d, D});
    if (c.attention_bias) {
      l.add(p + "self_attn.q_proj.bias", {Hq * d});
      l.add(p + "self_attn.k_proj.bias", {Hkv * d});
      l.add(p + "self_attn.v_proj.bias", {Hkv * d});
    }
    if (c.qk_norm) {
      l.add(p + "self_attn.q_norm.weight", {d});
      l.add(p + "self_attn.k_norm.weight", {d});
    }
    l.add(p + "self_attn.o_proj.weight", {D, Hq * d});
    if (c.attention_out_bias) l.add(p + "self_attn.o_proj.bias", {D});
    l.add(p + "post_attention_layernorm.weight", {D});
    l.add(p + "mlp.gate_proj.weight", {F, D});
    l.add(p + "mlp.up_proj.weight", {F, D});
    l.add(p + "mlp.down_proj.weight", {D, F});
  }
  l.add("model.norm.weight", {D});
  if (!c.tie_word_embeddings) l.add("lm_head.weight", {V, D});
  return l;
}

ParamLayout router_layout(const ModelConfig& c) {
  const int64_t d = c.head_dim, h = 4 * d;
  ParamLayout l;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = router_tensor_prefix(i);
    l.add(p + "cls_feat_extractor.0.weight", {h, d});
    l.add(p + "cls_feat_extractor.0.bias", {h});
    l.add(p + "cls_feat_extractor.2.weight", {d, h});
    l.add(p + "cls_feat_extractor.2.bias", {d});
    l.add(p + "cls_router_head_agnostic.0.weight", {h, d});
    l.add(p + "cls_router_head_agnostic.0.bias", {h});
    l.add(p + "cls_router_head_agnostic.2.weight", {d, h});
    l.add(p + "cls_router_head_agnostic.2.bias", {d});
    l.add(p + "cls_router_head_agnostic.4.weight", {2, d});
    l.add(p + "cls_router_head_agnostic.4.bias", {2});
  }
  return l;
}

template <typename T>
std::vector<RouterLayerParams<T>> router_bind(ParamSet<T>& s, const ModelConfig& c) {
  std::vector<RouterLayerParams<T>> r;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = router_tensor_prefix(i);
    RouterLayerParams<T> L;
    L.w1 = s.ptr(p + "cls_feat_extractor.0.weight");
    L.b1 = s.ptr(p + "cls_feat_extractor.0.bias");
    L.w2 = s.ptr(p + "cls_feat_extractor.2.weight");
    L.b2 = s.ptr(p + "cls_feat_extractor.2.bias");
    L.w3 = s.ptr(p + "cls_router_head_agnostic.0.weight");
    L.b3 = s.ptr(p + "cls_router_head_agnostic.0.bias");
    L.w4 = s.ptr(p + "cls_router_head_agnostic.2.weight");
    L.b4 = s.ptr(p + "cls_router_head_agnostic.2.bias");
    L.w5 = s.ptr(p + "cls_router_head_agnostic.4.weight");
    L.b5 = s.ptr(p + "cls_router_head_agnostic.4.bias");
    r.push_back(L);
  }
  return r;
}

template <typename T>
void params_load(ParamSet<T>& set, const WeightStore& store) {
  for (const ParamInfo& p : set.layout.tensors()) {
    std::string name = p.name;
    if (!store.contains(name) && name == "model.embed_tokens.weight" &&
        store.contains("lm_head.weight") && !set.layout.contains("lm_head.weight"))
      name = "lm_head.weight";  // tied checkpoint that kept the head's name
    if (!store.contains(name))
      throw Error("tensor '" + p.name + "' is missing from " + store.source() +
                  " (expected shape " + shape_str(p.shape) + ")");
    const TensorView t = store.get(name);
    if (t.shape != p.shape)
      throw Error("tensor '" + name + "' in " + store.source() + ": expected shape " +
                  shape_str(p.shape) + ", got " + shape_str(t.shape));
    if (t.dtype != DType::f32 && t.dtype != DType::f16 && t.dtype != DType::bf16 &&
        t.dtype != DType::f64)
      throw Error("tensor '" + name + "' in " + store.source() + ": dtype " +
                  std::string(dtype_name(t.dtype)) + " is not a float type");
    T* dst = set.data.data() + p.offset;
    if (t.dtype == DType::f64) {
      const double* src = static_cast<const double*>(t.data);
      for (int64_t i = 0; i < p.numel(); ++i) dst[i] = static_cast<T>(src[i]);
    } else {
      const std::vector<float> f = t.to_f32();
      for (int64_t i = 0; i < p.numel(); ++i) dst[i] = static_cast<T>(f[size_t(i)]);
    }
  }
}

template <typename T>
std::vector<SafetensorsWriteItem> params_items(const ParamSet<T>& set, DType dtype,
                                               const std::string& prefix) {
  ELASTIC_CHECK(dtype == DType::f32 || dtype == DType::bf16);
  std::vector<SafetensorsWriteItem> items;
  for (const ParamInfo& p : set.layout.tensors()) {
    SafetensorsWriteItem it;
    it.name = prefix + p.name;
    it.dtype = dtype;
    it.shape = p.shape;
    it.bytes.resize(size_t(p.numel()) * dtype_size(dtype));
    const T* src = set.data.data() + p.offset;
    for (int64_t i = 0; i < p.numel(); ++i) {
      const float f = static_cast<float>(src[i]);
      if (dtype == DType::f32) {
        std::memcpy(it.bytes.data() + 4 * i, &f, 4);
      } else {
        const uint16_t h = f32_to_bf16(f);
        std::memcpy(it.bytes.data() + 2 * i, &h, 2);
      }
    }
    items.push_back(std::move(it));
  }
  return items;
}

template std::vector<RouterLayerParams<float>> router_bind(ParamSet<float>&, const ModelConfig&);
template std::vector<RouterLayerParams<double>> router_bind(ParamSet<double>&, const ModelConfig&);
template void params_load(ParamSet<float>&, const WeightStore&);
template void params_load(ParamSet<double>&, const WeightStore&);
template std::vector<SafetensorsWriteItem> params_items(const ParamSet<float>&, DType,
                                                        const std::string&);
template std::vector<SafetensorsWriteItem> params_items(const ParamSet<double>&, DType,
                                                        const std::string&);

}  // namespace elastic::train

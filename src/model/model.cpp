// Model loading: every tensor the forward pass reads is looked up by its HF name, checked
// against the shape the config implies, and turned into a per-layer view (linear layers
// prepared by the backend, norms and biases converted to fp32 backend buffers).
#include <cstring>
#include <string>

#include "elastic/error.h"
#include "elastic/model.h"
#include "elastic/safetensors.h"

namespace elastic {
namespace {

class Loader {
 public:
  Loader(const TensorLookup& lookup, const std::string& source, Model& m)
      : lookup_(lookup), source_(source), m_(m) {}

  TensorView tensor(const std::string& name, const Shape& expected) const {
    std::optional<TensorView> t = lookup_(name);
    if (!t)
      throw Error("tensor '" + name + "' is missing from " + source_ + " (expected shape " +
                  shape_str(expected) + ")");
    if (t->shape != expected)
      throw Error("tensor '" + name + "' in " + source_ + ": expected shape " + shape_str(expected) +
                  " for the config, got " + shape_str(t->shape));
    if (t->dtype != DType::f32 && t->dtype != DType::f16 && t->dtype != DType::bf16)
      throw Error("tensor '" + name + "' in " + source_ + ": dtype " +
                  std::string(dtype_name(t->dtype)) + " is not supported (expected F32, F16 or BF16)");
    return *t;
  }
  bool has(const std::string& name) const { return lookup_(name).has_value(); }

  Linear linear(const std::string& name, int64_t rows, int64_t cols) const {
    return m_.backend->linear_prepare(tensor(name, {rows, cols}));
  }
  // Weights of the same input width stacked along rows into one Linear: parts (name, rows),
  // each checked on its own. Stored as the parts' dtype when they agree, else as fp32.
  Linear linear_stack(const std::vector<std::pair<std::string, int64_t>>& parts, int64_t cols) const {
    std::vector<TensorView> views;
    int64_t rows = 0;
    for (const auto& [name, r] : parts) {
      views.push_back(tensor(name, {r, cols}));
      rows += r;
    }
    bool same = true;
    for (const TensorView& v : views) same = same && v.dtype == views[0].dtype;
    TensorView stacked;
    stacked.dtype = same ? views[0].dtype : DType::f32;
    stacked.shape = {rows, cols};
    for (const TensorView& v : views) stacked.name += (stacked.name.empty() ? "" : "+") + v.name;
    std::vector<unsigned char> bytes(static_cast<size_t>(rows * cols) * dtype_size(stacked.dtype));
    size_t at = 0;
    for (const TensorView& v : views) {
      const size_t n = static_cast<size_t>(v.numel()) * dtype_size(stacked.dtype);
      if (same) {
        std::memcpy(bytes.data() + at, v.data, n);
      } else {
        const std::vector<float> f = v.to_f32();
        std::memcpy(bytes.data() + at, f.data(), n);
      }
      at += n;
    }
    stacked.data = bytes.data();
    return m_.backend->linear_prepare(stacked);  // keeps its own copy (backend.h)
  }
  // 1-D tensors converted to fp32 and concatenated in backend memory: parts (name, size).
  const float* vector_stack(const std::vector<std::pair<std::string, int64_t>>& parts) const {
    std::vector<float> host;
    for (const auto& [name, size] : parts) {
      const std::vector<float> f = tensor(name, {size}).to_f32();
      host.insert(host.end(), f.begin(), f.end());
    }
    std::shared_ptr<void> buf = m_.backend->alloc(host.size() * sizeof(float));
    m_.backend->upload(buf.get(), host.data(), host.size() * sizeof(float));
    m_.buffers.push_back(buf);
    return static_cast<const float*>(buf.get());
  }
  const float* vector(const std::string& name, int64_t size) const { return vector_stack({{name, size}}); }

 private:
  const TensorLookup& lookup_;
  const std::string& source_;
  Model& m_;
};

}  // namespace

int64_t Model::matmul_params_per_token() const {
  const ModelConfig& c = config;
  const int64_t D = c.hidden_size, d = c.head_dim, F = c.intermediate_size;
  const int64_t attn = D * c.num_heads * d * 2 + D * c.num_kv_heads * d * 2;
  const int64_t mlp = 3 * D * F;
  return c.num_layers * (attn + mlp) + c.vocab_size * D;
}

uint64_t Model::weight_bytes_per_token() const {
  uint64_t bytes = 0;
  auto add = [&](const Linear& l) {
    bytes += static_cast<uint64_t>(l.rows * l.cols) * dtype_size(l.dtype);
  };
  for (const LayerWeights& w : weights.layers)
    for (const Linear* l : {&w.qkv_proj, &w.o_proj, &w.gate_up_proj, &w.down_proj})
      add(*l);
  add(weights.lm_head);
  return bytes;
}

Model model_build(const ModelConfig& config, const TensorLookup& lookup,
                  std::shared_ptr<const void> storage, const std::string& source,
                  std::shared_ptr<Backend> backend) {
  Model m;
  m.config = config;
  m.source = source;
  m.backend = std::move(backend);
  m.storage = std::move(storage);
  const ModelConfig& c = m.config;
  const int64_t D = c.hidden_size, Hq = c.num_heads, Hkv = c.num_kv_heads, d = c.head_dim;
  const int64_t F = c.intermediate_size, V = c.vocab_size;
  Loader ld(lookup, source, m);

  // Tied checkpoints store the shared matrix once, under either name (safetensors drops the
  // alias; HF then ties whichever one it finds).
  const bool embed_from_head =
      c.tie_word_embeddings && !ld.has("model.embed_tokens.weight") && ld.has("lm_head.weight");
  m.weights.embed_tokens =
      ld.tensor(embed_from_head ? "lm_head.weight" : "model.embed_tokens.weight", {V, D});
  m.weights.layers.resize(static_cast<size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    LayerWeights& w = m.weights.layers[static_cast<size_t>(i)];
    w.input_norm = ld.vector(p + "input_layernorm.weight", D);
    w.qkv_proj = ld.linear_stack({{p + "self_attn.q_proj.weight", Hq * d},
                                  {p + "self_attn.k_proj.weight", Hkv * d},
                                  {p + "self_attn.v_proj.weight", Hkv * d}},
                                 D);
    if (c.attention_bias)
      w.qkv_bias = ld.vector_stack({{p + "self_attn.q_proj.bias", Hq * d},
                                    {p + "self_attn.k_proj.bias", Hkv * d},
                                    {p + "self_attn.v_proj.bias", Hkv * d}});
    if (c.qk_norm) {
      w.q_norm = ld.vector(p + "self_attn.q_norm.weight", d);
      w.k_norm = ld.vector(p + "self_attn.k_norm.weight", d);
    }
    w.o_proj = ld.linear(p + "self_attn.o_proj.weight", D, Hq * d);
    if (c.attention_out_bias) w.o_bias = ld.vector(p + "self_attn.o_proj.bias", D);
    w.post_attention_norm = ld.vector(p + "post_attention_layernorm.weight", D);
    w.gate_up_proj = ld.linear_stack({{p + "mlp.gate_proj.weight", F}, {p + "mlp.up_proj.weight", F}}, D);
    w.down_proj = ld.linear(p + "mlp.down_proj.weight", D, F);
  }
  m.weights.final_norm = ld.vector("model.norm.weight", D);
  // HF ties lm_head to the embedding when tie_word_embeddings is set (lm_head.weight, if a file
  // carries one anyway, is ignored as HF does).
  m.weights.lm_head = c.tie_word_embeddings ? m.backend->linear_prepare(m.weights.embed_tokens)
                                            : ld.linear("lm_head.weight", V, D);
  m.rope = rope_frequencies(c.rope, d);
  return m;
}

void layers_unused_check(const ModelConfig& c, const WeightStore& store, const std::string& dir) {
  // HF loads such a checkpoint with a warning about unused weights and runs fewer layers; a
  // warning scrolls by unseen, so this is an error (our choice, see the message).
  const std::string prefix = "model.layers.";
  int64_t first_layer = -1;  // the lowest unused layer index, and its first tensor name
  std::string first_name;
  for (const std::string& name : store.names()) {
    if (name.rfind(prefix, 0) != 0) continue;
    const size_t dot = name.find('.', prefix.size());
    const std::string index = name.substr(prefix.size(), dot - prefix.size());
    if (index.empty() || index.size() > 9 ||
        index.find_first_not_of("0123456789") != std::string::npos)
      continue;
    const int64_t layer = std::stoll(index);
    if (layer >= c.num_layers && (first_layer < 0 || layer < first_layer)) {
      first_layer = layer;
      first_name = name;
    }
  }
  if (first_layer >= 0)
    throw Error(dir + ": tensor '" + first_name +
                "' is unused: config.json has num_hidden_layers " + std::to_string(c.num_layers) +
                " (layers 0.." + std::to_string(c.num_layers - 1) +
                "); a checkpoint with more layers than the config is refused rather than run "
                "truncated (HF would only warn)");
}

Model model_load(const std::string& dir, std::shared_ptr<Backend> backend) {
  ModelConfig config = config_load(dir);
  auto store = std::make_shared<WeightStore>(WeightStore::open(dir));
  return model_build(config, checkpoint_lookup(config, store, dir), store, dir, std::move(backend));
}

TensorLookup checkpoint_lookup(const ModelConfig& config, std::shared_ptr<const WeightStore> store,
                               const std::string& dir) {
  layers_unused_check(config, *store, dir);
  return [store](const std::string& name) -> std::optional<TensorView> {
    if (!store->contains(name)) return std::nullopt;
    return store->get(name);
  };
}

}  // namespace elastic

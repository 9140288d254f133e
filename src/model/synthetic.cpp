// Synthetic models: the config of a known checkpoint and deterministic random weights made in
// memory. Weights are uniform in [-a, a] with a = sqrt(3) * 0.02 (std 0.02, HF's
// initializer_range), norms are 1; each element comes from a counter-based hash of (seed,
// tensor index, element index), so the values do not depend on the thread count.
#include <cmath>
#include <map>
#include <string>

#include "elastic/config.h"
#include "elastic/error.h"
#include "elastic/model.h"

namespace elastic {
namespace {

struct SyntheticShape {
  const char* name;
  const char* config_json;
};

// Qwen3-0.6B's config.json (the fields the engine reads), weights in bf16.
const SyntheticShape kShapes[] = {
    {"qwen3-0.6b", R"({
      "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
      "vocab_size": 151936, "hidden_size": 1024, "intermediate_size": 3072,
      "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
      "head_dim": 128, "rms_norm_eps": 1e-6, "max_position_embeddings": 40960,
      "rope_theta": 1000000, "tie_word_embeddings": true, "eos_token_id": 151645,
      "bos_token_id": 151643, "torch_dtype": "bfloat16", "hidden_act": "silu"})"},
    // Qwen3-8B's shape (36 layers, 4096 hidden, 32/8 heads, d = 128) for the GPU prefill
    // benchmark; tied embeddings (no separate lm_head tensor) and 128K positions.
    {"qwen3-8b", R"({
      "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
      "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 12288,
      "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
      "head_dim": 128, "rms_norm_eps": 1e-6, "max_position_embeddings": 131072,
      "rope_theta": 1000000, "tie_word_embeddings": true, "torch_dtype": "bfloat16"})"},
    // A few-MB Qwen3-shaped model for tests of the benchmark itself.
    {"qwen3-tiny", R"({
      "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
      "vocab_size": 1024, "hidden_size": 192, "intermediate_size": 512,
      "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
      "head_dim": 64, "rms_norm_eps": 1e-6, "max_position_embeddings": 8192,
      "rope_theta": 1000000, "tie_word_embeddings": true, "torch_dtype": "bfloat16"})"},
    // Tiny shapes for the CUDA kernels' CPU-consistency tests where no fixture has the shape:
    // d = 128 with one KV head for 8 query heads (GQA 8), and d = 64 multi-head (GQA 1).
    {"qwen3-tiny-d128-g8", R"({
      "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
      "vocab_size": 1024, "hidden_size": 256, "intermediate_size": 512,
      "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 1,
      "head_dim": 128, "rms_norm_eps": 1e-6, "max_position_embeddings": 8192,
      "rope_theta": 1000000, "tie_word_embeddings": true, "torch_dtype": "bfloat16"})"},
    {"qwen3-tiny-mha", R"({
      "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
      "vocab_size": 1024, "hidden_size": 256, "intermediate_size": 512,
      "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
      "head_dim": 64, "rms_norm_eps": 1e-6, "max_position_embeddings": 8192,
      "rope_theta": 1000000, "tie_word_embeddings": true, "torch_dtype": "bfloat16"})"},
};

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Owns the generated tensors (bf16). Linear weights are dropped after the backend prepared
// them (it keeps its own packed copy); the embedding table stays.
struct SyntheticStore {
  std::map<std::string, std::pair<Shape, std::vector<uint16_t>>> tensors;

  void add(const std::string& name, const Shape& shape, uint64_t seed, bool ones) {
    std::vector<uint16_t> data(static_cast<size_t>(shape_numel(shape)));
    const int64_t n = static_cast<int64_t>(data.size());
    const uint64_t stream = splitmix64(seed ^ splitmix64(tensors.size() + 1));
    const float a = std::sqrt(3.0f) * 0.02f;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      float x = 1.f;
      if (!ones) {
        const double u = static_cast<double>(splitmix64(stream + static_cast<uint64_t>(i)) >> 11) *
                         (1.0 / 9007199254740992.0);  // [0, 1)
        x = static_cast<float>((2.0 * u - 1.0) * a);
      }
      data[static_cast<size_t>(i)] = f32_to_bf16(x);
    }
    tensors[name] = {shape, std::move(data)};
  }
  std::optional<TensorView> view(const std::string& name) const {
    auto it = tensors.find(name);
    if (it == tensors.end()) return std::nullopt;
    TensorView t;
    t.name = name;
    t.dtype = DType::bf16;
    t.shape = it->second.first;
    t.data = it->second.second.data();
    return t;
  }
};

}  // namespace

std::vector<std::string> model_synthetic_names() {
  std::vector<std::string> names;
  for (const auto& s : kShapes) names.push_back(s.name);
  return names;
}

Model model_synthetic(const std::string& name, uint64_t seed, std::shared_ptr<Backend> backend) {
  const SyntheticShape* shape = nullptr;
  for (const auto& s : kShapes)
    if (name == s.name) shape = &s;
  if (!shape) {
    std::string known;
    for (const auto& s : kShapes) known += std::string(known.empty() ? "" : ", ") + s.name;
    throw Error("unknown synthetic model '" + name + "' (known: " + known + ")");
  }
  const std::string source = "synthetic:" + name;
  ModelConfig c = config_parse(shape->config_json, source);
  const int64_t D = c.hidden_size, Hq = c.num_heads, Hkv = c.num_kv_heads, d = c.head_dim;
  const int64_t F = c.intermediate_size, V = c.vocab_size;

  auto store = std::make_shared<SyntheticStore>();
  store->add("model.embed_tokens.weight", {V, D}, seed, false);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    store->add(p + "input_layernorm.weight", {D}, seed, true);
    store->add(p + "self_attn.q_proj.weight", {Hq * d, D}, seed, false);
    store->add(p + "self_attn.k_proj.weight", {Hkv * d, D}, seed, false);
    store->add(p + "self_attn.v_proj.weight", {Hkv * d, D}, seed, false);
    store->add(p + "self_attn.q_norm.weight", {d}, seed, true);
    store->add(p + "self_attn.k_norm.weight", {d}, seed, true);
    store->add(p + "self_attn.o_proj.weight", {D, Hq * d}, seed, false);
    store->add(p + "post_attention_layernorm.weight", {D}, seed, true);
    store->add(p + "mlp.gate_proj.weight", {F, D}, seed, false);
    store->add(p + "mlp.up_proj.weight", {F, D}, seed, false);
    store->add(p + "mlp.down_proj.weight", {D, F}, seed, false);
  }
  store->add("model.norm.weight", {D}, seed, true);
  TensorLookup lookup = [store](const std::string& n) { return store->view(n); };
  Model m = model_build(c, lookup, store, source, std::move(backend));
  // The backend holds its own prepared copies of the linear weights (cpu_matmul.h); only the
  // embedding table is read from the store afterwards.
  for (auto it = store->tensors.begin(); it != store->tensors.end();)
    it = it->first == "model.embed_tokens.weight" ? std::next(it) : store->tensors.erase(it);
  return m;
}

}  // namespace elastic

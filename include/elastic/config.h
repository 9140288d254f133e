// Model configuration read from an HF config.json (model_type llama, qwen3, qwen2), in both
// layouts: v5 ("rope_parameters", "dtype") and the older one ("rope_theta" at top level,
// "rope_scaling", "torch_dtype"). Elastic (Paw*) checkpoints add the router keys of SPEC §2.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "elastic/dtype.h"

namespace elastic {

enum class ModelFamily { llama, qwen3, qwen2 };
enum class RopeType { standard, llama3, yarn };  // "default", "llama3", "yarn"

struct RopeConfig {
  RopeType type = RopeType::standard;
  double theta = 10000.0;
  double factor = 1.0;                        // llama3, yarn
  double low_freq_factor = 1.0;               // llama3
  double high_freq_factor = 4.0;              // llama3
  int64_t original_max_position_embeddings = 0;  // llama3, yarn
  double beta_fast = 32.0;                    // yarn
  double beta_slow = 1.0;                     // yarn
  std::optional<double> attention_factor;     // yarn; default 0.1*ln(factor)+1
  bool truncate = true;                       // yarn: floor/ceil the correction range
};

// Sparse-head ("toggle") and retrieval-head modes of an Elastic checkpoint.
enum class SparseMode { ssa, xa };       // toggle_type "streaming" | "xattn"
enum class RetrievalMode { fa, xa };     // retrieval_mode "full" | "xattn"

struct ElasticConfig {
  bool present = false;             // router weights / keys found
  bool enable_ada_sparsity = true;
  SparseMode sparse_mode = SparseMode::ssa;
  RetrievalMode retrieval_mode = RetrievalMode::fa;
  int64_t sink_size = 128;          // tokens
  int64_t local_window_size = 2048; // tokens
  int64_t block_size = 128;         // SSA block (tokens); the key "block_size"
  int64_t xa_block = 128;           // XA block: "xattn_block_size", else "block_size"
  int64_t xa_stride = 16;           // XA antidiagonal stride: "xattn_stride"
  double xa_threshold = 0.9;        // XA threshold tau: "xattn_threshold"
  int64_t pool_tokens = 100;        // router boundary pooling P: "pool_tokens" or "pool_size"
  std::string pooling_mode = "ctx_q";  // the only mode the reference implements
  bool use_softmax = true;
  // Every Elastic key in the order of SPEC §2 with the value taken and whether it was absent
  // from config.json (so the default was used): what `elastic inspect` lists.
  struct Key {
    std::string name;
    std::string value;
    bool defaulted = false;
  };
  std::vector<Key> keys;
};

struct ModelConfig {
  std::string source;  // path of config.json, for messages
  std::string model_type;
  ModelFamily family = ModelFamily::llama;
  std::vector<std::string> architectures;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // explicit, or hidden_size / num_heads
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 0;
  bool tie_word_embeddings = false;
  bool attention_bias = false;      // q/k/v bias (qwen2 always)
  bool attention_out_bias = false;  // o_proj bias (llama/qwen3 with attention_bias; never qwen2)
  bool qk_norm = false;         // qwen3
  RopeConfig rope;
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> bos_token_id;
  DType dtype = DType::bf16;
  ElasticConfig elastic;
};

// Parses config.json text; `source` names the file in errors. Throws elastic::Error naming the
// field and what was expected (one line). Sizes must lie in [1, 2^24]; eos/bos ids below
// vocab_size; sliding-window attention, partial rotary and mlp_bias are rejected as unsupported.
ModelConfig config_parse(const std::string& json_text, const std::string& source);
// Reads DIR/config.json (or a path to the file itself).
ModelConfig config_load(const std::string& path);

std::string_view model_family_name(ModelFamily f);

}  // namespace elastic

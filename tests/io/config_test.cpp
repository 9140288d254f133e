// HF config parsing: every fixture config with its expected values, the two layouts giving the
// same ModelConfig, Elastic keys and defaults, and field validation.
#include "elastic/config.h"

#include <gtest/gtest.h>

#include <cmath>

#include "elastic/error.h"
#include "io_test_util.h"

namespace elastic {
namespace {

const std::string kHf = std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/";

ModelConfig load(const std::string& name) { return config_load(kHf + name); }

// Every field except `source` (the file name) and `dtype`; rope fields compared exactly, as
// both layouts must produce the same doubles from the same decimal text.
void expect_same_config(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.model_type, b.model_type);
  EXPECT_EQ(a.family, b.family);
  EXPECT_EQ(a.architectures, b.architectures);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_layers, b.num_layers);
  EXPECT_EQ(a.num_heads, b.num_heads);
  EXPECT_EQ(a.num_kv_heads, b.num_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.attention_bias, b.attention_bias);
  EXPECT_EQ(a.attention_out_bias, b.attention_out_bias);
  EXPECT_EQ(a.qk_norm, b.qk_norm);
  EXPECT_EQ(a.rope.type, b.rope.type);
  EXPECT_EQ(a.rope.theta, b.rope.theta);
  EXPECT_EQ(a.rope.factor, b.rope.factor);
  EXPECT_EQ(a.rope.low_freq_factor, b.rope.low_freq_factor);
  EXPECT_EQ(a.rope.high_freq_factor, b.rope.high_freq_factor);
  EXPECT_EQ(a.rope.original_max_position_embeddings, b.rope.original_max_position_embeddings);
  EXPECT_EQ(a.rope.beta_fast, b.rope.beta_fast);
  EXPECT_EQ(a.rope.beta_slow, b.rope.beta_slow);
  EXPECT_EQ(a.rope.attention_factor, b.rope.attention_factor);
  EXPECT_EQ(a.rope.truncate, b.rope.truncate);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.dtype, b.dtype);
  EXPECT_EQ(a.elastic.present, b.elastic.present);
}

TEST(Config, Qwen3Tiny) {
  ModelConfig c = load("qwen3-tiny");
  EXPECT_EQ(c.source, kHf + "qwen3-tiny/config.json");
  EXPECT_EQ(c.family, ModelFamily::qwen3);
  EXPECT_EQ(c.architectures, std::vector<std::string>{"Qwen3ForCausalLM"});
  EXPECT_EQ(c.vocab_size, 1024);
  EXPECT_EQ(c.hidden_size, 192);
  EXPECT_EQ(c.intermediate_size, 512);
  EXPECT_EQ(c.num_layers, 3);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 64);  // explicit: Hq * d = 256 != hidden 192
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.attention_out_bias);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_EQ(c.rope.type, RopeType::standard);
  EXPECT_EQ(c.rope.theta, 1e6);
  EXPECT_TRUE(c.eos_token_ids.empty());  // "eos_token_id": null
  EXPECT_FALSE(c.bos_token_id.has_value());
  EXPECT_EQ(c.dtype, DType::bf16);
  EXPECT_FALSE(c.elastic.present);
}

TEST(Config, Llama3TinyBothLayouts) {
  ModelConfig c = load("llama3-tiny");
  ModelConfig legacy = load("llama3-tiny-legacy-config");
  for (const ModelConfig* p : {&c, &legacy}) {
    SCOPED_TRACE(p->source);
    EXPECT_EQ(p->family, ModelFamily::llama);
    EXPECT_EQ(p->vocab_size, 1024);
    EXPECT_EQ(p->hidden_size, 256);
    EXPECT_EQ(p->intermediate_size, 640);
    EXPECT_EQ(p->num_layers, 3);
    EXPECT_EQ(p->num_heads, 8);
    EXPECT_EQ(p->num_kv_heads, 2);
    EXPECT_EQ(p->head_dim, 32);
    EXPECT_EQ(p->rms_norm_eps, 1e-5);
    EXPECT_EQ(p->max_position_embeddings, 16384);
    EXPECT_FALSE(p->tie_word_embeddings);
    EXPECT_FALSE(p->qk_norm);
    EXPECT_FALSE(p->attention_bias);
    EXPECT_EQ(p->rope.type, RopeType::llama3);
    EXPECT_EQ(p->rope.theta, 500000.0);
    EXPECT_EQ(p->rope.factor, 8.0);
    EXPECT_EQ(p->rope.low_freq_factor, 1.0);
    EXPECT_EQ(p->rope.high_freq_factor, 4.0);
    EXPECT_EQ(p->rope.original_max_position_embeddings, 8192);
    EXPECT_EQ(p->bos_token_id, std::optional<int64_t>(1));
    EXPECT_EQ(p->eos_token_ids, std::vector<int64_t>{2});
    EXPECT_EQ(p->dtype, DType::bf16);  // "dtype" vs "torch_dtype"
  }
  expect_same_config(c, legacy);
}

TEST(Config, Qwen3YarnTinyBothLayouts) {
  ModelConfig c = load("qwen3-yarn-tiny");
  ModelConfig legacy = load("qwen3-yarn-tiny-legacy-config");
  for (const ModelConfig* p : {&c, &legacy}) {
    SCOPED_TRACE(p->source);
    EXPECT_EQ(p->family, ModelFamily::qwen3);
    EXPECT_EQ(p->hidden_size, 128);
    EXPECT_EQ(p->intermediate_size, 384);
    EXPECT_EQ(p->num_layers, 2);
    EXPECT_EQ(p->num_heads, 4);
    EXPECT_EQ(p->num_kv_heads, 2);
    EXPECT_EQ(p->head_dim, 32);
    EXPECT_EQ(p->max_position_embeddings, 1024);
    EXPECT_TRUE(p->tie_word_embeddings);
    EXPECT_EQ(p->rope.type, RopeType::yarn);
    EXPECT_EQ(p->rope.theta, 1e6);
    EXPECT_EQ(p->rope.factor, 4.0);
    EXPECT_EQ(p->rope.original_max_position_embeddings, 256);
    EXPECT_EQ(p->rope.beta_fast, 32.0);  // HF defaults
    EXPECT_EQ(p->rope.beta_slow, 1.0);
    EXPECT_FALSE(p->rope.attention_factor.has_value());  // default 0.1 ln(factor) + 1
    EXPECT_TRUE(p->rope.truncate);
  }
  expect_same_config(c, legacy);
}

TEST(Config, Qwen2TinyHasQkvBiasAndDerivedHeadDim) {
  ModelConfig c = load("qwen2-tiny");
  EXPECT_EQ(c.family, ModelFamily::qwen2);
  EXPECT_EQ(c.hidden_size, 128);
  EXPECT_EQ(c.intermediate_size, 384);
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 32);  // no head_dim key: hidden / heads
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_TRUE(c.attention_bias);       // qwen2 always has q/k/v bias
  EXPECT_FALSE(c.attention_out_bias);  // and never o_proj bias
  EXPECT_FALSE(c.qk_norm);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope.type, RopeType::standard);
  EXPECT_EQ(c.rope.theta, 10000.0);
}

TEST(Config, ElasticCheckpoints) {
  struct Case {
    const char* name;
    SparseMode sparse;
    RetrievalMode retrieval;
  };
  const Case cases[] = {{"elastic-qwen3-fa-ssa", SparseMode::ssa, RetrievalMode::fa},
                        {"elastic-qwen3-fa-ssa-bias", SparseMode::ssa, RetrievalMode::fa},
                        {"elastic-qwen3-fa-xa", SparseMode::xa, RetrievalMode::fa},
                        {"elastic-qwen3-xa-ssa", SparseMode::ssa, RetrievalMode::xa},
                        {"router-train-step", SparseMode::ssa, RetrievalMode::fa}};
  ModelConfig backbone = load("qwen3-tiny");
  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    ModelConfig c = load(k.name);
    EXPECT_EQ(c.architectures, std::vector<std::string>{"PawQwen3ForCausalLM"});
    EXPECT_TRUE(c.elastic.present);
    EXPECT_TRUE(c.elastic.enable_ada_sparsity);
    EXPECT_EQ(c.elastic.sparse_mode, k.sparse);
    EXPECT_EQ(c.elastic.retrieval_mode, k.retrieval);
    EXPECT_EQ(c.elastic.sink_size, 32);
    EXPECT_EQ(c.elastic.local_window_size, 96);
    EXPECT_EQ(c.elastic.pooling_mode, "ctx_q");
    EXPECT_TRUE(c.elastic.use_softmax);
    // The backbone is qwen3-tiny.
    EXPECT_EQ(c.hidden_size, backbone.hidden_size);
    EXPECT_EQ(c.head_dim, backbone.head_dim);
    EXPECT_EQ(c.num_kv_heads, backbone.num_kv_heads);
    EXPECT_EQ(c.rope.theta, backbone.rope.theta);
  }
}

TEST(Config, TinyStoriesRealModel) {
  ModelConfig c = config_load(std::string(ELASTIC_SHARED_DIR) + "/data/tinystories-656k");
  EXPECT_EQ(c.family, ModelFamily::llama);
  EXPECT_EQ(c.vocab_size, 2048);
  EXPECT_EQ(c.hidden_size, 128);
  EXPECT_EQ(c.intermediate_size, 384);
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.max_position_embeddings, 512);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope.type, RopeType::standard);  // "rope_scaling": null
  EXPECT_EQ(c.rope.theta, 10000.0);            // top-level rope_theta
  EXPECT_EQ(c.dtype, DType::f32);              // "torch_dtype": "float32"
  EXPECT_EQ(c.bos_token_id, std::optional<int64_t>(1));
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_FALSE(c.elastic.present);
}

// A minimal valid llama config with `extra` merged in (null values delete keys).
std::string config_text(const nlohmann::json& extra) {
  nlohmann::json j = {{"model_type", "llama"}, {"vocab_size", 64}, {"hidden_size", 16},
                      {"intermediate_size", 32}, {"num_hidden_layers", 1},
                      {"num_attention_heads", 4}, {"num_key_value_heads", 2}};
  j.merge_patch(extra);
  return j.dump();
}

TEST(Config, ElasticDefaultsFromArchitectureAlone) {
  ModelConfig c = config_parse(config_text({{"model_type", "qwen3"},
                                            {"architectures", {"PawQwen3ForCausalLM"}}}),
                               "c.json");
  EXPECT_TRUE(c.elastic.present);
  EXPECT_TRUE(c.elastic.enable_ada_sparsity);
  EXPECT_EQ(c.elastic.sparse_mode, SparseMode::ssa);
  EXPECT_EQ(c.elastic.retrieval_mode, RetrievalMode::fa);
  EXPECT_EQ(c.elastic.sink_size, 128);
  EXPECT_EQ(c.elastic.local_window_size, 2048);
  EXPECT_EQ(c.elastic.pooling_mode, "ctx_q");
  EXPECT_TRUE(c.elastic.use_softmax);
  ModelConfig k = config_parse(config_text({{"toggle_type", "xattn"}, {"retrieval_mode", "xattn"},
                                            {"enable_ada_sparsity", false}, {"use_softmax", false},
                                            {"sink_size", 0}, {"local_window_size", 512}}),
                               "c.json");
  EXPECT_TRUE(k.elastic.present);  // keys alone mark an Elastic checkpoint
  EXPECT_FALSE(k.elastic.enable_ada_sparsity);
  EXPECT_EQ(k.elastic.sparse_mode, SparseMode::xa);
  EXPECT_EQ(k.elastic.retrieval_mode, RetrievalMode::xa);
  EXPECT_FALSE(k.elastic.use_softmax);
  EXPECT_EQ(k.elastic.sink_size, 0);
  EXPECT_EQ(k.elastic.local_window_size, 512);
}

TEST(Config, DefaultsAndOptionalFields) {
  ModelConfig c = config_parse(config_text({{"num_key_value_heads", nullptr}}), "c.json");
  EXPECT_EQ(c.num_kv_heads, 4);  // absent: MHA
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_EQ(c.rope.type, RopeType::standard);
  EXPECT_EQ(c.rope.theta, 10000.0);
  EXPECT_FALSE(c.tie_word_embeddings);
  ModelConfig b = config_parse(config_text({{"attention_bias", true}}), "c.json");
  EXPECT_TRUE(b.attention_bias);
  EXPECT_TRUE(b.attention_out_bias);  // llama: bias on o_proj too
  ModelConfig e = config_parse(config_text({{"eos_token_id", {5, 7}}}), "c.json");
  EXPECT_EQ(e.eos_token_ids, (std::vector<int64_t>{5, 7}));
  ModelConfig y = config_parse(
      config_text({{"rope_parameters", {{"rope_type", "yarn"}, {"factor", 2.0},
                                        {"attention_factor", 1.25}, {"beta_fast", 16},
                                        {"truncate", false}}},
                   {"max_position_embeddings", 300}}),
      "c.json");
  EXPECT_EQ(y.rope.type, RopeType::yarn);
  EXPECT_EQ(y.rope.original_max_position_embeddings, 300);  // from max_position_embeddings
  EXPECT_EQ(y.rope.attention_factor, std::optional<double>(1.25));
  EXPECT_EQ(y.rope.beta_fast, 16.0);
  EXPECT_FALSE(y.rope.truncate);
}

// config_parse must throw elastic::Error whose one-line message names the field.
void expect_field_error(const std::string& text, const std::string& needle) {
  try {
    config_parse(text, "dir/config.json");
    ADD_FAILURE() << "accepted; expected an error mentioning " << needle;
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m.rfind("dir/config.json: ", 0), 0u) << m;
    EXPECT_NE(m.find(needle), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  }
}

// Elastic keys (issue 13 item 4): the reference's XA and block keys and their xa_* spellings,
// pool_size for pool_tokens, defaults recorded; pooling_mode other than ctx_q refused.
TEST(Config, ElasticXattnKeysAndRecordedDefaults) {
  const nlohmann::json paw = {{"model_type", "qwen3"}, {"architectures", {"PawQwen3ForCausalLM"}}};
  ModelConfig d = config_parse(config_text(paw), "c.json");
  EXPECT_EQ(d.elastic.block_size, 128);
  EXPECT_EQ(d.elastic.xa_block, 128);
  EXPECT_EQ(d.elastic.xa_stride, 16);
  EXPECT_EQ(d.elastic.xa_threshold, 0.9);
  EXPECT_EQ(d.elastic.pool_tokens, 100);
  ASSERT_EQ(d.elastic.keys.size(), 12u);
  for (const auto& k : d.elastic.keys) EXPECT_TRUE(k.defaulted) << k.name;

  nlohmann::json j = paw;
  j.merge_patch({{"block_size", 64},
                 {"xattn_stride", 8},
                 {"xattn_threshold", 0.8},
                 {"pool_size", 50},
                 {"sink_size", 0}});
  ModelConfig c = config_parse(config_text(j), "c.json");
  EXPECT_EQ(c.elastic.block_size, 64);
  EXPECT_EQ(c.elastic.xa_block, 64);  // the reference's granularity: block_size for XA too
  EXPECT_EQ(c.elastic.xa_stride, 8);
  EXPECT_EQ(c.elastic.xa_threshold, 0.8);
  EXPECT_EQ(c.elastic.pool_tokens, 50);
  auto key = [&](const std::string& name) {
    for (const auto& k : c.elastic.keys)
      if (k.name == name) return k;
    ADD_FAILURE() << "no key " << name;
    return ElasticConfig::Key{};
  };
  EXPECT_FALSE(key("block_size").defaulted);
  EXPECT_TRUE(key("xattn_block_size").defaulted);
  EXPECT_EQ(key("xattn_threshold").value, "0.8");
  EXPECT_EQ(key("pool_size").value, "50");
  EXPECT_FALSE(key("sink_size").defaulted);
  EXPECT_TRUE(key("use_softmax").defaulted);

  j.merge_patch({{"xattn_block_size", 128},
                 {"xattn_stride", nullptr},
                 {"xa_stride", 32},
                 {"xattn_threshold", nullptr},
                 {"xa_threshold", 0.95}});
  ModelConfig a = config_parse(config_text(j), "c.json");
  EXPECT_EQ(a.elastic.block_size, 64);
  EXPECT_EQ(a.elastic.xa_block, 128);
  EXPECT_EQ(a.elastic.xa_stride, 32);
  EXPECT_EQ(a.elastic.xa_threshold, 0.95);

  nlohmann::json bad = paw;
  bad.merge_patch({{"pooling_mode", "first_token"}});
  expect_field_error(config_text(bad),
                     "field 'pooling_mode' is \"first_token\" (supported: \"ctx_q\")");
  bad = paw;
  bad.merge_patch({{"xattn_threshold", 0}});
  expect_field_error(config_text(bad), "field 'xattn_threshold' must be in (0, 1], got 0");
  bad = paw;
  bad.merge_patch({{"xattn_stride", 0}});
  expect_field_error(config_text(bad), "field 'xattn_stride' must be in [1, ");
  bad = paw;
  bad.merge_patch({{"block_size", "64"}});
  expect_field_error(config_text(bad), "field 'block_size' must be an integer");
}

TEST(Config, RejectsInvalidFields) {
  expect_field_error(config_text({{"hidden_size", nullptr}}), "field 'hidden_size' is missing");
  expect_field_error(config_text({{"hidden_size", "16"}}),
                     "field 'hidden_size' must be an integer, got \"16\"");
  expect_field_error(config_text({{"hidden_size", 16.5}}), "field 'hidden_size' must be an integer");
  expect_field_error(config_text({{"vocab_size", 0}}), "field 'vocab_size' must be in [1, ");
  expect_field_error(config_text({{"vocab_size", 1ll << 40}}), "field 'vocab_size' must be in");
  expect_field_error(config_text({{"vocab_size", 18446744073709551615ull}}),
                     "field 'vocab_size' must be in [1, 16777216], got 18446744073709551615");
  expect_field_error(config_text({{"num_key_value_heads", 3}}),
                     "field 'num_key_value_heads' (3) must divide num_attention_heads (4)");
  expect_field_error(config_text({{"head_dim", 7}}), "field 'head_dim' must be even");
  expect_field_error(config_text({{"hidden_size", 18}}), "field 'head_dim' is missing");
  expect_field_error(config_text({{"model_type", "mistral"}}),
                     "field 'model_type' is \"mistral\" (supported");
  expect_field_error(config_text({{"model_type", "a\nb"}}), "is \"a\\x0Ab\"");
  expect_field_error(config_text({{"model_type", nullptr}}), "field 'model_type' is missing");
  expect_field_error(config_text({{"rms_norm_eps", -1}}), "field 'rms_norm_eps' must be > 0");
  expect_field_error(config_text({{"hidden_act", "gelu"}}), "field 'hidden_act' is \"gelu\"");
  expect_field_error(config_text({{"mlp_bias", true}}), "field 'mlp_bias'");
  expect_field_error(config_text({{"use_sliding_window", true}}), "field 'use_sliding_window'");
  expect_field_error(config_text({{"layer_types", {"sliding_attention"}}}), "field 'layer_types'");
  // One entry per layer, as HF checks (a short list was accepted).
  expect_field_error(config_text({{"layer_types", {"full_attention", "full_attention"}}}),
                     "has 2 entries for num_hidden_layers 1");
  expect_field_error(config_text({{"eos_token_id", 64}}), "field 'eos_token_id' must be in [0, 63]");
  expect_field_error(config_text({{"bos_token_id", -1}}), "field 'bos_token_id'");
  expect_field_error(config_text({{"torch_dtype", "int8"}}), "field 'torch_dtype' is \"int8\"");
  expect_field_error(config_text({{"tie_word_embeddings", 1}}),
                     "field 'tie_word_embeddings' must be true or false");
  expect_field_error(config_text({{"toggle_type", "dense"}}), "field 'toggle_type'");
  expect_field_error(config_text({{"retrieval_mode", "ssa"}}), "field 'retrieval_mode'");
  expect_field_error(config_text({{"sink_size", -1}}), "field 'sink_size'");
  // RoPE, both layouts.
  expect_field_error(config_text({{"rope_parameters", {{"rope_type", "dynamic"}}}}),
                     "field 'rope_parameters.rope_type' is \"dynamic\"");
  expect_field_error(config_text({{"rope_scaling", {{"type", "linear"}, {"factor", 2}}}}),
                     "field 'rope_scaling.type' is \"linear\"");
  expect_field_error(config_text({{"rope_parameters", {{"rope_type", "llama3"}}}}),
                     "field 'rope_parameters.factor' is missing");
  expect_field_error(config_text({{"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8}}}}),
                     "field 'rope_scaling.original_max_position_embeddings' is missing");
  expect_field_error(config_text({{"rope_scaling", {{"rope_type", "yarn"}, {"factor", -2}}}}),
                     "field 'rope_scaling.factor' must be > 0");
  expect_field_error(config_text({{"rope_parameters", {{"rope_type", "yarn"}, {"factor", 2},
                                                       {"original_max_position_embeddings", 8},
                                                       {"beta_fast", 1}, {"beta_slow", 2}}}}),
                     "field 'rope_parameters.beta_fast' must be greater than beta_slow");
  expect_field_error(config_text({{"rope_parameters", {{"partial_rotary_factor", 0.5}}}}),
                     "field 'rope_parameters.partial_rotary_factor'");
  expect_field_error(config_text({{"rope_parameters", 3}}), "field 'rope_parameters' must be an object");
  expect_field_error(config_text({{"rope_theta", "big"}}), "field 'rope_theta' must be a number");
  // Text-level problems.
  std::string inf = config_text({{"rms_norm_eps", 1}});
  inf.replace(inf.find("\"rms_norm_eps\":1"), 16, "\"rms_norm_eps\":1e999");
  expect_field_error(inf, "not valid UTF-8 JSON: number overflow parsing '1e999'");
  expect_field_error("", "not valid UTF-8 JSON");
  expect_field_error("[1]", "expected a JSON object");
  expect_field_error("{\"model_type\": \"ll\xff\"}", "not valid UTF-8 JSON");
}

TEST(Config, LoadErrorsNameThePath) {
  test::TempDir dir;
  try {
    config_load(dir.str());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.str("config.json") + ": no such file"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace elastic

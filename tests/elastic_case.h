// An Elastic checkpoint fixture (../shared/fixtures/hf/elastic-*: case.json, the model, its
// expected.safetensors) as the tests run it: the folder, the attention sizes and router options
// the case sets for the tiny model, and its token ids. Also the calls of a conversation as
// `elastic chat` makes them.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "elastic/attention.h"
#include "elastic/fileio.h"
#include "elastic/router.h"
#include "elastic/safetensors.h"

namespace elastic::test {

struct ElasticCase {
  std::string dir;
  AttnOptions attn;
  RouterOptions router;
  std::vector<int64_t> ids;  // input_ids of expected.safetensors
};

// name: "elastic-qwen3-fa-ssa", ...
inline ElasticCase elastic_case_load(const std::string& name) {
  ElasticCase f;
  f.dir = std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/" + name;
  const nlohmann::json c = nlohmann::json::parse(read_file(f.dir + "/case.json"));
  const auto& o = c["options"];
  f.attn.ssa.block = o["block_size"];
  f.attn.ssa.sink_tokens = o["sink_size"];
  f.attn.ssa.local_tokens = o["local_window_size"];
  f.attn.xa.block = o["xa_block_size"];
  f.attn.xa.stride = o["xa_stride"];
  f.attn.xa.threshold = o["xa_threshold"];
  f.router.pool_tokens = o["pool_tokens"];
  f.router.sparsity_bias = o["sparsity_bias"];
  f.router.retrieval_mode = attn_mode_parse(c["retrieval_mode"], "retrieval_mode");
  f.router.sparse_mode = attn_mode_parse(c["sparse_mode"], "sparse_mode");
  f.ids = WeightStore::open(f.dir + "/expected.safetensors").get("input_ids").to_i64();
  return f;
}

// The lengths of a conversation's model_prefill calls: each turn's new tokens as one call (a
// chunk after the first), then `steps` decode steps (calls of 1 token).
inline std::vector<int64_t> chat_calls(const std::vector<int64_t>& turns, int64_t steps) {
  std::vector<int64_t> calls;
  for (int64_t t : turns) {
    calls.push_back(t);
    calls.insert(calls.end(), static_cast<size_t>(steps), 1);
  }
  return calls;
}

}  // namespace elastic::test

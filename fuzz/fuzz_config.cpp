// libFuzzer target: arbitrary bytes as an HF config.json. config_parse must either reject them
// with elastic::Error or return a ModelConfig whose invariants hold (sizes positive, kv heads
// dividing heads, even head_dim, finite positive RoPE parameters, token ids inside the vocab).
// Any other exception or a broken invariant is a finding.
#include <cmath>
#include <cstdint>
#include <string>

#include "elastic/config.h"
#include "elastic/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  elastic::ModelConfig c;
  try {
    c = elastic::config_parse(text, "fuzz/config.json");
  } catch (const elastic::Error&) {
    return 0;  // clean rejection
  }
  if (c.vocab_size < 1 || c.hidden_size < 1 || c.intermediate_size < 1 || c.num_layers < 1)
    __builtin_trap();
  if (c.num_heads < 1 || c.num_kv_heads < 1 || c.num_heads % c.num_kv_heads != 0) __builtin_trap();
  if (c.head_dim < 2 || c.head_dim % 2 != 0) __builtin_trap();
  if (!(c.rms_norm_eps > 0) || !std::isfinite(c.rms_norm_eps)) __builtin_trap();
  const elastic::RopeConfig& r = c.rope;
  if (!(r.theta > 0) || !std::isfinite(r.theta) || !(r.factor > 0) || !std::isfinite(r.factor))
    __builtin_trap();
  if (r.type != elastic::RopeType::standard && r.original_max_position_embeddings < 1)
    __builtin_trap();
  if (r.attention_factor && !(*r.attention_factor > 0)) __builtin_trap();
  for (int64_t id : c.eos_token_ids)
    if (id < 0 || id >= c.vocab_size) __builtin_trap();
  if (c.bos_token_id && (*c.bos_token_id < 0 || *c.bos_token_id >= c.vocab_size)) __builtin_trap();
  if (c.elastic.sink_size < 0 || c.elastic.local_window_size < 1) __builtin_trap();
  return 0;
}

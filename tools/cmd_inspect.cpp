// elastic inspect MODEL: config summary, tensor list, parameter count and memory.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "cli_options.h"
#include "commands.h"
#include "elastic/config.h"
#include "elastic/error.h"
#include "elastic/safetensors.h"

namespace elastic::cli {

int cmd_inspect(int argc, char** argv) {
  CommandLine cl(
      "inspect", "MODEL [--no-tensors] [--check]",
      "Reads MODEL (an HF folder with config.json and model.safetensors or a sharded\n"
      "model.safetensors.index.json) and prints the configuration (for an Elastic\n"
      "checkpoint its keys, \"(default)\" marking those config.json lacks), every tensor\n"
      "with its dtype and shape, the parameter count and the weight memory. --check also\n"
      "reads every value and exits 1 when a tensor holds NaN or Inf.");
  std::string model;
  bool list = true;
  bool check = false;
  cl.positional("MODEL", model, "HF model folder (or give it as -m MODEL)");
  cl.text("-m,--model", model, "DIR", "HF model folder");
  cl.flag("--no-tensors", list, "print the summary only", false);
  cl.flag("--check", check, "scan every tensor for NaN / Inf (exit 1 if any)");
  if (!cl.parse(argc, argv)) return 0;
  if (model.empty()) throw Error(cl.missing("MODEL"));
  ModelConfig c = config_load(model);
  WeightStore ws = WeightStore::open(model);
  std::printf("model:        %s\n", model.c_str());
  std::printf("model_type:   %s%s\n", c.model_type.c_str(),
              c.elastic.present ? " (Elastic router)" : "");
  std::printf("layers:       %lld\n", (long long)c.num_layers);
  std::printf("hidden:       %lld  ffn: %lld  vocab: %lld\n", (long long)c.hidden_size,
              (long long)c.intermediate_size, (long long)c.vocab_size);
  std::printf("heads:        %lld q / %lld kv, head_dim %lld\n", (long long)c.num_heads,
              (long long)c.num_kv_heads, (long long)c.head_dim);
  const char* rope = c.rope.type == RopeType::standard ? "default"
                     : c.rope.type == RopeType::llama3 ? "llama3"
                                                       : "yarn";
  std::printf("rope:         %s theta %g factor %g\n", rope, c.rope.theta, c.rope.factor);
  std::printf("tied embed:   %s\n", c.tie_word_embeddings ? "yes" : "no");
  if (c.elastic.present) {
    std::printf("elastic keys:\n");
    for (const ElasticConfig::Key& k : c.elastic.keys)
      std::printf("  %-20s %s%s\n", k.name.c_str(), k.value.c_str(),
                  k.defaulted ? " (default)" : "");
  }
  int64_t params = 0;
  uint64_t bytes = 0;
  std::map<std::string, int64_t> by_dtype;
  for (const auto& n : ws.names()) {
    TensorView t = ws.get(n);
    params += t.numel();
    bytes += t.nbytes();
    by_dtype[std::string(dtype_name(t.dtype))] += t.numel();
    if (list)
      std::printf("  %-64s %-5s %s\n", n.c_str(), std::string(dtype_name(t.dtype)).c_str(),
                  shape_str(t.shape).c_str());
  }
  std::printf("tensors:      %zu\n", ws.names().size());
  std::printf("parameters:   %lld (%.3f M)\n", (long long)params, params / 1e6);
  std::printf("weight bytes: %llu (%.2f MiB)\n", (unsigned long long)bytes, bytes / 1048576.0);
  if (!check) return 0;
  // Every value of every tensor, in name order; the count and the first names are reported.
  std::vector<std::string> bad;
  for (const auto& n : ws.names()) {
    const TensorView t = ws.get(n);
    if (t.dtype != DType::f32 && t.dtype != DType::f16 && t.dtype != DType::bf16) continue;
    const std::vector<float> v = t.to_f32();
    if (!std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); }))
      bad.push_back(n);
  }
  if (bad.empty()) {
    std::printf("check:        every value of the %zu tensors is finite\n", ws.names().size());
    return 0;
  }
  std::string first;
  for (size_t i = 0; i < bad.size() && i < 5; ++i) first += (i ? ", " : "") + bad[i];
  std::fprintf(stderr, "elastic inspect: error: %s: %zu tensor%s NaN or Inf: %s%s\n", model.c_str(),
               bad.size(), bad.size() == 1 ? " holds" : "s hold", first.c_str(),
               bad.size() > 5 ? ", ..." : "");
  return 1;
}

}  // namespace elastic::cli

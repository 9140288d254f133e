// elastic inspect MODEL: config summary, tensor list, parameter count and memory.
#include <cstdio>
#include <map>
#include <string>

#include "cli_options.h"
#include "commands.h"
#include "elastic/config.h"
#include "elastic/error.h"
#include "elastic/safetensors.h"

namespace elastic::cli {

int cmd_inspect(int argc, char** argv) {
  CommandLine cl(
      "inspect", "MODEL [--no-tensors]",
      "Reads MODEL (an HF folder with config.json and model.safetensors or a sharded\n"
      "model.safetensors.index.json) and prints the configuration, every tensor with its\n"
      "dtype and shape, the parameter count and the weight memory.");
  std::string model;
  bool list = true;
  cl.positional("MODEL", model, "HF model folder (or give it as -m MODEL)");
  cl.text("-m,--model", model, "DIR", "HF model folder");
  cl.flag("--no-tensors", list, "print the summary only", false);
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
  return 0;
}

}  // namespace elastic::cli

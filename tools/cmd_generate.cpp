// elastic generate: prefill token ids, then sample new tokens until EOS or -n.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_args.h"
#include "commands.h"
#include "elastic/model.h"
#include "elastic/sampling.h"

namespace elastic::cli {

int cmd_generate(int argc, char** argv) {
  std::string model_dir;
  std::vector<int64_t> ids;
  GenerateOptions gen;
  SamplingParams sp;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::printf(
          "usage: elastic generate -m MODEL --input-ids \"1 2 3\" [-n N] [sampling options] [--json]\n\n"
          "Prefills the prompt ids, then generates up to N new token ids, stopping after the\n"
          "model's end-of-sequence id (config eos_token_id). Prints the new ids on stdout as they\n"
          "come, and speed on stderr.\n\n"
          "  -m, --model DIR      HF model folder (config.json + *.safetensors)\n"
          "  --input-ids IDS      prompt token ids, separated by spaces or commas\n"
          "  -n, --n-predict N    new tokens at most (default 32)\n"
          "  --temp T             temperature; 0 = greedy, the default\n"
          "  --top-k K            keep the K most likely tokens (0 = off, default)\n"
          "  --top-p P            keep the smallest set with probability >= P (1 = off, default)\n"
          "  --min-p P            drop tokens less likely than P x the most likely (0 = off)\n"
          "  --seed S             random seed for sampling (default 0); same seed, same output\n"
          "  --ignore-eos         do not stop at the end-of-sequence id\n"
          "  --json               print one JSON object (ids, counts, speed) instead\n"
          "  -t, --threads N      CPU threads (default: all cores)\n"
          "Filters apply in this order: temperature, top-k, top-p, min-p.\n");
      return 0;
    } else if (a == "-m" || a == "--model") {
      model_dir = option_value(argc, argv, i);
    } else if (a == "--input-ids") {
      ids = parse_ids(a, option_value(argc, argv, i));
    } else if (a == "-n" || a == "--n-predict") {
      gen.max_new_tokens = parse_int(a, option_value(argc, argv, i), 0);
    } else if (a == "--temp") {
      sp.temperature = parse_float(a, option_value(argc, argv, i));
    } else if (a == "--top-k") {
      sp.top_k = parse_int(a, option_value(argc, argv, i), 0);
    } else if (a == "--top-p") {
      sp.top_p = parse_float(a, option_value(argc, argv, i));
    } else if (a == "--min-p") {
      sp.min_p = parse_float(a, option_value(argc, argv, i));
    } else if (a == "--seed") {
      sp.seed = static_cast<uint64_t>(parse_int(a, option_value(argc, argv, i), 0));
    } else if (a == "--ignore-eos") {
      gen.stop_at_eos = false;
    } else if (a == "--json") {
      json = true;
    } else if (a == "-t" || a == "--threads") {
      set_threads(parse_int(a, option_value(argc, argv, i), 0));
    } else {
      throw Error("unknown option '" + a + "' (see elastic generate --help)");
    }
  }
  if (model_dir.empty()) throw Error("missing -m MODEL (see elastic generate --help)");
  if (ids.empty()) throw Error("missing --input-ids (see elastic generate --help)");
  Sampler sampler(sp);  // validates the sampling options before the model loads

  Model model = model_load(model_dir);
  Request req = request_start(model);
  GenerateStats st;
  auto print = [&](int64_t tok) {
    if (!json) {
      std::printf("%lld ", (long long)tok);
      std::fflush(stdout);
    }
    return true;
  };
  std::vector<int64_t> out = generate(model, req, ids, gen, sampler, print, &st);
  const double prefill_tps = st.prefill_seconds > 0 ? st.prompt_tokens / st.prefill_seconds : 0;
  const double decode_tps =
      st.decode_seconds > 0 ? (st.generated_tokens - 1) / st.decode_seconds : 0;
  if (json) {
    nlohmann::json j;
    j["model"] = model_dir;
    j["prompt_tokens"] = st.prompt_tokens;
    j["generated_ids"] = out;
    j["generated_tokens"] = st.generated_tokens;
    j["stopped_at_eos"] = st.stopped_at_eos;
    j["prefill_seconds"] = st.prefill_seconds;
    j["decode_seconds"] = st.decode_seconds;
    j["prefill_tokens_per_s"] = prefill_tps;
    j["decode_tokens_per_s"] = decode_tps;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("\n");
    std::fprintf(stderr, "prompt %lld tokens, prefill %.1f tok/s; generated %lld tokens%s, decode %.1f tok/s\n",
                 (long long)st.prompt_tokens, prefill_tps, (long long)st.generated_tokens,
                 st.stopped_at_eos ? " (stopped at EOS)" : "", decode_tps);
  }
  return 0;
}

}  // namespace elastic::cli

// elastic generate: prefill a prompt (token ids or text), then sample new tokens until EOS, a
// stop string or -n. Text prompts stream their continuation as it is decoded.
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli_args.h"
#include "commands.h"
#include "elastic/fileio.h"
#include "elastic/model.h"
#include "elastic/sampling.h"
#include "elastic/tokenizer.h"
#include "elastic_options.h"

namespace elastic::cli {

int cmd_generate(int argc, char** argv) {
  std::string model_dir, tokenizer_path;
  std::vector<int64_t> ids;
  std::optional<std::string> prompt;
  std::vector<std::string> stops;
  GenerateOptions gen;
  SamplingParams sp;
  EncodeOptions enc;
  enc.add_special = true;  // the tokenizer's post-processor (e.g. BOS), as HF does by default
  bool json = false;
  ElasticOptions eo;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::printf(
          "usage: elastic generate -m MODEL (-p TEXT | -f FILE | --input-ids \"1 2 3\") [-n N]\n"
          "                        [sampling options] [Elastic options] [--json]\n\n"
          "Prefills the prompt, then generates up to N new tokens, stopping after the model's\n"
          "end-of-sequence id (config eos_token_id, or the tokenizer's) or at a stop string.\n"
          "A text prompt streams the continuation as text on stdout; an id prompt prints ids.\n"
          "Speed and the request's sparsity report go to stderr.\n\n"
          "  -m, --model DIR      HF model folder (config.json + *.safetensors)\n"
          "  -p, --prompt TEXT    prompt text, encoded with the model's tokenizer\n"
          "  -f, --file FILE      read the prompt text from FILE\n"
          "  --input-ids IDS      prompt token ids, separated by spaces or commas\n"
          "  --tokenizer PATH     tokenizer folder or file (default: the model folder)\n"
          "  --no-add-special     do not apply the tokenizer's post-processor (BOS) to the text\n"
          "  --no-parse-special   treat special-token strings in the text as plain text\n"
          "  --stop STR           stop when the text contains STR (repeatable; not printed)\n"
          "  -n, --n-predict N    new tokens at most (default 32)\n"
          "  --temp T             temperature; 0 = greedy, the default\n"
          "  --top-k K            keep the K most likely tokens (0 = off, default)\n"
          "  --top-p P            keep the smallest set with probability >= P (1 = off, default)\n"
          "  --min-p P            drop tokens less likely than P x the most likely (0 = off)\n"
          "  --seed S             random seed for sampling (default 0); same seed, same output\n"
          "  --ignore-eos         do not stop at the end-of-sequence id\n"
          "  --json               print one JSON object (text, ids, counts, speed, report)\n"
          "  -t, --threads N      CPU threads (default: all cores)\n"
          "Filters apply in this order: temperature, top-k, top-p, min-p.\n\n%s",
          kElasticOptionsHelp);
      return 0;
    } else if (a == "-m" || a == "--model") {
      model_dir = option_value(argc, argv, i);
    } else if (a == "-p" || a == "--prompt") {
      prompt = option_value(argc, argv, i);
    } else if (a == "-f" || a == "--file") {
      prompt = read_file(option_value(argc, argv, i));
    } else if (a == "--input-ids") {
      ids = parse_ids(a, option_value(argc, argv, i));
    } else if (a == "--tokenizer") {
      tokenizer_path = option_value(argc, argv, i);
    } else if (a == "--no-add-special") {
      enc.add_special = false;
    } else if (a == "--no-parse-special") {
      enc.parse_special = false;
    } else if (a == "--stop") {
      stops.push_back(option_value(argc, argv, i));
      if (stops.back().empty()) throw Error("option --stop: the stop string must not be empty");
    } else if (a == "-n" || a == "--n-predict") {
      gen.max_new_tokens = parse_int(a, option_value(argc, argv, i), 0);
    } else if (sampling_options_parse(sp, argc, argv, i)) {
    } else if (a == "--ignore-eos") {
      gen.stop_at_eos = false;
    } else if (a == "--json") {
      json = true;
    } else if (a == "-t" || a == "--threads") {
      set_threads(parse_int(a, option_value(argc, argv, i), 0));
    } else if (!elastic_options_parse(eo, argc, argv, i)) {
      throw Error("unknown option '" + a + "' (see elastic generate --help)");
    }
  }
  if (model_dir.empty()) throw Error("missing -m MODEL (see elastic generate --help)");
  if (prompt && !ids.empty()) throw Error("options --input-ids and -p/-f exclude each other");
  if (!prompt && ids.empty()) throw Error("missing -p TEXT, -f FILE or --input-ids (see elastic generate --help)");
  if (!stops.empty() && !prompt) throw Error("option --stop needs a text prompt (-p or -f)");
  Sampler sampler(sp);  // validates the sampling options before the model loads

  std::optional<Tokenizer> tok;
  if (prompt) {
    tok = Tokenizer::load(tokenizer_path.empty() ? model_dir : tokenizer_path);
    for (int32_t id : tok->encode(*prompt, enc)) ids.push_back(id);
    if (ids.empty()) throw Error("option -p: the prompt encodes to no tokens");
  }

  Model model = model_load(model_dir, elastic_backend(eo));
  if (tok && tok->vocab_size() > model.config.vocab_size)
    throw Error(tok->source() + ": tokenizer has " + std::to_string(tok->vocab_size()) +
                " ids but the model's vocab_size is " + std::to_string(model.config.vocab_size) +
                " (wrong --tokenizer?)");
  ElasticSetup setup = elastic_setup(eo, model.config, model_dir);
  Request req = elastic_request_start(model, setup);
  // A model config without eos_token_id stops at the tokenizer's end token.
  if (tok && model.config.eos_token_ids.empty() && tok->eos_id())
    model.config.eos_token_ids.push_back(*tok->eos_id());

  std::optional<StreamDecoder> stream;
  if (tok) stream.emplace(*tok);
  StopMatcher stop(stops);
  std::string text;  // the continuation shown (stop string excluded)
  auto show = [&](const std::string& piece) {
    text += piece;
    if (!json) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
  };
  auto on_token = [&](int64_t id) {
    if (!tok) {
      if (!json) {
        std::printf("%lld ", (long long)id);
        std::fflush(stdout);
      }
      return true;
    }
    const bool eos = gen.stop_at_eos && std::find(model.config.eos_token_ids.begin(),
                                                  model.config.eos_token_ids.end(),
                                                  id) != model.config.eos_token_ids.end();
    if (!eos) show(stop.push(stream->push(static_cast<int32_t>(id))));
    return !stop.stopped();
  };
  GenerateStats st;
  std::vector<int64_t> out = generate(model, req, ids, gen, sampler, on_token, &st);
  if (tok && !stop.stopped()) show(stop.push(stream->finish()) + stop.finish());

  const double prefill_tps = st.prefill_seconds > 0 ? st.prompt_tokens / st.prefill_seconds : 0;
  const double decode_tps =
      st.decode_seconds > 0 ? (st.generated_tokens - 1) / st.decode_seconds : 0;
  const RequestReport report = elastic_request_report(model, req, st.prompt_tokens);
  if (!eo.routing_map.empty()) report_write_routing_map_png(report, eo.routing_map);
  if (json) {
    nlohmann::json j;
    j["model"] = model_dir;
    j["prompt_tokens"] = st.prompt_tokens;
    j["prompt_ids"] = ids;
    j["generated_ids"] = out;
    if (tok) j["text"] = text;
    if (stop.stopped()) j["stop"] = stop.matched();
    j["generated_tokens"] = st.generated_tokens;
    j["stopped_at_eos"] = st.stopped_at_eos;
    j["prefill_seconds"] = st.prefill_seconds;
    j["decode_seconds"] = st.decode_seconds;
    j["prefill_tokens_per_s"] = prefill_tps;
    j["decode_tokens_per_s"] = decode_tps;
    j["policy"] = setup.description;
    j["report"] = report_json(report);
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("\n");
    std::fflush(stdout);  // the newline before the stderr summary when both go to a terminal
    std::fprintf(stderr,
                 "prompt %lld tokens, prefill %.1f tok/s; generated %lld tokens%s, decode %.1f tok/s\n",
                 (long long)st.prompt_tokens, prefill_tps, (long long)st.generated_tokens,
                 st.stopped_at_eos ? " (stopped at EOS)" : stop.stopped() ? " (stop string)" : "",
                 decode_tps);
    std::fprintf(stderr,
                 "sparsity: omega_msr %.3f, omega_esr %.3f (all layers); KV cache %.1f%% of dense, "
                 "attention FLOPs %.1f%% of dense\n",
                 report.omega_msr, report.omega_esr_all,
                 report.kv_bytes_dense ? 100.0 * report.kv_bytes / report.kv_bytes_dense : 100.0,
                 report.attn_flops_dense > 0 ? 100.0 * report.attn_flops / report.attn_flops_dense : 100.0);
  }
  return 0;
}

}  // namespace elastic::cli

// elastic generate: prefill a prompt (token ids or text), then sample new tokens until EOS, a
// stop string or -n. The prompt is echoed, then the continuation streams as it is decoded (as
// llama-cli does); the prompt and -n are checked against the context before anything runs.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli_options.h"
#include "commands.h"
#include "elastic/fileio.h"
#include "elastic/model.h"
#include "elastic/report.h"
#include "elastic/safetensors.h"
#include "elastic/sampling.h"
#include "elastic/tensor_parallel.h"
#include "elastic/tokenizer.h"
#include "elastic_options.h"
#include "generation_cli.h"

namespace elastic::cli {

int cmd_generate(int argc, char** argv) {
  CommandLine cl(
      "generate",
      "-m MODEL (-p TEXT | -f FILE | --input-ids \"1 2 3\") [-n N]\n"
      "                        [sampling options] [Elastic options] [--json]",
      "Prefills the prompt, then generates up to N new tokens, stopping after the model's\n"
      "end-of-sequence id (config eos_token_id, or the tokenizer's) or at a stop string.\n"
      "The prompt is echoed on stdout (--no-display-prompt: not), then a text prompt's\n"
      "continuation streams as text; an id prompt prints ids. Prompt + N must fit in the\n"
      "context (-c, default the model's max_position_embeddings). A long prompt shows its\n"
      "prefill progress on stderr; load time, speed (tokens/s, ms/token) and the request's\n"
      "sparsity report follow there. --json: finish_reason is eos, stop (a stop string) or\n"
      "length (N reached).");
  ModelOptions mo;
  std::vector<int64_t> ids;
  std::optional<std::string> prompt;
  std::vector<std::string> stops;
  GenerateOptions gen;
  SamplingParams sp;
  EncodeOptions enc;
  enc.add_special = true;  // the tokenizer's post-processor (e.g. BOS), as HF does by default
  bool json = false, display_prompt = true;
  ContextOptions ctx_opt;
  int64_t threads = 0;
  std::string backend = "cpu";
  ElasticOptions eo;
  model_options_add(cl, mo, /*tokenizer=*/true);
  cl.text("-p,--prompt", prompt, "TEXT", "prompt text, encoded with the model's tokenizer");
  cl.custom("-f,--file", "FILE", "read the prompt text from FILE",
            [&prompt](const std::string& path) { prompt = read_file(path); });
  input_ids_option_add(cl, ids);
  cl.flag("--no-add-special", enc.add_special,
          "do not apply the tokenizer's post-processor (BOS) to the text", false);
  cl.flag("--no-parse-special", enc.parse_special,
          "treat special-token strings in the text as plain text", false);
  cl.custom("--stop", "STR", "stop when the text contains STR (repeatable; not printed)",
            [&stops](const std::string& v) {
              if (v.empty()) throw Error("option --stop: the stop string must not be empty");
              stops.push_back(v);
            });
  cl.integer("-n,--n-predict", gen.max_new_tokens, "N", "new tokens at most (default 32)", {0});
  cl.flag("--ignore-eos", gen.stop_at_eos, "do not stop at the end-of-sequence id", false);
  context_options_add(cl, ctx_opt, /*truncate=*/true);
  cl.flag("--no-display-prompt", display_prompt, "do not echo the prompt before the output", false);
  json_option_add(cl, json, "print one JSON object (text, ids, counts, speed, report)");
  threads_option_add(cl, threads);
  backend_option_add(cl, backend);
  int64_t tp = 1;
  cl.integer("--tp", tp, "N",
             "tensor parallelism: N ranks (threads of this process, CPU),\n"
             "each holding 1/N of the KV heads, query heads and MLP\n"
             "columns; the -t threads are shared among them (default 1)",
             {1});
  sampling_options_add(cl, sp);
  elastic_options_add(cl, eo);
  if (!cl.parse(argc, argv)) return 0;
  set_threads(threads);

  if (mo.dir.empty()) throw Error(cl.missing("-m MODEL"));
  if (prompt && !ids.empty()) throw Error("options --input-ids and -p/-f exclude each other");
  if (!prompt && ids.empty()) throw Error(cl.missing("-p TEXT, -f FILE or --input-ids"));
  if (!stops.empty() && !prompt) throw Error("option --stop needs a text prompt (-p or -f)");
  Sampler sampler(sp);  // validates the sampling options before the model loads

  std::optional<Tokenizer> tok;
  if (prompt) tok = Tokenizer::load(mo.tokenizer_path());

  // The whole model's config: a TP rank's shard holds 1/tp of its heads.
  ModelConfig config = config_load(mo.dir);
  if (tok && tok->vocab_size() > config.vocab_size)
    throw Error(tok->source() + ": tokenizer has " + std::to_string(tok->vocab_size()) +
                " ids but the model's vocab_size is " + std::to_string(config.vocab_size) +
                " (wrong --tokenizer?)");
  if (tp > 1) tp_validate(config, static_cast<int>(tp), mo.dir);
  const int64_t ctx = context_size(ctx_opt, config);
  const std::string context_hint = "shorten it, lower -n, or pass --truncate to keep its end";
  const int64_t room = context_room(ctx, gen.max_new_tokens);
  if (prompt) {
    if (!ctx_opt.truncate)  // a text far beyond the context fails before its full encoding
      context_check_text(*tok, *prompt, enc, room, "the prompt", context_hint);
    if (prompt->size() >= kLongTextBytes)
      std::fprintf(stderr, "generate: encoding %.1f MB of prompt text ...\n", prompt->size() / 1e6);
    for (int32_t id : tok->encode(*prompt, enc)) ids.push_back(id);
    if (ids.empty()) throw Error("option -p: the prompt encodes to no tokens");
  }
  const size_t prompt_given = ids.size();
  if (ctx_opt.truncate)
    context_truncate(ids, ctx, gen.max_new_tokens);
  else
    context_check(ctx, 0, static_cast<int64_t>(ids.size()), gen.max_new_tokens, "the prompt",
                  context_hint);
  // A model config without eos_token_id stops at the tokenizer's end token.
  if (tok && config.eos_token_ids.empty() && tok->eos_id())
    config.eos_token_ids.push_back(*tok->eos_id());
  const std::vector<int64_t>& eos_ids = config.eos_token_ids;

  // What a rank's tokens become: the text after stop strings, shown by the lead rank only. Every
  // TP rank samples the same ids from the same (all-reduced) logits with the same seed, and
  // decides the same stops from its own copy.
  struct Output {
    std::optional<StreamDecoder> stream;
    StopMatcher stop{{}};
    std::string text;  // the continuation shown (stop string excluded)
    bool lead = true;  // prints
  };
  auto show = [&](Output& o, const std::string& piece) {
    o.text += piece;
    if (!json && o.lead) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
  };
  auto on_token = [&](Output& o, int64_t id) {
    if (!tok) {
      if (!json && o.lead) {
        std::printf("%lld ", (long long)id);
        std::fflush(stdout);
      }
      return true;
    }
    const bool eos =
        gen.stop_at_eos && std::find(eos_ids.begin(), eos_ids.end(), id) != eos_ids.end();
    if (!eos) show(o, o.stop.push(o.stream->push(static_cast<int32_t>(id))));
    return !o.stop.stopped();
  };
  // The model (tp 1) or its shards, and each rank's routing (a static head list sliced to its
  // heads), made before the prompt is echoed: a model or routing error ends the command there.
  const auto load_start = std::chrono::steady_clock::now();
  std::vector<std::shared_ptr<TpComm>> comms;
  std::vector<Model> models;
  std::vector<RoutingSetup> setups;
  if (tp == 1) {
    models.push_back(model_load(mo.dir, backend_create(backend)));
  } else {
    comms = tp_group_in_process(static_cast<int>(tp));
    for (const std::shared_ptr<TpComm>& comm : comms)
      models.push_back(model_load_tp(mo.dir, comm, backend_create(backend)));
  }
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();
  const WeightStore weights = WeightStore::open(mo.dir);
  for (int r = 0; r < static_cast<int>(tp); ++r) {
    models[size_t(r)].config.eos_token_ids = eos_ids;
    setups.push_back(routing_setup(eo.routing, config, weights));
    tp_routing_shard(setups.back(), r, static_cast<int>(tp));
  }

  if (!json && display_prompt) {
    if (tok && ids.size() == prompt_given) {
      std::fwrite(prompt->data(), 1, prompt->size(), stdout);
    } else if (tok) {  // truncated: what the model sees
      const std::vector<int32_t> kept(ids.begin(), ids.end());
      const std::string shown = tok->decode(kept, /*skip_special=*/true);
      std::fwrite(shown.data(), 1, shown.size(), stdout);
    } else {
      for (int64_t id : ids) std::printf("%lld ", (long long)id);
    }
    std::fflush(stdout);
  }

  // One rank's generation (the whole model's when tp is 1): its request, its sampler and its
  // own output.
  struct RankResult {
    Output output;
    std::vector<int64_t> out;
    GenerateStats st;
    TpRouting routing;
    AttnOptions attn;
  };
  std::vector<RankResult> results(static_cast<size_t>(tp));
  auto run_rank = [&](int rank) {
    RankResult& r = results[static_cast<size_t>(rank)];
    Model& model = models[static_cast<size_t>(rank)];
    Request req = request_start(model, setups[static_cast<size_t>(rank)]);
    r.output.lead = rank == 0;
    r.output.stop = StopMatcher(stops);
    if (tok) r.output.stream.emplace(*tok);
    Sampler sampler(sp);
    GenerateOptions g = gen;
    if (rank == 0) g.on_prefill_layer = prefill_progress(static_cast<int64_t>(ids.size()));
    Output& o = r.output;
    r.out = generate(
        model, req, ids, g, sampler, [&](int64_t id) { return on_token(o, id); }, &r.st);
    if (tok && !o.stop.stopped()) show(o, o.stop.push(o.stream->finish()) + o.stop.finish());
    r.routing = {req.routes, req.prefill_stats};
    r.attn = req.attn;
  };
  if (tp == 1) {
    run_rank(0);
  } else {
    const int total = threads > 0 ? static_cast<int>(threads) : omp_get_max_threads();
    tp_run(comms, total / static_cast<int>(tp),
           [&](std::shared_ptr<TpComm> comm) { run_rank(comm->rank()); });
  }
  RankResult& lead = results[0];
  const GenerateStats& st = lead.st;
  const std::vector<int64_t>& out = lead.out;
  const std::string& text = lead.output.text;
  const StopMatcher& stop = lead.output.stop;
  std::vector<TpRouting> ranks;
  for (const RankResult& r : results) ranks.push_back(r.routing);
  const TpRouting whole = tp == 1 ? lead.routing : tp_gather_routing(ranks);
  const GenerationSpeed speed = generation_speed(st);
  const char* finish_reason = st.stopped_at_eos ? "eos" : stop.stopped() ? "stop" : "length";
  const RequestReport report = report_build(config.num_heads, config.num_kv_heads, config.head_dim,
                                            st.prompt_tokens, whole.routes, whole.stats, lead.attn);
  if (!eo.routing_map.empty()) report_write_routing_map_png(report, eo.routing_map);
  if (json) {
    nlohmann::json j;
    j["model"] = mo.dir;
    j["prompt_tokens"] = st.prompt_tokens;
    j["prompt_ids"] = ids;
    j["generated_ids"] = out;
    if (tok) j["text"] = text;
    if (stop.stopped()) j["stop"] = stop.matched();
    j["generated_tokens"] = st.generated_tokens;
    j["finish_reason"] = finish_reason;
    j["stopped_at_eos"] = st.stopped_at_eos;
    j["context_size"] = ctx;
    j["load_seconds"] = load_seconds;
    j["prefill_seconds"] = st.prefill_seconds;
    j["decode_seconds"] = st.decode_seconds;
    j["prefill_tokens_per_s"] = speed.prefill_tokens_per_s;
    j["prefill_ms_per_token"] = speed.prefill_ms_per_token;
    j["decode_tokens_per_s"] = speed.decode_tokens_per_s;
    j["decode_ms_per_token"] = speed.decode_ms_per_token;
    j["policy"] = setups[0].description;
    j["tp"] = tp;
    j["report"] = report_json(report);
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("\n");
    std::fflush(stdout);  // the newline before the stderr summary when both go to a terminal
    std::fprintf(stderr,
                 "load %.2f s; prompt %lld tokens: prefill %.1f tok/s (%.2f ms/token); generated "
                 "%lld tokens (finish: %s): decode %.1f tok/s (%.2f ms/token)\n",
                 load_seconds, (long long)st.prompt_tokens, speed.prefill_tokens_per_s,
                 speed.prefill_ms_per_token, (long long)st.generated_tokens, finish_reason,
                 speed.decode_tokens_per_s, speed.decode_ms_per_token);
    std::fprintf(
        stderr,
        "sparsity: omega_msr %.3f, omega_esr %.3f (all layers); KV cache %.1f%% of dense "
        "(decode KV %s), attention FLOPs %.1f%% of dense\n",
        report.omega_msr, report.omega_esr_all,
        report.kv_bytes_dense ? 100.0 * report.kv_bytes / report.kv_bytes_dense : 100.0,
        decode_kv_name(report.decode_kv),
        report.attn_flops_dense > 0 ? 100.0 * report.attn_flops / report.attn_flops_dense : 100.0);
  }
  return 0;
}

}  // namespace elastic::cli

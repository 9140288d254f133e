// elastic chat: interactive conversation. Each user line is formatted with the model's chat
// template (Qwen ChatML or Llama 3 headers), only the new tokens are prefilled into the same
// request (its KV cache and routing decisions carry over), and the reply streams as text. A turn
// whose message does not fit in the context is refused before its prefill (the chat goes on); a
// reply stops when the context is full.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "cli_options.h"
#include "commands.h"
#include "elastic/chat.h"
#include "elastic/model.h"
#include "elastic/sampling.h"
#include "elastic/tokenizer.h"
#include "elastic_options.h"
#include "generation_cli.h"

namespace elastic::cli {

int cmd_chat(int argc, char** argv) {
  CommandLine cl(
      "chat", "-m MODEL [--system TEXT] [--chat-template chatml|llama3] [options]",
      "Interactive chat on stdin/stdout: type a message and press Enter; the reply streams\n"
      "back. An empty line or end of input (Ctrl-D) ends the chat; '/reset' starts over.\n"
      "The conversation is kept in one request, so each turn prefills only its new tokens.\n"
      "It must fit in the context (-c, default the model's max_position_embeddings): a\n"
      "message that does not is refused, and a reply stops when the context is full.");
  ModelOptions mo;
  std::string template_name;
  std::optional<std::string> system;
  GenerateOptions gen;
  gen.max_new_tokens = 512;
  ContextOptions ctx_opt;
  SamplingParams sp;
  int64_t threads = 0;
  std::string backend = "cpu";
  ElasticOptions eo;
  model_options_add(cl, mo, /*tokenizer=*/true, "HF model folder with its tokenizer");
  cl.choice("--chat-template", template_name, {"chatml", "llama3"},
            "chatml (Qwen) or llama3 (default: detected from tokenizer_config.json)");
  cl.text("--system", system, "TEXT", "system prompt");
  cl.integer("-n,--n-predict", gen.max_new_tokens, "N",
             "reply tokens at most per turn (default 512)", {1});
  context_options_add(cl, ctx_opt, /*truncate=*/false);
  threads_option_add(cl, threads);
  backend_option_add(cl, backend);
  sampling_options_add(cl, sp);
  elastic_options_add(cl, eo);
  if (!cl.parse(argc, argv)) return 0;
  set_threads(threads);
  if (mo.dir.empty()) throw Error(cl.missing("-m MODEL"));
  Sampler sampler(sp);
  const std::string& tok_path = mo.tokenizer_path();
  const Tokenizer tok = Tokenizer::load(tok_path);
  ChatFormat format;
  if (template_name.empty())
    format = chat_format_detect(tok_path);
  else
    format.kind = chat_template_from_name(template_name);

  Model model = model_load(mo.dir, backend_create(backend));
  const int64_t ctx = context_size(ctx_opt, model.config);
  const RoutingSetup setup = routing_setup(eo.routing, model.config, WeightStore::open(mo.dir));
  const std::vector<std::string> end_of_turn = chat_end_of_turn(format.kind);
  // A turn ends at the template's end-of-turn token or the model's EOS.
  std::vector<int64_t> stop_ids = model.config.eos_token_ids;
  for (const auto& s : end_of_turn)
    if (auto id = tok.token_to_id(s)) stop_ids.push_back(*id);
  model.config.eos_token_ids = stop_ids;

  std::vector<ChatMessage> messages;
  if (system) messages.push_back({"system", *system});
  std::optional<Request> req;
  std::vector<int64_t> in_cache;  // the token ids the request holds
  std::string line;
  std::fprintf(stderr,
               "elastic chat: %s (%s template, decode KV %s). Empty line or Ctrl-D ends, /reset "
               "clears.\n",
               mo.dir.c_str(), std::string(chat_template_name(format.kind)).c_str(),
               decode_kv_name(setup.attn.decode_kv));
  while (true) {
    std::fprintf(stderr, "> ");
    if (!std::getline(std::cin, line) || line.empty()) break;
    if (line == "/reset") {
      messages.resize(system ? 1 : 0);
      req.reset();
      in_cache.clear();
      continue;
    }
    messages.push_back({"user", line});
    // The message and at least one reply token must fit; the reply stops when the context is
    // full. A message far beyond the context fails before its full encoding.
    std::vector<int64_t> full;
    bool extends = false;
    try {
      const std::string hint = "send a shorter message or /reset";
      context_check_text(tok, line, EncodeOptions{}, context_room(ctx, 1), "the message", hint);
      for (int32_t id : tok.encode(chat_format(format, messages, /*add_generation_prompt=*/true)))
        full.push_back(id);
      // Prefill only what the cache does not hold yet; start over if the template rewrote history.
      extends = req && full.size() > in_cache.size() &&
                std::equal(in_cache.begin(), in_cache.end(), full.begin());
      const int64_t held = extends ? static_cast<int64_t>(in_cache.size()) : 0;
      context_check(ctx, held, static_cast<int64_t>(full.size()) - held, 1, "the conversation",
                    hint);
    } catch (const Error& e) {
      std::fprintf(stderr, "elastic chat: error: %s\n", e.what());
      messages.pop_back();
      continue;
    }
    if (!extends) {
      req.emplace(request_start(model, setup));
      in_cache.clear();
    }
    std::vector<int64_t> fresh(full.begin() + static_cast<int64_t>(in_cache.size()), full.end());
    GenerateOptions turn = gen;
    const int64_t room = ctx > 0 ? ctx - static_cast<int64_t>(full.size()) : gen.max_new_tokens;
    turn.max_new_tokens = std::min(gen.max_new_tokens, room);
    turn.on_prefill_layer = prefill_progress(static_cast<int64_t>(fresh.size()));
    StreamDecoder stream(tok, /*skip_special=*/true);
    std::string reply;
    auto on_token = [&](int64_t id) {
      if (std::find(stop_ids.begin(), stop_ids.end(), id) != stop_ids.end()) return true;
      std::string piece = stream.push(static_cast<int32_t>(id));
      reply += piece;
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
      return true;
    };
    GenerateStats st;
    std::vector<int64_t> out = generate(model, *req, fresh, turn, sampler, on_token, &st);
    std::string tail = stream.finish();
    reply += tail;
    std::fwrite(tail.data(), 1, tail.size(), stdout);
    std::printf("\n");
    std::fflush(stdout);
    in_cache = full;
    // The last sampled token was returned but not yet fed through the model.
    if (!out.empty()) in_cache.insert(in_cache.end(), out.begin(), out.end() - 1);
    messages.push_back({"assistant", reply});
    const bool full_context =
        !st.stopped_at_eos && st.generated_tokens == room && room < gen.max_new_tokens;
    std::fprintf(stderr, "[%lld new prompt tokens, %lld reply tokens, %.1f tok/s%s]\n",
                 (long long)fresh.size(), (long long)st.generated_tokens,
                 generation_speed(st).decode_tokens_per_s,
                 full_context ? "; the context is full: /reset to start over" : "");
  }
  return 0;
}

}  // namespace elastic::cli

// elastic chat: interactive conversation. Each user line is formatted with the model's chat
// template (Qwen ChatML or Llama 3 headers), only the new tokens are prefilled into the same
// request (its KV cache and routing decisions carry over), and the reply streams as text.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "cli_args.h"
#include "commands.h"
#include "elastic/chat.h"
#include "elastic/model.h"
#include "elastic/sampling.h"
#include "elastic/tokenizer.h"
#include "elastic_options.h"

namespace elastic::cli {

int cmd_chat(int argc, char** argv) {
  std::string model_dir, tokenizer_path, template_name;
  std::optional<std::string> system;
  GenerateOptions gen;
  gen.max_new_tokens = 512;
  SamplingParams sp;
  ElasticOptions eo;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::printf(
          "usage: elastic chat -m MODEL [--system TEXT] [--chat-template chatml|llama3] [options]\n\n"
          "Interactive chat on stdin/stdout: type a message and press Enter; the reply streams\n"
          "back. An empty line or end of input (Ctrl-D) ends the chat; '/reset' starts over.\n"
          "The conversation is kept in one request, so each turn prefills only its new tokens.\n\n"
          "  -m, --model DIR          HF model folder with its tokenizer\n"
          "  --tokenizer PATH         tokenizer folder or file (default: the model folder)\n"
          "  --chat-template NAME     chatml (Qwen) or llama3 (default: detected from\n"
          "                           tokenizer_config.json)\n"
          "  --system TEXT            system prompt\n"
          "  -n, --n-predict N        reply tokens at most per turn (default 512)\n"
          "  --temp T, --top-k K, --top-p P, --min-p P, --seed S   sampling (default greedy)\n"
          "  -t, --threads N          CPU threads (default: all cores)\n\n%s",
          kElasticOptionsHelp);
      return 0;
    } else if (a == "-m" || a == "--model") {
      model_dir = option_value(argc, argv, i);
    } else if (a == "--tokenizer") {
      tokenizer_path = option_value(argc, argv, i);
    } else if (a == "--chat-template") {
      template_name = option_value(argc, argv, i);
    } else if (a == "--system") {
      system = option_value(argc, argv, i);
    } else if (a == "-n" || a == "--n-predict") {
      gen.max_new_tokens = parse_int(a, option_value(argc, argv, i), 1);
    } else if (sampling_options_parse(sp, argc, argv, i)) {
    } else if (a == "-t" || a == "--threads") {
      set_threads(parse_int(a, option_value(argc, argv, i), 0));
    } else if (!elastic_options_parse(eo, argc, argv, i)) {
      throw Error("unknown option '" + a + "' (see elastic chat --help)");
    }
  }
  if (model_dir.empty()) throw Error("missing -m MODEL (see elastic chat --help)");
  Sampler sampler(sp);
  const std::string tok_path = tokenizer_path.empty() ? model_dir : tokenizer_path;
  const Tokenizer tok = Tokenizer::load(tok_path);
  ChatFormat format;
  if (template_name.empty()) format = chat_format_detect(tok_path);
  else format.kind = chat_template_from_name(template_name);

  Model model = model_load(model_dir, elastic_backend(eo));
  ElasticSetup setup = elastic_setup(eo, model.config, model_dir);
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
  std::fprintf(stderr, "elastic chat: %s (%s template). Empty line or Ctrl-D ends, /reset clears.\n",
               model_dir.c_str(), std::string(chat_template_name(format.kind)).c_str());
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
    const std::string prompt_text = chat_format(format, messages, /*add_generation_prompt=*/true);
    std::vector<int64_t> full;
    for (int32_t id : tok.encode(prompt_text)) full.push_back(id);
    // Prefill only what the cache does not hold yet; start over if the template rewrote history.
    const bool extends = req && full.size() > in_cache.size() &&
                         std::equal(in_cache.begin(), in_cache.end(), full.begin());
    if (!extends) {
      req.emplace(elastic_request_start(model, setup));
      in_cache.clear();
    }
    std::vector<int64_t> fresh(full.begin() + static_cast<int64_t>(in_cache.size()), full.end());
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
    std::vector<int64_t> out = generate(model, *req, fresh, gen, sampler, on_token, &st);
    std::string tail = stream.finish();
    reply += tail;
    std::fwrite(tail.data(), 1, tail.size(), stdout);
    std::printf("\n");
    std::fflush(stdout);
    in_cache = full;
    // The last sampled token was returned but not yet fed through the model.
    if (!out.empty()) in_cache.insert(in_cache.end(), out.begin(), out.end() - 1);
    messages.push_back({"assistant", reply});
    const double decode_tps = st.decode_seconds > 0 ? (st.generated_tokens - 1) / st.decode_seconds : 0;
    std::fprintf(stderr, "[%lld new prompt tokens, %lld reply tokens, %.1f tok/s]\n",
                 (long long)fresh.size(), (long long)st.generated_tokens, decode_tps);
  }
  return 0;
}

}  // namespace elastic::cli

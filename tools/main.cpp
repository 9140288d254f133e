// elastic: the command-line front end. Errors from the library are printed as one line and
// turned into a non-zero exit code here (library code never exits).
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "commands.h"
#include "elastic/error.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* help;
};

const Command kCommands[] = {
    {"inspect", elastic::cli::cmd_inspect, "config summary, tensors, parameter count, memory"},
    {"tokenize", elastic::cli::cmd_tokenize, "text (stdin) to token ids; --json for JSON lines"},
    {"detokenize", elastic::cli::cmd_detokenize, "token ids to text"},
    {"logits", elastic::cli::cmd_logits, "logits (and hidden states) of token ids, to safetensors"},
    {"generate", elastic::cli::cmd_generate, "generate text (or ids) from a prompt, streaming; sparsity report"},
    {"chat", elastic::cli::cmd_chat, "interactive chat with the model's chat template"},
    {"route", elastic::cli::cmd_route, "Elastic Attention routing map, sparsity ratios, KV/FLOP savings"},
    {"bench", elastic::cli::cmd_bench, "prefill/decode speed vs measured bandwidth and FMA peak"},
};

void usage(FILE* f) {
  std::fprintf(f,
               "usage: elastic COMMAND [options]\n\n"
               "Elastic: long-context LLM inference with Elastic Attention.\n\ncommands:\n");
  for (const auto& c : kCommands) std::fprintf(f, "  %-11s %s\n", c.name, c.help);
  std::fprintf(f, "\nRun 'elastic COMMAND --help' for the options of a command.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  std::string cmd = argv[1];
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    usage(stdout);
    return 0;
  }
  for (const auto& c : kCommands) {
    if (cmd == c.name) {
      try {
        return c.run(argc - 1, argv + 1);
      } catch (const elastic::Error& e) {
        std::fprintf(stderr, "elastic %s: error: %s\n", c.name, e.what());
        return 1;
      } catch (const std::exception& e) {
        std::fprintf(stderr, "elastic %s: internal error: %s\n", c.name, e.what());
        return 3;
      }
    }
  }
  std::fprintf(stderr, "elastic: unknown command '%s'\n", cmd.c_str());
  usage(stderr);
  return 2;
}

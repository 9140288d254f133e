// elastic: the command-line front end. Errors from the library are printed as one line and
// turned into a non-zero exit code here (library code never exits).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
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
    {"generate", elastic::cli::cmd_generate,
     "generate text (or ids) from a prompt, streaming; sparsity report"},
    {"chat", elastic::cli::cmd_chat, "interactive chat with the model's chat template"},
    {"route", elastic::cli::cmd_route,
     "Elastic Attention routing map, sparsity ratios, KV/FLOP savings"},
    {"bench", elastic::cli::cmd_bench, "prefill/decode speed vs measured bandwidth and FMA peak"},
    {"demo", elastic::cli::cmd_demo,
     "the method on the project's own model: accuracy and sparsity, dense vs static vs Elastic"},
    {"train", elastic::cli::cmd_pretrain,
     "train a small model from scratch on the task suite (the project's own model)"},
    {"train-router", elastic::cli::cmd_train_router,
     "train the Attention Routers of a frozen backbone; writes an Elastic checkpoint"},
    {"train-step", elastic::cli::cmd_train_step,
     "one router-training step on a given batch: loss terms and every gradient"},
    {"eval", elastic::cli::cmd_eval,
     "long-context task suite: accuracy and sparsity per task, length and routing"},
    {"calibrate", elastic::cli::cmd_calibrate,
     "per-head sensitivity scores for the static (DuoAttention-like) baseline"},
    {"serve", elastic::cli::cmd_serve,
     "OpenAI-compatible HTTP server: continuous batching, paged KV, per-request sparsity"},
};

void usage(FILE* f) {
  std::fprintf(f,
               "usage: elastic COMMAND [options]\n"
               "       elastic help COMMAND | elastic --version\n\n"
               "Elastic: long-context LLM inference with Elastic Attention.\n\ncommands:\n");
  for (const auto& c : kCommands) std::fprintf(f, "  %-11s %s\n", c.name, c.help);
  std::fprintf(f,
               "\nRun 'elastic COMMAND --help' (or 'elastic help COMMAND') for the options of a "
               "command.\n");
}

const Command* command_find(const std::string& name) {
  for (const auto& c : kCommands)
    if (name == c.name) return &c;
  return nullptr;
}

// Runs a command; library and option errors become one line on stderr and exit code 1.
int command_run(const Command& c, int argc, char** argv) {
  try {
    return c.run(argc, argv);
  } catch (const elastic::Error& e) {
    std::fprintf(stderr, "elastic %s: error: %s\n", c.name, e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "elastic %s: internal error: %s\n", c.name, e.what());
    return 3;
  }
}

// OpenMP's default wait policy is catastrophic either way on a small machine (docs/perf.md,
// "OpenMP wait policy"): libgomp spins ~300,000 pause iterations (~20 ms here) at every barrier
// before it sleeps, so on cores shared with other busy processes a spinning thread holds the core
// the others need (decode up to 300x slower); OMP_WAIT_POLICY=passive sleeps at once and wakes
// through the kernel (a small model decodes several times slower on an idle machine). A bounded
// spin of kSpinCount iterations (tens of microseconds) keeps most of the idle speed and stays
// close to passive under load. libgomp reads its environment when it loads, before main, so the
// command sets GOMP_SPINCOUNT and runs itself again, once; a user's own OMP_WAIT_POLICY or
// GOMP_SPINCOUNT is left alone. (libomp, for clang builds, reads KMP_BLOCKTIME: 1 ms instead of
// its 200 ms.) When the new image cannot start, the command runs with the runtime's defaults.
constexpr const char* kSpinCount = "300";

void openmp_wait_policy_default(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  setenv("GOMP_SPINCOUNT", kSpinCount, /*overwrite=*/0);
  if (!std::getenv("KMP_BLOCKTIME")) setenv("KMP_BLOCKTIME", "1", 0);
  execv("/proc/self/exe", argv);  // returns only on failure
}

int unknown_command(const std::string& name) {
  std::fprintf(stderr, "elastic: unknown command '%s'\n", name.c_str());
  usage(stderr);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  openmp_wait_policy_default(argv);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const std::string cmd = argv[1];
  if (cmd == "--version") {
    std::printf("elastic %s\n", ELASTIC_VERSION);
    return 0;
  }
  if (cmd == "-h" || cmd == "--help" || (cmd == "help" && argc == 2)) {
    usage(stdout);
    return 0;
  }
  if (cmd == "help") {  // elastic help COMMAND: the command's --help
    const Command* c = command_find(argv[2]);
    if (!c) return unknown_command(argv[2]);
    char help_flag[] = "--help";
    char* help_argv[] = {argv[2], help_flag, nullptr};
    return command_run(*c, 2, help_argv);
  }
  const Command* c = command_find(cmd);
  if (!c) return unknown_command(cmd);
  return command_run(*c, argc - 1, argv + 1);
}

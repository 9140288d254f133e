// Command-line options of the `elastic` command: each command declares its options once, in a
// table built on CLI11 (Debian's libcli11-dev), so that every command checks values the same
// way (integers in range; reals finite and in range; enums against their choices), reports a
// bad command line in one line naming the option, and prints --help in the same layout.
//
// How a command registers its options (cmd_route.cpp is a short complete example):
//
//   int cmd_eval(int argc, char** argv) {  // argv[0] is "eval"
//     CommandLine cl("eval", "-m MODEL [--routing SPEC] [options]",
//                    "Scores MODEL on ... (a paragraph printed under the usage line).");
//     ModelOptions model;
//     std::string spec = "elastic";
//     int64_t samples = 100, threads = 0;
//     bool json = false;
//     model_options_add(cl, model, /*tokenizer=*/true);  // -m/--model, --tokenizer
//     cl.text("--routing", spec, "SPEC", "dense, all-fa, all-sa, elastic or static:FILE");
//     cl.integer("--samples", samples, "N", "examples to score (default 100)", {1, 1000000});
//     threads_option_add(cl, threads);  // -t/--threads
//     json_option_add(cl, json, "print one JSON object");
//     if (!cl.parse(argc, argv)) return 0;  // --help was printed
//     set_threads(threads);
//     if (model.dir.empty()) throw Error(cl.missing("-m MODEL"));
//     const RoutingSetup setup = routing_setup_from_spec(spec, model.dir);
//     ...  // (an ElasticOptions + elastic_options_add gives every Elastic option instead)
//   }
//
// then add it to commands.h and to the command table in main.cpp (which gives it `elastic help
// eval` too). The shared groups (model_options_add, sampling_options_add, threads_option_add,
// backend_option_add, json_option_add, input_ids_option_add, and elastic_options_add in
// elastic_options.h) add to the current --help section, except sampling_options_add and
// elastic_options_add, which open their own and return to "Options"; cl.section("Title") opens
// one for a command's own options.
//
// Values: cl.integer / cl.real check the range given as {min, max} (reals also finiteness;
// RealRange can open either end); cl.choice checks the value against its list; cl.custom hands
// the text to a setter of your own, which throws elastic::Error("option --x: expected ...").
// A scalar option given twice keeps the last value (llama.cpp's habit); cl.texts collects every
// occurrence. Errors reach main as elastic::Error: "elastic CMD: error: ..." and exit code 1.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "elastic/backend.h"
#include "elastic/error.h"
#include "elastic/sampling.h"

namespace elastic::cli {

// Closed integer interval.
struct IntRange {
  int64_t min = 0;
  int64_t max = std::numeric_limits<int64_t>::max();
};

// Interval of finite reals; an open end excludes its bound.
struct RealRange {
  double min = -std::numeric_limits<double>::max();
  double max = std::numeric_limits<double>::max();
  bool min_open = false;
  bool max_open = false;
};

// One command's options and its --help.
class CommandLine {
 public:
  // `command`: the name after `elastic`; `synopsis`: the usage line after "elastic COMMAND ";
  // `description`: a paragraph printed below it.
  CommandLine(std::string command, std::string synopsis, std::string description);
  CommandLine(const CommandLine&) = delete;
  CommandLine& operator=(const CommandLine&) = delete;

  // Options added after this call are listed under `title` in --help.
  void section(std::string title);
  // Text printed at the end of --help (notes on outputs, formats).
  void footer(std::string text);

  // `names`: CLI11 spelling, "-m,--model" or "--json". `metavar` names the value in --help.
  CLI::Option* flag(const std::string& names, bool& target, const std::string& help,
                    bool value = true);
  CLI::Option* text(const std::string& names, std::string& target, const std::string& metavar,
                    const std::string& help);
  CLI::Option* text(const std::string& names, std::optional<std::string>& target,
                    const std::string& metavar, const std::string& help);
  // Repeatable: every occurrence is appended.
  CLI::Option* texts(const std::string& names, std::vector<std::string>& target,
                     const std::string& metavar, const std::string& help);
  CLI::Option* integer(const std::string& names, int64_t& target, const std::string& metavar,
                       const std::string& help, IntRange range);
  CLI::Option* integer(const std::string& names, std::optional<int64_t>& target,
                       const std::string& metavar, const std::string& help, IntRange range);
  CLI::Option* real(const std::string& names, double& target, const std::string& metavar,
                    const std::string& help, RealRange range);
  CLI::Option* real(const std::string& names, std::optional<double>& target,
                    const std::string& metavar, const std::string& help, RealRange range);
  CLI::Option* real(const std::string& names, float& target, const std::string& metavar,
                    const std::string& help, RealRange range);
  // One of `choices`; the metavar is "a|b|c".
  CLI::Option* choice(const std::string& names, std::string& target,
                      const std::vector<std::string>& choices, const std::string& help);
  CLI::Option* choice(const std::string& names, const std::vector<std::string>& choices,
                      const std::string& help, std::function<void(const std::string&)> set);
  // Any value, parsed by `set` (which throws elastic::Error naming the option when it is bad).
  CLI::Option* custom(const std::string& names, const std::string& metavar, const std::string& help,
                      std::function<void(const std::string&)> set);
  // An optional positional argument (`name` in upper case, as shown in --help).
  CLI::Option* positional(const std::string& name, std::string& target, const std::string& help);

  // Parses argv (argv[0] = the command name). Returns true when the command should run, false
  // when --help was printed (to stdout). Throws elastic::Error with one line naming the
  // offending option (unknown ones point to --help).
  bool parse(int argc, char** argv);
  std::string help() const;
  // "missing WHAT (see elastic COMMAND --help)", for a command's own required-option checks.
  std::string missing(const std::string& what) const;
  const std::string& command() const { return command_; }
  CLI::App& app() { return app_; }

 private:
  CLI::Option* add(const std::string& names, const std::string& metavar, const std::string& help,
                   std::function<void(const std::string&)> set);

  std::string command_;
  CLI::App app_;
  std::string section_ = "Options";
};

// The long name of a CLI11 names string: "-n,--n-predict" -> "--n-predict".
std::string option_display_name(const std::string& names);

// Values, as the options parse them; each throws elastic::Error("option OPT: expected ...").
int64_t parse_int(const std::string& opt, const std::string& text, IntRange range);
double parse_real(const std::string& opt, const std::string& text, RealRange range);
// "a, b,c" -> {"a", "b", "c"}: comma-separated items, spaces dropped, empty items skipped.
std::vector<std::string> split_list(const std::string& text);
// "1 2 3" or "1,2,3" -> ids (each >= 0; at least one).
std::vector<int64_t> parse_ids(const std::string& opt, const std::string& text);

// --- Shared option groups ---------------------------------------------------------------------

struct ModelOptions {
  std::string dir;        // -m: HF model folder
  std::string tokenizer;  // --tokenizer: "" = the model folder
  const std::string& tokenizer_path() const { return tokenizer.empty() ? dir : tokenizer; }
};
// -m/--model DIR, and with `tokenizer` --tokenizer PATH, in the current section (add them first).
// `model_help` replaces the default text of -m.
void model_options_add(CommandLine& cl, ModelOptions& o, bool tokenizer,
                       const std::string& model_help = "");

// --temp --top-k --top-p --min-p --seed, with the ranges the Sampler accepts.
void sampling_options_add(CommandLine& cl, SamplingParams& sp);

// -t/--threads N: CPU threads (0 = all cores); apply with set_threads after parsing.
void threads_option_add(CommandLine& cl, int64_t& threads);
void set_threads(int64_t threads);

// --backend cpu|cuda.
void backend_option_add(CommandLine& cl, std::string& backend);
// The compute backend named by --backend. Throws elastic::Error for cuda in a build without the
// CUDA backend or on a machine without a CUDA device.
std::shared_ptr<Backend> backend_create(const std::string& backend);

// --json.
void json_option_add(CommandLine& cl, bool& json, const std::string& help);

// --input-ids IDS: prompt token ids separated by spaces or commas.
void input_ids_option_add(CommandLine& cl, std::vector<int64_t>& ids);

}  // namespace elastic::cli

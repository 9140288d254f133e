// The option table of the real `elastic` binary: --version, `help CMD` == `CMD --help`, the same
// help sections in every command, and one-line errors naming the option for unknown options,
// non-finite or out-of-range numbers, bad enum values and missing values.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cli_run.h"

namespace elastic {
namespace {

const std::string kModel = std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/elastic-qwen3-fa-ssa";
const std::vector<std::string> kCommands = {"inspect",  "tokenize", "detokenize", "logits",
                                            "generate", "chat",     "route",      "bench",
                                            "eval",     "calibrate"};

// A valid command line of `cmd` (logits, generate and route run on the fixture as they are).
std::string runnable(const std::string& cmd) {
  const std::string out = ::testing::TempDir() + "/options_test_never.safetensors";
  if (cmd == "logits") return "logits -m " + kModel + " --input-ids \"1 2 3\" -o " + out;
  if (cmd == "generate") return "generate -m " + kModel + " --input-ids \"1 2 3\" -n 2 --json";
  if (cmd == "route") return "route -m " + kModel + " --input-ids \"1 2 3\" --json";
  if (cmd == "chat") return "chat -m " + kModel;
  return cmd;
}

// The lines of `text` from the one equal to `first` up to the next blank line.
std::string section(const std::string& text, const std::string& first) {
  const size_t begin = text.find("\n" + first + "\n");
  if (begin == std::string::npos) return "";
  const size_t end = text.find("\n\n", begin + 1);
  return text.substr(begin + 1, end == std::string::npos ? std::string::npos : end - begin);
}

void expect_one_line_error(const test::CliResult& r, const std::string& cmd,
                           const std::vector<std::string>& needles, const std::string& args) {
  EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << "\n" << r.err;
  EXPECT_EQ(r.err.rfind("elastic " + cmd + ": error: ", 0), 0u) << args << "\n" << r.err;
  for (const auto& n : needles)
    EXPECT_NE(r.err.find(n), std::string::npos) << args << ": no '" << n << "' in " << r.err;
}

TEST(CliOptions, VersionPrintsTheProjectVersion) {
  const test::CliResult r = test::cli_run("--version");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, std::string("elastic ") + ELASTIC_VERSION + "\n");
}

TEST(CliOptions, HelpCommandEqualsCommandHelp) {
  for (const auto& cmd : kCommands) {
    const test::CliResult a = test::cli_run("help " + cmd), b = test::cli_run(cmd + " --help");
    EXPECT_EQ(a.exit_code, 0) << cmd << ": " << a.err;
    EXPECT_EQ(b.exit_code, 0) << cmd << ": " << b.err;
    EXPECT_EQ(a.out.rfind("usage: elastic " + cmd + " ", 0), 0u) << a.out;
    EXPECT_NE(a.out.find("  -h, --help "), std::string::npos) << a.out;
    EXPECT_EQ(a.out, b.out) << cmd;
    EXPECT_EQ(test::cli_run(cmd + " -h").out, b.out) << cmd;
  }
  const test::CliResult top = test::cli_run("help");
  EXPECT_EQ(top.exit_code, 0);
  for (const auto& cmd : kCommands) EXPECT_NE(top.out.find("  " + cmd + " "), std::string::npos);
  const test::CliResult unknown = test::cli_run("help nosuch");
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.err.find("unknown command 'nosuch'"), std::string::npos) << unknown.err;
}

TEST(CliOptions, SharedGroupsHaveOneHelpLayout) {
  // The same options, registered by the same functions, read the same in every command.
  const std::string elastic_title =
      "Elastic Attention (defaults from the checkpoint's config.json):";
  const std::string route = test::cli_run("route --help").out;
  const std::string elastic = section(route, elastic_title);
  ASSERT_NE(elastic.find("--sparsity-bias B"), std::string::npos) << route;
  for (const char* cmd : {"logits", "generate", "chat"})
    EXPECT_EQ(section(test::cli_run(std::string(cmd) + " --help").out, elastic_title), elastic)
        << cmd;
  const std::string sampling_title =
      "Sampling (filters apply in this order: temperature, top-k, top-p, min-p):";
  const std::string sampling = section(test::cli_run("generate --help").out, sampling_title);
  ASSERT_NE(sampling.find("--min-p P"), std::string::npos);
  EXPECT_EQ(section(test::cli_run("chat --help").out, sampling_title), sampling);
}

TEST(CliOptionsBadInput, ValidCommandLinesRun) {
  // The command lines the error cases below start from: each runs as it is, so every failure
  // below is caused by the one option added to it.
  for (const char* cmd : {"logits", "generate", "route"}) {
    const test::CliResult r = test::cli_run(runnable(cmd) + " --sparsity-bias -1.5 -t 1");
    EXPECT_EQ(r.exit_code, 0) << cmd << ": " << r.err;
  }
  const test::CliResult g = test::cli_run(
      runnable("generate") + " --temp 0.7 --top-k 5 --top-p=0.9 --min-p 0.01 --seed 3");
  EXPECT_EQ(g.exit_code, 0) << g.err;
}

TEST(CliOptionsBadInput, NonFiniteAndOutOfRangeNumbersNameTheOption) {
  struct Case {
    std::string cmd, args, option, expected;
  };
  const std::vector<Case> cases = {
      {"route", "--sparsity-bias nan", "--sparsity-bias", "expected a finite number, got 'nan'"},
      {"route", "--sparsity-bias 1e400", "--sparsity-bias", "finite number, got '1e400'"},
      {"generate", "--sparsity-bias -inf", "--sparsity-bias", "finite number, got '-inf'"},
      {"logits", "--sparsity-bias=inf", "--sparsity-bias", "finite number, got 'inf'"},
      {"generate", "--temp -1", "--temp", "expected a number >= 0, got '-1'"},
      {"generate", "--temp nan", "--temp", "finite number"},
      {"generate", "--temp 1e39", "--temp", "finite number"},  // beyond float
      {"generate", "--top-p 0", "--top-p", "in (0, 1], got '0'"},
      {"generate", "--top-p 1.5", "--top-p", "in (0, 1]"},
      {"generate", "--min-p -0.1", "--min-p", "in [0, 1]"},
      {"generate", "--top-k -2", "--top-k", "an integer >= 0, got '-2'"},
      {"generate", "--top-k 2.5", "--top-k", "an integer >= 0, got '2.5'"},
      {"generate", "--seed -3", "--seed", "an integer >= 0"},
      {"generate", "-n -1", "--n-predict", "an integer >= 0, got '-1'"},
      {"generate", "-n 99999999999999999999", "--n-predict", "99999999999999999999"},
      {"chat", "-n 0", "--n-predict", "an integer >= 1"},
      {"route", "--xa-threshold 0", "--xa-threshold", "in (0, 1], got '0'"},
      {"route", "--xa-threshold 1.01", "--xa-threshold", "in (0, 1]"},
      {"route", "--static-ratio 2", "--static-ratio", "in [0, 1]"},
      {"route", "--block 0", "--block", "an integer in [1, "},
      {"route", "--sink -1", "--sink", "an integer in [0, "},
      {"route", "--pool-tokens 1x", "--pool-tokens", "got '1x'"},
      {"route", "-t -1", "--threads", "an integer in [0, "},
      {"bench", "-p 0", "--n-prompt", "an integer >= 1"},
  };
  for (const Case& c : cases) {
    const std::string args = runnable(c.cmd) + " " + c.args;
    expect_one_line_error(test::cli_run(args), c.cmd, {"option " + c.option + ": ", c.expected},
                          args);
  }
}

TEST(CliOptionsBadInput, EnumsAreCheckedAgainstTheirChoices) {
  const std::vector<std::vector<std::string>> cases = {
      {"route", "--router maybe", "option --router: expected on or off, got 'maybe'"},
      {"generate", "--backend gpu", "option --backend: expected cpu or cuda, got 'gpu'"},
      {"logits", "--retrieval ssa", "option --retrieval: expected fa or xa, got 'ssa'"},
      {"route", "--sparse fa", "option --sparse: expected ssa or xa, got 'fa'"},
      {"chat", "--chat-template zephyr", "option --chat-template: expected chatml or llama3"},
      {"bench", "--step-bandwidth sometimes", "option --step-bandwidth: expected auto, on or off"},
  };
  for (const auto& c : cases) {
    const std::string args = runnable(c[0]) + " " + c[1];
    expect_one_line_error(test::cli_run(args), c[0], {c[2]}, args);
  }
}

TEST(CliOptionsBadInput, UnknownOptionsAndMissingValuesAreNamed) {
  for (const auto& cmd : kCommands) {
    const std::string args = runnable(cmd) + " --no-such-option 3";
    expect_one_line_error(test::cli_run(args), cmd,
                          {"unknown option '--no-such-option'", "elastic " + cmd + " --help"},
                          args);
  }
  const std::string eq = runnable("generate") + " --tmp=0.5";  // a misspelt --temp
  expect_one_line_error(test::cli_run(eq), "generate", {"unknown option '--tmp'"}, eq);
  const std::string stray = runnable("route") + " stray";
  expect_one_line_error(test::cli_run(stray), "route", {"unexpected argument 'stray'"}, stray);
  const std::string after_dashes = runnable("route") + " -- stray";
  expect_one_line_error(test::cli_run(after_dashes), "route", {"unexpected argument 'stray'"},
                        after_dashes);
  const std::string flag_value = runnable("route") + " --json=false";  // not a silent no-op
  expect_one_line_error(test::cli_run(flag_value), "route", {"option --json takes no value"},
                        flag_value);
  for (const char* opt : {"--temp", "-m", "--sparsity-bias"}) {
    const std::string args = runnable("generate") + " " + opt;
    expect_one_line_error(
        test::cli_run(args), "generate",
        {"option " + std::string(opt == std::string("-m") ? "--model" : opt) + " needs a value"},
        args);
  }
}

}  // namespace
}  // namespace elastic

// `elastic eval` and `elastic calibrate` through the real binary: the task list, the JSON of a
// run on TinyStories 656K (dense and all-SA report Omega 0 and 1), export and import, an Elastic
// checkpoint's router beside a calibrated static baseline, and one-line errors naming the file
// and line of a malformed task file or the option at fault.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "cli_run.h"
#include "elastic/eval.h"
#include "elastic/fileio.h"

namespace elastic {
namespace {

using nlohmann::json;

// A path in the test temporary folder, unique to this process (suites may run concurrently).
std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "/" + std::to_string(getpid()) + "_" + name;
}

const std::string kTiny = std::string(ELASTIC_SHARED_DIR) + "/data/tinystories-656k";
const std::string kElastic = std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/elastic-qwen3-fa-ssa";
// Small sizes so that 200-400 token prompts have sparse heads; one thread (a tiny model).
const std::string kSizes = " --sink 32 --local 64 --block 32 -t 1";
const std::string kRun = "eval -m " + kTiny +
                         " --tasks niah_single,repeat_last_line --lengths 200,400 --n 2 --seed 3" +
                         kSizes;

void expect_one_line_error(const test::CliResult& r, const std::string& cmd,
                           const std::vector<std::string>& needles, const std::string& args) {
  EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << "\n" << r.err;
  EXPECT_EQ(r.err.rfind("elastic " + cmd + ": error: ", 0), 0u) << args << "\n" << r.err;
  for (const auto& n : needles)
    EXPECT_NE(r.err.find(n), std::string::npos) << args << ": no '" << n << "' in " << r.err;
}

TEST(EvalCli, ListTasksJson) {
  const test::CliResult r = test::cli_run("eval --list-tasks --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), eval_tasks().size());
  for (size_t i = 0; i < j.size(); ++i) {
    EXPECT_EQ(j[i].size(), 2u) << j[i].dump();
    EXPECT_EQ(j[i]["name"], eval_tasks()[i].name);
    EXPECT_EQ(j[i]["kind"], task_kind_name(eval_tasks()[i].kind));
  }
  EXPECT_NE(test::cli_run("eval --list-tasks").out.find("niah_multikey"), std::string::npos);
}

TEST(EvalCli, JsonShapeAndSparsityOfDenseAndAllSparse) {
  const test::CliResult r = test::cli_run(kRun + " --configs dense,all-sa --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  ASSERT_EQ(j.size(), 1u);
  const json& rows = j.at("results");
  ASSERT_EQ(rows.size(), 8u);  // 2 tasks x 2 lengths x 2 configs
  const std::set<std::string> keys = {"task",      "length",         "config",
                                      "n",         "accuracy",       "omega_msr",
                                      "omega_esr", "omega_esr_last", "prefill_s"};
  for (size_t i = 0; i < rows.size(); ++i) {
    const json& row = rows[i];
    std::set<std::string> got;
    for (const auto& [k, v] : row.items()) got.insert(k);
    EXPECT_EQ(got, keys) << row.dump();
    EXPECT_EQ(row["task"], i < 4 ? "niah_single" : "repeat_last_line");
    EXPECT_EQ(row["length"], i % 4 < 2 ? 200 : 400);
    EXPECT_EQ(row["n"], 2);
    const double acc = row["accuracy"].get<double>();
    EXPECT_TRUE(acc >= 0 && acc <= 1) << acc;
    EXPECT_GT(row["prefill_s"].get<double>(), 0.0);
    if (i % 2 == 0) {
      EXPECT_EQ(row["config"], "dense");
      EXPECT_EQ(row["omega_msr"].get<double>(), 0.0);
      EXPECT_EQ(row["omega_esr"].get<double>(), 0.0);
    } else {
      EXPECT_EQ(row["config"], "all-sa");
      EXPECT_EQ(row["omega_msr"].get<double>(), 1.0);
      EXPECT_GT(row["omega_esr"].get<double>(), 0.3);  // 32 + 64 of 200-400 keys
    }
  }
  // Progress: plain lines on a pipe, the last one at 100 %.
  EXPECT_NE(r.err.find("eval: 16/16 (100%)"), std::string::npos) << r.err;
}

TEST(EvalCli, TableExportAndImport) {
  const std::string path = temp_path("eval_cli_export.jsonl");
  const std::string png = temp_path("eval_cli_plot.png");
  std::filesystem::remove(png);
  const test::CliResult a =
      test::cli_run(kRun + " --configs dense --export " + path + " --plot " + png);
#ifdef ELASTIC_TEST_PLOT
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(read_file(png).substr(1, 3), "PNG");
  EXPECT_NE(a.out.find("plot written to " + png), std::string::npos) << a.out;
#else  // a build without the plot module: the figure is an error naming the path
  expect_one_line_error(a, "eval", {png}, "--plot");
  return;
#endif
  EXPECT_NE(a.out.find("niah_single            200  dense"), std::string::npos) << a.out;
  EXPECT_NE(a.out.find("means over tasks"), std::string::npos) << a.out;
  const std::vector<EvalSample> exported = eval_samples_read_jsonl(path);
  ASSERT_EQ(exported.size(), 8u);
  EXPECT_EQ(exported[0].task, "niah_single");
  EXPECT_EQ(exported[7].length, 400);

  const test::CliResult g = test::cli_run(kRun + " --configs dense --json");
  const test::CliResult i =
      test::cli_run("eval -m " + kTiny + " --import " + path + " --configs dense --json" + kSizes);
  ASSERT_EQ(i.exit_code, 0) << i.err;
  const json gen = json::parse(g.out)["results"], imp = json::parse(i.out)["results"];
  ASSERT_EQ(imp.size(), gen.size());
  for (size_t k = 0; k < gen.size(); ++k)
    for (const char* f : {"task", "length", "config", "n", "accuracy", "omega_msr"})
      EXPECT_EQ(imp[k][f], gen[k][f]) << f << " of row " << k;
}

// A character-level tokenizer (vocabulary 96 < the fixture's 1024) for the Elastic checkpoint.
std::string char_tokenizer() {
  const std::string dir = temp_path("eval_char_tokenizer");
  json vocab = json::object();
  for (int c = 32; c < 127; ++c) vocab[std::string(1, static_cast<char>(c))] = c - 32;
  vocab["\n"] = 95;
  const json t = {{"version", "1.0"},
                  {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", json::array()}}},
                  {"added_tokens", json::array()}};
  std::filesystem::create_directories(dir);
  write_file_atomic(dir + "/tokenizer.json", t.dump());
  return dir;
}

TEST(EvalCli, RouterBesideCalibratedStaticBaseline) {
  const std::string args = "eval -m " + kElastic + " --tokenizer " + char_tokenizer() +
                           " --tasks niah_single,repeat_last_line --lengths 300 --n 1" + kSizes +
                           " --configs dense,elastic,static:0.5,all-sa --json";
  const test::CliResult r = test::cli_run(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json rows = json::parse(r.out)["results"];
  ASSERT_EQ(rows.size(), 8u);
  EXPECT_EQ(rows[2]["config"], "static:0.5");
  EXPECT_EQ(rows[2]["omega_msr"].get<double>(), 0.5);  // 3 of 3 layers x 2 KV heads
  EXPECT_EQ(rows[3]["omega_msr"].get<double>(), 1.0);
  const double elastic = rows[1]["omega_msr"].get<double>();
  EXPECT_TRUE(elastic >= 0 && elastic <= 1);
  EXPECT_NE(r.err.find("calibrate: 14/14 (100%)"), std::string::npos) << r.err;  // 2 x (1 + 6)
}

TEST(EvalCli, CalibrateWritesTheScoreFileStaticRoutingReads) {
  const std::string scores = temp_path("eval_cli_scores.tsv");
  const std::string heads = temp_path("eval_cli_heads.txt");
  const test::CliResult r =
      test::cli_run("calibrate -m " + kTiny + " --tasks kv_retrieval --lengths 300 --n 2 -o " +
                    scores + " --ratio 0.25 --head-list " + heads + " --json" + kSizes);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  ASSERT_EQ(j["scores"].size(), 2u);
  ASSERT_EQ(j["scores"][0].size(), 4u);
  EXPECT_EQ(j["samples"], 2);
  const test::CliResult route =
      test::cli_run("route -m " + kTiny + " --input-ids \"1 2 3\" --json " + "--static-scores " +
                    scores + " --static-ratio 0.25");
  ASSERT_EQ(route.exit_code, 0) << route.err;
  int sparse = 0;
  const json decisions = json::parse(route.out)["decisions"];
  for (const auto& row : decisions)
    for (const auto& d : row) sparse += d.get<int>() == 0;
  EXPECT_EQ(sparse, 2);  // round(0.25 * 8)
  const test::CliResult listed =
      test::cli_run("route -m " + kTiny + " --input-ids \"1 2 3\" --json " + "--static " + heads);
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(json::parse(listed.out)["decisions"], decisions);
}

TEST(EvalCliBadInput, MalformedTaskFilesNameTheLine) {
  const std::string ok =
      "{\"prompt\": \"Once upon a time\", \"answer\": \"Lily\", \"task\": \"t\"}";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"prompt\": \"p\", \"answer\": \"a\"", "bad JSON"},
      {"{\"prompt\": \"p\", \"task\": \"t\"}", "missing field \"answer\""},
      {"{\"prompt\": [\"p\"], \"answer\": \"a\", \"task\": \"t\"}",
       "field \"prompt\" must be a string, got array"},
      {"{\"prompt\": \"p\", \"answer\": [], \"task\": \"t\"}", "empty answer"},
      {"{\"prompt\": \"p\", \"answer\": \"a\", \"task\": \"t\", \"score\": \"rouge\"}",
       "unknown score rule 'rouge'"},
  };
  const std::string path = temp_path("eval_cli_bad.jsonl");
  for (const auto& [line, what] : cases) {
    std::ofstream(path) << ok << "\n" << line << "\n" << ok << "\n";
    const std::string args = "eval -m " + kTiny + " --import " + path + " --configs dense";
    expect_one_line_error(test::cli_run(args), "eval", {path + ":2: ", what}, args);
  }
}

TEST(EvalCliBadInput, OptionsAreNamed) {
  const std::string base = "eval -m " + kTiny + " --n 1 --lengths 200 --tasks niah_single";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"eval -m " + kTiny + " --tasks niah,robust", "option --tasks: unknown task 'niah'"},
      {"eval -m " + kTiny + " --lengths 2048,8", "option --lengths: "},
      {base + " --configs dense,bogus", "unknown configuration 'bogus'"},
      {base + " --configs static:1.5", "static:1.5: the sparse ratio must be in [0, 1]"},
      {base + " --configs elastic", "has no router weights"},
      {base + " --configs static:/no/such/file", "option --configs static:/no/such/file: "},
      {base + " --import x.jsonl", "option --import excludes --tasks and --lengths"},
      {base + " --router on", "do not apply to elastic eval"},
      {"eval --tasks niah_single", "missing -m MODEL"},
      {"eval -m " + kTiny + " --tasks kv_retrieval --lengths 20",
       "task kv_retrieval: a length of 20"},
  };
  for (const auto& [args, what] : cases)
    expect_one_line_error(test::cli_run(args), "eval", {what}, args);
  expect_one_line_error(test::cli_run("calibrate -m " + kTiny), "calibrate", {"missing -o SCORES"},
                        "calibrate");
  expect_one_line_error(test::cli_run("calibrate -m " + kTiny + " -o x --ratio 0.5"), "calibrate",
                        {"--head-list and --ratio go together"}, "calibrate --ratio");
}

TEST(DemoCli, DenseStaticAtTheRoutersOmegaAndElasticForEveryTask) {
  const std::string out = temp_path("demo_out");
  const std::string args = "demo -m " + kElastic + " --tokenizer " + char_tokenizer() +
                           " --length 600 --n 1 -t 1 --json --out " + out;
  const test::CliResult r = test::cli_run(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json rows = json::parse(r.out)["results"];
  ASSERT_EQ(rows.size(), 3 * eval_tasks().size());
  // Elastic first (its mean Omega sets the static ratio), then dense and static.
  double elastic = 0;
  std::string static_name;
  for (const auto& row : rows) {
    const std::string c = row["config"];
    if (c == "elastic") elastic += row["omega_msr"].get<double>() / double(eval_tasks().size());
    if (c.rfind("static:", 0) == 0) static_name = c;
    if (c == "dense") EXPECT_EQ(row["omega_msr"].get<double>(), 0.0);
  }
  char expect[32];
  std::snprintf(expect, sizeof expect, "static:%.2f", elastic);
  EXPECT_EQ(static_name, expect);
  // The static set holds round(R * 6) of the 3 layers x 2 KV heads sparse on every task.
  for (const auto& row : rows)
    if (row["config"] == static_name)
      EXPECT_DOUBLE_EQ(row["omega_msr"].get<double>(), std::round(elastic * 6) / 6.0);
  EXPECT_NE(r.err.find("demo: 36/36 (100%)"), std::string::npos) << r.err;
#ifdef ELASTIC_TEST_PLOT
  EXPECT_TRUE(std::filesystem::exists(out + "/demo-routing.png"));
#endif
}

TEST(DemoCli, ABackboneWithoutRouterIsOneClearError) {
  const test::CliResult r = test::cli_run("demo -m " + kTiny + " --n 1");
  expect_one_line_error(r, "demo", {"has no router weights", "Elastic checkpoint"}, "demo");
}

}  // namespace
}  // namespace elastic

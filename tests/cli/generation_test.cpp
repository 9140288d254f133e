// The text-generation commands and bench through the real binary on the real TinyStories model
// (512 positions), issue 13: the context limit is checked before any prefill (items 9),
// generate's output (prompt echo, progress, timings, finish_reason and ids consistent with the
// text: item 15), bench's repetitions, fractions and progress (item 16) and the OpenMP wait
// default (item 18).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_run.h"
#include "elastic/fileio.h"

namespace elastic {
namespace {

const std::string kModel = std::string(ELASTIC_SHARED_DIR) + "/data/tinystories-656k";

// n copies of token id 5 ("5 5 5 ..."; short, so 40,000 of them fit in one argument).
std::string repeated_ids(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += i ? " 5" : "5";
  return "\"" + s + "\"";
}

int64_t lines(const std::string& s) { return std::count(s.begin(), s.end(), '\n'); }

std::string detokenize(const std::vector<int64_t>& ids) {
  std::string text;
  for (int64_t id : ids) text += std::to_string(id) + " ";
  const test::CliResult d = test::cli_run("detokenize -m " + kModel + " --ids '" + text + "'");
  EXPECT_EQ(d.exit_code, 0) << d.err;
  return d.out;
}

// --- item 9: the context limit ---------------------------------------------------------------

TEST(GenerateContext, PromptBeyondThePositionsFailsAtOnceNamingTheNumbers) {
  // 40,000 ids on a model with 512 positions ran (slowly, memory growing with the prompt) and
  // printed tokens from positions the model never saw.
  const test::CliResult r =
      test::cli_run("generate -m " + kModel + " --input-ids " + repeated_ids(40000) + " -n 8");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("40000 tokens"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("40008 positions"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("512 positions"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--truncate"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

TEST(GenerateContext, TooManyNewTokensFailBeforeGenerating) {
  const test::CliResult r =
      test::cli_run("generate -m " + kModel + " -p 'Once upon a time' -n 3000");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("3000 new tokens"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("512 positions"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

TEST(GenerateContext, CtxSizeLimitsAndCannotExceedTheModel) {
  const test::CliResult big = test::cli_run("generate -m " + kModel + " -p hi -c 1000");
  EXPECT_EQ(big.exit_code, 1);
  EXPECT_NE(big.err.find("--ctx-size: 1000 positions exceed the model's max_position_embeddings "
                         "(512)"),
            std::string::npos)
      << big.err;
  const test::CliResult small =
      test::cli_run("generate -m " + kModel + " --input-ids " + repeated_ids(60) + " -n 8 -c 64");
  EXPECT_EQ(small.exit_code, 1);
  EXPECT_NE(small.err.find("68 positions, but the context holds 64"), std::string::npos)
      << small.err;
  // Exactly full: 500 prompt tokens + 12 new = 512 positions.
  const test::CliResult full = test::cli_run("generate -m " + kModel + " --input-ids " +
                                             repeated_ids(500) + " -n 12 --ignore-eos --json");
  ASSERT_EQ(full.exit_code, 0) << full.err;
  const nlohmann::json j = nlohmann::json::parse(full.out);
  EXPECT_EQ(j["generated_tokens"], 12);
  EXPECT_EQ(j["context_size"], 512);
}

TEST(GenerateContext, TruncateKeepsTheEndOfThePrompt) {
  std::string ids;
  for (int i = 0; i < 600; ++i) ids += std::to_string(3 + i % 1000) + " ";
  const test::CliResult r =
      test::cli_run("generate -m " + kModel + " --input-ids '" + ids + "' -n 8 --truncate --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["prompt_tokens"], 504);
  const std::vector<int64_t> kept = j["prompt_ids"];
  ASSERT_EQ(kept.size(), 504u);
  EXPECT_EQ(kept.front(), 3 + 96);  // the first 96 were dropped
  EXPECT_EQ(kept.back(), 3 + 599);
  EXPECT_NE(r.err.find("dropped the first 96 of 600 prompt tokens"), std::string::npos) << r.err;
}

TEST(GenerateContext, LongTextPromptFailsFastWithBoundedMemory) {
  // A 2 MB prompt text (~500K tokens): before the check, its prefill allocated activations
  // for every token (4 KB each here, 10 GB for a 10 MB prompt) before anything was printed.
  // Under a 1.5 GB address-space limit it must now fail with the context error.
  namespace fs = std::filesystem;
  const fs::path file =
      fs::temp_directory_path() / ("elastic_long_prompt_" + std::to_string(getpid()) + ".txt");
  {
    std::ofstream f(file);
    const std::string sentence = "Once upon a time, there was a little dog named Spot. ";
    for (size_t bytes = 0; bytes < (size_t{2} << 20); bytes += sentence.size()) f << sentence;
  }
  const std::string cmd = "bash -c 'ulimit -v 1500000; exec " + std::string(ELASTIC_BIN_DIR) +
                          "/elastic generate -m " + kModel + " -f " + file.string() + " -n 4'";
  const std::string out = file.string() + ".err";
  const int status = std::system((cmd + " 2>" + out).c_str());
  const std::string err = read_file(out);
  fs::remove(file);
  fs::remove(out);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1) << err;
  EXPECT_NE(err.find("the prompt (2"), std::string::npos) << err;  // its size in bytes
  EXPECT_NE(err.find("508 positions"), std::string::npos) << err;  // 512 - 4 new tokens
}

TEST(ChatContext, AnOverlongMessageIsRefusedAndTheChatGoesOn) {
  std::string line;
  for (int i = 0; i < 2000; ++i) line += "Tom had a ball. ";
  const test::CliResult r = test::cli_run("chat -m " + kModel + " --chat-template chatml -n 8 -t 2",
                                          line + "\nLily saw a cat.\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("elastic chat: error: the conversation ("), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/reset"), std::string::npos) << r.err;
  EXPECT_EQ(lines(r.out), 1) << r.out;  // one reply: to the second message
  EXPECT_NE(r.err.find("reply tokens"), std::string::npos) << r.err;
}

TEST(ChatContext, AReplyStopsWhenTheContextIsFull) {
  // -c 40: the message takes 21 positions, so the reply (up to 512 tokens) is cut at 19.
  const test::CliResult r = test::cli_run(
      "chat -m " + kModel + " --chat-template chatml -c 40 -t 2", "Tom had a ball.\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  long long prompt = 0, reply = 0;
  const size_t at = r.err.find("[");
  ASSERT_NE(at, std::string::npos) << r.err;
  ASSERT_EQ(std::sscanf(r.err.c_str() + at, "[%lld new prompt tokens, %lld reply tokens", &prompt,
                        &reply),
            2)
      << r.err;
  EXPECT_LE(prompt + reply, 40) << r.err;
  if (prompt + reply == 40)
    EXPECT_NE(r.err.find("the context is full"), std::string::npos) << r.err;
}

// --- item 15: generate's output ----------------------------------------------------------------

TEST(GenerateOutput, EchoesThePromptUnlessAskedNot) {
  const test::CliResult r = test::cli_run("generate -m " + kModel + " -p 'Once upon a time' -n 8");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("Once upon a time", 0), 0u) << r.out;
  const test::CliResult quiet =
      test::cli_run("generate -m " + kModel + " -p 'Once upon a time' -n 8 --no-display-prompt");
  ASSERT_EQ(quiet.exit_code, 0) << quiet.err;
  EXPECT_EQ(r.out, "Once upon a time" + quiet.out);
  const test::CliResult ids = test::cli_run("generate -m " + kModel + " --input-ids '1 2 3' -n 2");
  ASSERT_EQ(ids.exit_code, 0) << ids.err;
  EXPECT_EQ(ids.out.rfind("1 2 3 ", 0), 0u) << ids.out;
}

TEST(GenerateOutput, SummaryHasLoadTimeAndMsPerToken) {
  const test::CliResult r = test::cli_run("generate -m " + kModel + " -p 'Once upon a time' -n 8");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("load "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(" s; prompt "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("ms/token"), std::string::npos) << r.err;
  const test::CliResult j =
      test::cli_run("generate -m " + kModel + " -p 'Once upon a time' -n 8 --json");
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const nlohmann::json doc = nlohmann::json::parse(j.out);
  EXPECT_GE(doc["load_seconds"].get<double>(), 0);
  EXPECT_GT(doc["decode_ms_per_token"].get<double>(), 0);
  EXPECT_GT(doc["prefill_ms_per_token"].get<double>(), 0);
}

TEST(GenerateOutput, LongPromptShowsPrefillProgressOnePerLine) {
  const test::CliResult r =
      test::cli_run("generate -m " + kModel + " --input-ids " + repeated_ids(300) + " -n 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // stderr is a file: plain lines, no carriage returns; the 2 layers give 2 updates.
  EXPECT_EQ(r.err.find('\r'), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("prefill 300 tokens: 1/2 (50%)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("prefill 300 tokens: 2/2 (100%)"), std::string::npos) << r.err;
  const test::CliResult short_prompt =
      test::cli_run("generate -m " + kModel + " --input-ids " + repeated_ids(20) + " -n 2");
  EXPECT_EQ(short_prompt.err.find("prefill 20 tokens:"), std::string::npos) << short_prompt.err;
}

TEST(GenerateOutput, FinishReasonAndIdsAgreeWithTheText) {
  // length: -n reached; every id is decoded into the text.
  const test::CliResult len =
      test::cli_run("generate -m " + kModel + " -p 'Once upon a time' -n 6 --ignore-eos --json");
  ASSERT_EQ(len.exit_code, 0) << len.err;
  const nlohmann::json jl = nlohmann::json::parse(len.out);
  EXPECT_EQ(jl["finish_reason"], "length");
  const std::vector<int64_t> len_ids = jl["generated_ids"];
  EXPECT_EQ(len_ids.size(), 6u);
  EXPECT_EQ(jl["generated_tokens"], 6);
  EXPECT_EQ(detokenize(len_ids), jl["text"].get<std::string>());

  // eos: the model ends the story (the fixture's greedy continuations end at EOS, id 2); the
  // EOS id is the last generated id (as HF returns it) and is not part of the text.
  const test::CliResult eos =
      test::cli_run("generate -m " + kModel + " -p 'Once upon a time' -n 400 --json");
  ASSERT_EQ(eos.exit_code, 0) << eos.err;
  const nlohmann::json je = nlohmann::json::parse(eos.out);
  EXPECT_EQ(je["finish_reason"], "eos");
  std::vector<int64_t> eos_ids = je["generated_ids"];
  ASSERT_FALSE(eos_ids.empty());
  EXPECT_EQ(eos_ids.back(), 2);
  eos_ids.pop_back();
  EXPECT_EQ(detokenize(eos_ids), je["text"].get<std::string>());

  // stop: the ids run through the token that completed the stop string; the text ends before it.
  const test::CliResult stop =
      test::cli_run("generate -m " + kModel + " -p 'Once upon a time' -n 48 --stop Spot --json");
  ASSERT_EQ(stop.exit_code, 0) << stop.err;
  const nlohmann::json js = nlohmann::json::parse(stop.out);
  EXPECT_EQ(js["finish_reason"], "stop");
  const std::string decoded = detokenize(js["generated_ids"].get<std::vector<int64_t>>());
  const size_t at = decoded.find("Spot");
  ASSERT_NE(at, std::string::npos) << decoded;
  EXPECT_EQ(decoded.substr(0, at), js["text"].get<std::string>());
  EXPECT_EQ(js["generated_tokens"].get<size_t>(), js["generated_ids"].size());
}

// --- issue 14: --tp (tensor-parallel ranks as threads of this process) ---------------------------

// TP=2 and TP=4 split the model's 4 KV heads (and 8 query heads, MLP columns) across ranks and
// all-reduce o_proj and down_proj: the same greedy ids, text, stop and report as the whole model
// (fp32: only the order of the partial sums differs, far below the gaps between top logits
// here), with a static all-SA routing sliced per rank; --tp 3 is refused naming the KV heads.
TEST(GenerateTensorParallel, RanksGiveTheWholeModelsGeneration) {
  const std::string cmd = "generate -m " + kModel +
                          " -p 'Once upon a time' -n 40 --stop Spot --static all-sa --json -t 2";
  const test::CliResult one = test::cli_run(cmd);
  ASSERT_EQ(one.exit_code, 0) << one.err;
  const nlohmann::json j1 = nlohmann::json::parse(one.out);
  EXPECT_EQ(j1["tp"], 1);
  for (int tp : {2, 4}) {
    const test::CliResult r = test::cli_run(cmd + " --tp " + std::to_string(tp));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const nlohmann::json j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["tp"], tp);
    EXPECT_EQ(j["generated_ids"], j1["generated_ids"]) << "tp " << tp;
    EXPECT_EQ(j["text"], j1["text"]) << "tp " << tp;
    EXPECT_EQ(j["finish_reason"], "stop");
    for (const char* k : {"decisions", "modes", "omega_msr", "kv_cache_bytes", "attention_flops"})
      EXPECT_EQ(j["report"][k], j1["report"][k]) << k << " tp " << tp;
  }
  EXPECT_EQ(j1["report"]["omega_msr"], 1.0);  // all-SA: the slices were applied, not dropped
  const test::CliResult three = test::cli_run("generate -m " + kModel + " -p 'Once' --tp 3");
  EXPECT_EQ(three.exit_code, 1);
  EXPECT_NE(three.err.find("num_key_value_heads 4 is not a multiple"), std::string::npos)
      << three.err;
}

// --- item 16: bench ------------------------------------------------------------------------------

TEST(Bench, RepetitionsMeanSdFractionsAtMostOneAndPlainProgress) {
  const test::CliResult r = test::cli_run("bench -m " + kModel + " -p 32 -n 16 -r 3 -t 2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["repetitions"], 3);
  for (const char* phase : {"prefill", "decode"}) {
    const std::vector<double> runs = j[phase]["tokens_per_s_runs"];
    ASSERT_EQ(runs.size(), 3u) << phase;
    double mean = 0;
    for (double x : runs) mean += x / 3;
    EXPECT_NEAR(j[phase]["tokens_per_s"].get<double>(), mean, 1e-9 * mean) << phase;
    EXPECT_GE(j[phase]["tokens_per_s_sd"].get<double>(), 0) << phase;
  }
  EXPECT_EQ(j["decode"]["step_seconds"].size(), 3u * 16u);  // the warm-up run is not counted
  // The 2.6 MB model decodes from the caches: the fraction is of the bandwidth of re-reading a
  // working set of its size, which a decode step (loads plus arithmetic) cannot beat.
  EXPECT_FALSE(j["decode"]["steps_paired"].get<bool>());
  EXPECT_LE(j["decode"]["fraction_of_bandwidth"].get<double>(), 1.0);
  EXPECT_LE(j["decode"]["fraction_of_best_bandwidth"].get<double>(), 1.0);
  EXPECT_GT(j["decode"]["fraction_of_bandwidth"].get<double>(), 0.0);
  EXPECT_LE(j["prefill"]["fraction_of_fma_peak"].get<double>(), 1.0);
  // stderr is not a terminal: progress comes as whole lines, never run together with "\r".
  EXPECT_EQ(r.err.find('\r'), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("bench: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("warm-up"), std::string::npos) << r.err;
}

TEST(Bench, TableShowsMeanAndSdWithoutInternalNotes) {
  const test::CliResult r = test::cli_run("bench -m " + kModel + " -p 16 -n 8 -r 2 -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("±"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("2 timed after one warm-up run"), std::string::npos) << r.out;
  for (const std::string& s : {r.out, r.err}) {
    EXPECT_EQ(s.find("issue"), std::string::npos) << s;
    EXPECT_EQ(s.find("targets"), std::string::npos) << s;
  }
}

// --- item 18: the OpenMP wait default ------------------------------------------------------------

TEST(OpenMp, BoundedSpinIsTheDefaultAndAUsersSettingWins) {
  unsetenv("OMP_WAIT_POLICY");
  unsetenv("GOMP_SPINCOUNT");
  const std::string args = "bench -m " + kModel + " -p 8 -n 2 -r 1 -t 2 --json";
  const test::CliResult d = test::cli_run(args);
  ASSERT_EQ(d.exit_code, 0) << d.err;
  const nlohmann::json jd = nlohmann::json::parse(d.out)["openmp"];
  EXPECT_EQ(jd["GOMP_SPINCOUNT"], "300");
  EXPECT_TRUE(jd["OMP_WAIT_POLICY"].is_null());

  setenv("OMP_WAIT_POLICY", "passive", 1);
  const test::CliResult p = test::cli_run(args);
  unsetenv("OMP_WAIT_POLICY");
  ASSERT_EQ(p.exit_code, 0) << p.err;
  const nlohmann::json jp = nlohmann::json::parse(p.out)["openmp"];
  EXPECT_EQ(jp["OMP_WAIT_POLICY"], "passive");
  EXPECT_TRUE(jp["GOMP_SPINCOUNT"].is_null());

  setenv("GOMP_SPINCOUNT", "123", 1);
  const test::CliResult s = test::cli_run(args);
  unsetenv("GOMP_SPINCOUNT");
  ASSERT_EQ(s.exit_code, 0) << s.err;
  EXPECT_EQ(nlohmann::json::parse(s.out)["openmp"]["GOMP_SPINCOUNT"], "123");
}

}  // namespace
}  // namespace elastic

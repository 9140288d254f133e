// Bad models and options through the real CLI (issue 13, items 4, 5, 6, 10, 11): a fixture is
// copied into a temp folder and one thing is broken (a NaN written into one tensor value, a
// config key changed); every command must stop with one line on stderr naming the cause, never
// print NaN logits, <unk> tokens or an all-sparse routing, and never crash.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "elastic/engine.h"
#include "elastic/model.h"
#include "io_test_util.h"

namespace elastic {
namespace {

using test::TempDir;
namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kTinyStories = fs::path(ELASTIC_SHARED_DIR) / "data/tinystories-656k";
const fs::path kElastic = fs::path(ELASTIC_SHARED_DIR) / "fixtures/hf/elastic-qwen3-fa-ssa";
const fs::path kElasticXa = fs::path(ELASTIC_SHARED_DIR) / "fixtures/hf/elastic-qwen3-fa-xa";
const fs::path kQwen3 = fs::path(ELASTIC_SHARED_DIR) / "fixtures/hf/qwen3-tiny";

// The clean failure: exit code 1, exactly one line on stderr, "elastic CMD: error: ", and
// every needle in it (bench: progress lines before it). Returns stderr.
std::string expect_one_line_error(const std::vector<std::string>& args,
                                  const std::vector<std::string>& needles) {
  test::CliResult r = test::run_elastic(args);
  if (args[0] == "bench") {  // "bench: loading model ..." progress lines come first
    const size_t at = r.err.find("elastic bench: ");
    if (at != std::string::npos) r.err = r.err.substr(at);
  }
  std::string cmdline;
  for (const auto& a : args) cmdline += a + " ";
  EXPECT_TRUE(r.exited) << cmdline << ": killed by signal " << r.signal << "; stderr: " << r.err;
  EXPECT_EQ(r.exit_code, 1) << cmdline << "\n" << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << cmdline << "\n" << r.err;
  EXPECT_EQ(r.err.rfind("elastic " + args[0] + ": error: ", 0), 0u) << cmdline << "\n" << r.err;
  for (const auto& n : needles)
    EXPECT_NE(r.err.find(n), std::string::npos) << cmdline << ": no '" << n << "' in " << r.err;
  EXPECT_EQ(r.out.find("nan"), std::string::npos) << cmdline << "\n" << r.out;
  return r.err;
}

class BadModel : public ::testing::Test {
 protected:
  // Copies every regular file of `fixture` into the temp folder.
  void copy_model(const fs::path& fixture) {
    for (const auto& e : fs::directory_iterator(fixture))
      if (e.is_regular_file()) fs::copy_file(e.path(), dir_.path() / e.path().filename());
    fs::permissions(dir_.path(), fs::perms::owner_all, fs::perm_options::add);
    for (const auto& e : fs::directory_iterator(dir_.path()))
      fs::permissions(e.path(), fs::perms::owner_read | fs::perms::owner_write,
                      fs::perm_options::add);
  }
  fs::path weights() const { return dir_.path() / "model.safetensors"; }
  std::string model() const { return dir_.str(); }

  // Rewrites element `index` of tensor `name` (F32, BF16 or F16) to `value` in place.
  void tensor_value_set(const std::string& name, int64_t index, float value) {
    test::SafetensorsParts parts = test::safetensors_split(test::read_bytes(weights()));
    ASSERT_TRUE(parts.header.contains(name)) << name;
    const json& t = parts.header[name];
    const size_t begin = t["data_offsets"][0].get<size_t>();
    const std::string dtype = t["dtype"].get<std::string>();
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    if (dtype == "F32") {
      std::memcpy(parts.data.data() + begin + 4 * index, &bits, 4);
    } else if (dtype == "BF16") {
      const uint16_t half = static_cast<uint16_t>(bits >> 16);  // NaN and Inf keep their class
      std::memcpy(parts.data.data() + begin + 2 * index, &half, 2);
    } else if (dtype == "F16") {
      const uint16_t half = std::isnan(value) ? 0x7e00 : (value > 0 ? 0x7c00 : 0xfc00);
      ASSERT_FALSE(std::isfinite(value)) << "F16: only NaN and Inf are written";
      std::memcpy(parts.data.data() + begin + 2 * index, &half, 2);
    } else {
      FAIL() << name << ": dtype " << dtype;
    }
    test::write_bytes(weights(), test::safetensors_join(parts.header.dump(), parts.data));
  }
  void edit_config(const std::function<void(json&)>& edit) {
    const fs::path p = dir_.path() / "config.json";
    json j = json::parse(test::read_bytes(p));
    edit(j);
    test::write_bytes(p, j.dump(2));
  }

  TempDir dir_;
};

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Item 6: a NaN in layer 0's MLP reaches every command; each stops naming layer 0.
TEST_F(BadModel, NanWeightStopsEveryCommandNamingTheLayer) {
  copy_model(kTinyStories);
  const std::vector<std::string> route = {"route", "-m", model(), "-p", "Once upon a time"};
  ASSERT_EQ(test::run_elastic(route).exit_code, 0);  // the untouched copy runs
  tensor_value_set("model.layers.0.mlp.down_proj.weight", 0, kNaN);
  const std::vector<std::string> needles = {model(), "the output of layer 0 is not finite",
                                            "model.layers.0."};
  const std::string out = dir_.str("logits.safetensors");
  expect_one_line_error({"logits", "-m", model(), "--input-ids", "1 2 3", "-o", out}, needles);
  EXPECT_FALSE(fs::exists(out));
  expect_one_line_error({"generate", "-m", model(), "-p", "Once upon a time", "-n", "4"}, needles);
  expect_one_line_error({"generate", "-m", model(), "-p", "Once", "-n", "4", "--json"}, needles);
  expect_one_line_error(route, needles);
  expect_one_line_error({"bench", "-m", model(), "-p", "16", "-n", "4", "-r", "1", "-t", "1"},
                        needles);
  expect_one_line_error({"eval", "-m", model(), "--tasks", "niah_single", "--lengths", "200", "--n",
                         "1", "--sink", "32", "--local", "64", "--block", "32", "-t", "1"},
                        needles);
}

// The serving engine: a request whose logits are not finite ends with an error naming the cause
// (the server answers it with that error) instead of sampling from NaN. Greedy requests take
// the backend's argmax (Backend::argmax_rows: -1 for a non-finite row), sampled ones the host's
// check of the downloaded logits: both paths.
TEST_F(BadModel, ServeEngineFailsTheRequestOnNonFiniteLogits) {
  copy_model(kTinyStories);
  tensor_value_set("model.layers.0.mlp.down_proj.weight", 0, kNaN);
  const Model m = model_load(model());
  for (const float temperature : {0.f, 0.8f}) {
    EngineOptions eo;
    eo.kv_pages = 1024;
    Engine engine(m, eo);
    EngineRequest r;
    r.prompt = {1, 2, 3, 4};
    r.max_tokens = 8;
    r.sampling.temperature = temperature;
    const std::shared_ptr<EngineStream> s = engine.submit(r);
    ASSERT_NE(s, nullptr);
    std::vector<int64_t> got;
    while (!s->wait(got, std::chrono::milliseconds(200))) {
    }
    EXPECT_TRUE(got.empty()) << "temperature " << temperature;
    EXPECT_EQ(s->finish_reason(), FinishReason::error) << "temperature " << temperature;
    EXPECT_NE(s->error().find("not finite"), std::string::npos) << s->error();
    EXPECT_EQ(engine.stats().kv_pages_used, 0);
  }
}

TEST_F(BadModel, ChatStopsOnANanWeight) {
  copy_model(kTinyStories);
  tensor_value_set("model.layers.1.self_attn.o_proj.weight", 5, kInf);
  // chat reads stdin: feed one line through a file.
  const std::string in = dir_.str("in.txt");
  test::write_bytes(in, "Tom had a ball.\n");
  const std::string cmd = std::string(ELASTIC_BIN_DIR) + "/elastic chat -m " + model() +
                          " --chat-template chatml -n 4 -t 1 <" + in + " >" + dir_.str("o") +
                          " 2>" + dir_.str("e");
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  const std::string err = test::read_bytes(dir_.str("e"));
  EXPECT_NE(err.find("the output of layer 1 is not finite"), std::string::npos) << err;
}

// The re-check names the first bad layer, not always layer 0.
TEST_F(BadModel, LogitsNameTheFirstNonFiniteLayer) {
  copy_model(kQwen3);
  tensor_value_set("model.layers.2.self_attn.v_proj.weight", 0, kInf);
  expect_one_line_error({"logits", "-m", model(), "--input-ids", "1 2 3", "-o", dir_.str("l")},
                        {"the output of layer 2 is not finite", "layers before it are finite"});
}

TEST_F(BadModel, NanEmbeddingRowIsNamed) {
  // Only token 7's row holds a NaN. qwen3-tiny ties the lm_head to the embedding, so token 7's
  // logit is NaN for every prompt: a prompt without 7 names the tied lm_head, one with it the
  // embeddings.
  copy_model(kQwen3);
  tensor_value_set("model.embed_tokens.weight", 7 * 192 + 3, kNaN);
  expect_one_line_error({"logits", "-m", model(), "--input-ids", "1 2", "-o", dir_.str("l")},
                        {"logits at positions 0..1 are not finite, while every layer's output is",
                         "model.embed_tokens.weight, the tied lm_head"});
  expect_one_line_error({"logits", "-m", model(), "--input-ids", "1 7 2", "-o", dir_.str("l")},
                        {"embeddings of the prompt are not finite", "model.embed_tokens.weight"});
}

TEST_F(BadModel, NonFiniteLogitsFromTheLmHead) {
  copy_model(kQwen3);
  tensor_value_set("model.norm.weight", 0, kNaN);
  expect_one_line_error({"logits", "-m", model(), "--input-ids", "1 2 3", "-o", dir_.str("l")},
                        {"logits at positions 0..2 are not finite", "every layer's output is"});
}

TEST_F(BadModel, InspectCheckNamesTheNonFiniteTensors) {
  copy_model(kQwen3);
  const test::CliResult ok = test::run_elastic({"inspect", model(), "--no-tensors", "--check"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("is finite"), std::string::npos) << ok.out;
  tensor_value_set("model.layers.1.mlp.up_proj.weight", 100, kNaN);
  tensor_value_set("model.layers.0.self_attn.q_norm.weight", 1, -kInf);
  expect_one_line_error(
      {"inspect", model(), "--no-tensors", "--check"},
      {model(), "2 tensors hold NaN or Inf",
       "model.layers.0.self_attn.q_norm.weight, model.layers.1.mlp.up_proj.weight"});
}

// Item 5: a NaN router weight is an error naming the layer, with or without a routing map.
TEST_F(BadModel, NanRouterWeightNamesTheLayer) {
  copy_model(kElastic);
  const std::vector<std::string> route = {"route",       "-m",        model(),
                                          "--input-ids", "1 2 3 4 5", "--json"};
  ASSERT_EQ(test::run_elastic(route).exit_code, 0);
  tensor_value_set("model.layers.1.self_attn.mask_allocator.cls_router_head_agnostic.4.weight", 0,
                   kNaN);
  const std::vector<std::string> needles = {"router of layer 1", "is not finite",
                                            "model.layers.1.self_attn.mask_allocator"};
  expect_one_line_error(route, needles);
  const std::string png = dir_.str("map.png");
  std::vector<std::string> with_map = route;
  with_map.insert(with_map.end(), {"--routing-map", png});
  expect_one_line_error(with_map, needles);
  EXPECT_FALSE(fs::exists(png));
  expect_one_line_error({"generate", "-m", model(), "--input-ids", "1 2 3", "-n", "2"}, needles);
  expect_one_line_error({"logits", "-m", model(), "--input-ids", "1 2 3", "-o", dir_.str("l")},
                        needles);
}

TEST(BadOptions, NonFiniteSparsityBiasIsRejected) {
  const std::string m = kElastic.string();
  for (const char* bias : {"nan", "inf", "-inf", "1e400"}) {
    for (const std::vector<std::string>& base :
         {std::vector<std::string>{"route", "-m", m, "--input-ids", "1 2 3"},
          std::vector<std::string>{"generate", "-m", m, "--input-ids", "1 2 3", "-n", "2"},
          std::vector<std::string>{"logits", "-m", m, "--input-ids", "1 2 3", "-o",
                                   ::testing::TempDir() + "/never.safetensors"}}) {
      std::vector<std::string> args = base;
      args.insert(args.end(), {"--sparsity-bias", bias});
      expect_one_line_error(args, {"option --sparsity-bias", "expected a finite number",
                                   std::string("'") + bias + "'"});
    }
  }
}

// Item 11: --static of a folder or a FIFO names the path instead of routing everything sparse
// (or blocking on the FIFO).
TEST_F(BadModel, StaticAssignmentMustBeARegularFile) {
  const std::string m = kElastic.string();
  const fs::path folder = dir_.path() / "heads";
  fs::create_directory(folder);
  expect_one_line_error({"route", "-m", m, "--input-ids", "1 2 3", "--static", folder.string()},
                        {"routing file " + folder.string(), "is a folder"});
  const fs::path fifo = dir_.path() / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  expect_one_line_error(
      {"generate", "-m", m, "--input-ids", "1 2", "-n", "1", "--static", fifo.string()},
      {"routing file " + fifo.string(), "is not a regular file"});
  expect_one_line_error({"route", "-m", m, "--input-ids", "1 2 3", "--static-scores",
                         folder.string(), "--static-ratio", "0.5"},
                        {"routing file " + folder.string(), "is a folder"});
}

// Item 10: more layers in the weights than num_hidden_layers.
TEST_F(BadModel, UnusedLayerTensorsAreRejected) {
  copy_model(kQwen3);
  edit_config([](json& j) {
    j["num_hidden_layers"] = 2;
    if (j.contains("layer_types"))  // one entry per layer (a config check of its own)
      j["layer_types"] = json::array({"full_attention", "full_attention"});
  });
  expect_one_line_error({"logits", "-m", model(), "--input-ids", "1 2 3", "-o", dir_.str("l")},
                        {model(), "tensor 'model.layers.2.", "is unused", "num_hidden_layers 2",
                         "HF would only warn"});
}

// Item 4: pooling_mode other than the reference's ctx_q is refused, naming file and field.
TEST_F(BadModel, UnknownPoolingModeIsRejected) {
  copy_model(kElastic);
  edit_config([](json& j) { j["pooling_mode"] = "mean"; });
  expect_one_line_error({"inspect", model()}, {dir_.str("config.json"), "field 'pooling_mode'",
                                               "\"mean\"", "supported: \"ctx_q\""});
}

// Item 4: inspect lists the Elastic keys, marking the defaults taken; the XA keys and
// block_size reach the routing.
TEST_F(BadModel, InspectListsElasticKeysAndDefaults) {
  copy_model(kElasticXa);
  test::CliResult r = test::run_elastic({"inspect", model(), "--no-tensors"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("elastic keys:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  toggle_type          \"xattn\"\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  sink_size            32\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  block_size           128 (default)\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  xattn_stride         16 (default)\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  xattn_threshold      0.9 (default)\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  pool_tokens          100 (default)\n"), std::string::npos) << r.out;

  edit_config([](json& j) {
    j["block_size"] = 64;
    j["xattn_stride"] = 8;
    j["xattn_threshold"] = 0.8;
    j["pool_size"] = 50;  // the reference's name of P
  });
  r = test::run_elastic({"inspect", model(), "--no-tensors"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("  block_size           64\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  xattn_block_size     64 (default)\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  xattn_stride         8\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  xattn_threshold      0.8\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  pool_size            50\n"), std::string::npos) << r.out;
  r = test::run_elastic({"route", "-m", model(), "--input-ids", "1 2 3 4", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string policy = json::parse(r.out)["policy"].get<std::string>();
  EXPECT_NE(policy.find("pool 50"), std::string::npos) << policy;
  EXPECT_NE(policy.find("SSA block 64"), std::string::npos) << policy;
  EXPECT_NE(policy.find("XA block 64 stride 8 threshold 0.800000"), std::string::npos) << policy;

  edit_config([](json& j) { j["xattn_threshold"] = 1.5; });
  expect_one_line_error({"inspect", model()},
                        {dir_.str("config.json"), "field 'xattn_threshold'", "(0, 1]"});
}

}  // namespace
}  // namespace elastic

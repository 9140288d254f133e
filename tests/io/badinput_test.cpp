// Bad input through the real CLI: each case copies a fixture model (qwen3-tiny) into a temp
// folder, breaks one thing, runs `elastic inspect DIR` and requires a clean failure: the
// process exits (no signal) with a non-zero code and prints exactly one line on stderr that
// names the file (and the tensor or field) and what was expected.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "io_test_util.h"

namespace elastic {
namespace {

using test::TempDir;
namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kFixture = fs::path(ELASTIC_SHARED_DIR) / "fixtures/hf/qwen3-tiny";

class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::copy_file(kFixture / "config.json", dir_.path() / "config.json");
    fs::copy_file(kFixture / "model.safetensors", dir_.path() / "model.safetensors");
    // The untouched copy is accepted, so each failure below is caused by its one change.
    test::CliResult ok = test::run_elastic({"inspect", dir_.str()});
    ASSERT_TRUE(ok.exited && ok.exit_code == 0) << ok.err;
  }
  fs::path weights() const { return dir_.path() / "model.safetensors"; }
  fs::path config() const { return dir_.path() / "config.json"; }

  // Runs `elastic inspect DIR` and checks the clean one-line failure; each needle must appear
  // in the message. Returns the message.
  std::string expect_failure(const std::vector<std::string>& needles) {
    return expect_cli_failure({"inspect", dir_.str()}, needles);
  }

  std::string expect_cli_failure(const std::vector<std::string>& args,
                                 const std::vector<std::string>& needles) {
    test::CliResult r = test::run_elastic(args);
    EXPECT_TRUE(r.exited) << "killed by signal " << r.signal << "; stderr: " << r.err;
    EXPECT_NE(r.exit_code, 0) << r.err;
    EXPECT_FALSE(r.err.empty());
    // Exactly one line: a single newline, at the end.
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_TRUE(!r.err.empty() && r.err.back() == '\n') << r.err;
    for (const auto& n : needles)
      EXPECT_NE(r.err.find(n), std::string::npos) << "missing '" << n << "' in: " << r.err;
    return r.err;
  }

  void edit_config(const std::function<void(json&)>& edit) {
    json j = json::parse(test::read_bytes(config()));
    edit(j);
    test::write_bytes(config(), j.dump(2));
  }

  TempDir dir_;
};

TEST_F(BadInput, TruncatedFile) {
  std::string b = test::read_bytes(weights());
  test::write_bytes(weights(), b.substr(0, b.size() - 1000));
  expect_failure({weights().string(), "tensor 'model.", "is beyond the data section", "truncated"});
}

TEST_F(BadInput, TruncatedInsideHeader) {
  std::string b = test::read_bytes(weights());
  test::write_bytes(weights(), b.substr(0, 100));
  expect_failure({weights().string(), "header length", "is beyond the end of the file",
                  "expected at most 92"});
}

TEST_F(BadInput, HeaderLengthBeyondFile) {
  std::string b = test::read_bytes(weights());
  uint64_t beyond = b.size();  // 8 + size > size
  b.replace(0, 8, test::u64_le_bytes(beyond));
  test::write_bytes(weights(), b);
  expect_failure({weights().string(), "header length " + std::to_string(beyond),
                  "beyond the end of the file"});
}

TEST_F(BadInput, HeaderLengthAboveLimit) {
  std::string b = test::read_bytes(weights());
  b.replace(0, 8, test::u64_le_bytes(1ull << 40));
  test::write_bytes(weights(), b);
  expect_failure({weights().string(), "exceeds the limit of 104857600 bytes"});
}

TEST_F(BadInput, OverlappingOffsets) {
  test::safetensors_edit_header(weights(), [](json& h) {
    // k_norm [64] bf16 = 128 bytes; make it cover the first 128 bytes of q_norm.
    h["model.layers.0.self_attn.k_norm.weight"]["data_offsets"] =
        h["model.layers.0.self_attn.q_norm.weight"]["data_offsets"];
  });
  expect_failure({weights().string(), "'model.layers.0.self_attn.k_norm.weight'",
                  "'model.layers.0.self_attn.q_norm.weight'", "overlap",
                  "expected disjoint data_offsets"});
}

TEST_F(BadInput, OutOfRangeOffsets) {
  uint64_t data_bytes = 0;
  test::safetensors_edit_header(weights(), [&](json& h) {
    for (auto& [k, v] : h.items())
      if (k != "__metadata__") data_bytes = std::max<uint64_t>(data_bytes, v["data_offsets"][1]);
    h["model.norm.weight"]["data_offsets"] = {data_bytes + 1000, data_bytes + 1000 + 384};
  });
  expect_failure({weights().string(), "tensor 'model.norm.weight'",
                  "data_offsets end " + std::to_string(data_bytes + 1384),
                  "beyond the data section of " + std::to_string(data_bytes) + " bytes"});
}

TEST_F(BadInput, ShapeByteCountMismatch) {
  test::safetensors_edit_header(weights(), [](json& h) {
    h["model.layers.1.mlp.up_proj.weight"]["shape"] = {512, 191};
  });
  expect_failure({weights().string(), "tensor 'model.layers.1.mlp.up_proj.weight'",
                  "shape [512, 191] x BF16 needs 97792 x 2 bytes but data_offsets span 196608"});
}

TEST_F(BadInput, DtypeByteCountMismatch) {
  test::safetensors_edit_header(weights(),
                                [](json& h) { h["model.norm.weight"]["dtype"] = "F32"; });
  expect_failure({weights().string(), "tensor 'model.norm.weight'",
                  "shape [192] x F32 needs 192 x 4 bytes but data_offsets span 384"});
}

TEST_F(BadInput, UnknownDtype) {
  test::safetensors_edit_header(weights(),
                                [](json& h) { h["model.norm.weight"]["dtype"] = "F8_E4M3"; });
  expect_failure({weights().string(), "tensor 'model.norm.weight'", "unknown dtype 'F8_E4M3'",
                  "expected F32, F16, BF16"});
}

TEST_F(BadInput, NegativeShape) {
  test::safetensors_edit_header(weights(),
                                [](json& h) { h["model.norm.weight"]["shape"] = {-192}; });
  expect_failure(
      {weights().string(), "tensor 'model.norm.weight'", "must hold non-negative integers"});
}

TEST_F(BadInput, EmptyFile) {
  test::write_bytes(weights(), "");
  expect_failure({weights().string(), "file of 0 bytes is too short", "needs at least 8"});
}

TEST_F(BadInput, NonUtf8Header) {
  std::string b = test::read_bytes(weights());
  size_t at = b.find("model.norm.weight");
  ASSERT_NE(at, std::string::npos);
  b[at + 6] = '\xff';  // inside a JSON string, same length
  test::write_bytes(weights(), b);
  expect_failure({weights().string(), "safetensors header", "is not valid UTF-8 JSON",
                  "ill-formed UTF-8 byte"});
}

TEST_F(BadInput, HeaderNotJson) {
  std::string b = test::read_bytes(weights());
  b[8] = '[';
  test::write_bytes(weights(), b);
  expect_failure({weights().string(), "is not valid UTF-8 JSON"});
}

TEST_F(BadInput, MisalignedTensor) {
  // Move model.norm.weight (bf16 [192], 384 bytes) to an odd offset in new space at the end of
  // the data section: in range, overlapping nothing, but not 2-byte aligned.
  test::SafetensorsParts parts = test::safetensors_split(test::read_bytes(weights()));
  uint64_t start = parts.data.size() + 1;
  parts.data.append(385, '\0');
  parts.header["model.norm.weight"]["data_offsets"] = {start, start + 384};
  test::write_bytes(weights(), test::safetensors_join(parts.header.dump(), parts.data));
  expect_failure({weights().string(), "tensor 'model.norm.weight' starts at file byte",
                  "expected a multiple of its element size 2 (BF16)"});
}

TEST_F(BadInput, DuplicateTensorName) {
  std::string b = test::read_bytes(weights());
  uint64_t n = test::u64_le(b);
  std::string header = b.substr(8, n);
  size_t end = header.find_last_of('}');
  std::string dup = R"(,"model.norm.weight":{"dtype":"BF16","shape":[0],"data_offsets":[0,0]})";
  header.insert(end, dup);
  test::write_bytes(weights(), test::safetensors_join(header, b.substr(8 + n)));
  expect_failure(
      {weights().string(), "names 'model.norm.weight' twice", "expected unique tensor names"});
}

TEST_F(BadInput, MissingWeightsFile) {
  fs::remove(weights());
  expect_failure({dir_.str(), "no model.safetensors or model.safetensors.index.json"});
}

TEST_F(BadInput, NonUtf8Config) {
  std::string c = test::read_bytes(config());
  size_t at = c.find("\"silu\"");
  ASSERT_NE(at, std::string::npos);
  c[at + 2] = '\xc3';  // a lead byte followed by 'l': ill-formed
  test::write_bytes(config(), c);
  expect_failure({config().string(), "not valid UTF-8 JSON", "ill-formed UTF-8 byte"});
}

TEST_F(BadInput, EmptyConfig) {
  test::write_bytes(config(), "");
  expect_failure({config().string(), "not valid UTF-8 JSON"});
}

TEST_F(BadInput, ConfigMissingHiddenSize) {
  edit_config([](json& j) { j.erase("hidden_size"); });
  expect_failure({config().string(), "field 'hidden_size' is missing",
                  "expected an integer in [1, 16777216]"});
}

TEST_F(BadInput, ConfigHiddenSizeString) {
  edit_config([](json& j) { j["hidden_size"] = "192"; });
  expect_failure({config().string(), "field 'hidden_size' must be an integer, got \"192\""});
}

TEST_F(BadInput, ConfigKvHeadsNotDividing) {
  edit_config([](json& j) { j["num_key_value_heads"] = 3; });
  expect_failure(
      {config().string(), "field 'num_key_value_heads' (3) must divide num_attention_heads (4)"});
}

TEST_F(BadInput, ConfigNegativeLayers) {
  edit_config([](json& j) { j["num_hidden_layers"] = -3; });
  expect_failure({config().string(), "field 'num_hidden_layers' must be in [1, 16777216], got -3"});
}

TEST_F(BadInput, ConfigUnknownModelType) {
  edit_config([](json& j) { j["model_type"] = "gpt2"; });
  expect_failure({config().string(), "field 'model_type' is \"gpt2\"",
                  "supported: \"llama\", \"qwen3\", \"qwen2\""});
}

TEST_F(BadInput, ConfigUnknownRopeType) {
  edit_config([](json& j) { j["rope_parameters"]["rope_type"] = "longrope"; });
  expect_failure({config().string(), "field 'rope_parameters.rope_type' is \"longrope\""});
}

TEST_F(BadInput, ShardIndexNamingMissingFile) {
  // Shard 1 holds everything; the index sends one tensor to a shard that is not there.
  fs::rename(weights(), dir_.path() / "model-00001-of-00002.safetensors");
  json h =
      test::safetensors_split(test::read_bytes(dir_.path() / "model-00001-of-00002.safetensors"))
          .header;
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (auto& [k, v] : h.items())
    if (k != "__metadata__") index["weight_map"][k] = "model-00001-of-00002.safetensors";
  index["weight_map"]["model.norm.weight"] = "model-00002-of-00002.safetensors";
  test::write_bytes(dir_.path() / "model.safetensors.index.json", index.dump(2));
  expect_failure({(dir_.path() / "model.safetensors.index.json").string(),
                  "shard 'model-00002-of-00002.safetensors'",
                  "(named for tensor 'model.norm.weight') does not exist"});
}

TEST_F(BadInput, ShardIndexNotJson) {
  test::write_bytes(dir_.path() / "model.safetensors.index.json", "{\"weight_map\": ");
  expect_failure({(dir_.path() / "model.safetensors.index.json").string(), "not valid UTF-8 JSON"});
}

// The config/weights cross-check of the model loader, through `elastic logits`.
class BadInputLogits : public BadInput {
 protected:
  std::vector<std::string> logits_args() const {
    return {"logits", "-m", dir_.str(), "--input-ids", "1 2", "--out", dir_.str("out.safetensors")};
  }
  void SetUp() override {
    BadInput::SetUp();
    // The untouched copy runs, so each failure below is caused by its one change.
    test::CliResult ok = test::run_elastic(logits_args());
    ASSERT_TRUE(ok.exited && ok.exit_code == 0) << ok.err;
    fs::remove(dir_.path() / "out.safetensors");
  }
  void expect_logits_failure(const std::vector<std::string>& needles) {
    expect_cli_failure(logits_args(), needles);
    EXPECT_FALSE(fs::exists(dir_.path() / "out.safetensors"));  // no partial output
  }
};

TEST_F(BadInputLogits, MissingTensor) {
  // Drop the tensor from the header; its bytes stay behind as an unused hole.
  test::safetensors_edit_header(weights(),
                                [](json& h) { h.erase("model.layers.1.mlp.up_proj.weight"); });
  expect_logits_failure({"tensor 'model.layers.1.mlp.up_proj.weight' is missing from " + dir_.str(),
                         "expected shape [512, 192]"});
}

TEST_F(BadInputLogits, WrongTensorShapeForConfig) {
  // Transposed o_proj: the same byte count, so the file is valid; only the config disagrees.
  test::safetensors_edit_header(weights(), [](json& h) {
    h["model.layers.2.self_attn.o_proj.weight"]["shape"] = {256, 192};
  });
  expect_logits_failure({"tensor 'model.layers.2.self_attn.o_proj.weight' in " + dir_.str(),
                         "expected shape [192, 256] for the config, got [256, 192]"});
}

TEST_F(BadInputLogits, ConfigDisagreesWithWeights) {
  // A valid config whose intermediate_size does not match the stored MLP weights.
  edit_config([](json& j) { j["intermediate_size"] = 256; });
  expect_logits_failure({"tensor 'model.layers.0.mlp.gate_proj.weight' in " + dir_.str(),
                         "expected shape [256, 192] for the config, got [512, 192]"});
}

TEST_F(BadInputLogits, MorePositionsThanTheModelHas) {
  // qwen3-tiny has max_position_embeddings 8192: 8193 ids used to run silently past it.
  std::string ids;
  for (int i = 0; i < 8193; ++i) ids += "5 ";
  expect_cli_failure({"logits", "-m", dir_.str(), "--input-ids", ids, "--out", dir_.str("o")},
                     {"option --input-ids: 8193 tokens exceed the model's max_position_embeddings "
                      "(8192)"});
  expect_cli_failure({"route", "-m", dir_.str(), "--input-ids", ids},
                     {"option --input-ids: 8193 tokens exceed", "(8192)"});
}

TEST_F(BadInput, WeightsAndConfigNotRegularFiles) {
  // A FIFO must be rejected, not block the reader waiting for a writer.
  fs::remove(weights());
  ASSERT_EQ(::mkfifo(weights().c_str(), 0644), 0);
  expect_failure({weights().string(), "not a regular file"});
  fs::remove(config());
  fs::create_directory(config());
  expect_failure({config().string(), "not a regular file (expected an HF config.json)"});
}

TEST_F(BadInput, MissingModelFolder) {
  expect_cli_failure({"inspect", dir_.str("nope")}, {dir_.str("nope")});
}

// ---- Outputs (--out and every other writer go through write_file_atomic) ----

class BadOutput : public BadInputLogits {
 protected:
  std::vector<std::string> logits_to(const std::string& out) const {
    return {"logits", "-m", dir_.str(), "--input-ids", "1 2", "--out", out};
  }
  // A character device of our own: as root, a device node the old rename would have replaced
  // (never /dev/full itself, so a regression cannot destroy the system's device).
  std::string char_device(const std::string& name, int major, int minor) const {
    std::string p = dir_.str(name);
    if (::geteuid() == 0) {
      if (::mknod(p.c_str(), S_IFCHR | 0666, makedev(major, minor)) != 0) return "";
      return p;
    }
    return "";  // without root, /dev itself is not writable: the test below uses /dev/full
  }
};

TEST_F(BadOutput, CharacterDeviceIsRefusedAndKept) {
  std::string dev = char_device("full", 1, 7);
  if (dev.empty()) dev = "/dev/full";
  expect_cli_failure(logits_to(dev), {dev, "is a character device", "refusing"});
  struct stat st {};
  ASSERT_EQ(::lstat(dev.c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode)) << dev << " was replaced";
}

TEST_F(BadOutput, SymlinkToDeviceIsRefusedAndKept) {
  const std::string link = dir_.str("null-link");
  ASSERT_EQ(::symlink("/dev/null", link.c_str()), 0);
  expect_cli_failure(logits_to(link), {link, "is a character device"});
  struct stat st {};
  ASSERT_EQ(::lstat(link.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode)) << link << " was replaced by a regular file";
}

TEST_F(BadOutput, FifoIsRefusedWithoutBlocking) {
  const std::string fifo = dir_.str("fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0644), 0);
  expect_cli_failure(logits_to(fifo), {fifo, "is a FIFO", "refusing"});
  struct stat st {};
  ASSERT_EQ(::lstat(fifo.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode)) << fifo << " was replaced";
}

TEST_F(BadOutput, FolderIsRefused) {
  fs::create_directory(dir_.path() / "sub");
  expect_cli_failure(logits_to(dir_.str("sub")), {dir_.str("sub"), "is a folder"});
}

TEST_F(BadOutput, ModelFilesAreNotOverwritten) {
  const std::string before = test::read_bytes(weights());
  expect_cli_failure(logits_to(weights().string()),
                     {weights().string(), "a file the model was loaded from", "refusing"});
  EXPECT_EQ(test::read_bytes(weights()), before);
  // Another name of the same file (a hard link) is recognised too.
  const std::string alias = dir_.str("alias.safetensors");
  ASSERT_EQ(::link(config().c_str(), alias.c_str()), 0);
  const std::string config_before = test::read_bytes(config());
  expect_cli_failure(logits_to(alias), {alias, "a file the model was loaded from"});
  EXPECT_EQ(test::read_bytes(config()), config_before);
}

TEST_F(BadOutput, SymlinkToRegularFileIsWrittenThrough) {
  const std::string real = dir_.str("real.safetensors"), link = dir_.str("link.safetensors");
  test::write_bytes(real, "old");
  ASSERT_EQ(::symlink(real.c_str(), link.c_str()), 0);
  test::CliResult r = test::run_elastic(logits_to(link));
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.err;
  struct stat st {};
  ASSERT_EQ(::lstat(link.c_str(), &st), 0);
  EXPECT_TRUE(S_ISLNK(st.st_mode));
  EXPECT_NE(test::read_bytes(real), "old");
}

// SIGTERM while the output's temporary file exists: the process still dies of SIGTERM, and the
// temporary file is gone. inotify tells the moment it is created; the kill must land before the
// rename (else the trial is repeated), which a 56 MB write and its fsync make likely.
TEST_F(BadOutput, SigtermMidWriteLeavesNoTemporaryFile) {
  const fs::path outdir = dir_.path() / "out";
  fs::create_directory(outdir);
  std::string ids;
  for (int i = 0; i < 8000; ++i) ids += std::to_string(1 + i % 1000) + " ";
  const std::string out = (outdir / "big.safetensors").string();
  const std::string bin = std::string(ELASTIC_BIN_DIR) + "/elastic";
  bool hit = false;
  for (int trial = 0; trial < 6 && !hit; ++trial) {
    int in = ::inotify_init1(IN_CLOEXEC);
    ASSERT_GE(in, 0);
    ASSERT_GE(::inotify_add_watch(in, outdir.c_str(), IN_CREATE), 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      ::execl(bin.c_str(), bin.c_str(), "logits", "-m", dir_.str().c_str(), "--input-ids",
              ids.c_str(), "--hidden", "--out", out.c_str(), (char*)nullptr);
      ::_exit(127);
    }
    alignas(struct inotify_event) char buf[4096];
    ssize_t n = ::read(in, buf, sizeof buf);  // blocks until the temporary file appears
    ::kill(pid, SIGTERM);
    ::close(in);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_GT(n, 0);
    for (const auto& e : fs::directory_iterator(outdir))
      EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos)
          << "left behind: " << e.path();
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM && !fs::exists(out)) hit = true;
    fs::remove_all(outdir);
    fs::create_directory(outdir);
  }
  EXPECT_TRUE(hit) << "no trial was killed while writing (the test could not check anything)";
}

// A pre-tokenizer regex that backtracks catastrophically stops with an error naming the
// tokenizer file and the pattern, instead of running for minutes: PCRE2's default match limit
// (10 million steps) applies per start position, so runs of 22 'a's (4 million steps each, under
// that limit) separated by '!' took about 40 s before per-match limits were set.
TEST(BadTokenizer, CatastrophicRegexFailsFast) {
  std::string text;
  for (int i = 0; i < 1000; ++i) text += std::string(22, 'a') + "!";
  for (const std::string pattern : {"(a+)+$", "(\\w+\\s?)*$"}) {
    SCOPED_TRACE(pattern);
    test::TempDir dir;
    json j = json::parse(
        test::read_bytes(fs::path(ELASTIC_SHARED_DIR) / "data/tinystories-656k/tokenizer.json"));
    j["pre_tokenizer"] = {{"type", "Split"},
                          {"pattern", {{"Regex", pattern}}},
                          {"behavior", "Isolated"},
                          {"invert", false}};
    const std::string tok = dir.str("tokenizer.json");
    test::write_bytes(tok, j.dump());
    const auto t0 = std::chrono::steady_clock::now();
    test::CliResult r = test::run_elastic({"tokenize", "-m", tok, "--text", text});
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_TRUE(r.exited) << r.err;
    EXPECT_EQ(r.exit_code, 1) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(tok), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("'" + pattern + "'"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("match limit exceeded"), std::string::npos) << r.err;
    EXPECT_LT(s, 10.0);
  }
}

}  // namespace
}  // namespace elastic

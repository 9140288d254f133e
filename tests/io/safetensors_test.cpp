// Safetensors reader/writer: round trips through safetensors_write for every dtype, empty and
// scalar tensors, metadata, sharded folders, the atomic writer, and the header checks that the
// CLI bad-input tests do not reach (duplicates, alignment, overflow).
#include "elastic/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <numeric>

#include "elastic/error.h"
#include "elastic/fileio.h"
#include "io_test_util.h"

namespace elastic {
namespace {

using test::TempDir;
namespace fs = std::filesystem;

// A tensor whose bytes are a ramp starting at `seed`, so every tensor's data is distinct.
SafetensorsWriteItem ramp_item(const std::string& name, DType dtype, const Shape& shape, int seed) {
  SafetensorsWriteItem it{name, dtype, shape, {}};
  it.bytes.resize(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype));
  for (size_t i = 0; i < it.bytes.size(); ++i)
    it.bytes[i] = static_cast<unsigned char>((seed * 37 + i * 11) & 0xff);
  if (dtype == DType::boolean)
    for (auto& b : it.bytes) b &= 1;
  return it;
}

void expect_same(const SafetensorsWriteItem& want, const TensorView& got) {
  EXPECT_EQ(got.name, want.name);
  EXPECT_EQ(got.dtype, want.dtype) << want.name;
  EXPECT_EQ(got.shape, want.shape) << want.name;
  ASSERT_EQ(got.nbytes(), want.bytes.size()) << want.name;
  if (!want.bytes.empty())
    EXPECT_EQ(std::memcmp(got.data, want.bytes.data(), want.bytes.size()), 0) << want.name;
  // The writer lays data out so typed reads through the mapping are aligned.
  EXPECT_EQ(reinterpret_cast<uintptr_t>(got.data) % dtype_size(got.dtype), 0u) << want.name;
}

TEST(Safetensors, RoundTripsEveryDtypeWithMetadata) {
  TempDir dir;
  // Odd element counts and mixed sizes in an order that would misalign a naive layout.
  std::vector<SafetensorsWriteItem> items = {
      ramp_item("u8", DType::u8, {3}, 1),         ramp_item("bool", DType::boolean, {5}, 2),
      ramp_item("i8", DType::i8, {1, 3}, 3),      ramp_item("bf16", DType::bf16, {3, 1}, 4),
      ramp_item("f16", DType::f16, {7}, 5),       ramp_item("i16", DType::i16, {1}, 6),
      ramp_item("f32", DType::f32, {2, 3}, 7),    ramp_item("i32", DType::i32, {3}, 8),
      ramp_item("f64", DType::f64, {1, 1, 3}, 9), ramp_item("i64", DType::i64, {2}, 10),
  };
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "round trip"}};
  std::string path = dir.str("all.safetensors");
  safetensors_write(path, items, meta);

  auto f = SafetensorsFile::open(path);
  EXPECT_EQ(f->entries().size(), items.size());
  EXPECT_EQ(f->metadata(), meta);
  for (const auto& it : items) {
    ASSERT_TRUE(f->contains(it.name)) << it.name;
    expect_same(it, f->get(it.name));
  }
  // The same bytes validate as an in-memory buffer too.
  std::string bytes = test::read_bytes(path);
  EXPECT_EQ(safetensors_parse_buffer(bytes.data(), bytes.size(), "buf").size(), items.size());
  // Data offsets are contiguous from 0 and cover the data section exactly (as HF writes them).
  auto parts = test::safetensors_split(bytes);
  uint64_t covered = 0;
  for (const auto& e : f->entries()) covered += e.end - e.begin;
  EXPECT_EQ(covered, parts.data.size());
}

TEST(Safetensors, ConvertsFloatAndIntegerValues) {
  TempDir dir;
  std::vector<float> vals = {1.5f, -2.25f, 0.0f, 3e-3f, 65504.0f, -1e10f};
  std::vector<uint16_t> bf(vals.size()), hf(vals.size());
  for (size_t i = 0; i < vals.size(); ++i) {
    bf[i] = f32_to_bf16(vals[i]);
    hf[i] = f32_to_f16(vals[i]);
  }
  auto raw = [](const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    return std::vector<unsigned char>(b, b + n);
  };
  std::vector<int64_t> ids = {0, -7, 1ll << 40};
  std::vector<SafetensorsWriteItem> items = {
      safetensors_item_f32("f32", {2, 3}, vals.data()),
      {"bf16", DType::bf16, {6}, raw(bf.data(), 12)},
      {"f16", DType::f16, {6}, raw(hf.data(), 12)},
      {"ids", DType::i64, {3}, raw(ids.data(), 24)},
  };
  safetensors_write(dir.str("v.safetensors"), items);
  WeightStore ws = WeightStore::open(dir.str("v.safetensors"));
  EXPECT_EQ(ws.get("f32").to_f32(), vals);
  std::vector<float> b = ws.get("bf16").to_f32(), h = ws.get("f16").to_f32();
  for (size_t i = 0; i < vals.size(); ++i) {
    EXPECT_EQ(b[i], bf16_to_f32(bf[i]));
    // bf16 keeps 8 significant bits: round-to-nearest error at most half an ulp, 2^-8 relative.
    EXPECT_NEAR(b[i], vals[i], std::abs(vals[i]) * 0x1p-8f);
    EXPECT_EQ(h[i], f16_to_f32(hf[i]));
  }
  EXPECT_EQ(h[0], 1.5f);          // exact in f16
  EXPECT_EQ(h[4], 65504.0f);      // largest finite f16
  EXPECT_TRUE(std::isinf(h[5]));  // -1e10 overflows f16
  EXPECT_EQ(ws.get("ids").to_i64(), ids);
  EXPECT_EQ(ws.total_bytes(), 24u + 12 + 12 + 24);
}

TEST(Safetensors, EmptyAndScalarTensors) {
  TempDir dir;
  float one = 42.0f;
  std::vector<SafetensorsWriteItem> items = {
      {"empty", DType::f32, {0}, {}},
      {"empty2d", DType::bf16, {4, 0}, {}},
      safetensors_item_f32("scalar", {}, &one),
      ramp_item("after", DType::u8, {2}, 3),
  };
  std::string path = dir.str("e.safetensors");
  safetensors_write(path, items);
  auto f = SafetensorsFile::open(path);
  ASSERT_EQ(f->entries().size(), 4u);
  EXPECT_EQ(f->get("empty").numel(), 0);
  EXPECT_TRUE(f->get("empty").to_f32().empty());  // fuzz finding: memcpy(nullptr, .., 0)
  EXPECT_TRUE(f->get("empty2d").to_f32().empty());
  EXPECT_EQ(f->get("empty2d").shape, (Shape{4, 0}));
  EXPECT_EQ(f->get("empty2d").nbytes(), 0u);
  TensorView s = f->get("scalar");
  EXPECT_TRUE(s.shape.empty());
  EXPECT_EQ(s.numel(), 1);
  EXPECT_EQ(s.to_f32(), std::vector<float>{42.0f});
  expect_same(items[3], f->get("after"));
}

TEST(Safetensors, FileWithNoTensors) {
  TempDir dir;
  std::string path = dir.str("none.safetensors");
  safetensors_write(path, {});
  auto f = SafetensorsFile::open(path);
  EXPECT_TRUE(f->entries().empty());
  EXPECT_TRUE(f->metadata().empty());
  EXPECT_THROW(f->get("x"), Error);
}

TEST(Safetensors, WeightStoreOpensFolderAndFile) {
  TempDir dir;
  std::vector<SafetensorsWriteItem> items = {ramp_item("a", DType::bf16, {2, 2}, 1),
                                             ramp_item("b", DType::f32, {3}, 2)};
  safetensors_write(dir.str("model.safetensors"), items);
  for (const std::string& p : {dir.str(), dir.str("model.safetensors")}) {
    WeightStore ws = WeightStore::open(p);
    EXPECT_EQ(ws.names(), (std::vector<std::string>{"a", "b"}));
    expect_same(items[0], ws.get("a"));
    expect_same(items[1], ws.get("b"));
    EXPECT_EQ(ws.total_bytes(), 8u + 12);
    try {
      ws.get("missing.weight");
      ADD_FAILURE() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("'missing.weight' not found"), std::string::npos);
    }
  }
  TempDir empty;
  EXPECT_THROW(WeightStore::open(empty.str()), Error);
  EXPECT_THROW(WeightStore::open(empty.str("nope")), Error);
}

// Writes two shards and model.safetensors.index.json naming them.
void write_sharded(const TempDir& dir, const std::vector<SafetensorsWriteItem>& first,
                   const std::vector<SafetensorsWriteItem>& second) {
  safetensors_write(dir.str("model-00001-of-00002.safetensors"), first);
  safetensors_write(dir.str("model-00002-of-00002.safetensors"), second);
  nlohmann::json index = {{"metadata", {{"total_size", 0}}},
                          {"weight_map", nlohmann::json::object()}};
  for (const auto& it : first) index["weight_map"][it.name] = "model-00001-of-00002.safetensors";
  for (const auto& it : second) index["weight_map"][it.name] = "model-00002-of-00002.safetensors";
  test::write_bytes(dir.path() / "model.safetensors.index.json", index.dump(2));
}

TEST(Safetensors, ShardedFolderWithIndex) {
  TempDir dir;
  std::vector<SafetensorsWriteItem> first = {
      ramp_item("model.embed_tokens.weight", DType::bf16, {8, 4}, 1),
      ramp_item("model.layers.0.w", DType::bf16, {4, 4}, 2)};
  std::vector<SafetensorsWriteItem> second = {ramp_item("model.norm.weight", DType::f32, {4}, 3),
                                              ramp_item("lm_head.weight", DType::bf16, {8, 4}, 4)};
  write_sharded(dir, first, second);
  WeightStore ws = WeightStore::open(dir.str());
  EXPECT_EQ(ws.names().size(), 4u);
  for (const auto& it : first) expect_same(it, ws.get(it.name));
  for (const auto& it : second) expect_same(it, ws.get(it.name));
  EXPECT_EQ(ws.total_bytes(), 64u + 32 + 16 + 64);
}

TEST(Safetensors, ShardIndexErrors) {
  std::vector<SafetensorsWriteItem> first = {ramp_item("a", DType::u8, {2}, 1)};
  std::vector<SafetensorsWriteItem> second = {ramp_item("b", DType::u8, {2}, 2)};
  auto expect_error = [](const std::string& path, const std::string& needle) {
    try {
      WeightStore::open(path);
      ADD_FAILURE() << "expected an error mentioning " << needle;
    } catch (const Error& e) {
      std::string m = e.what();
      EXPECT_NE(m.find("model.safetensors.index.json"), std::string::npos) << m;
      EXPECT_NE(m.find(needle), std::string::npos) << m;
    }
  };
  {  // the index maps a tensor to a shard that does not hold it
    TempDir dir;
    write_sharded(dir, first, second);
    auto index =
        nlohmann::json::parse(test::read_bytes(dir.path() / "model.safetensors.index.json"));
    index["weight_map"]["b"] = "model-00001-of-00002.safetensors";
    test::write_bytes(dir.path() / "model.safetensors.index.json", index.dump());
    expect_error(dir.str(), "tensor 'b' is mapped to shard 'model-00001-of-00002.safetensors'");
  }
  {  // a shard path that leaves the folder
    TempDir dir;
    write_sharded(dir, first, second);
    test::write_bytes(dir.path() / "model.safetensors.index.json",
                      R"({"weight_map": {"a": "../model-00001-of-00002.safetensors"}})");
    expect_error(dir.str(), "must be a plain file name");
  }
  {  // no weight_map
    TempDir dir;
    write_sharded(dir, first, second);
    test::write_bytes(dir.path() / "model.safetensors.index.json", R"({"metadata": {}})");
    expect_error(dir.str(), "'weight_map'");
  }
}

TEST(Safetensors, AtomicWriterReplacesTargetAndLeavesNoTempFile) {
  TempDir dir;
  std::string path = dir.str("out.safetensors");
  test::write_bytes(path, "old contents that are not a safetensors file");
  std::vector<SafetensorsWriteItem> items = {ramp_item("x", DType::f32, {4}, 1)};
  safetensors_write(path, items);
  expect_same(items[0], SafetensorsFile::open(path)->get("x"));
  std::vector<SafetensorsWriteItem> items2 = {ramp_item("y", DType::bf16, {3}, 2)};
  safetensors_write(path, items2);
  auto f = SafetensorsFile::open(path);
  EXPECT_FALSE(f->contains("x"));
  expect_same(items2[0], f->get("y"));
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.path())) names.push_back(e.path().filename());
  EXPECT_EQ(names, std::vector<std::string>{"out.safetensors"});
}

TEST(Safetensors, WriterRejectsBadNamesAndKeepsTheOldFile) {
  TempDir dir;
  std::string path = dir.str("out.safetensors");
  std::vector<SafetensorsWriteItem> good = {ramp_item("x", DType::f32, {2}, 1)};
  safetensors_write(path, good);
  std::string before = test::read_bytes(path);
  EXPECT_THROW(safetensors_write(
                   path, {ramp_item("d", DType::u8, {1}, 1), ramp_item("d", DType::u8, {1}, 2)}),
               Error);
  EXPECT_THROW(safetensors_write(path, {ramp_item("__metadata__", DType::u8, {1}, 1)}), Error);
  EXPECT_THROW(safetensors_write(path, {ramp_item("bad\xff", DType::u8, {1}, 1)}), Error);
  EXPECT_EQ(test::read_bytes(path), before);
  // A folder that does not exist: an error naming the path, nothing created.
  EXPECT_THROW(safetensors_write(dir.str("no/such/dir/x.safetensors"), good), Error);
  size_t count = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) count += e.is_regular_file();
  EXPECT_EQ(count, 1u);
}

// Header checks that the CLI tests (tests/io/badinput_test.cpp) do not reach.
std::string error_of(const std::string& header_text, const std::string& data) {
  std::string file = test::safetensors_join(header_text, data);
  // 8-byte aligned copy, as a mapping would be.
  std::vector<uint64_t> words((file.size() + 7) / 8);
  std::memcpy(words.data(), file.data(), file.size());
  try {
    safetensors_parse_buffer(words.data(), file.size(), "t.safetensors");
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    EXPECT_EQ(m.rfind("t.safetensors: ", 0), 0u) << m;
    return m;
  }
  return "";
}

TEST(Safetensors, HeaderChecks) {
  auto has = [](const std::string& m, const std::string& needle) {
    return m.find(needle) != std::string::npos;
  };
  std::string e;
  e = error_of(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
               R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
               std::string(2, '\0'));
  EXPECT_TRUE(has(e, "names 'a' twice")) << e;
  e = error_of(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
               R"("b":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}})",
               std::string(5, '\0'));
  EXPECT_TRUE(has(e, "tensor 'b' starts at file byte") && has(e, "multiple of its element size 4"))
      << e;
  e = error_of(R"({"a":{"dtype":"U8","shape":[4611686018427387904,2,0],"data_offsets":[0,0]}})",
               "");
  EXPECT_TRUE(has(e, "too many elements")) << e;
  e = error_of(R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})", "");
  EXPECT_TRUE(has(e, "non-negative integers")) << e;
  e = error_of(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[2,0]}})", "");
  EXPECT_TRUE(has(e, "end before begin")) << e;
  e = error_of(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0]}})", "");
  EXPECT_TRUE(has(e, "'data_offsets' must be [begin, end]")) << e;
  e = error_of(R"({"a\nb":{"dtype":"X","shape":[1],"data_offsets":[0,1]}})", "x");
  EXPECT_TRUE(has(e, "tensor 'a\\x0Ab': unknown dtype 'X'")) << e;  // newline made printable
  e = error_of(R"({"__metadata__":{"k":1}})", "");
  EXPECT_TRUE(has(e, "'__metadata__.k' must be a string")) << e;
  e = error_of("[]", "");
  EXPECT_TRUE(has(e, "must be a JSON object")) << e;
  // Empty tensors may share an offset with others: they overlap nothing.
  EXPECT_EQ(error_of(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                     R"("z":{"dtype":"U8","shape":[0],"data_offsets":[1,1]}})",
                     "ab"),
            "");
  // A header length of 2^63 must not overflow the bound check.
  std::string big = test::u64_le_bytes(1ull << 63) + "{}";
  EXPECT_THROW(safetensors_parse_buffer(big.data(), big.size(), "t"), Error);
}

}  // namespace
}  // namespace elastic

namespace elastic {
namespace {

using test::TempDir;

// A weight file truncated after it was mapped: the first access past the new end raises SIGBUS,
// which the loader's handler turns into one line naming the file and exit status 1 (no core).
TEST(SafetensorsDeathTest, TruncatedWhileMappedExitsWithMessage) {
  TempDir dir;
  std::vector<float> big(1 << 20, 1.5f);
  const std::string path = dir.str("model.safetensors");
  safetensors_write(path, {safetensors_item_f32("w", {1 << 20}, big.data())});
  EXPECT_EXIT(
      {
        WeightStore ws = WeightStore::open(path);
        if (::truncate(path.c_str(), 4096) != 0) std::_Exit(3);
        const TensorView t = ws.get("w");
        volatile float sum = 0;
        const float* p = static_cast<const float*>(t.data);
        for (size_t i = 0; i < big.size(); i += 1024) sum = sum + p[i];
        std::_Exit(2);  // not reached: the pages past 4096 bytes are gone
      },
      ::testing::ExitedWithCode(1),
      "model\\.safetensors: the file became shorter while it was mapped");
}

// The files a model was loaded from cannot be replaced by an output while the store lives; a
// new output next to them and the same path after the store is closed are fine.
TEST(Safetensors, OutputsCannotReplaceLoadedModelFiles) {
  TempDir dir;
  std::vector<float> x(4, 1.f);
  safetensors_write(dir.str("model.safetensors"), {safetensors_item_f32("w", {4}, x.data())});
  test::write_bytes(dir.path() / "config.json", "{}");
  {
    WeightStore ws = WeightStore::open(dir.str());
    for (const char* name : {"model.safetensors", "config.json"}) {
      try {
        write_file_atomic(dir.str(name), "x");
        ADD_FAILURE() << name << ": expected an error";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("a file the model was loaded from"), std::string::npos)
            << e.what();
      }
    }
    EXPECT_NO_THROW(write_file_atomic(dir.str("other.json"), "x"));
  }
  EXPECT_NO_THROW(write_file_atomic(dir.str("config.json"), "{}"));
}

}  // namespace
}  // namespace elastic

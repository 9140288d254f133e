// Unit tests: each pipeline component against HF tokenizers on small synthetic tokenizer.json
// documents (data/hf_synthetic.json, made by make_hf_synthetic.py), invalid UTF-8, special-token
// handling, streaming, stop strings, chat formats and the errors for unsupported input.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "elastic/chat.h"
#include "elastic/error.h"
#include "elastic/fileio.h"
#include "elastic/tokenizer.h"
#include "tok_fixtures.h"
#include "tokenizer/unicode.h"

using elastic::EncodeOptions;
using elastic::Tokenizer;
using tok_test::shared;

namespace {

const Tokenizer& qwen() {
  static const Tokenizer t = Tokenizer::load(shared("data/qwen-tokenizer"));
  return t;
}
const Tokenizer& tinystories() {
  static const Tokenizer t = Tokenizer::load(shared("data/tinystories-656k"));
  return t;
}

std::string synthetic_path() {
  return std::string(ELASTIC_SOURCE_DIR) + "/tests/tokenizer/data/hf_synthetic.json";
}

TEST(TokenizerComponents, MatchHfOnSyntheticTokenizers) {
  auto doc = nlohmann::json::parse(elastic::read_file(synthetic_path()));
  int checked = 0;
  for (auto& [name, spec] : doc["tokenizers"].items()) {
    Tokenizer tok = Tokenizer::from_json_text(spec["json"].dump(), name);
    for (const auto& c : spec["cases"]) {
      std::string text = c["text"].get<std::string>();
      auto ids = c["ids"].get<std::vector<int32_t>>();
      EXPECT_EQ(tok.encode(text), ids) << name << ": \"" << text << "\"";
      EncodeOptions with;
      with.add_special = true;
      EXPECT_EQ(tok.encode(text, with), c["ids_special"].get<std::vector<int32_t>>())
          << name << " (add_special): \"" << text << "\"";
      if (!c["decoded"].is_null()) {
        EXPECT_EQ(tok.decode(ids), c["decoded"].get<std::string>())
            << name << ": \"" << text << "\"";
      }
      if (!c["decoded_skip"].is_null()) {
        EXPECT_EQ(tok.decode(c["ids_special"].get<std::vector<int32_t>>(), true),
                  c["decoded_skip"].get<std::string>())
            << name << " (skip special): \"" << text << "\"";
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 6 * 19);
}

TEST(TokenizerUtf8, InvalidInputIsReplacedByU_FFFD) {
  // Documented rule: each maximal invalid subsequence becomes U+FFFD before tokenization.
  const Tokenizer& t = qwen();
  std::string fffd = "\xEF\xBF\xBD";
  struct Case {
    std::string bad, repaired;
  } cases[] = {
      {"a\xFF"
       "b",
       "a" + fffd + "b"},
      {"\xC3", fffd},  // truncated 2-byte sequence
      {"\xE2\x82"
       "x",
       fffd + "x"},                          // truncated 3-byte: one U+FFFD for both bytes
      {"\xED\xA0\x80", fffd + fffd + fffd},  // surrogate: ED then two lone continuations
      {"\xC0\xAF", fffd + fffd},             // overlong
      {"\xF4\x90\x80\x80", fffd + fffd + fffd + fffd},  // above U+10FFFF
      {"ok\xF0\x9F\x98", "ok" + fffd},                  // truncated emoji at the end
  };
  for (const auto& c : cases) {
    EXPECT_EQ(t.encode(c.bad), t.encode(c.repaired)) << c.repaired;
    EXPECT_EQ(t.decode(t.encode(c.bad)), c.repaired);
  }
  // decode of byte tokens that are not UTF-8 on their own: "é" is two byte-level tokens.
  auto ids = t.encode("\xC3\xA9");
  ASSERT_EQ(ids.size(), 1u);
  std::vector<int32_t> half = {t.token_to_id("\xC3\x83").value()};  // byte 0xC3 alone
  EXPECT_EQ(t.decode(half), fffd);
  EXPECT_EQ(t.decode_bytes(half), "\xC3");
}

TEST(TokenizerSpecial, ParsedByDefaultAndPlainTextOnRequest) {
  const Tokenizer& t = qwen();
  std::string s = "<|im_start|>user\nHi<|im_end|>";
  EXPECT_EQ(t.encode(s), (std::vector<int32_t>{151644, 872, 198, 13048, 151645}));
  EncodeOptions plain;
  plain.parse_special = false;
  auto ids = t.encode(s, plain);
  for (int32_t id : ids) EXPECT_FALSE(t.is_special(id)) << id;
  EXPECT_EQ(t.decode(ids), s);
  EXPECT_GT(ids.size(), 5u);
  EXPECT_TRUE(t.is_special(151643));
  EXPECT_EQ(t.decode(t.encode(s), true), "user\nHi");
}

TEST(TokenizerSpecial, Llama3TableMatchesTokenizerConfig) {
  // The built-in 256 special tokens (used when tokenizer.model has no tokenizer_config.json
  // beside it) must equal the names tokenizer_config.json gives.
  std::string dir = ::testing::TempDir() + "/llama3_model_only";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(shared("data/llama3-tokenizer/tokenizer.model"),
                             dir + "/tokenizer.model",
                             std::filesystem::copy_options::overwrite_existing);
  Tokenizer bare = Tokenizer::load(dir + "/tokenizer.model");
  auto config = nlohmann::json::parse(
      elastic::read_file(shared("data/llama3-tokenizer/tokenizer_config.json")));
  int n = 0;
  for (auto& [id, tok] : config["added_tokens_decoder"].items()) {
    EXPECT_EQ(bare.id_to_token(std::stoi(id)), tok["content"].get<std::string>()) << id;
    EXPECT_TRUE(bare.is_special(std::stoi(id)));
    ++n;
  }
  EXPECT_EQ(n, 256);
  EXPECT_EQ(bare.bos_id(), 128000);
  EXPECT_EQ(bare.eos_id(), 128001);  // no config: <|end_of_text|>
  EncodeOptions bos;
  bos.add_special = true;
  EXPECT_EQ(bare.encode("hi", bos), (std::vector<int32_t>{128000, 6151}));
}

TEST(TokenizerStream, ConcatenationEqualsDecode) {
  // Every fixture line, streamed token by token, for a byte-level and a SentencePiece-style
  // tokenizer (leading-space strip, <unk> pieces): pieces are valid UTF-8, their concatenation
  // is decode(ids).
  struct Src {
    const Tokenizer* tok;
    const char* fixture;
  } srcs[] = {{&qwen(), "qwen.jsonl"}, {&tinystories(), "tinystories.jsonl"}};
  for (const auto& src : srcs) {
    for (const auto& line : tok_test::read_fixture(src.fixture)) {
      elastic::StreamDecoder sd(*src.tok);
      std::string all;
      for (int32_t id : line.ids) {
        std::string piece = sd.push(id);
        EXPECT_TRUE(elastic::tokenizer_detail::utf8_valid(piece)) << line.text;
        all += piece;
      }
      all += sd.finish();
      EXPECT_EQ(all, src.tok->decode(line.ids)) << src.fixture << ": " << line.text;
    }
  }
}

TEST(TokenizerStream, HoldsIncompleteCharacters) {
  const Tokenizer& t = qwen();
  // "€" is one token; split into its three byte-level tokens the stream must wait.
  std::vector<int32_t> bytes;
  const auto& alphabet = elastic::tokenizer_detail::byte_level_chars();
  for (int b : {0xE2, 0x82, 0xAC}) bytes.push_back(t.token_to_id(alphabet[b]).value());
  elastic::StreamDecoder sd(t);
  EXPECT_EQ(sd.push(bytes[0]), "");
  EXPECT_EQ(sd.push(bytes[1]), "");
  EXPECT_EQ(sd.push(bytes[2]), "\xE2\x82\xAC");
  elastic::StreamDecoder cut(t);
  EXPECT_EQ(cut.push(bytes[0]), "");
  EXPECT_EQ(cut.finish(), "\xEF\xBF\xBD");  // incomplete at the end: U+FFFD
}

TEST(TokenizerStop, HoldsPrefixesAndCutsAtTheStop) {
  elastic::StopMatcher m({"<|im_end|>", "\n\nUser:"});
  std::string shown;
  for (const char* piece : {"Hello", " world", "<|im", "_e", "nd|>", "after"})
    shown += m.push(piece);
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.matched(), "<|im_end|>");
  EXPECT_EQ(shown, "Hello world");
  EXPECT_EQ(m.push("more"), "");

  elastic::StopMatcher n({"STOP"});
  EXPECT_EQ(n.push("abcST"), "abc");
  EXPECT_EQ(n.push("x"), "STx");  // not a stop after all: released
  EXPECT_EQ(n.push("S"), "");
  EXPECT_EQ(n.finish(), "S");
  EXPECT_FALSE(n.stopped());
}

TEST(Chat, ChatMLWithDetectedDefaultSystem) {
  elastic::ChatFormat f = elastic::chat_format_detect(shared("data/qwen-tokenizer"));
  EXPECT_EQ(f.kind, elastic::ChatTemplate::chatml);
  ASSERT_TRUE(f.default_system.has_value());
  EXPECT_EQ(*f.default_system, "You are a helpful assistant.");
  std::string p = elastic::chat_format(f, {{"user", "Hi"}}, true);
  EXPECT_EQ(p,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  std::string q = elastic::chat_format(
      f, {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello"}}, false);
  EXPECT_EQ(q,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello<|im_end|>\n");
  // Encoded, the markers are single special ids.
  auto ids = qwen().encode(p);
  EXPECT_EQ(ids.front(), 151644);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 151645), 2);
}

TEST(Chat, Llama3Headers) {
  elastic::ChatFormat f = elastic::chat_format_detect(shared("data/llama3-tokenizer"));
  EXPECT_EQ(f.kind, elastic::ChatTemplate::llama3);
  EXPECT_FALSE(f.default_system.has_value());
  f.default_system = "You are terse.";
  std::string p = elastic::chat_format(f, {{"user", "  hi \n"}}, true);
  EXPECT_EQ(
      p,
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
      "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\n");
  // The fixture's Llama 3 chat line is exactly this format.
  elastic::ChatFormat plain{elastic::ChatTemplate::llama3, std::nullopt};
  std::string line = elastic::chat_format(plain, {{"user", "hi"}}, false);
  EXPECT_EQ(line, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>");
  EXPECT_EQ(elastic::chat_template_from_name("chatml"), elastic::ChatTemplate::chatml);
  EXPECT_THROW(elastic::chat_template_from_name("vicuna"), elastic::Error);
}

// ---- bad input ----

std::string minimal_json(const std::string& normalizer, const std::string& pre,
                         const std::string& dec) {
  return R"({"added_tokens":[],"normalizer":)" + normalizer + R"(,"pre_tokenizer":)" + pre +
         R"(,"post_processor":null,"decoder":)" + dec +
         R"(,"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]}})";
}

void expect_error_mentions(const std::string& json, const std::string& needle) {
  try {
    Tokenizer::from_json_text(json, "test.json");
    ADD_FAILURE() << "no error for " << json;
  } catch (const elastic::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("test.json"), std::string::npos) << e.what();
  }
}

TEST(TokenizerBadInput, UnsupportedComponentsAreNamed) {
  Tokenizer ok = Tokenizer::from_json_text(minimal_json("null", "null", "null"), "test.json");
  EXPECT_EQ(ok.encode("ab"), std::vector<int32_t>{2});
  expect_error_mentions(minimal_json(R"({"type":"NFKC"})", "null", "null"), "NFKC");
  expect_error_mentions(
      minimal_json(R"({"type":"Sequence","normalizers":[{"type":"Lowercase"}]})", "null", "null"),
      "Lowercase");
  expect_error_mentions(minimal_json("null", R"({"type":"Whitespace"})", "null"), "Whitespace");
  expect_error_mentions(minimal_json("null", "null", R"({"type":"WordPiece"})"), "WordPiece");
  expect_error_mentions(
      minimal_json("null", R"({"type":"Split","pattern":{"Regex":"(["},"behavior":"Isolated"})",
                   "null"),
      "regex");
  expect_error_mentions(R"({"model":{"type":"Unigram","vocab":[]}})", "Unigram");
  expect_error_mentions(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":["a c"]}})",
                        "merges[0]");
  expect_error_mentions(R"({"model":{"type":"BPE","vocab":{"a":-4},"merges":[]}})",
                        "model.vocab.a");
  expect_error_mentions("{not json", "invalid JSON");
}

TEST(TokenizerBadInput, FilesAndIds) {
  EXPECT_THROW(Tokenizer::load("/nonexistent/folder"), elastic::Error);
  EXPECT_THROW(Tokenizer::load(shared("data/stories260k")), elastic::Error);  // no tokenizer there
  EXPECT_THROW(Tokenizer::load(shared("data/stories260k/tok512.bin")),
               elastic::Error);  // not tiktoken
  std::vector<int32_t> bad = {5, 999999};
  EXPECT_THROW(qwen().decode(bad), elastic::Error);
  std::vector<int32_t> negative = {-1};
  EXPECT_THROW(qwen().decode(negative), elastic::Error);
}

}  // namespace

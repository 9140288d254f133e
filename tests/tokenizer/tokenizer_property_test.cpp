// Property tests: decode(encode(s)) == s for byte-level BPE on random strings (ASCII, random
// Unicode scalars from every plane, whitespace/digit/punctuation-heavy mixes), modulo NFC for
// Qwen (whose normalizer is NFC); arbitrary bytes round-trip to their U+FFFD repair.
#include <gtest/gtest.h>

#include <random>

#include "elastic/tokenizer.h"
#include "tok_fixtures.h"
#include "tokenizer/unicode.h"

using elastic::Tokenizer;
using tok_test::shared;

namespace {

using elastic::tokenizer_detail::nfc_inplace;
using elastic::tokenizer_detail::utf8_append;
using elastic::tokenizer_detail::utf8_repair;

// A random valid UTF-8 string: a mix of ASCII words, whitespace runs, digits, punctuation,
// specials-like text and random scalar values (surrogates excluded).
std::string random_text(std::mt19937& rng) {
  std::uniform_int_distribution<int> kind(0, 7), len(0, 12);
  std::string s;
  int parts = len(rng) + 1;
  for (int p = 0; p < parts; ++p) {
    int n = len(rng);
    switch (kind(rng)) {
      case 0:
        for (int i = 0; i < n; ++i) s += static_cast<char>('a' + rng() % 26);
        break;
      case 1:
        for (int i = 0; i < n; ++i) s += " \t\n\r\v\f"[rng() % 6];
        break;
      case 2:
        for (int i = 0; i < n; ++i) s += static_cast<char>('0' + rng() % 10);
        break;
      case 3:
        for (int i = 0; i < n; ++i) s += "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"[rng() % 32];
        break;
      case 4:
        s += rng() % 2 ? "<|im_start|>" : "<|eot_id|>";
        break;
      case 5:
        for (int i = 0; i < n; ++i) utf8_append(s, 0x80 + rng() % 0x780);
        break;  // 2-byte
      case 6:
        for (int i = 0; i < n; ++i) {
          uint32_t cp = rng() % 0xFFFF;
          if (cp >= 0xD800 && cp < 0xE000) cp = 0x4E00 + cp % 0x5000;
          utf8_append(s, cp);
        }
        break;
      default:
        for (int i = 0; i < n; ++i) utf8_append(s, 0x10000 + rng() % 0x100000);
        break;
    }
  }
  return s;
}

TEST(TokenizerProperty, Llama3RoundTripsExactly) {
  // No normalizer: every valid string comes back byte for byte; special strings included.
  Tokenizer tok = Tokenizer::load(shared("data/llama3-tokenizer"));
  std::mt19937 rng(1234);
  for (int i = 0; i < 3000; ++i) {
    std::string s = random_text(rng);
    ASSERT_EQ(tok.decode(tok.encode(s)), s) << "case " << i;
  }
}

TEST(TokenizerProperty, QwenRoundTripsModuloNfc) {
  Tokenizer tok = Tokenizer::load(shared("data/qwen-tokenizer"));
  std::mt19937 rng(99);
  for (int i = 0; i < 3000; ++i) {
    std::string s = random_text(rng);
    std::string n = s;
    nfc_inplace(n);
    ASSERT_EQ(tok.decode(tok.encode(s)), n) << "case " << i;
  }
  // Combining sequences that NFC composes: decoded text is the composed form.
  EXPECT_EQ(tok.decode(tok.encode("e\xCC\x81")), "\xC3\xA9");
}

TEST(TokenizerProperty, ArbitraryBytesRoundTripToTheirRepair) {
  Tokenizer tok = Tokenizer::load(shared("data/llama3-tokenizer"));
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 256);
    ASSERT_EQ(tok.decode(tok.encode(s)), utf8_repair(s)) << "case " << i;
  }
}

TEST(TokenizerProperty, LongRunsStayLinear) {
  // 200k identical letters / spaces / digits: one huge word each; must finish quickly and
  // round-trip (the heap BPE is O(n log n)).
  Tokenizer tok = Tokenizer::load(shared("data/qwen-tokenizer"));
  for (const std::string unit : {"a", " ", "7", "\xE4\xBD\xA0", "ab "}) {
    std::string s;
    while (s.size() < 200000) s += unit;
    auto ids = tok.encode(s);
    EXPECT_LE(ids.size(), s.size());  // digits are one token each in Qwen
    EXPECT_EQ(tok.decode(ids), s);
  }
}

}  // namespace

namespace {

TEST(TokenizerProperty, ConcurrentEncodeMatchesSerial) {
  // One Tokenizer shared by threads (each has its own word cache and regex scratch).
  Tokenizer tok = Tokenizer::load(shared("data/qwen-tokenizer"));
  auto lines = tok_test::read_fixture("qwen.jsonl");
  std::vector<std::vector<int32_t>> got(lines.size() * 4);
#pragma omp parallel for num_threads(4) schedule(dynamic, 7)
  for (size_t k = 0; k < got.size(); ++k) got[k] = tok.encode(lines[k % lines.size()].text);
  for (size_t k = 0; k < got.size(); ++k) EXPECT_EQ(got[k], lines[k % lines.size()].ids) << k;
}

}  // namespace

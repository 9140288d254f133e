// libFuzzer target: arbitrary bytes as text to encode. The first byte picks the tokenizer
// (Qwen tokenizer.json: NFC + byte-level BPE + specials; Llama 3 tiktoken; TinyStories:
// SentencePiece-style with normalized added tokens and unk) and the options; the rest is the
// text. Findings: any exception, an id outside the vocabulary, decode output that is not valid
// UTF-8, a byte-level round trip that is not the text's U+FFFD repair (NFC for Qwen), or a
// streamed decode that differs from decode. A first byte with bit 0x80 picks instead a
// tokenizer whose pre-tokenizer regexes backtrack catastrophically (hostile_regexes.h): it must
// encode or fail with the regex-limit error, and never hang (libFuzzer's -timeout).
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "elastic/error.h"
#include "elastic/tokenizer.h"
#include "hostile_regexes.h"
#include "tokenizer/unicode.h"

#ifndef ELASTIC_SHARED_DIR
#define ELASTIC_SHARED_DIR "../shared"
#endif

namespace {

const elastic::Tokenizer& tokenizer(int which) {
  static const elastic::Tokenizer qwen =
      elastic::Tokenizer::load(ELASTIC_SHARED_DIR "/data/qwen-tokenizer");
  static const elastic::Tokenizer llama3 =
      elastic::Tokenizer::load(ELASTIC_SHARED_DIR "/data/llama3-tokenizer");
  static const elastic::Tokenizer stories =
      elastic::Tokenizer::load(ELASTIC_SHARED_DIR "/data/tinystories-656k");
  return which == 0 ? qwen : which == 1 ? llama3 : stories;
}

const elastic::Tokenizer& hostile_tokenizer() {
  static const elastic::Tokenizer tok = [] {
    std::ifstream in(ELASTIC_SHARED_DIR "/data/tinystories-656k/tokenizer.json");
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string path = "/tmp/fuzz_tokenizer_hostile." + std::to_string(::getpid()) + ".json";
    std::ofstream(path) << elastic::fuzz::hostile_tokenizer_json(ss.str());
    elastic::Tokenizer t = elastic::Tokenizer::load(path);
    ::unlink(path.c_str());
    return t;
  }();
  return tok;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  for (int i = 0; i < 3; ++i) tokenizer(i);  // load once, outside the timed runs
  hostile_tokenizer();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace elastic::tokenizer_detail;
  if (size == 0) return 0;
  if (data[0] & 0x80) {
    std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
    try {
      for (int32_t id : hostile_tokenizer().encode(text, elastic::EncodeOptions{}))
        if (id < 0 || id >= hostile_tokenizer().vocab_size()) __builtin_trap();
    } catch (const elastic::Error& e) {
      if (std::string(e.what()).find("backtracks catastrophically") == std::string::npos)
        __builtin_trap();
    }
    return 0;
  }
  const int which = data[0] % 3;
  elastic::EncodeOptions opt;
  opt.parse_special = (data[0] & 0x10) == 0;
  opt.add_special = (data[0] & 0x20) != 0;
  std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
  const elastic::Tokenizer& tok = tokenizer(which);

  std::vector<int32_t> ids = tok.encode(text, opt);
  for (int32_t id : ids) {
    if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
  }
  std::string decoded = tok.decode(ids);
  if (!utf8_valid(decoded)) __builtin_trap();

  std::string expected = utf8_repair(text);
  if (which == 1 && !opt.add_special && decoded != expected) __builtin_trap();
  if (which == 0 && !opt.add_special) {
    // NFC runs per segment between added tokens (as in HF), so compare canonical equivalence:
    // NFC(NFC(a) + NFC(b)) == NFC(a + b).
    std::string renormalized = decoded;
    nfc_inplace(renormalized);
    nfc_inplace(expected);
    if (renormalized != expected) __builtin_trap();
  }

  elastic::StreamDecoder stream(tok);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  streamed += stream.finish();
  if (streamed != decoded) __builtin_trap();
  return 0;
}

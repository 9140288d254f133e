// libFuzzer target: arbitrary bytes as text to encode. The first byte picks the tokenizer
// (Qwen tokenizer.json: NFC + byte-level BPE + specials; Llama 3 tiktoken; TinyStories:
// SentencePiece-style with normalized added tokens and unk) and the options; the rest is the
// text. Findings: any exception, an id outside the vocabulary, decode output that is not valid
// UTF-8, a byte-level round trip that is not the text's U+FFFD repair (NFC for Qwen), or a
// streamed decode that differs from decode.
#include <cstdint>
#include <string>
#include <vector>

#include "elastic/tokenizer.h"
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

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  for (int i = 0; i < 3; ++i) tokenizer(i);  // load once, outside the timed runs
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace elastic::tokenizer_detail;
  if (size == 0) return 0;
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

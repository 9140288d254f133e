// Text <-> token ids, byte for byte like the reference tokenizers.
//
// Sources a Tokenizer loads (Tokenizer::load takes a model folder or one of these files):
//   - tokenizer.json (HF tokenizers format): BPE model, normalizers NFC / Prepend / Replace /
//     Sequence, pre-tokenizers Split / ByteLevel / Metaspace / Sequence, added tokens,
//     TemplateProcessing post-processor, decoders ByteLevel / Replace / ByteFallback / Fuse /
//     Strip / Metaspace / Sequence. Anything else is an elastic::Error naming the type.
//   - tokenizer.model in tiktoken format (Llama 3: "base64 rank" lines) with Meta's split
//     pattern and the 256 special tokens from id 128000.
//   - vocab.json + merges.txt (Qwen2 byte-level BPE) when no tokenizer.json exists.
// In a folder, a tiktoken tokenizer.model wins over tokenizer.json (the exact original of a
// conversion), then tokenizer.json, then vocab.json + merges.txt; tokenizer_config.json next to
// it supplies bos/eos names and, for the last two formats, the added tokens.
//
// Input text that is not valid UTF-8 is first repaired: every maximal invalid subsequence is
// replaced by U+FFFD (the Unicode "maximal subpart" practice, as Python's
// bytes.decode("utf-8", "replace")); the repaired text is what gets tokenized. decode() output is
// always valid UTF-8: bytes of tokens that do not form valid UTF-8 become U+FFFD the same way.
//
// Thread safety: a loaded Tokenizer is immutable; encode/decode may run concurrently (each thread
// keeps its own word cache).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace elastic {

namespace tokenizer_detail {
struct TokenizerImpl;
}

struct EncodeOptions {
  bool add_special = false;   // apply the post-processor (e.g. prepend BOS)
  bool parse_special = true;  // special-token strings in the text become their ids; when false
                              // they are tokenized as plain text (prompt-injection safety)
};

class Tokenizer {
 public:
  // path: a model folder or a tokenizer.json / tokenizer.model / vocab.json file.
  static Tokenizer load(const std::string& path);
  // A tokenizer.json document already in memory; `source` names it in error messages.
  static Tokenizer from_json_text(std::string_view json_text, const std::string& source);

  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options = {}) const;
  // Ids outside [0, vocab_size) are an elastic::Error.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  int32_t vocab_size() const;  // 1 + the largest id of the model or the added tokens
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::string id_to_token(int32_t id) const;  // the token's string (byte-level alphabet etc.)
  bool is_special(int32_t id) const;          // an added token marked special
  std::optional<int32_t> bos_id() const;      // from tokenizer_config.json / the format
  std::optional<int32_t> eos_id() const;
  const std::string& source() const;  // the file it was loaded from
  // Decodes the bytes of ids with no UTF-8 repair (for streaming: a tail may be incomplete).
  std::string decode_bytes(std::span<const int32_t> ids, bool skip_special = false) const;

 private:
  Tokenizer() = default;  // only through load / from_json_text, so impl_ is never null
  std::shared_ptr<const tokenizer_detail::TokenizerImpl> impl_;
};

// Incremental detokenization for streaming generation: push ids as they arrive, get back the
// text that is now final. Only complete UTF-8 is emitted; decoders that look at neighbouring
// tokens (a SentencePiece leading-space strip) are handled by decoding a sliding window.
// Invariant: the concatenation of all push() results and finish() equals decode(all ids).
// The tokenizer must outlive the StreamDecoder.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false);
  std::string push(int32_t id);
  std::string finish();  // whatever is still held back (incomplete UTF-8 becomes U+FFFD)

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t prefix_ = 0;  // window start: decode(ids_[prefix_, read_)) was emitted already
  size_t read_ = 0;
};

// Stop strings for generation: feed the streamed text, get back what may be shown. Text that
// could still become the start of a stop string is held back; once a stop string appears,
// stopped() is true and nothing from the stop string on is ever returned.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);
  std::string push(std::string_view text);
  std::string finish();  // the held-back text when generation ends without a stop
  bool stopped() const { return stopped_; }
  const std::string& matched() const { return matched_; }  // the stop string found

 private:
  std::vector<std::string> stops_;
  std::string held_;
  std::string matched_;
  bool stopped_ = false;
};

}  // namespace elastic

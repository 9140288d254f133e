// Internal pieces of the tokenizer: the pipeline HF tokenizers runs (added-token split ->
// normalizer -> pre-tokenizer -> BPE model -> post-processor; decoders back), each stage a plain
// struct the loaders fill in and tokenizer.cpp runs.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/regex.h"

namespace elastic::tokenizer_detail {

// ---- normalizers ----
enum class NormalizerKind { nfc, prepend, replace };
struct Normalizer {
  NormalizerKind kind = NormalizerKind::nfc;
  std::string text;                    // prepend: the prefix; replace: literal pattern
  std::shared_ptr<const Regex> regex;  // replace with a Regex pattern (text unused)
  std::string content;                 // replace: the replacement
};

// ---- pre-tokenizers ----
enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };
enum class PrependScheme { always, first, never };
enum class PreTokenizerKind { split, byte_level, metaspace };
struct PreTokenizer {
  PreTokenizerKind kind = PreTokenizerKind::split;
  // split
  std::shared_ptr<const Regex> regex;  // null: literal pattern in `literal`
  std::string literal;
  SplitBehavior behavior = SplitBehavior::isolated;
  bool invert = false;
  // byte_level
  bool add_prefix_space = false;
  bool use_regex = false;  // GPT-2 pattern split
  // metaspace
  std::string replacement = "\xE2\x96\x81";  // U+2581
  PrependScheme prepend_scheme = PrependScheme::always;
  bool split = true;
};

// ---- decoders ----
enum class DecoderKind { byte_level, replace, byte_fallback, fuse, strip, metaspace, raw_bytes };
struct Decoder {
  DecoderKind kind = DecoderKind::raw_bytes;
  std::string pattern, content;              // replace; strip: content = the character
  int start = 0, stop = 0;                   // strip counts
  std::string replacement = "\xE2\x96\x81";  // metaspace
  PrependScheme prepend_scheme = PrependScheme::always;
};

// ---- added tokens ----
struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false, lstrip = false, rstrip = false, normalized = false, single_word = false;
};

// Leftmost-longest matcher over a set of added tokens (byte trie).
class AddedTokenMatcher {
 public:
  struct Match {
    size_t begin, end;  // byte span in the text, lstrip/rstrip whitespace included
    int32_t id;
  };
  // patterns[i] is what is searched for tokens[i] (its content, or normalized content).
  void build(const std::vector<const AddedToken*>& tokens,
             const std::vector<std::string>& patterns);
  bool empty() const { return nodes_.size() <= 1; }
  // All matches, in order, non-overlapping; specials skipped when !include_special.
  void find_all(std::string_view text, bool include_special, std::vector<Match>& out) const;

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> next;  // (byte, child) sorted by byte
    int32_t token = -1;                             // index into tokens_ when a pattern ends
  };
  int32_t child(int32_t node, uint8_t b) const;
  std::vector<Node> nodes_;
  std::vector<const AddedToken*> tokens_;
  std::array<bool, 256> first_byte_{};
};

// ---- post-processor (TemplateProcessing, single sequence) ----
struct TemplateItem {
  bool is_sequence = false;
  std::vector<int32_t> ids;  // special token ids when !is_sequence
};

struct TokenizerImpl {
  std::string source;
  std::vector<Normalizer> normalizers;
  std::vector<PreTokenizer> pre_tokenizers;
  bool byte_level_input = false;  // a ByteLevel pre-tokenizer: the model sees raw bytes
  BpeModel model;
  std::vector<AddedToken> added;            // sorted by id
  AddedTokenMatcher raw_matcher;            // normalized == false tokens, on the raw text
  AddedTokenMatcher normalized_matcher;     // normalized == true tokens, on normalized text
  std::vector<TemplateItem> post_template;  // empty: no post-processing
  std::vector<Decoder> decoders;
  bool decoder_join_space = false;  // no decoder at all: tokens joined by " " (HF)
  std::optional<int32_t> bos_id, eos_id;
  int32_t vocab_size = 0;
  // Per id: the token string decoders see (model piece, or added-token content) and flags.
  std::vector<std::string> id_text;
  std::vector<uint8_t> id_special;
  PieceMap added_to_id;              // added-token content -> id
  bool vocab_byte_alphabet = false;  // model pieces are written in the GPT-2 byte alphabet

  // Called by loaders once every field above is set: builds matchers, id tables, vocab size.
  void finalize();
  std::optional<int32_t> find_token(std::string_view token) const;
};

// Loaders (tokenizer_load.cpp).
std::shared_ptr<TokenizerImpl> load_hf_json(std::string_view text, const std::string& source);
std::shared_ptr<TokenizerImpl> load_tiktoken(const std::string& path);
std::shared_ptr<TokenizerImpl> load_vocab_merges(const std::string& vocab_path,
                                                 const std::string& merges_path);
// Fills bos/eos (and, when `add_tokens`, added tokens) from a tokenizer_config.json.
void apply_tokenizer_config(TokenizerImpl& t, const std::string& config_path, bool add_tokens);

// Normalization and pre-tokenization (pipeline.cpp).
void normalize(const std::vector<Normalizer>& steps, std::string& s);
struct Piece {
  uint32_t begin, end;  // byte span in the buffer
};
// Splits `buf` (one normalized segment) into pieces; may rewrite buf (Metaspace, prefix space).
// at_text_start: the segment starts at offset 0 of the input (Metaspace prepend_scheme first).
void pre_tokenize(const std::vector<PreTokenizer>& steps, std::string& buf, bool at_text_start,
                  std::vector<Piece>& pieces);
// Decoder chain over token strings; the result is raw bytes (not yet UTF-8 repaired).
std::string run_decoders(const std::vector<Decoder>& steps, std::vector<std::string> tokens,
                         bool join_space);

}  // namespace elastic::tokenizer_detail

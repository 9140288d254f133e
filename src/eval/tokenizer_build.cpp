// The word-level tokenizer of the suite's vocabulary (eval_tokenizer_json, eval.h).
//
// A byte-level BPE in HF tokenizer.json form with no merges and ignore_merges: a pre-tokenized
// piece that is in the vocabulary is one token, any other piece falls back to its bytes (the 256
// byte tokens are in the vocabulary), so every text encodes and decodes exactly. The pieces in
// the vocabulary are every suite word with and without its leading space (a word starts a line
// without one), every number 0..999 likewise, and the punctuation runs the templates produce.
#include <nlohmann/json.hpp>
#include <set>

#include "elastic/eval.h"
#include "tokenizer/unicode.h"

namespace elastic {

using json = nlohmann::json;
using tokenizer_detail::byte_level_chars;

namespace {

// Llama 3's pattern with whole numbers (one piece with their leading space, like words) instead
// of runs of up to three digits and no English contractions (the suite has none).
constexpr const char* kPattern =
    "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";

std::string to_alphabet(const std::string& raw) {
  const auto& chars = byte_level_chars();
  std::string out;
  for (unsigned char b : raw) out += chars[b];
  return out;
}

}  // namespace

std::string eval_tokenizer_json(const EvalVocab& vocab) {
  eval_vocab_validate(vocab);
  // Pieces in raw bytes, in a fixed order: bytes first (ids 0..255), then the rest sorted.
  std::set<std::string> pieces;
  for (const std::string& w : eval_vocab_words(vocab)) {
    pieces.insert(w);
    pieces.insert(" " + w);
  }
  for (int i = 0; i < 1000; ++i) {
    const std::string num = std::to_string(i);
    pieces.insert(num);
    pieces.insert(" " + num);
  }
  for (const char* p : {".", ",", ":", "?", "!"})
    for (const char* lead : {"", " "})
      for (const char* nl : {"", "\n", "\n\n"}) pieces.insert(std::string(lead) + p + nl);
  for (const char* s : {"\n", "\n\n", " \n", " ", "  "}) pieces.insert(s);

  json v = json::object();
  int32_t id = 0;
  const auto& chars = byte_level_chars();
  for (int b = 0; b < 256; ++b) v[chars[size_t(b)]] = id++;
  for (const std::string& p : pieces) {
    const std::string a = to_alphabet(p);
    if (!v.contains(a)) v[a] = id++;  // single bytes are already there
  }
  const int32_t eos = id;
  const char* kEos = "<|endoftext|>";
  v[kEos] = id++;

  json added = json::array({{{"id", eos},
                             {"content", kEos},
                             {"single_word", false},
                             {"lstrip", false},
                             {"rstrip", false},
                             {"normalized", false},
                             {"special", true}}});
  json doc = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers", json::array({{{"type", "Split"},
                                        {"pattern", {{"Regex", kPattern}}},
                                        {"behavior", "Isolated"},
                                        {"invert", false}},
                                       {{"type", "ByteLevel"},
                                        {"add_prefix_space", false},
                                        {"trim_offsets", false},
                                        {"use_regex", false}}})}}},
      // The end-of-text token starts every sequence (GPT-2's convention: one token for both).
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", kEos}, {"type_id", 0}}}},
                                {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
        {"pair", json::array({{{"SpecialToken", {{"id", kEos}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                              {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
        {"special_tokens",
         {{kEos, {{"id", kEos}, {"ids", json::array({eos})}, {"tokens", json::array({kEos})}}}}}}},
      {"decoder",
       {{"type", "ByteLevel"},
        {"add_prefix_space", true},
        {"trim_offsets", true},
        {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", true},
        {"vocab", std::move(v)},
        {"merges", json::array()}}}};
  return doc.dump(1) + "\n";
}

}  // namespace elastic

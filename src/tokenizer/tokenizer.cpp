// Tokenizer: finds the files, runs the encode pipeline (added tokens -> normalizer ->
// added tokens on normalized text -> pre-tokenizer -> BPE -> post-processor) and decoding.
#include "elastic/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "elastic/error.h"
#include "elastic/fileio.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace elastic {

using namespace tokenizer_detail;
namespace fs = std::filesystem;

namespace tokenizer_detail {

void TokenizerImpl::finalize() {
  std::stable_sort(added.begin(), added.end(),
                   [](const AddedToken& a, const AddedToken& b) { return a.id < b.id; });
  int32_t size = static_cast<int32_t>(id_text.size());
  if (!added.empty()) size = std::max(size, added.back().id + 1);
  vocab_size = size;
  id_text.resize(size);
  id_special.assign(size, 0);
  added_to_id.clear();
  std::vector<const AddedToken*> raw, norm;
  std::vector<std::string> raw_patterns, norm_patterns;
  for (const AddedToken& a : added) {
    // Decoders see a normalized added token in its normalized form (as tokenizers 0.2x does,
    // e.g. "<unk>" after Prepend("▁") decodes as " <unk>").
    std::string pattern = a.content;
    if (a.normalized) normalize(normalizers, pattern);
    id_text[a.id] = pattern;
    id_special[a.id] = a.special ? 1 : 0;
    added_to_id.emplace(a.content, a.id);
    if (a.normalized) {
      norm.push_back(&a);
      norm_patterns.push_back(pattern);
    } else {
      raw.push_back(&a);
      raw_patterns.push_back(a.content);
    }
  }
  raw_matcher.build(raw, raw_patterns);
  normalized_matcher.build(norm, norm_patterns);
}

std::optional<int32_t> TokenizerImpl::find_token(std::string_view token) const {
  auto added_it = added_to_id.find(token);
  if (added_it != added_to_id.end()) return added_it->second;
  std::string bytes;
  if (vocab_byte_alphabet) {
    if (!byte_level_to_bytes(token, bytes)) return std::nullopt;
    token = bytes;
  }
  auto it = model.piece_to_id.find(token);
  if (it == model.piece_to_id.end()) return std::nullopt;
  return it->second;
}

}  // namespace tokenizer_detail

namespace {

bool is_dir(const std::string& p) {
  std::error_code ec;
  return fs::is_directory(p, ec);
}
bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// A tiktoken rank file starts with "base64 rank"; a SentencePiece .model is binary protobuf.
bool looks_like_tiktoken(const std::string& path) {
  std::string head = read_file(path).substr(0, 256);
  size_t eol = head.find('\n');
  std::string line = head.substr(0, eol);
  size_t sp = line.find(' ');
  if (sp == std::string::npos || sp == 0 || sp + 1 >= line.size()) return false;
  for (size_t i = 0; i < sp; ++i) {
    char c = line[i];
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '=')) {
      return false;
    }
  }
  for (size_t i = sp + 1; i < line.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(line[i])) && line[i] != '\r') return false;
  }
  return true;
}

// tokenizer_config.json supplies names the vocab formats lack; added_tokens.json is the older
// place for Qwen's added tokens.
void apply_side_files(TokenizerImpl& t, const fs::path& dir, bool add_tokens) {
  fs::path config = dir / "tokenizer_config.json";
  if (is_file(config)) apply_tokenizer_config(t, config.string(), add_tokens);
  if (add_tokens && t.added.empty() && is_file(dir / "added_tokens.json")) {
    std::string path = (dir / "added_tokens.json").string();
    auto doc = nlohmann::json::parse(read_file(path), nullptr, false);
    if (!doc.is_object()) throw Error(path + ": must be a JSON object of token -> id");
    for (auto it = doc.begin(); it != doc.end(); ++it) {
      if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
          it.value().get<int64_t>() >= (1 << 27)) {
        throw Error(path + ": the id of an added token must be an integer in [0, 2^27)");
      }
      AddedToken a;
      a.id = it.value().get<int32_t>();
      a.content = it.key();
      a.special = true;
      t.added.push_back(std::move(a));
    }
    t.finalize();
  }
}

std::shared_ptr<TokenizerImpl> load_any(const std::string& path) {
  if (is_dir(path)) {
    fs::path dir(path);
    if (is_file(dir / "tokenizer.model") &&
        looks_like_tiktoken((dir / "tokenizer.model").string())) {
      auto t = load_tiktoken((dir / "tokenizer.model").string());
      apply_side_files(*t, dir, true);
      return t;
    }
    if (is_file(dir / "tokenizer.json")) {
      std::string p = (dir / "tokenizer.json").string();
      auto t = load_hf_json(read_file(p), p);
      apply_side_files(*t, dir, false);
      return t;
    }
    if (is_file(dir / "vocab.json") && is_file(dir / "merges.txt")) {
      auto t = load_vocab_merges((dir / "vocab.json").string(), (dir / "merges.txt").string());
      apply_side_files(*t, dir, true);
      return t;
    }
    throw Error(path +
                ": no tokenizer found (expected tokenizer.json, a tiktoken tokenizer.model, "
                "or vocab.json + merges.txt)");
  }
  fs::path file(path);
  if (!is_file(file)) throw Error(path + ": no such tokenizer file or model folder");
  fs::path dir = file.parent_path();
  if (dir.empty()) dir = ".";
  std::string name = file.filename().string();
  if (name == "vocab.json" || name == "merges.txt") {
    fs::path vocab = dir / "vocab.json", merges = dir / "merges.txt";
    if (!is_file(vocab) || !is_file(merges)) {
      throw Error(path + ": vocab.json and merges.txt must be side by side");
    }
    auto t = load_vocab_merges(vocab.string(), merges.string());
    apply_side_files(*t, dir, true);
    return t;
  }
  if (file.extension() == ".json") {
    auto t = load_hf_json(read_file(path), path);
    apply_side_files(*t, dir, false);
    return t;
  }
  if (!looks_like_tiktoken(path)) {
    throw Error(path +
                ": not a tiktoken rank file (\"base64 rank\" lines); SentencePiece .model "
                "files are not supported, use the model's tokenizer.json");
  }
  auto t = load_tiktoken(path);
  apply_side_files(*t, dir, true);
  return t;
}

struct EncodeScratch {
  std::string segment, sub;
  std::vector<Piece> pieces;
  std::vector<AddedTokenMatcher::Match> raw_matches, norm_matches;
};

// Pre-tokenizes and BPE-encodes one normalized run of text with no added tokens in it.
void encode_run(const TokenizerImpl& t, std::string& buf, bool at_text_start, EncodeScratch& s,
                std::vector<int32_t>& ids) {
  pre_tokenize(t.pre_tokenizers, buf, at_text_start, s.pieces);
  std::string_view view(buf);
  for (const Piece& p : s.pieces) t.model.encode_word(view.substr(p.begin, p.end - p.begin), ids);
}

void encode_segment(const TokenizerImpl& t, std::string_view raw, bool at_text_start,
                    bool parse_special, EncodeScratch& s, std::vector<int32_t>& ids) {
  s.segment.assign(raw);
  normalize(t.normalizers, s.segment);
  if (s.segment.empty()) return;
  if (t.normalized_matcher.empty()) {
    encode_run(t, s.segment, at_text_start, s, ids);
    return;
  }
  t.normalized_matcher.find_all(s.segment, parse_special, s.norm_matches);
  size_t pos = 0;
  auto gap = [&](size_t end) {
    if (end > pos) {
      s.sub.assign(s.segment, pos, end - pos);
      encode_run(t, s.sub, at_text_start && pos == 0, s, ids);
    }
  };
  std::vector<AddedTokenMatcher::Match> matches = s.norm_matches;
  for (const auto& m : matches) {
    gap(m.begin);
    ids.push_back(m.id);
    pos = m.end;
  }
  gap(s.segment.size());
}

}  // namespace

Tokenizer Tokenizer::load(const std::string& path) {
  Tokenizer t;
  t.impl_ = load_any(path);
  return t;
}

Tokenizer Tokenizer::from_json_text(std::string_view json_text, const std::string& source) {
  Tokenizer t;
  t.impl_ = load_hf_json(json_text, source);
  return t;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  const TokenizerImpl& t = *impl_;
  std::string repaired;
  if (!utf8_valid(text)) {
    repaired = utf8_repair(text);
    text = repaired;
  }
  thread_local EncodeScratch s;
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  t.raw_matcher.find_all(text, options.parse_special, s.raw_matches);
  std::vector<AddedTokenMatcher::Match> matches = s.raw_matches;
  size_t pos = 0;
  for (const auto& m : matches) {
    if (m.begin > pos) {
      encode_segment(t, text.substr(pos, m.begin - pos), pos == 0, options.parse_special, s, ids);
    }
    ids.push_back(m.id);
    pos = m.end;
  }
  if (pos < text.size())
    encode_segment(t, text.substr(pos), pos == 0, options.parse_special, s, ids);
  if (options.add_special && !t.post_template.empty()) {
    std::vector<int32_t> out;
    out.reserve(ids.size() + 4);
    for (const TemplateItem& item : t.post_template) {
      if (item.is_sequence) {
        out.insert(out.end(), ids.begin(), ids.end());
      } else {
        out.insert(out.end(), item.ids.begin(), item.ids.end());
      }
    }
    ids.swap(out);
  }
  return ids;
}

std::string Tokenizer::decode_bytes(std::span<const int32_t> ids, bool skip_special) const {
  const TokenizerImpl& t = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= t.vocab_size) {
      throw Error(t.source + ": token id " + std::to_string(id) +
                  " is outside the vocabulary [0, " + std::to_string(t.vocab_size) + ")");
    }
    if (skip_special && t.id_special[id]) continue;
    if (t.id_text[id].empty()) continue;  // an unused id between the vocab and added tokens
    tokens.push_back(t.id_text[id]);
  }
  return run_decoders(t.decoders, std::move(tokens), t.decoder_join_space);
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string bytes = decode_bytes(ids, skip_special);
  return utf8_valid(bytes) ? bytes : utf8_repair(bytes);
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  return impl_->find_token(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || id >= impl_->vocab_size) {
    throw Error(impl_->source + ": token id " + std::to_string(id) + " is outside the vocabulary");
  }
  return impl_->id_text[id];
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < impl_->vocab_size && impl_->id_special[id];
}

std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos_id; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos_id; }
const std::string& Tokenizer::source() const { return impl_->source; }

// ---- streaming ----

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(&tokenizer), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  ids_.push_back(id);
  std::span<const int32_t> all(ids_);
  std::string prev = tokenizer_->decode_bytes(all.subspan(prefix_, read_ - prefix_), skip_special_);
  std::string cur = tokenizer_->decode_bytes(all.subspan(prefix_), skip_special_);
  if (cur.size() <= prev.size() || cur.compare(0, prev.size(), prev) != 0) return {};
  std::string_view fresh = std::string_view(cur).substr(prev.size());
  // Wait while the text ends inside a character, or with a replacement character that a
  // byte-fallback run may still complete.
  if (utf8_incomplete_tail(fresh) > 0) return {};
  if (fresh.size() >= 3 && fresh.substr(fresh.size() - 3) == "\xEF\xBF\xBD") return {};
  prefix_ = read_;
  read_ = ids_.size();
  return utf8_valid(fresh) ? std::string(fresh) : tokenizer_detail::utf8_repair(fresh);
}

std::string StreamDecoder::finish() {
  std::span<const int32_t> all(ids_);
  std::string prev = tokenizer_->decode_bytes(all.subspan(prefix_, read_ - prefix_), skip_special_);
  std::string cur = tokenizer_->decode_bytes(all.subspan(prefix_), skip_special_);
  prefix_ = read_ = ids_.size();
  if (cur.size() <= prev.size() || cur.compare(0, prev.size(), prev) != 0) return {};
  return tokenizer_detail::utf8_repair(std::string_view(cur).substr(prev.size()));
}

// ---- stop strings ----

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (auto& s : stops) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

std::string StopMatcher::push(std::string_view text) {
  if (stopped_) return {};
  held_ += text;
  size_t best = std::string::npos;
  for (const std::string& s : stops_) {
    size_t at = held_.find(s);
    if (at < best) {
      best = at;
      matched_ = s;
    }
  }
  if (best != std::string::npos) {
    stopped_ = true;
    std::string out = held_.substr(0, best);
    held_.clear();
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string.
  size_t keep = 0;
  for (const std::string& s : stops_) {
    size_t max_len = std::min(s.size() - 1, held_.size());
    for (size_t len = max_len; len > keep; --len) {
      if (held_.compare(held_.size() - len, len, s, 0, len) == 0) {
        keep = len;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopMatcher::finish() {
  std::string out;
  if (!stopped_) out.swap(held_);
  return out;
}

}  // namespace elastic

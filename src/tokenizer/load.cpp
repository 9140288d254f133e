// Loaders: tokenizer.json (HF), tiktoken rank files (Llama 3), vocab.json + merges.txt (Qwen2),
// tokenizer_config.json. Every unsupported component is an Error naming its type and field.
#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "elastic/error.h"
#include "elastic/fileio.h"
#include "io/message.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace elastic::tokenizer_detail {

namespace {

using json = nlohmann::json;
using io_detail::json_error_text;
using io_detail::printable;

// Meta's Llama 3 pre-tokenizer pattern (tiktoken).
constexpr const char* kLlama3Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
// Qwen2's pattern (transformers Qwen2Tokenizer): single digits.
constexpr const char* kQwen2Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

json parse_json(std::string_view text, const std::string& source) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw Error(source + ": invalid JSON: " + json_error_text(e.what()));
  }
}

// Field access with errors that name the file and the JSON path.
struct Node {
  const json& j;
  const std::string& source;
  std::string path;

  [[noreturn]] void fail(const std::string& what) const {
    throw Error(source + ": " + (path.empty() ? "document" : "'" + path + "'") + " " + what);
  }
  bool has(const char* key) const { return j.is_object() && j.contains(key) && !j[key].is_null(); }
  Node at(const char* key) const {
    if (!j.is_object()) fail("must be an object");
    if (!j.contains(key))
      Node{j, source, path + (path.empty() ? "" : ".") + key}.fail("is missing");
    return Node{j[key], source, path + (path.empty() ? "" : ".") + key};
  }
  Node at(size_t i) const { return Node{j[i], source, path + "[" + std::to_string(i) + "]"}; }
  std::string str() const {
    if (!j.is_string()) fail("must be a string");
    return j.get<std::string>();
  }
  bool boolean() const {
    if (!j.is_boolean()) fail("must be true or false");
    return j.get<bool>();
  }
  int64_t integer() const {
    if (!j.is_number_integer()) fail("must be an integer");
    return j.get<int64_t>();
  }
  int32_t id() const {
    int64_t v = integer();
    // Ids index tables; 2^27 is far above any real vocabulary (~256k) and bounds memory.
    if (v < 0 || v >= (int64_t{1} << 27)) fail("must be a token id in [0, 2^27)");
    return static_cast<int32_t>(v);
  }
  size_t size() const {
    if (!j.is_array()) fail("must be an array");
    return j.size();
  }
  bool opt_bool(const char* key, bool dflt) const { return has(key) ? at(key).boolean() : dflt; }
  std::string type() const { return at("type").str(); }
};

// A Replace / Split "pattern": {"String": s} or {"Regex": r}.
void read_pattern(const Node& n, std::string& literal, std::shared_ptr<const Regex>& regex) {
  if (n.has("String")) {
    literal = n.at("String").str();
  } else if (n.has("Regex")) {
    regex = std::make_shared<Regex>(n.at("Regex").str(), n.source + ": '" + n.path + ".Regex'");
  } else {
    n.fail("must hold \"String\" or \"Regex\"");
  }
}

PrependScheme read_prepend_scheme(const Node& n) {
  if (n.has("prepend_scheme")) {
    std::string s = n.at("prepend_scheme").str();
    if (s == "always") return PrependScheme::always;
    if (s == "first") return PrependScheme::first;
    if (s == "never") return PrependScheme::never;
    n.at("prepend_scheme").fail("must be always, first or never (got \"" + printable(s) + "\")");
  }
  return n.opt_bool("add_prefix_space", true) ? PrependScheme::always : PrependScheme::never;
}

void read_normalizer(const Node& n, std::vector<Normalizer>& out) {
  std::string type = n.type();
  if (type == "Sequence") {
    Node list = n.at("normalizers");
    for (size_t i = 0; i < list.size(); ++i) read_normalizer(list.at(i), out);
  } else if (type == "NFC") {
    out.push_back(Normalizer{NormalizerKind::nfc, "", nullptr, ""});
  } else if (type == "Prepend") {
    out.push_back(Normalizer{NormalizerKind::prepend, n.at("prepend").str(), nullptr, ""});
  } else if (type == "Replace") {
    Normalizer r{NormalizerKind::replace, "", nullptr, n.at("content").str()};
    read_pattern(n.at("pattern"), r.text, r.regex);
    out.push_back(std::move(r));
  } else {
    n.at("type").fail("normalizer type \"" + printable(type) +
                      "\" is not supported (supported: NFC, Prepend, Replace, Sequence)");
  }
}

void read_pre_tokenizer(const Node& n, std::vector<PreTokenizer>& out) {
  std::string type = n.type();
  PreTokenizer p;
  if (type == "Sequence") {
    Node list = n.at("pretokenizers");
    for (size_t i = 0; i < list.size(); ++i) read_pre_tokenizer(list.at(i), out);
    return;
  } else if (type == "Split") {
    p.kind = PreTokenizerKind::split;
    read_pattern(n.at("pattern"), p.literal, p.regex);
    std::string b = n.at("behavior").str();
    if (b == "Removed")
      p.behavior = SplitBehavior::removed;
    else if (b == "Isolated")
      p.behavior = SplitBehavior::isolated;
    else if (b == "MergedWithPrevious")
      p.behavior = SplitBehavior::merged_with_previous;
    else if (b == "MergedWithNext")
      p.behavior = SplitBehavior::merged_with_next;
    else if (b == "Contiguous")
      p.behavior = SplitBehavior::contiguous;
    else
      n.at("behavior").fail("unknown split behavior \"" + printable(b) + "\"");
    p.invert = n.opt_bool("invert", false);
  } else if (type == "ByteLevel") {
    p.kind = PreTokenizerKind::byte_level;
    p.add_prefix_space = n.opt_bool("add_prefix_space", true);
    p.use_regex = n.opt_bool("use_regex", true);
  } else if (type == "Metaspace") {
    p.kind = PreTokenizerKind::metaspace;
    if (n.has("replacement")) p.replacement = n.at("replacement").str();
    p.prepend_scheme = read_prepend_scheme(n);
    p.split = n.opt_bool("split", true);
  } else {
    n.at("type").fail("pre-tokenizer type \"" + printable(type) +
                      "\" is not supported (supported: Split, ByteLevel, Metaspace, Sequence)");
  }
  out.push_back(std::move(p));
}

void read_decoder(const Node& n, std::vector<Decoder>& out) {
  std::string type = n.type();
  Decoder d;
  if (type == "Sequence") {
    Node list = n.at("decoders");
    for (size_t i = 0; i < list.size(); ++i) read_decoder(list.at(i), out);
    return;
  } else if (type == "ByteLevel") {
    d.kind = DecoderKind::byte_level;
  } else if (type == "Replace") {
    d.kind = DecoderKind::replace;
    std::shared_ptr<const Regex> regex;
    read_pattern(n.at("pattern"), d.pattern, regex);
    if (regex) n.at("pattern").fail("Regex patterns are not supported in the Replace decoder");
    d.content = n.at("content").str();
  } else if (type == "ByteFallback") {
    d.kind = DecoderKind::byte_fallback;
  } else if (type == "Fuse") {
    d.kind = DecoderKind::fuse;
  } else if (type == "Strip") {
    d.kind = DecoderKind::strip;
    d.content = n.at("content").str();
    d.start = static_cast<int>(n.at("start").integer());
    d.stop = static_cast<int>(n.at("stop").integer());
  } else if (type == "Metaspace") {
    d.kind = DecoderKind::metaspace;
    if (n.has("replacement")) d.replacement = n.at("replacement").str();
    d.prepend_scheme = read_prepend_scheme(n);
  } else {
    n.at("type").fail("decoder type \"" + printable(type) +
                      "\" is not supported (supported: ByteLevel, Replace, ByteFallback, Fuse, "
                      "Strip, Metaspace, Sequence)");
  }
  out.push_back(std::move(d));
}

void read_post_processor(const Node& n, TokenizerImpl& t, const PieceMap& vocab) {
  std::string type = n.type();
  if (type == "ByteLevel") return;  // only adjusts offsets; ids unchanged
  if (type == "Sequence") {
    Node list = n.at("processors");
    for (size_t i = 0; i < list.size(); ++i) read_post_processor(list.at(i), t, vocab);
    return;
  }
  if (type != "TemplateProcessing") {
    n.at("type").fail("post-processor type \"" + printable(type) +
                      "\" is not supported (supported: TemplateProcessing, ByteLevel, Sequence)");
  }
  Node single = n.at("single");
  Node specials = n.at("special_tokens");
  t.post_template.clear();
  for (size_t i = 0; i < single.size(); ++i) {
    Node item = single.at(i);
    if (item.has("Sequence")) {
      t.post_template.push_back(TemplateItem{true, {}});
    } else if (item.has("SpecialToken")) {
      std::string name = item.at("SpecialToken").at("id").str();
      if (!specials.has(name.c_str())) {
        specials.fail("has no entry for template token \"" + printable(name) + "\"");
      }
      Node spec = specials.at(name.c_str()).at("ids");
      TemplateItem ti;
      for (size_t k = 0; k < spec.size(); ++k) ti.ids.push_back(spec.at(k).id());
      t.post_template.push_back(std::move(ti));
    } else {
      item.fail("must be a Sequence or a SpecialToken");
    }
  }
}

std::string read_text_file(const std::string& path) { return read_file(path); }

}  // namespace

std::shared_ptr<TokenizerImpl> load_hf_json(std::string_view text, const std::string& source) {
  json doc = parse_json(text, source);
  Node root{doc, source, ""};
  auto t = std::make_shared<TokenizerImpl>();
  t->source = source;
  if (root.has("normalizer")) read_normalizer(root.at("normalizer"), t->normalizers);
  if (root.has("pre_tokenizer")) read_pre_tokenizer(root.at("pre_tokenizer"), t->pre_tokenizers);
  for (const auto& p : t->pre_tokenizers) {
    if (p.kind == PreTokenizerKind::byte_level) t->byte_level_input = true;
  }
  if (root.has("decoder")) {
    read_decoder(root.at("decoder"), t->decoders);
  } else {
    t->decoder_join_space = true;
  }

  Node model = root.at("model");
  std::string mtype = model.has("type") ? model.type() : "BPE";
  if (mtype != "BPE") {
    model.at("type").fail("model type \"" + printable(mtype) + "\" is not supported (only BPE)");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.has(key) && !model.at(key).str().empty()) {
      model.at(key).fail("is not supported (must be null or empty)");
    }
  }
  if (model.has("dropout") && model.at("dropout").j.get<double>() > 0.0) {
    model.at("dropout").fail("must be null or 0 (BPE dropout is a training-time option)");
  }
  BpeModel& m = t->model;
  m.byte_level = t->byte_level_input;
  m.byte_fallback = model.opt_bool("byte_fallback", false);
  m.ignore_merges = model.opt_bool("ignore_merges", false);
  m.fuse_unk = model.opt_bool("fuse_unk", false);

  // Vocabulary in the file's own alphabet, then converted to model space.
  Node vocab_node = model.at("vocab");
  if (!vocab_node.j.is_object()) vocab_node.fail("must be an object of token -> id");
  PieceMap vocab;
  vocab.reserve(vocab_node.j.size());
  std::vector<std::string> id_text;
  for (auto it = vocab_node.j.begin(); it != vocab_node.j.end(); ++it) {
    Node idn{it.value(), source, "model.vocab." + printable(it.key())};
    int32_t id = idn.id();
    vocab[it.key()] = id;
    if (static_cast<size_t>(id) >= id_text.size()) id_text.resize(id + 1);
    id_text[id] = it.key();
  }
  if (model.has("unk_token")) {
    std::string unk = model.at("unk_token").str();
    auto it = vocab.find(unk);
    if (it == vocab.end()) model.at("unk_token").fail("names a token missing from the vocab");
    m.unk_id = it->second;
  }

  Node merges = model.at("merges");
  size_t nm = merges.size();
  m.merges.reserve(nm);
  std::string_view a, b;
  std::string joined;
  for (size_t i = 0; i < nm; ++i) {
    const json& e = merges.j[i];
    if (e.is_string()) {
      std::string_view s = e.get_ref<const std::string&>();
      size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        merges.at(i).fail("must be \"left right\" (one space)");
      }
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get_ref<const std::string&>();
      b = e[1].get_ref<const std::string&>();
    } else {
      merges.at(i).fail("must be \"left right\" or [\"left\", \"right\"]");
    }
    joined.assign(a);
    joined.append(b);
    auto ia = vocab.find(a), ib = vocab.find(b), im = vocab.find(joined);
    if (ia == vocab.end() || ib == vocab.end() || im == vocab.end()) {
      merges.at(i).fail("uses a token missing from the vocab");
    }
    m.merges.insert(ia->second, ib->second, PairMap::Value{static_cast<int32_t>(i), im->second});
  }

  t->vocab_byte_alphabet = m.byte_level;
  if (m.byte_level) {
    PieceMap bytes_vocab;
    bytes_vocab.reserve(vocab.size());
    std::string raw;
    for (auto& [piece, id] : vocab) {
      if (byte_level_to_bytes(piece, raw)) bytes_vocab.emplace(raw, id);
    }
    m.piece_to_id = std::move(bytes_vocab);
  } else {
    m.piece_to_id = std::move(vocab);
  }
  m.finalize();
  t->id_text = std::move(id_text);

  if (root.has("added_tokens")) {
    Node list = root.at("added_tokens");
    for (size_t i = 0; i < list.size(); ++i) {
      Node n = list.at(i);
      AddedToken a;
      a.id = n.at("id").id();
      a.content = n.at("content").str();
      a.special = n.opt_bool("special", false);
      a.lstrip = n.opt_bool("lstrip", false);
      a.rstrip = n.opt_bool("rstrip", false);
      a.normalized = n.opt_bool("normalized", !a.special);
      a.single_word = n.opt_bool("single_word", false);
      t->added.push_back(std::move(a));
    }
  }
  if (root.has("post_processor")) {
    read_post_processor(root.at("post_processor"), *t, m.piece_to_id);
  }
  t->finalize();
  return t;
}

std::shared_ptr<TokenizerImpl> load_tiktoken(const std::string& path) {
  std::string text = read_text_file(path);
  auto t = std::make_shared<TokenizerImpl>();
  t->source = path;
  t->byte_level_input = true;
  PreTokenizer split;
  split.kind = PreTokenizerKind::split;
  split.regex = std::make_shared<Regex>(kLlama3Pattern, "Llama 3 split pattern");
  t->pre_tokenizers.push_back(std::move(split));
  t->decoders.push_back(Decoder{});  // raw_bytes
  BpeModel& m = t->model;
  m.byte_level = true;
  m.ignore_merges = true;  // tiktoken returns a piece that is itself a token directly

  auto b64 = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::vector<std::string> pieces;
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    auto bad = [&](const std::string& why) {
      throw Error(path + ": line " + std::to_string(line_no) + ": " + why +
                  " (expected \"base64 rank\")");
    };
    size_t sp = line.find(' ');
    if (sp == std::string_view::npos) bad("no space");
    std::string_view enc = line.substr(0, sp), num = line.substr(sp + 1);
    std::string raw;
    uint32_t acc = 0;
    int bits = 0;
    for (char c : enc) {
      if (c == '=') break;
      int v = b64(c);
      if (v < 0) bad("invalid base64");
      acc = (acc << 6) | static_cast<uint32_t>(v);
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        raw += static_cast<char>((acc >> bits) & 0xFF);
      }
    }
    if (raw.empty() || num.empty() || num.size() > 9) bad("empty token or bad rank");
    int64_t rank = 0;
    for (char c : num) {
      if (c < '0' || c > '9') bad("rank is not a number");
      rank = rank * 10 + (c - '0');
    }
    if (static_cast<size_t>(rank) >= pieces.size()) pieces.resize(rank + 1);
    if (!pieces[rank].empty()) bad("duplicate rank " + std::to_string(rank));
    pieces[rank] = raw;
    if (!m.piece_to_id.emplace(raw, static_cast<int32_t>(rank)).second) bad("duplicate token");
  }
  if (pieces.empty()) throw Error(path + ": no tokens");
  // tiktoken merges the adjacent pair whose concatenation has the lowest rank: every split of a
  // token into two tokens is a merge with the token's rank as priority.
  m.merges.reserve(pieces.size() * 6);
  for (size_t r = 0; r < pieces.size(); ++r) {
    const std::string& p = pieces[r];
    for (size_t k = 1; k < p.size(); ++k) {
      auto l = m.piece_to_id.find(std::string_view(p).substr(0, k));
      if (l == m.piece_to_id.end()) continue;
      auto rr = m.piece_to_id.find(std::string_view(p).substr(k));
      if (rr == m.piece_to_id.end()) continue;
      m.merges.insert(l->second, rr->second,
                      PairMap::Value{static_cast<int32_t>(r), static_cast<int32_t>(r)});
    }
  }
  m.finalize();
  t->id_text = std::move(pieces);

  // Llama 3 special tokens (names as in Meta's Llama 3.1 tokenizer and HF tokenizer_config).
  const int32_t base = static_cast<int32_t>(t->id_text.size());
  std::vector<std::string> names = {"<|begin_of_text|>",
                                    "<|end_of_text|>",
                                    "<|reserved_special_token_0|>",
                                    "<|reserved_special_token_1|>",
                                    "<|finetune_right_pad_id|>",
                                    "<|reserved_special_token_2|>",
                                    "<|start_header_id|>",
                                    "<|end_header_id|>",
                                    "<|eom_id|>",
                                    "<|eot_id|>",
                                    "<|python_tag|>"};
  for (int k = 3; names.size() < 256; ++k) {
    names.push_back("<|reserved_special_token_" + std::to_string(k) + "|>");
  }
  for (size_t k = 0; k < names.size(); ++k) {
    AddedToken a;
    a.id = base + static_cast<int32_t>(k);
    a.content = names[k];
    a.special = true;
    t->added.push_back(std::move(a));
  }
  t->post_template = {TemplateItem{false, {base}}, TemplateItem{true, {}}};
  t->bos_id = base;
  t->eos_id = base + 1;
  t->finalize();
  return t;
}

std::shared_ptr<TokenizerImpl> load_vocab_merges(const std::string& vocab_path,
                                                 const std::string& merges_path) {
  // Reuses the tokenizer.json reader: the Qwen2 pipeline with this vocab and these merges.
  json vocab = parse_json(read_text_file(vocab_path), vocab_path);
  if (!vocab.is_object()) throw Error(vocab_path + ": must be a JSON object of token -> id");
  std::string merges_text = read_text_file(merges_path);
  json merges = json::array();
  size_t line_no = 0;
  for (size_t pos = 0; pos < merges_text.size();) {
    size_t eol = merges_text.find('\n', pos);
    if (eol == std::string::npos) eol = merges_text.size();
    std::string line = merges_text.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    size_t sp = line.find(' ');
    if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos) {
      throw Error(merges_path + ": line " + std::to_string(line_no) +
                  ": expected \"left right\" (one space)");
    }
    merges.push_back(json::array({line.substr(0, sp), line.substr(sp + 1)}));
  }
  json doc = {
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         json::array(
             {{{"type", "Split"},
               {"pattern", {{"Regex", kQwen2Pattern}}},
               {"behavior", "Isolated"},
               {"invert", false}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", std::move(vocab)}, {"merges", std::move(merges)}}}};
  std::string source = vocab_path + " + " + merges_path;
  return load_hf_json(doc.dump(), source);
}

void apply_tokenizer_config(TokenizerImpl& t, const std::string& config_path, bool add_tokens) {
  json doc = parse_json(read_text_file(config_path), config_path);
  Node root{doc, config_path, ""};
  if (!doc.is_object()) root.fail("must be an object");
  if (add_tokens && root.has("added_tokens_decoder")) {
    Node dec = root.at("added_tokens_decoder");
    if (!dec.j.is_object()) dec.fail("must be an object of id -> token");
    for (auto it = dec.j.begin(); it != dec.j.end(); ++it) {
      Node n{it.value(), config_path, "added_tokens_decoder." + printable(it.key())};
      int32_t id = 0;
      try {
        size_t used = 0;
        long v = std::stol(it.key(), &used);
        if (used != it.key().size() || v < 0 || v >= (1 << 27)) throw std::out_of_range("id");
        id = static_cast<int32_t>(v);
      } catch (const std::exception&) {
        n.fail("key must be a token id");
      }
      AddedToken a;
      a.id = id;
      a.content = n.at("content").str();
      a.special = n.opt_bool("special", false);
      a.lstrip = n.opt_bool("lstrip", false);
      a.rstrip = n.opt_bool("rstrip", false);
      a.normalized = n.opt_bool("normalized", !a.special);
      a.single_word = n.opt_bool("single_word", false);
      auto same = std::find_if(t.added.begin(), t.added.end(),
                               [&](const AddedToken& x) { return x.id == id; });
      if (same != t.added.end()) {
        *same = std::move(a);
      } else {
        t.added.push_back(std::move(a));
      }
    }
    t.finalize();
  }
  // bos_token / eos_token: a string, an {"content": ...} object, or null.
  auto token_field = [&](const char* key, std::optional<int32_t>& out) {
    if (!root.has(key)) return;
    Node n = root.at(key);
    std::string name = n.j.is_object() ? n.at("content").str() : n.str();
    std::optional<int32_t> id = t.find_token(name);
    if (!id) n.fail("names \"" + printable(name) + "\", which is not a token of " + t.source);
    out = id;
  };
  token_field("bos_token", t.bos_id);
  token_field("eos_token", t.eos_id);
}

}  // namespace elastic::tokenizer_detail

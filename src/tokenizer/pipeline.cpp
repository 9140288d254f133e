// The text stages around the BPE model: normalizers, pre-tokenizers, added-token matching and
// decoders, with the semantics of HF tokenizers (tokenizers 0.2x).
#include <algorithm>
#include <cctype>
#include <cstdio>

#include "elastic/error.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode.h"

namespace elastic::tokenizer_detail {

namespace {

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty() || s.find(from) == std::string::npos) return;
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out.append(to);
  }
  out.append(s, pos, std::string::npos);
  s.swap(out);
}

// GPT-2's pre-tokenizer pattern (ByteLevel with use_regex).
const Regex& gpt2_regex() {
  static const Regex r(
      "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
      "ByteLevel pre-tokenizer");
  return r;
}

// Splits each piece by the matches of `find` according to `behavior` (HF NormalizedString::split).
template <class Find>
void split_pieces(std::vector<Piece>& pieces, SplitBehavior behavior, bool invert, Find find) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  thread_local std::vector<std::pair<size_t, size_t>> matches;
  for (const Piece& p : pieces) {
    matches.clear();
    find(p, matches);
    // parts: alternating non-match / match spans covering the piece
    struct Part {
      uint32_t b, e;
      bool match;
    };
    thread_local std::vector<Part> parts;
    parts.clear();
    uint32_t pos = p.begin;
    for (auto [b, e] : matches) {
      if (b > pos) parts.push_back({pos, static_cast<uint32_t>(b), invert});
      parts.push_back({static_cast<uint32_t>(b), static_cast<uint32_t>(e), !invert});
      pos = static_cast<uint32_t>(e);
    }
    if (pos < p.end) parts.push_back({pos, p.end, invert});
    switch (behavior) {
      case SplitBehavior::removed:
        for (const Part& q : parts) {
          if (!q.match) out.push_back({q.b, q.e});
        }
        break;
      case SplitBehavior::isolated:
        for (const Part& q : parts) out.push_back({q.b, q.e});
        break;
      case SplitBehavior::merged_with_previous: {
        bool prev_open = false;
        for (const Part& q : parts) {
          if (q.match && prev_open) {
            out.back().end = q.e;
            prev_open = false;
          } else {
            out.push_back({q.b, q.e});
            prev_open = !q.match;
          }
        }
        break;
      }
      case SplitBehavior::merged_with_next: {
        bool prev_match = false;
        for (const Part& q : parts) {
          if (!q.match && prev_match) {
            out.back().end = q.e;
            prev_match = false;
          } else {
            out.push_back({q.b, q.e});
            prev_match = q.match;
          }
        }
        break;
      }
      case SplitBehavior::contiguous: {
        bool prev_match = false;
        for (const Part& q : parts) {
          if (q.match && prev_match) {
            out.back().end = q.e;
          } else {
            out.push_back({q.b, q.e});
          }
          prev_match = q.match;
        }
        break;
      }
    }
  }
  pieces.swap(out);
}

// Rebuilds buf from its pieces, each transformed by `f(piece_text, index) -> new text`.
template <class F>
void rewrite_pieces(std::string& buf, std::vector<Piece>& pieces, F f) {
  std::string out;
  out.reserve(buf.size() + pieces.size() * 3);
  for (size_t i = 0; i < pieces.size(); ++i) {
    std::string t =
        f(std::string_view(buf).substr(pieces[i].begin, pieces[i].end - pieces[i].begin), i);
    uint32_t b = static_cast<uint32_t>(out.size());
    out += t;
    pieces[i] = {b, static_cast<uint32_t>(out.size())};
  }
  buf.swap(out);
  pieces.erase(
      std::remove_if(pieces.begin(), pieces.end(), [](const Piece& p) { return p.end == p.begin; }),
      pieces.end());
}

}  // namespace

void normalize(const std::vector<Normalizer>& steps, std::string& s) {
  for (const Normalizer& n : steps) {
    switch (n.kind) {
      case NormalizerKind::nfc:
        nfc_inplace(s);
        break;
      case NormalizerKind::prepend:
        if (!s.empty()) s.insert(0, n.text);
        break;
      case NormalizerKind::replace:
        if (n.regex) {
          std::vector<std::pair<size_t, size_t>> m;
          n.regex->find_all(s, 0, m);
          if (m.empty()) break;
          std::string out;
          size_t pos = 0;
          for (auto [b, e] : m) {
            out.append(s, pos, b - pos);
            out += n.content;
            pos = e;
          }
          out.append(s, pos, std::string::npos);
          s.swap(out);
        } else {
          replace_all(s, n.text, n.content);
        }
        break;
    }
  }
}

void pre_tokenize(const std::vector<PreTokenizer>& steps, std::string& buf, bool at_text_start,
                  std::vector<Piece>& pieces) {
  pieces.clear();
  if (buf.empty()) return;
  pieces.push_back({0, static_cast<uint32_t>(buf.size())});
  for (const PreTokenizer& p : steps) {
    switch (p.kind) {
      case PreTokenizerKind::split:
        split_pieces(pieces, p.behavior, p.invert,
                     [&](const Piece& piece, std::vector<std::pair<size_t, size_t>>& m) {
                       std::string_view t(buf.data() + piece.begin, piece.end - piece.begin);
                       if (p.regex) {
                         p.regex->find_all(t, piece.begin, m);
                       } else if (!p.literal.empty()) {
                         for (size_t h = t.find(p.literal); h != std::string_view::npos;
                              h = t.find(p.literal, h + p.literal.size())) {
                           m.emplace_back(piece.begin + h, piece.begin + h + p.literal.size());
                         }
                       }
                     });
        break;
      case PreTokenizerKind::byte_level:
        if (p.add_prefix_space) {
          rewrite_pieces(buf, pieces, [](std::string_view t, size_t) {
            std::string s;
            if (!t.empty() && t[0] != ' ') s += ' ';
            s += t;
            return s;
          });
        }
        if (p.use_regex) {
          split_pieces(pieces, SplitBehavior::isolated, false,
                       [&](const Piece& piece, std::vector<std::pair<size_t, size_t>>& m) {
                         gpt2_regex().find_all(
                             std::string_view(buf.data() + piece.begin, piece.end - piece.begin),
                             piece.begin, m);
                       });
        }
        break;
      case PreTokenizerKind::metaspace: {
        rewrite_pieces(buf, pieces, [&](std::string_view t, size_t i) {
          std::string s(t);
          replace_all(s, " ", p.replacement);
          bool prepend = p.prepend_scheme == PrependScheme::always ||
                         (p.prepend_scheme == PrependScheme::first && at_text_start && i == 0);
          if (prepend && s.compare(0, p.replacement.size(), p.replacement) != 0) {
            s.insert(0, p.replacement);
          }
          return s;
        });
        if (p.split) {
          split_pieces(pieces, SplitBehavior::merged_with_next, false,
                       [&](const Piece& piece, std::vector<std::pair<size_t, size_t>>& m) {
                         std::string_view t(buf.data() + piece.begin, piece.end - piece.begin);
                         for (size_t h = t.find(p.replacement); h != std::string_view::npos;
                              h = t.find(p.replacement, h + p.replacement.size())) {
                           m.emplace_back(piece.begin + h, piece.begin + h + p.replacement.size());
                         }
                       });
        }
        break;
      }
    }
  }
}

std::string run_decoders(const std::vector<Decoder>& steps, std::vector<std::string> tokens,
                         bool join_space) {
  for (const Decoder& d : steps) {
    switch (d.kind) {
      case DecoderKind::raw_bytes:
        break;
      case DecoderKind::byte_level: {
        // Each token's alphabet characters back to bytes; a token with a character outside the
        // alphabet (an added token) keeps its own bytes. All tokens fuse into one.
        std::string all;
        for (const std::string& t : tokens) {
          std::string bytes;
          bool ok = true;
          for (size_t i = 0; i < t.size();) {
            size_t len = utf8_sequence_length(t, i);
            int b = len ? byte_level_byte(utf8_decode(t, i, &len)) : -1;
            if (b < 0) {
              ok = false;
              break;
            }
            bytes += static_cast<char>(b);
            i += len;
          }
          all += ok ? bytes : t;
        }
        tokens.assign(1, std::move(all));
        break;
      }
      case DecoderKind::replace:
        for (std::string& t : tokens) replace_all(t, d.pattern, d.content);
        break;
      case DecoderKind::byte_fallback: {
        // Runs of <0xXX> tokens become their bytes when those form valid UTF-8, else one
        // U+FFFD per byte (HF ByteFallback).
        std::vector<std::string> out;
        std::string run;
        size_t run_count = 0;
        auto flush = [&]() {
          if (run_count == 0) return;
          if (utf8_valid(run)) {
            out.push_back(run);
          } else {
            for (size_t k = 0; k < run_count; ++k) out.push_back("\xEF\xBF\xBD");
          }
          run.clear();
          run_count = 0;
        };
        for (std::string& t : tokens) {
          unsigned v = 0;
          bool is_byte = t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
                         std::isxdigit(static_cast<unsigned char>(t[3])) &&
                         std::isxdigit(static_cast<unsigned char>(t[4])) &&
                         std::sscanf(t.c_str() + 3, "%2x", &v) == 1;
          if (is_byte) {
            run += static_cast<char>(v);
            ++run_count;
          } else {
            flush();
            out.push_back(std::move(t));
          }
        }
        flush();
        tokens.swap(out);
        break;
      }
      case DecoderKind::fuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.assign(1, std::move(all));
        break;
      }
      case DecoderKind::strip: {
        // Removes up to `start` leading and `stop` trailing copies of the content character.
        for (std::string& t : tokens) {
          const std::string& c = d.content;
          if (c.empty()) continue;
          int k = 0;
          size_t b = 0;
          while (k < d.start && t.compare(b, c.size(), c) == 0) {
            b += c.size();
            ++k;
          }
          size_t e = t.size();
          k = 0;
          while (k < d.stop && e >= b + c.size() && t.compare(e - c.size(), c.size(), c) == 0) {
            e -= c.size();
            ++k;
          }
          t = t.substr(b, e - b);
        }
        break;
      }
      case DecoderKind::metaspace:
        for (size_t i = 0; i < tokens.size(); ++i) {
          replace_all(tokens[i], d.replacement, " ");
          if (i == 0 && d.prepend_scheme != PrependScheme::never && !tokens[i].empty() &&
              tokens[i][0] == ' ') {
            tokens[i].erase(0, 1);
          }
        }
        break;
    }
  }
  std::string out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (join_space && i > 0) out += ' ';
    out += tokens[i];
  }
  return out;
}

// ---- added tokens ----

int32_t AddedTokenMatcher::child(int32_t node, uint8_t b) const {
  const auto& next = nodes_[node].next;
  auto it = std::lower_bound(next.begin(), next.end(), std::pair<uint8_t, int32_t>(b, -1));
  return it != next.end() && it->first == b ? it->second : -1;
}

void AddedTokenMatcher::build(const std::vector<const AddedToken*>& tokens,
                              const std::vector<std::string>& patterns) {
  nodes_.assign(1, Node{});
  tokens_ = tokens;
  first_byte_.fill(false);
  for (size_t t = 0; t < tokens.size(); ++t) {
    const std::string& pat = patterns[t];
    if (pat.empty()) continue;
    first_byte_[static_cast<uint8_t>(pat[0])] = true;
    int32_t node = 0;
    for (unsigned char b : pat) {
      int32_t c = child(node, b);
      if (c < 0) {
        c = static_cast<int32_t>(nodes_.size());
        nodes_.push_back(Node{});
        auto& next = nodes_[node].next;
        next.insert(std::lower_bound(next.begin(), next.end(), std::pair<uint8_t, int32_t>(b, -1)),
                    {b, c});
      }
      node = c;
    }
    if (nodes_[node].token < 0) nodes_[node].token = static_cast<int32_t>(t);  // first wins
  }
}

void AddedTokenMatcher::find_all(std::string_view text, bool include_special,
                                 std::vector<Match>& out) const {
  out.clear();
  if (empty()) return;
  auto char_before = [&](size_t pos) -> uint32_t {
    if (pos == 0) return 0;
    size_t b = pos - 1;
    while (b > 0 && (static_cast<uint8_t>(text[b]) & 0xC0) == 0x80) --b;
    size_t len = 0;
    return utf8_decode(text, b, &len);
  };
  auto char_at = [&](size_t pos) -> uint32_t {
    if (pos >= text.size()) return 0;
    size_t len = 0;
    return utf8_decode(text, pos, &len);
  };
  size_t last_end = 0;  // matches may not reach back before the previous one
  size_t i = 0;
  while (i < text.size()) {
    if (!first_byte_[static_cast<uint8_t>(text[i])]) {
      ++i;
      continue;
    }
    // Longest pattern starting at i (leftmost-longest).
    int32_t node = 0, best = -1;
    size_t best_end = 0;
    for (size_t k = i; k < text.size(); ++k) {
      node = child(node, static_cast<uint8_t>(text[k]));
      if (node < 0) break;
      int32_t t = nodes_[node].token;
      if (t >= 0 && (include_special || !tokens_[t]->special)) {
        best = t;
        best_end = k + 1;
      }
    }
    if (best < 0) {
      ++i;
      continue;
    }
    const AddedToken& tok = *tokens_[best];
    if (tok.single_word &&
        (is_alphanumeric(char_before(i)) || is_alphanumeric(char_at(best_end)))) {
      ++i;
      continue;
    }
    size_t b = i, e = best_end;
    if (tok.lstrip) {
      while (b > last_end && is_whitespace(char_before(b))) {
        --b;
        while (b > last_end && (static_cast<uint8_t>(text[b]) & 0xC0) == 0x80) --b;
      }
    }
    if (tok.rstrip) {
      size_t len = 0;
      while (e < text.size() && is_whitespace(utf8_decode(text, e, &len))) e += len;
    }
    out.push_back(Match{b, e, tok.id});
    last_end = e;
    i = best_end > e ? best_end : e;
  }
}

}  // namespace elastic::tokenizer_detail

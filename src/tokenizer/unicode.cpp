// UTF-8 handling for the tokenizer. See unicode.h for the contracts.
#include "tokenizer/unicode.h"

#include <utf8proc.h>

#include <cstdlib>
#include <vector>

#include "elastic/error.h"

namespace elastic::tokenizer_detail {

namespace {

// Allowed range of the second byte for each lead byte (Unicode Table 3-7); later bytes 80..BF.
struct LeadInfo {
  uint8_t length;  // 0: never a valid lead byte
  uint8_t lo, hi;  // range of the second byte
};

LeadInfo lead_info(uint8_t b) {
  if (b < 0x80) return {1, 0, 0};
  if (b < 0xC2) return {0, 0, 0};
  if (b < 0xE0) return {2, 0x80, 0xBF};
  if (b == 0xE0) return {3, 0xA0, 0xBF};
  if (b == 0xED) return {3, 0x80, 0x9F};
  if (b < 0xF0) return {3, 0x80, 0xBF};
  if (b == 0xF0) return {4, 0x90, 0xBF};
  if (b < 0xF4) return {4, 0x80, 0xBF};
  if (b == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

// Number of bytes of s[i..] that form a valid prefix of a sequence (>= 1 when the lead is
// valid), and whether the whole sequence is complete.
size_t valid_prefix(std::string_view s, size_t i, bool* complete) {
  uint8_t b = static_cast<uint8_t>(s[i]);
  LeadInfo info = lead_info(b);
  *complete = false;
  if (info.length == 0) return 0;
  if (info.length == 1) {
    *complete = true;
    return 1;
  }
  size_t k = 1;
  for (; k < info.length && i + k < s.size(); ++k) {
    uint8_t c = static_cast<uint8_t>(s[i + k]);
    uint8_t lo = k == 1 ? info.lo : 0x80, hi = k == 1 ? info.hi : 0xBF;
    if (c < lo || c > hi) return k;
  }
  *complete = k == info.length;
  return k;
}

}  // namespace

size_t utf8_sequence_length(std::string_view s, size_t i) {
  bool complete = false;
  size_t n = valid_prefix(s, i, &complete);
  return complete ? n : 0;
}

bool utf8_valid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    size_t n = utf8_sequence_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string utf8_repair(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  size_t i = 0;
  while (i < s.size()) {
    bool complete = false;
    size_t n = valid_prefix(s, i, &complete);
    if (complete) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD for the maximal subpart (at least one byte)
      i += n == 0 ? 1 : n;
    }
  }
  return out;
}

size_t utf8_incomplete_tail(std::string_view s) {
  // A proper prefix is at most 3 bytes: look for its lead byte among the last 3.
  size_t start = s.size() > 3 ? s.size() - 3 : 0;
  for (size_t i = start; i < s.size(); ++i) {
    uint8_t b = static_cast<uint8_t>(s[i]);
    if ((b & 0xC0) == 0x80) continue;
    bool complete = false;
    size_t n = valid_prefix(s, i, &complete);
    if (!complete && n > 0 && i + n == s.size()) return n;
  }
  return 0;
}

uint32_t utf8_decode(std::string_view s, size_t i, size_t* len) {
  auto b = [&](size_t k) { return static_cast<uint32_t>(static_cast<uint8_t>(s[i + k])); };
  uint32_t c = b(0);
  if (c < 0x80) {
    *len = 1;
    return c;
  }
  if (c < 0xE0) {
    *len = 2;
    return ((c & 0x1F) << 6) | (b(1) & 0x3F);
  }
  if (c < 0xF0) {
    *len = 3;
    return ((c & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
  }
  *len = 4;
  return ((c & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

void nfc_inplace(std::string& s) {
  bool may_change = false;
  for (unsigned char c : s) {
    if (c >= 0xCC) {
      may_change = true;
      break;
    }
  }
  if (!may_change) return;
  utf8proc_uint8_t* out = nullptr;
  utf8proc_ssize_t n = utf8proc_map(
      reinterpret_cast<const utf8proc_uint8_t*>(s.data()), static_cast<utf8proc_ssize_t>(s.size()),
      &out, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  // The input was repaired to valid UTF-8 before, so utf8proc cannot reject it.
  ELASTIC_CHECK_MSG(n >= 0, utf8proc_errmsg(n));
  s.assign(reinterpret_cast<char*>(out), static_cast<size_t>(n));
  std::free(out);
}

const std::array<std::string, 256>& byte_level_chars() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      utf8_append(t[b], printable ? static_cast<uint32_t>(b) : next++);
    }
    return t;
  }();
  return table;
}

int byte_level_byte(uint32_t cp) {
  static const std::vector<int> table = [] {
    std::vector<int> t(324, -1);  // the alphabet's code points are all below U+0144
    const auto& chars = byte_level_chars();
    for (int b = 0; b < 256; ++b) {
      size_t len = 0;
      t[utf8_decode(chars[b], 0, &len)] = b;
    }
    return t;
  }();
  return cp < table.size() ? table[cp] : -1;
}

bool byte_level_to_bytes(std::string_view piece, std::string& out) {
  out.clear();
  for (size_t i = 0; i < piece.size();) {
    size_t len = utf8_sequence_length(piece, i);
    if (len == 0) return false;
    int b = byte_level_byte(utf8_decode(piece, i, &len));
    if (b < 0) return false;
    out += static_cast<char>(b);
    i += len;
  }
  return true;
}

bool is_whitespace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

bool is_alphanumeric(uint32_t cp) {
  utf8proc_category_t c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
         (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO);
}

}  // namespace elastic::tokenizer_detail

// Helpers that keep error messages built from untrusted input on one printable line: names and
// values read from a file may hold newlines, control characters or (in parser messages) bytes
// that are not UTF-8. Internal to src/io.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace elastic::io_detail {

// Every byte outside printable ASCII becomes \xNN, so the result is one line of ASCII.
inline std::string printable(std::string_view s) {
  std::string r;
  r.reserve(s.size());
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      r.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      r += buf;
    }
  }
  return r;
}

// 'name' with the name made printable.
inline std::string quote_name(std::string_view s) {
  std::string r = "'";
  r += printable(s);
  r += '\'';
  return r;
}

// A nlohmann exception message without its "[json.exception.parse_error.101] " prefix.
inline std::string json_error_text(std::string_view what) {
  if (!what.empty() && what.front() == '[') {
    size_t close = what.find("] ");
    if (close != std::string_view::npos) what.remove_prefix(close + 2);
  }
  return printable(what);
}

}  // namespace elastic::io_detail

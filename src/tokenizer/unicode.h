// UTF-8 checks and repair, NFC (utf8proc), and the GPT-2 byte-level alphabet.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace elastic::tokenizer_detail {

// Length of the well-formed UTF-8 sequence at s[i], or 0 when it is not well-formed (per the
// Unicode table of well-formed byte sequences: no overlongs, surrogates or > U+10FFFF).
size_t utf8_sequence_length(std::string_view s, size_t i);
bool utf8_valid(std::string_view s);
// Every maximal subpart of an ill-formed subsequence becomes U+FFFD (Unicode §3.9 practice,
// as Python's decode(errors="replace") and Rust's from_utf8_lossy).
std::string utf8_repair(std::string_view s);
// Bytes at the end of s that are a proper prefix of a well-formed sequence (0..3): a stream
// must wait for more bytes before emitting them.
size_t utf8_incomplete_tail(std::string_view s);
// Decodes the well-formed character at s[i] (caller checked it); sets len.
uint32_t utf8_decode(std::string_view s, size_t i, size_t* len);
void utf8_append(std::string& out, uint32_t cp);

// NFC in place (utf8proc); text must be valid UTF-8. Text with no byte >= 0xCC (all code
// points below U+0300, which NFC never changes) is returned untouched without calling utf8proc.
void nfc_inplace(std::string& s);

// GPT-2 byte-level alphabet: byte b <-> a printable code point (bytes 33..126, 161..172,
// 174..255 map to themselves, the other 68 to U+0100.. in order).
const std::array<std::string, 256>& byte_level_chars();
// The byte whose alphabet code point is cp, or -1.
int byte_level_byte(uint32_t cp);
// A piece written in the alphabet back to raw bytes; false when a character is outside it.
bool byte_level_to_bytes(std::string_view piece, std::string& out);

// Unicode White_Space (as Rust's char::is_whitespace), for added tokens' lstrip/rstrip.
bool is_whitespace(uint32_t cp);
// Unicode letter or number (categories L*, N*), for added tokens' single_word rule.
bool is_alphanumeric(uint32_t cp);

}  // namespace elastic::tokenizer_detail

// Byte-pair-encoding model shared by every format: HF BPE (merge rank = position in the merges
// list) and tiktoken (rank of the merged token). Both reduce to one rule: repeatedly merge the
// adjacent pair (left id, right id) with the lowest priority, leftmost first on ties.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace elastic::tokenizer_detail {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept;
};
using PieceMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// Open-addressing map (left id, right id) -> (priority, merged id).
class PairMap {
 public:
  struct Value {
    int32_t priority;
    int32_t merged;
  };
  void reserve(size_t n);
  void insert(int32_t left, int32_t right, Value v);  // replaces an existing entry
  const Value* find(int32_t left, int32_t right) const;
  size_t size() const { return size_; }

 private:
  static uint64_t key(int32_t l, int32_t r) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
  }
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // ids are < 2^31, so no real key is ~0
  std::vector<uint64_t> keys_;
  std::vector<Value> values_;
  size_t size_ = 0;
  size_t mask_ = 0;
};

class BpeModel {
 public:
  BpeModel();
  // Model-space pieces: raw bytes when the input is byte-level, text otherwise.
  PieceMap piece_to_id;
  PairMap merges;
  bool byte_level = false;     // initial symbols are single bytes (else UTF-8 characters)
  bool byte_fallback = false;  // unknown characters become <0xXX> tokens when all exist
  bool ignore_merges = false;  // a word that is itself a token is emitted whole
  bool fuse_unk = false;       // consecutive unknown characters give one unk
  int32_t unk_id = -1;

  // Call after piece_to_id is filled: builds the single-byte / <0xXX> lookup tables.
  void finalize();
  // Appends the ids of one pre-token (`word`, model space). Uses a per-thread cache.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

 private:
  void encode_uncached(std::string_view word, std::vector<int32_t>& out) const;
  int32_t byte_ids_[256];      // byte_level: id of the one-byte piece, or -1
  int32_t fallback_ids_[256];  // byte_fallback: id of "<0xXX>", or -1
  bool fallback_complete_ = false;
  uint64_t serial_;  // identifies this model to the per-thread caches
};

}  // namespace elastic::tokenizer_detail

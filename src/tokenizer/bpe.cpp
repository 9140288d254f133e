// BPE merge loop. Symbols form a doubly linked list over the initial pieces; candidate pairs
// sit in a min-heap ordered by (priority, position of the left symbol) and are checked lazily
// when popped (a stale entry's symbols were merged away or changed id). O(n log n) per word.
#include "tokenizer/bpe.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <memory>

#include "elastic/error.h"
#include "tokenizer/unicode.h"

namespace elastic::tokenizer_detail {

size_t StringHash::operator()(std::string_view s) const noexcept {
  // FNV-1a over 8-byte words then the tail, mixed; pieces are short.
  uint64_t h = 0xcbf29ce484222325ull ^ s.size();
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    __builtin_memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 29;
  }
  for (; i < s.size(); ++i) h = (h ^ static_cast<uint8_t>(s[i])) * 0x100000001b3ull;
  h ^= h >> 32;
  return static_cast<size_t>(h * 0x9E3779B97F4A7C15ull);
}

void PairMap::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;  // load factor <= 0.5
  if (cap <= keys_.size()) return;
  std::vector<uint64_t> old_keys = std::move(keys_);
  std::vector<Value> old_values = std::move(values_);
  keys_.assign(cap, kEmpty);
  values_.assign(cap, Value{0, 0});
  mask_ = cap - 1;
  size_ = 0;
  for (size_t i = 0; i < old_keys.size(); ++i) {
    if (old_keys[i] != kEmpty) {
      insert(static_cast<int32_t>(old_keys[i] >> 32), static_cast<int32_t>(old_keys[i]),
             old_values[i]);
    }
  }
}

static inline size_t pair_slot(uint64_t k) {
  k ^= k >> 31;
  k *= 0x7fb5d329728ea185ull;
  k ^= k >> 27;
  return static_cast<size_t>(k);
}

void PairMap::insert(int32_t left, int32_t right, Value v) {
  if ((size_ + 1) * 2 > keys_.size()) reserve(size_ + 1);
  uint64_t k = key(left, right);
  for (size_t i = pair_slot(k) & mask_;; i = (i + 1) & mask_) {
    if (keys_[i] == kEmpty) {
      keys_[i] = k;
      values_[i] = v;
      ++size_;
      return;
    }
    if (keys_[i] == k) {
      values_[i] = v;
      return;
    }
  }
}

const PairMap::Value* PairMap::find(int32_t left, int32_t right) const {
  if (size_ == 0) return nullptr;
  uint64_t k = key(left, right);
  for (size_t i = pair_slot(k) & mask_;; i = (i + 1) & mask_) {
    if (keys_[i] == k) return &values_[i];
    if (keys_[i] == kEmpty) return nullptr;
  }
}

namespace {

std::atomic<uint64_t> g_model_serial{1};

// Per-thread memo of word -> ids, for the last few models used on this thread.
struct WordCache {
  uint64_t serial = 0;
  std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, StringHash, std::equal_to<>> map;
  std::vector<int32_t> ids;  // arena the map's (offset, count) point into
};
constexpr size_t kCacheModels = 4;
constexpr size_t kCacheMaxWords = 1 << 18;  // then the cache is cleared and refilled
constexpr size_t kCacheMaxWordBytes = 256;  // longer words are not memoized
constexpr size_t kHeapThreshold = 24;       // shorter words use the quadratic scan

WordCache& cache_for(uint64_t serial) {
  thread_local std::unique_ptr<WordCache> caches[kCacheModels];
  thread_local size_t next_victim = 0;
  for (auto& c : caches) {
    if (c && c->serial == serial) return *c;
  }
  auto& slot = caches[next_victim];
  next_victim = (next_victim + 1) % kCacheModels;
  slot = std::make_unique<WordCache>();
  slot->serial = serial;
  return *slot;
}

struct Symbol {
  int32_t id;  // -1 once merged into its left neighbour
  int32_t prev, next;
};

struct Candidate {
  int32_t priority, pos, next_pos, left, right, merged;
  bool operator>(const Candidate& o) const {
    return priority != o.priority ? priority > o.priority : pos > o.pos;
  }
};

}  // namespace

BpeModel::BpeModel() : serial_(g_model_serial.fetch_add(1)) {
  std::fill(std::begin(byte_ids_), std::end(byte_ids_), -1);
  std::fill(std::begin(fallback_ids_), std::end(fallback_ids_), -1);
}

void BpeModel::finalize() {
  fallback_complete_ = true;
  for (int b = 0; b < 256; ++b) {
    std::string one(1, static_cast<char>(b));
    auto it = piece_to_id.find(one);
    byte_ids_[b] = it == piece_to_id.end() ? -1 : it->second;
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    auto f = piece_to_id.find(std::string_view(name));
    fallback_ids_[b] = f == piece_to_id.end() ? -1 : f->second;
    if (fallback_ids_[b] < 0) fallback_complete_ = false;
  }
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() > kCacheMaxWordBytes) {
    encode_uncached(word, out);
    return;
  }
  WordCache& cache = cache_for(serial_);
  auto it = cache.map.find(word);
  if (it != cache.map.end()) {
    out.insert(out.end(), cache.ids.begin() + it->second.first,
               cache.ids.begin() + it->second.first + it->second.second);
    return;
  }
  size_t start = out.size();
  encode_uncached(word, out);
  if (cache.map.size() >= kCacheMaxWords) {
    cache.map.clear();
    cache.ids.clear();
  }
  uint32_t offset = static_cast<uint32_t>(cache.ids.size());
  cache.ids.insert(cache.ids.end(), out.begin() + start, out.end());
  cache.map.emplace(std::string(word), std::pair<uint32_t, uint32_t>(
                                           offset, static_cast<uint32_t>(out.size() - start)));
}

void BpeModel::encode_uncached(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges) {
    auto it = piece_to_id.find(word);
    if (it != piece_to_id.end()) {
      out.push_back(it->second);
      return;
    }
  }
  thread_local std::vector<Symbol> syms;
  syms.clear();
  auto push = [&](int32_t id) {
    int32_t n = static_cast<int32_t>(syms.size());
    syms.push_back(Symbol{id, n - 1, -1});
    if (n > 0) syms[n - 1].next = n;
  };
  if (byte_level) {
    for (unsigned char b : word) {
      if (byte_ids_[b] >= 0) {
        push(byte_ids_[b]);
      } else if (unk_id >= 0 && !(fuse_unk && !syms.empty() && syms.back().id == unk_id)) {
        push(unk_id);
      }
    }
  } else {
    size_t i = 0;
    while (i < word.size()) {
      size_t len = utf8_sequence_length(word, i);
      ELASTIC_CHECK(len > 0);  // pipeline input is valid UTF-8
      std::string_view ch = word.substr(i, len);
      i += len;
      auto it = piece_to_id.find(ch);
      if (it != piece_to_id.end()) {
        push(it->second);
        continue;
      }
      if (byte_fallback && fallback_complete_) {
        for (unsigned char b : ch) push(fallback_ids_[b]);
        continue;
      }
      if (unk_id >= 0 && !(fuse_unk && !syms.empty() && syms.back().id == unk_id)) push(unk_id);
    }
  }
  const int32_t n = static_cast<int32_t>(syms.size());
  if (n <= static_cast<int32_t>(kHeapThreshold)) {
    // Quadratic scan: merge the lowest (priority, position) pair until none is left.
    thread_local std::vector<int32_t> ids;
    ids.clear();
    for (const auto& s : syms) ids.push_back(s.id);
    while (ids.size() > 1) {
      int32_t best = -1, best_priority = 0, best_merged = 0;
      for (size_t k = 0; k + 1 < ids.size(); ++k) {
        const PairMap::Value* v = merges.find(ids[k], ids[k + 1]);
        if (v && (best < 0 || v->priority < best_priority)) {
          best = static_cast<int32_t>(k);
          best_priority = v->priority;
          best_merged = v->merged;
        }
      }
      if (best < 0) break;
      ids[best] = best_merged;
      ids.erase(ids.begin() + best + 1);
    }
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }
  thread_local std::vector<Candidate> heap;
  heap.clear();
  auto consider = [&](int32_t a) {
    int32_t b = syms[a].next;
    if (b < 0) return;
    const PairMap::Value* v = merges.find(syms[a].id, syms[b].id);
    if (!v) return;
    heap.push_back(Candidate{v->priority, a, b, syms[a].id, syms[b].id, v->merged});
    std::push_heap(heap.begin(), heap.end(), std::greater<>());
  };
  for (int32_t a = 0; a + 1 < n; ++a) consider(a);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    Candidate c = heap.back();
    heap.pop_back();
    Symbol& a = syms[c.pos];
    if (a.id != c.left || a.next != c.next_pos || syms[c.next_pos].id != c.right) continue;
    Symbol& b = syms[c.next_pos];
    a.id = c.merged;
    b.id = -1;
    a.next = b.next;
    if (b.next >= 0) syms[b.next].prev = c.pos;
    if (a.prev >= 0) consider(a.prev);
    consider(c.pos);
  }
  for (int32_t k = 0; k >= 0 && k < n; k = syms[k].next) out.push_back(syms[k].id);
}

}  // namespace elastic::tokenizer_detail

// A packed variable-length batch: the rows of several sequences in one [rows] array, each
// sequence a contiguous span (FlashAttention's cu_seqlens idea, llama.cpp's llama_batch rows).
// Attention never crosses a sequence; every sequence has its own routing (its own pooling, its
// own per-KV-head modes). Row r of sequence s sits at position seqs[s].pos0 + (r - seqs[s].begin).
//
// Router training packs whole samples (pos0 = 0); a serving engine packs prefill chunks and
// decode rows of different requests (pos0 = tokens already in that sequence's KV cache). A row
// is llama.cpp's llama_batch entry: token, position (pos0 + offset), sequence id (the span's
// seq_id: the caller's own name for the sequence, e.g. an engine slot) and whether its logits
// are wanted (the `logits` flags; training computes its own loss and leaves them empty).
// Invariants (batch_validate): spans are non-empty, in order, cover [0, rows) without gaps or
// overlaps; pos0 >= 0; `logits` is empty or has one flag per row.
#pragma once

#include <cstdint>
#include <vector>

namespace elastic {

struct BatchSeq {
  int64_t begin = 0;   // first row
  int64_t length = 0;  // rows
  int64_t pos0 = 0;    // position of the first row
  int64_t seq_id = 0;  // the caller's id of the sequence (add: the span's index)
  int64_t end() const { return begin + length; }
};

// Which rows of a span want logits.
enum class BatchLogits { none, last, all };

struct Batch {
  std::vector<int64_t> tokens;  // [rows]
  std::vector<BatchSeq> seqs;   // [S]
  std::vector<uint8_t> logits;  // [rows] 1 = the row's logits are wanted, or empty (none)

  int64_t rows() const { return static_cast<int64_t>(tokens.size()); }
  int64_t num_seqs() const { return static_cast<int64_t>(seqs.size()); }
  // Appends a sequence of `ids` at positions pos0.. and returns its index.
  int64_t add(const int64_t* ids, int64_t n, int64_t pos0 = 0);
  // The same with the caller's sequence id and the rows whose logits are wanted.
  int64_t add(const int64_t* ids, int64_t n, int64_t pos0, int64_t seq_id, BatchLogits logits);
  // Rows whose logits are wanted, in order (the rows of a forward's logits output).
  std::vector<int64_t> logit_rows() const;
  // cu_seqlens: [S + 1] row offsets (begin of every sequence, then rows()).
  std::vector<int64_t> cu_seqlens() const;
  // [rows] position of every row.
  std::vector<int64_t> positions() const;
  // [rows] sequence index of every row.
  std::vector<int32_t> seq_of_row() const;
};

// Throws elastic::Error naming the first broken invariant (the sequence and the field).
void batch_validate(const Batch& b);

}  // namespace elastic

#include "elastic/batch.h"

#include <string>

#include "elastic/error.h"

namespace elastic {

int64_t Batch::add(const int64_t* ids, int64_t n, int64_t pos0) {
  return add(ids, n, pos0, num_seqs(), BatchLogits::none);
}

int64_t Batch::add(const int64_t* ids, int64_t n, int64_t pos0, int64_t seq_id,
                   BatchLogits wanted) {
  BatchSeq s;
  s.begin = rows();
  s.length = n;
  s.pos0 = pos0;
  s.seq_id = seq_id;
  tokens.insert(tokens.end(), ids, ids + n);
  if (wanted != BatchLogits::none || !logits.empty()) {
    logits.resize(static_cast<size_t>(s.begin), 0);  // earlier spans: none wanted
    for (int64_t i = 0; i < n; ++i)
      logits.push_back(wanted == BatchLogits::all || (wanted == BatchLogits::last && i == n - 1));
  }
  seqs.push_back(s);
  return num_seqs() - 1;
}

std::vector<int64_t> Batch::logit_rows() const {
  std::vector<int64_t> r;
  for (size_t i = 0; i < logits.size(); ++i)
    if (logits[i]) r.push_back(static_cast<int64_t>(i));
  return r;
}

std::vector<int64_t> Batch::cu_seqlens() const {
  std::vector<int64_t> cu;
  for (const BatchSeq& s : seqs) cu.push_back(s.begin);
  cu.push_back(rows());
  return cu;
}

std::vector<int64_t> Batch::positions() const {
  std::vector<int64_t> p(tokens.size());
  for (const BatchSeq& s : seqs)
    for (int64_t i = 0; i < s.length; ++i) p[size_t(s.begin + i)] = s.pos0 + i;
  return p;
}

std::vector<int32_t> Batch::seq_of_row() const {
  std::vector<int32_t> r(tokens.size());
  for (size_t s = 0; s < seqs.size(); ++s)
    for (int64_t i = seqs[s].begin; i < seqs[s].end(); ++i) r[size_t(i)] = static_cast<int32_t>(s);
  return r;
}

void batch_validate(const Batch& b) {
  int64_t next = 0;
  for (size_t s = 0; s < b.seqs.size(); ++s) {
    const BatchSeq& q = b.seqs[s];
    const std::string who = "batch sequence " + std::to_string(s) + ": ";
    if (q.length <= 0) throw Error(who + "length must be > 0, got " + std::to_string(q.length));
    if (q.begin != next)
      throw Error(who + "begins at row " + std::to_string(q.begin) + ", expected " +
                  std::to_string(next) + " (sequences must be contiguous and in order)");
    if (q.pos0 < 0) throw Error(who + "pos0 must be >= 0, got " + std::to_string(q.pos0));
    next = q.end();
  }
  if (!b.logits.empty() && static_cast<int64_t>(b.logits.size()) != b.rows())
    throw Error("batch: " + std::to_string(b.logits.size()) + " logits flags for " +
                std::to_string(b.rows()) + " rows");
  if (next != b.rows())
    throw Error("batch: sequences cover " + std::to_string(next) + " of " +
                std::to_string(b.rows()) + " rows");
}

}  // namespace elastic

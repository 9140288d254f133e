// Encode throughput of one tokenizer on one text file, single thread. The file is encoded line by
// line (each line with its '\n', so every byte is tokenized), the same segmentation
// scripts/bench-tokenizer.sh gives HF tokenizers. Prints MB/s for the first (cold-cache) pass and
// the best of --repeat passes, the token count and an FNV-1a hash of all ids so the script can
// check that both tokenizers produced the same ids.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "elastic/error.h"
#include "elastic/fileio.h"
#include "elastic/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_tokenizer TOKENIZER TEXT_FILE [REPEATS]\n");
    return 2;
  }
  try {
    int repeats = argc > 3 ? std::atoi(argv[3]) : 3;
    auto t0 = std::chrono::steady_clock::now();
    elastic::Tokenizer tok = elastic::Tokenizer::load(argv[1]);
    double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::string text = elastic::read_file(argv[2]);
    std::vector<std::string_view> lines;
    for (size_t pos = 0; pos < text.size();) {
      size_t eol = text.find('\n', pos);
      size_t end = eol == std::string::npos ? text.size() : eol + 1;
      lines.emplace_back(text.data() + pos, end - pos);
      pos = end;
    }
    double first = 0, best = 0;
    uint64_t n_ids = 0, hash = 0;
    for (int r = 0; r < std::max(1, repeats); ++r) {
      uint64_t h = 0xcbf29ce484222325ull, count = 0;
      auto s = std::chrono::steady_clock::now();
      for (std::string_view line : lines) {
        std::vector<int32_t> ids = tok.encode(line);
        for (int32_t id : ids) h = (h ^ static_cast<uint32_t>(id)) * 0x100000001b3ull;
        count += ids.size();
      }
      double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count();
      double mbs = text.size() / 1e6 / sec;
      if (r == 0) first = mbs;
      best = std::max(best, mbs);
      n_ids = count;
      hash = h;
    }
    std::printf(
        "elastic  bytes %zu  lines %zu  tokens %llu  hash %016llx  load %.2f s  "
        "first %.2f MB/s  best %.2f MB/s\n",
        text.size(), lines.size(), static_cast<unsigned long long>(n_ids),
        static_cast<unsigned long long>(hash), load_s, first, best);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}

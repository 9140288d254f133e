// A progress bar on stderr for long commands (eval, calibrate): on a terminal one line redrawn in
// place ("\r"); otherwise (a log, a pipe) a plain line at every tenth of the work and at the end.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace elastic::cli {

class ProgressBar {
 public:
  explicit ProgressBar(std::string label)
      : label_(std::move(label)),
        terminal_(isatty(fileno(stderr)) != 0),
        start_(std::chrono::steady_clock::now()) {}

  // done of total units finished; `what` names the last one.
  void update(int64_t done, int64_t total, const std::string& what) {
    if (total <= 0) return;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const int64_t percent = done * 100 / total;
    const double left = done > 0 ? elapsed * static_cast<double>(total - done) / done : 0.0;
    if (terminal_) {
      constexpr int kWidth = 30;
      const int64_t filled = done * kWidth / total;
      std::string bar(static_cast<size_t>(filled), '=');
      bar.resize(kWidth, ' ');
      std::fprintf(stderr, "\r%s [%s] %lld/%lld %3lld%%  %.0f s left  %-40.40s", label_.c_str(),
                   bar.c_str(), (long long)done, (long long)total, (long long)percent, left,
                   what.c_str());
      if (done == total) std::fprintf(stderr, "\n");
    } else if (percent / 10 != last_tenth_ || done == total) {
      last_tenth_ = percent / 10;
      std::fprintf(stderr, "%s: %lld/%lld (%lld%%) %.1f s, %s\n", label_.c_str(), (long long)done,
                   (long long)total, (long long)percent, elapsed, what.c_str());
    }
    std::fflush(stderr);
  }

 private:
  std::string label_;
  bool terminal_;
  std::chrono::steady_clock::time_point start_;
  int64_t last_tenth_ = 0;
};

}  // namespace elastic::cli

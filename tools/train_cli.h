// What the training commands (train, train-router, train-step) share: the CUDA training engine
// where this build links it, stopping on Ctrl-C / SIGTERM at the next step (the loop checkpoints,
// the command exits 128 + signal), and the remaining time of a run.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace elastic::cli {

// Registers the "cuda" training engine in builds with the CUDA trainer (the core library cannot).
void train_cuda_engine_register();

// Installs the SIGINT / SIGTERM handlers; train_stop_signal() is then 0 until one arrives.
void train_signals_install();
int train_stop_signal();

// "1h02m" / "3m07s"; "?" for a negative or non-finite time.
std::string fmt_duration(double seconds);

// Time left of a run from the steps done since the command started (a resumed run counts from
// its first step in this process).
class TrainEta {
 public:
  // After step `step` (1-based) of `steps`.
  std::string after(int64_t step, int64_t steps) {
    if (first_ < 0) first_ = step - 1;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    return fmt_duration(elapsed / double(step - first_) * double(steps - step));
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  int64_t first_ = -1;
};

}  // namespace elastic::cli

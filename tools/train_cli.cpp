#include "train_cli.h"

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>

#ifdef ELASTIC_HAVE_CUDA
#include "elastic/cuda/train_cuda.h"
#endif
#ifdef ELASTIC_HAVE_NCCL
#include "elastic/cuda/comm_nccl.h"
#endif

namespace elastic::cli {

namespace {
std::atomic<int> g_stop_signal{0};
extern "C" void train_signal_handler(int sig) { g_stop_signal.store(sig); }
}  // namespace

void train_cuda_engine_register() {
#ifdef ELASTIC_HAVE_CUDA
  train_engine_cuda_register();
#endif
#ifdef ELASTIC_HAVE_NCCL
  tp_group_nccl_register();  // --dp-comm nccl
#endif
}

void train_signals_install() {
  g_stop_signal.store(0);
  std::signal(SIGINT, train_signal_handler);
  std::signal(SIGTERM, train_signal_handler);
}

int train_stop_signal() { return g_stop_signal.load(); }

std::string fmt_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  char buf[32];
  const long t = std::lround(s);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  return buf;
}

}  // namespace elastic::cli

// Measured machine peaks: finite, positive and physically plausible, and fast to measure.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>

#include "elastic/cpu_peaks.h"

namespace elastic {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Bounds: any machine this runs on reads DRAM faster than 0.5 GB/s and no CPU socket streams
// 5 TB/s; a single 1990s-era core does > 0.1 GFLOP/s and no CPU does 1e5 fp32 GFLOP/s. A
// broken timer or FLOP/byte count is off by orders of magnitude and lands outside. The time
// limit is 10x the design target (< 1 s each), leaving room for a machine shared with others.
TEST(Peaks, MemoryBandwidthIsPlausibleAndQuick) {
  const auto t0 = std::chrono::steady_clock::now();
  const double gbs = measure_memory_bandwidth_gbs();
  EXPECT_LT(seconds_since(t0), 10.0);
  EXPECT_TRUE(std::isfinite(gbs));
  EXPECT_GT(gbs, 0.5);
  EXPECT_LT(gbs, 5000.0);
  const double one = measure_memory_bandwidth_gbs(1);
  EXPECT_TRUE(std::isfinite(one) && one > 0.5) << one;
}

TEST(Peaks, FmaPeakIsPlausibleAndQuick) {
  const auto t0 = std::chrono::steady_clock::now();
  const double gflops = measure_fma_peak_gflops();
  EXPECT_LT(seconds_since(t0), 10.0);
  EXPECT_TRUE(std::isfinite(gflops));
  EXPECT_GT(gflops, 0.1);
  EXPECT_LT(gflops, 1e5);
  const double one = measure_fma_peak_gflops(1);
  EXPECT_TRUE(std::isfinite(one) && one > 0.1) << one;
}

}  // namespace
}  // namespace elastic

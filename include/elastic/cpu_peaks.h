// Measured machine peaks, the denominators of the achieved fractions `elastic bench` and
// bench_matmul report. Both run on all requested threads (OpenMP) and return the best of many
// short timed units (so a machine shared with other processes still yields its undisturbed
// peak); each call takes well under a second.
#pragma once

#include <cstddef>
#include <memory>

namespace elastic {

// Streaming READ bandwidth from DRAM in GB/s (1e9 bytes per second). Counts the bytes loaded,
// nothing else: a 1 GiB buffer (on 2 MiB pages where the kernel grants them, like the packed
// matmul weights) is first filled with pseudo-random data by the threads that will read it,
// then read twice over in 128 MiB chunks (larger than any L3 the VM may sit on), each chunk
// split into contiguous per-thread parts read with the widest vector loads; the figure is
// 128 MiB / the fastest chunk's time (barrier to barrier). threads = 0: omp_get_max_threads().
double measure_memory_bandwidth_gbs(int threads = 0);

// The same measurement on a buffer kept between calls, for short repeated samples (elastic
// bench takes one after every decode step, to set each step beside the bandwidth the machine
// gave at that moment): `bytes` (a multiple of 128 MiB, at least 128 MiB) allocated and filled
// once; sample() reads it `passes` times over and returns 128 MiB / the fastest chunk's time.
class BandwidthMeter {
 public:
  explicit BandwidthMeter(size_t bytes, int threads = 0);
  double sample(int passes = 1);

 private:
  std::shared_ptr<void> buffer_;
  size_t bytes_ = 0;
  int threads_ = 0;
};

// Read bandwidth of a working set of `bytes` read over and over, in GB/s, as a decode step
// re-reads the same weights every token: from the caches when the set fits in them, from DRAM
// when it does not. Each thread owns a contiguous part of the set (it wrote it, and reads it again
// on every pass, as a decode step's static schedule gives each thread the same rows); a timed
// unit is enough passes to read >= 8 MiB per thread (so a barrier's cost is amortised), and the
// figure is the fastest of 40 units. A decode step reading the same bytes does more than load
// them, so its bytes / time stays below this figure.
double measure_working_set_bandwidth_gbs(size_t bytes, int threads = 0);

// fp32 fused-multiply-add throughput in GFLOP/s (1e9 FLOP per second), counting 2 FLOP per lane
// per FMA instruction (one 512-bit FMA on 16 floats = 32 FLOP). Each thread runs 16 chains of
// register-resident FMAs (more than latency x pipes on any current x86 core), no memory
// traffic; the figure is the fastest of 24 timed units (barrier to barrier). threads = 0: all.
double measure_fma_peak_gflops(int threads = 0);

}  // namespace elastic

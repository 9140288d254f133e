// Measured machine peaks, the denominators of the achieved fractions `elastic bench` and
// bench_matmul report. Both run on all requested threads (OpenMP) and return the best of a few
// repetitions; each takes well under a second.
#pragma once

namespace elastic {

// Streaming READ bandwidth from DRAM in GB/s (1e9 bytes per second). Counts the bytes of one
// 256 MiB buffer (8x this machine's 32 MiB L3, so nothing stays cached) read once per
// repetition by `threads` threads, each reading its own contiguous slice with the widest vector
// loads; the buffer is written first so every page is backed by its own memory. No writes are
// counted. threads = 0: omp_get_max_threads().
double measure_memory_bandwidth_gbs(int threads = 0);

// fp32 fused-multiply-add throughput in GFLOP/s (1e9 FLOP per second), counting 2 FLOP per lane
// per FMA instruction (a 512-bit FMA on 16 floats = 32 FLOP). Each thread runs chains of
// independent register-resident FMAs (more chains than latency x pipes on any current x86
// core), so the figure is the FMA-pipe limit, with no memory traffic. threads = 0: all.
double measure_fma_peak_gflops(int threads = 0);

}  // namespace elastic

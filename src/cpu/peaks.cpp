// Machine peaks measured at run time (cpu_peaks.h): DRAM streaming-read bandwidth and fp32
// FMA throughput, all threads, best of many short timed units. Each figure counts only the work it
// names: bytes loaded from the buffer, or 2 FLOP per fp32 lane per FMA.
#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>

#include "elastic/cpu_peaks.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "elastic/error.h"

namespace elastic {
namespace {

// Timed units are short (1-3 ms) and many, and the best one counts: on a machine shared with
// other processes a unit that ran undisturbed on every thread is then almost surely among them
// (long units would nearly always include some preemption and understate the peak).
constexpr int kFmaRepetitions = 24;
// Bandwidth: a 1 GiB buffer read in chunks of kChunkBytes (each timed on its own, ~4 ms at
// 35 GB/s). A chunk is 4x the 32 MiB L3 the VM reports, and larger than the L3 of any chip
// it may run on (96 MiB with stacked cache): with 32 MiB chunks the first timed units of a
// process were sometimes served from a cache and read 60+ GB/s, against 35-39 GB/s from DRAM.
constexpr size_t kBandwidthBytes = size_t{1} << 30;
constexpr size_t kChunkBytes = size_t{128} << 20;
constexpr int kBandwidthPasses = 2;
constexpr size_t kHugePage = size_t{2} << 20;

// XOR-folds [p, p + bytes) (bytes a multiple of 256) with 4 independent vector chains so the
// loads, not the folding, are the limit. The result only keeps the compiler from eliding loads.
uint64_t read_fold(const char* p, size_t bytes) {
#if defined(__AVX512F__)
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < bytes; i += 256) {
    a0 = _mm512_xor_si512(a0, _mm512_load_si512(p + i));
    a1 = _mm512_xor_si512(a1, _mm512_load_si512(p + i + 64));
    a2 = _mm512_xor_si512(a2, _mm512_load_si512(p + i + 128));
    a3 = _mm512_xor_si512(a3, _mm512_load_si512(p + i + 192));
  }
  a0 = _mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3));
  uint64_t lanes[8];
  _mm512_storeu_si512(lanes, a0);
  return lanes[0] ^ lanes[7];
#elif defined(__AVX2__)
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < bytes; i += 128) {
    a0 = _mm256_xor_si256(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_xor_si256(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 32)));
    a2 = _mm256_xor_si256(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 64)));
    a3 = _mm256_xor_si256(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 96)));
  }
  a0 = _mm256_xor_si256(_mm256_xor_si256(a0, a1), _mm256_xor_si256(a2, a3));
  return static_cast<uint64_t>(_mm256_extract_epi64(a0, 0) | _mm256_extract_epi64(a0, 3));
#else
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (size_t i = 0; i < bytes; i += 32) {
    uint64_t v[4];
    std::memcpy(v, p + i, sizeof v);
    a0 ^= v[0];
    a1 ^= v[1];
    a2 ^= v[2];
    a3 ^= v[3];
  }
  return a0 ^ a1 ^ a2 ^ a3;
#endif
}

int resolve_threads(int threads) { return threads > 0 ? threads : omp_get_max_threads(); }

volatile uint64_t g_sink;  // keeps measured work observable

}  // namespace

BandwidthMeter::BandwidthMeter(size_t bytes, int threads)
    : bytes_(bytes), threads_(resolve_threads(threads)) {
  if (bytes_ < kChunkBytes || bytes_ % kChunkBytes != 0)
    throw Error("BandwidthMeter: buffer must be a positive multiple of 128 MiB");
  void* raw = std::aligned_alloc(kHugePage, bytes_);
  if (!raw) throw Error("BandwidthMeter: cannot allocate " + std::to_string(bytes_ >> 20) + " MiB");
  buffer_ = std::shared_ptr<void>(raw, std::free);
  madvise(raw, bytes_, MADV_HUGEPAGE);  // fewer TLB misses; advisory only
  char* buf = static_cast<char*>(raw);
  // Chunk c, thread t owns [c * kChunkBytes + t * part, + part): parts are multiples of 4 KiB.
  const size_t chunks = bytes_ / kChunkBytes;
  const size_t part = kChunkBytes / static_cast<size_t>(threads_) / 4096 * 4096;
#pragma omp parallel num_threads(threads_)
  {
    const size_t t = static_cast<size_t>(omp_get_thread_num());
    // Written by the thread that reads it (first touch), so no page is the shared zero page.
    // Distinct pseudo-random contents: a constant fill can be served by page-deduplicating
    // hypervisors from a few physical pages (seen here: up to 2x inflated figures).
    uint64_t x = 0x9e3779b97f4a7c15ull * (t + 1);
    for (size_t c = 0; c < chunks; ++c) {
      char* p = buf + c * kChunkBytes + t * part;
      for (size_t i = 0; i < part; i += sizeof x) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::memcpy(p + i, &x, sizeof x);
      }
    }
  }
}

double BandwidthMeter::sample(int passes) {
  const char* buf = static_cast<const char*>(buffer_.get());
  const size_t chunks = bytes_ / kChunkBytes;
  const size_t part = kChunkBytes / static_cast<size_t>(threads_) / 4096 * 4096;
  double best = std::numeric_limits<double>::infinity();
  uint64_t fold = 0;
#pragma omp parallel num_threads(threads_) reduction(^ : fold)
  {
    const size_t t = static_cast<size_t>(omp_get_thread_num());
    double t0 = 0;
    for (int pass = 0; pass < passes; ++pass) {
      for (size_t c = 0; c < chunks; ++c) {
#pragma omp barrier
#pragma omp master
        t0 = omp_get_wtime();
        fold ^= read_fold(buf + c * kChunkBytes + t * part, part);
#pragma omp barrier
#pragma omp master
        best = std::min(best, omp_get_wtime() - t0);
      }
    }
  }
  g_sink = fold;
  return static_cast<double>(part) * threads_ / best * 1e-9;
}

double measure_memory_bandwidth_gbs(int threads) {
  BandwidthMeter meter(kBandwidthBytes, threads);
  return meter.sample(kBandwidthPasses);
}

double measure_working_set_bandwidth_gbs(size_t bytes, int threads) {
  threads = resolve_threads(threads);
  constexpr size_t kAlign = 256;  // read_fold's unit
  constexpr size_t kUnitBytesPerThread = size_t{8} << 20;
  constexpr int kUnits = 40;
  const size_t part =
      std::max(kAlign, (bytes / static_cast<size_t>(threads) + kAlign - 1) / kAlign * kAlign);
  const size_t passes = std::max<size_t>(1, kUnitBytesPerThread / part);
  void* raw = std::aligned_alloc(kAlign, part * static_cast<size_t>(threads));
  if (!raw)
    throw Error("working-set bandwidth: cannot allocate " + std::to_string(bytes) + " bytes");
  std::unique_ptr<void, decltype(&std::free)> buffer(raw, std::free);
  char* buf = static_cast<char*>(raw);
  double best = std::numeric_limits<double>::infinity();
  uint64_t fold = 0;
#pragma omp parallel num_threads(threads) reduction(^ : fold)
  {
    const size_t t = static_cast<size_t>(omp_get_thread_num());
    char* mine = buf + t * part;
    uint64_t x = 0x9e3779b97f4a7c15ull * (t + 1);  // distinct contents (see BandwidthMeter)
    for (size_t i = 0; i < part; i += sizeof x) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      std::memcpy(mine + i, &x, sizeof x);
    }
    double t0 = 0;
    for (int unit = 0; unit < kUnits; ++unit) {
#pragma omp barrier
#pragma omp master
      t0 = omp_get_wtime();
      for (size_t pass = 0; pass < passes; ++pass) fold ^= read_fold(mine, part);
#pragma omp barrier
#pragma omp master
      best = std::min(best, omp_get_wtime() - t0);
    }
  }
  g_sink = fold;
  return static_cast<double>(part * passes) * threads / best * 1e-9;
}

double measure_fma_peak_gflops(int threads) {
  threads = resolve_threads(threads);
  // Per thread and repetition: kIterations x kChains FMAs on vectors of kLanes floats.
  constexpr int64_t kIterations = int64_t{1} << 18;  // ~1.2 ms on a 3.6 GHz Zen 4 core
  constexpr int kChains = 16;  // > FMA latency (4) x 512-bit FMAs per cycle (<= 2)
  double best = std::numeric_limits<double>::infinity();
  float fold = 0.f;
#pragma omp parallel num_threads(threads) reduction(+ : fold)
  {
    double t0 = 0;
    for (int rep = 0; rep < kFmaRepetitions; ++rep) {
#pragma omp barrier
#pragma omp master
      t0 = omp_get_wtime();
      // acc <- acc * a + b converges to b / (1 - a) = 1: no overflow, no denormals.
#if defined(__AVX512F__)
      __m512 acc[kChains];
      for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(0.5f + 0.01f * c);
      const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(0.001f);
      for (int64_t it = 0; it < kIterations; ++it)
        for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
      float out[16];
      for (int c = 0; c < kChains; ++c) {
        _mm512_storeu_ps(out, acc[c]);
        for (float v : out) fold += v;
      }
#elif defined(__AVX2__) && defined(__FMA__)
      __m256 acc[kChains / 2];  // 16 registers: 8 chains + 2 constants
      for (int c = 0; c < kChains / 2; ++c) acc[c] = _mm256_set1_ps(0.5f + 0.01f * c);
      const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(0.001f);
      for (int64_t it = 0; it < 2 * kIterations; ++it)
        for (int c = 0; c < kChains / 2; ++c) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
      float out[8];
      for (int c = 0; c < kChains / 2; ++c) {
        _mm256_storeu_ps(out, acc[c]);
        for (float v : out) fold += v;
      }
#else
      float acc[kChains];
      for (int c = 0; c < kChains; ++c) acc[c] = 0.5f + 0.01f * c;
      for (int64_t it = 0; it < kIterations; ++it)
        for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * 0.999f + 0.001f;
      for (int c = 0; c < kChains; ++c) fold += acc[c];
#endif
#pragma omp barrier
#pragma omp master
      best = std::min(best, omp_get_wtime() - t0);
    }
  }
  g_sink = static_cast<uint64_t>(fold);
  // Lane-FMAs per thread and repetition: kIterations * kChains * lanes on every path (AVX2 runs
  // twice the iterations on half the chains).
#if defined(__AVX512F__)
  constexpr int lanes = 16;
#elif defined(__AVX2__) && defined(__FMA__)
  constexpr int lanes = 8;
#else
  constexpr int lanes = 1;
#endif
  const double fmas_per_thread = static_cast<double>(kIterations) * kChains * lanes;
  return 2.0 * fmas_per_thread * threads / best * 1e-9;
}

}  // namespace elastic

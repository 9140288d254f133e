// bench_attention: prefill attention of one layer on the CPU, per mode, beside the cost model
// of SPEC §9. For each length N: FA, SSA and XA with every KV head in that mode, then the
// FA-SSA hybrid at Omega_MSR in {0.25, 0.5, 0.75} (the first r*Hkv KV heads SSA) beside its
// ideal (1 - r) T_FA + r T_SSA from the FA and SSA times measured in the same run; SSA time
// per token (linear growth) and the XA estimation time as a share of FA.
// Times: wall clock and CPU time of the process divided by the thread count (the machine may
// be shared: CPU time counts the work our threads did, wall time also the scheduler); the
// ratios to the ideal use CPU time. Each is the minimum over --reps interleaved rounds.
// Inputs: random normal q, k, v plus, unless --flat, a shared direction whose amplitude
// varies per 16-token span, so that attention is peaked as in trained models and XA's
// threshold selects a subset of blocks (with flat random scores XA keeps ~90% of them).
#include <omp.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "elastic/attention.h"
#include "elastic/error.h"

namespace {

using namespace elastic;

struct Config {
  std::vector<int64_t> lengths = {4096, 16384, 32768};
  int64_t heads = 8, kv_heads = 4, dim = 128;
  int reps = 1;
  bool flat = false;
  AttnOptions opt;
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// CPU time of the whole process (all threads), seconds.
double cpu_s() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// Minimum wall and per-thread CPU time over rounds.
struct Timing {
  double wall = INFINITY, cpu = INFINITY;
  template <class F>
  void measure(F&& f) {
    const double w0 = now_s(), c0 = cpu_s();
    f();
    wall = std::min(wall, now_s() - w0);
    cpu = std::min(cpu, (cpu_s() - c0) / omp_get_max_threads());
  }
};

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> v;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = s.find(',', i);
    if (j == std::string::npos) j = s.size();
    v.push_back(std::stoll(s.substr(i, j - i)));
    i = j + 1;
  }
  return v;
}

void usage() {
  std::printf(
      "usage: bench_attention [options]\n\n"
      "Prefill attention of one layer on the CPU: FA, SSA, XA, and the FA-SSA hybrid at\n"
      "Omega_MSR 0.25/0.5/0.75 beside the SPEC §9 cost model. Random inputs.\n\n"
      "  --lengths N,N,..   sequence lengths (default 4096,16384,32768)\n"
      "  --quick            lengths 4096,8192\n"
      "  --heads H          query heads (default 8)\n"
      "  --kv-heads H       KV heads (default 4; a multiple of 4 for the hybrid ratios)\n"
      "  --dim D            head dim (default 128)\n"
      "  --reps R           interleaved rounds, minimum taken (default 1)\n"
      "  --flat             plain random inputs (flat attention; XA keeps most blocks)\n"
      "  --sink T --local T --block B          SSA (default 128, 2048, 128)\n"
      "  --xa-block B --xa-stride S --xa-threshold X   XA (default 128, 16, 0.9)\n"
      "  -t, --threads N    OpenMP threads (default: all)\n");
}

struct Inputs {
  std::vector<float> q, k, v, out;
};

AttnArgs attention_args(const Config& c, Inputs& in, int64_t n, const std::vector<AttnMode>& modes,
                        AttnStats* stats) {
  AttnArgs a;
  a.out = in.out.data();
  a.q = in.q.data();
  a.k = in.k.data();
  a.v = in.v.data();
  a.modes = modes.data();
  a.n = n;
  a.num_heads = c.heads;
  a.num_kv_heads = c.kv_heads;
  a.head_dim = c.dim;
  a.opt = c.opt;
  a.stats = stats;
  return a;
}

// XA estimation alone for every query head (parallel over heads as in attention_cpu).
void xa_estimation(const Config& c, const Inputs& in, int64_t n) {
  const int64_t Hq = c.heads, Hkv = c.kv_heads, d = c.dim, G = Hq / Hkv;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t h = 0; h < Hq; ++h) {
    RowSource qs{nullptr, 0, in.q.data() + h * d, Hq * d, 0};
    RowSource ks{nullptr, 0, in.k.data() + (h / G) * d, Hkv * d, 0};
    xa_select_blocks(qs, ks, 0, n, d, scale, c.opt.xa);
  }
}

double mean(const std::vector<double>& x) {
  double s = 0;
  for (double e : x) s += e;
  return x.empty() ? 0 : s / x.size();
}

Inputs make_inputs(const Config& c, int64_t n) {
  const int64_t Hq = c.heads, Hkv = c.kv_heads, d = c.dim;
  Inputs in;
  std::mt19937_64 rng(1234 + n);
  std::normal_distribution<float> nd(0.f, 1.f);
  in.q.resize(n * Hq * d);
  in.k.resize(n * Hkv * d);
  in.v.resize(n * Hkv * d);
  in.out.resize(n * Hq * d);
  for (float& e : in.q) e = nd(rng);
  for (float& e : in.k) e = nd(rng);
  for (float& e : in.v) e = nd(rng);
  if (!c.flat) {
    // Direction u with |u|^2 = sqrt(d) in every query; keys of each 16-token span carry an
    // amplitude a ~ N(0, 2) along it, adding a to their scores.
    std::vector<float> u(d);
    for (float& e : u) e = nd(rng) * std::pow(float(d), -0.25f);
    std::vector<float> amp(n / 16 + 1);
    for (float& a : amp) a = 2.f * nd(rng);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t h = 0; h < Hq; ++h)
        for (int64_t e = 0; e < d; ++e) in.q[(t * Hq + h) * d + e] += u[e];
      for (int64_t h = 0; h < Hkv; ++h)
        for (int64_t e = 0; e < d; ++e) in.k[(t * Hkv + h) * d + e] += amp[t / 16] * u[e];
    }
  }
  return in;
}

int run(const Config& c) {
  const int64_t Hq = c.heads, Hkv = c.kv_heads, d = c.dim;
  std::printf("bench_attention: CPU prefill attention of one layer, Hq=%lld Hkv=%lld d=%lld, %d threads\n",
              (long long)Hq, (long long)Hkv, (long long)d, omp_get_max_threads());
  std::printf("SSA sink %lld local %lld block %lld; XA block %lld stride %lld threshold %.2f; %s inputs; "
              "min of %d round(s)\n",
              (long long)c.opt.ssa.sink_tokens, (long long)c.opt.ssa.local_tokens, (long long)c.opt.ssa.block,
              (long long)c.opt.xa.block, (long long)c.opt.xa.stride, c.opt.xa.threshold,
              c.flat ? "flat random" : "peaked random", c.reps);
  std::printf("cpu = process CPU time / threads; ideal and 'x ideal' from cpu; ideal(SSA, XA) = their FLOPs at "
              "the FA rate; ideal(hybrid r) = (1-r) T_FA + r T_SSA\n\n");
  std::printf("%7s %-14s %9s %9s %9s %8s %8s %8s  %s\n", "N", "mode", "wall ms", "cpu ms", "ideal ms", "x ideal",
              "x(wall)", "GFLOP/s", "notes");
  const double ratios[] = {0.25, 0.5, 0.75};
  double prev_ssa_per_token = 0;
  for (int64_t n : c.lengths) {
    Inputs in = make_inputs(c, n);
    auto flops_of = [&](const AttnStats& st) {  // 4 d per attended (query, key) pair and query head
      double f = 0;
      for (int64_t p : st.attended_pairs) f += 4.0 * d * p;
      return f;
    };
    const std::vector<AttnMode> all_fa(Hkv, AttnMode::fa), all_ssa(Hkv, AttnMode::ssa), all_xa(Hkv, AttnMode::xa);
    std::vector<std::vector<AttnMode>> hybrid;
    for (double r : ratios) {
      std::vector<AttnMode> m(Hkv, AttnMode::fa);
      for (int64_t h = 0; h < std::lround(r * Hkv); ++h) m[h] = AttnMode::ssa;
      hybrid.push_back(m);
    }
    AttnStats st_fa, st_ssa, st_xa, st_h[3];
    Timing t_fa, t_ssa, t_xa, t_est, t_h[3];
    for (int rep = 0; rep < c.reps; ++rep) {
      t_fa.measure([&] { attention_cpu(attention_args(c, in, n, all_fa, &st_fa)); });
      t_ssa.measure([&] { attention_cpu(attention_args(c, in, n, all_ssa, &st_ssa)); });
      t_xa.measure([&] { attention_cpu(attention_args(c, in, n, all_xa, &st_xa)); });
      t_est.measure([&] { xa_estimation(c, in, n); });
      for (int i = 0; i < 3; ++i) t_h[i].measure([&] { attention_cpu(attention_args(c, in, n, hybrid[i], &st_h[i])); });
    }
    const double rate = flops_of(st_fa) / t_fa.cpu;  // the cost model's unit rate, FLOP/s
    auto row = [&](const char* mode, const Timing& t, double ideal, double ideal_wall, double flops,
                   const std::string& notes) {
      char ideal_s[32] = "-", x_s[32] = "-", xw_s[32] = "-";
      if (ideal > 0) {
        std::snprintf(ideal_s, sizeof ideal_s, "%.1f", ideal * 1e3);
        std::snprintf(x_s, sizeof x_s, "%.2f", t.cpu / ideal);
        std::snprintf(xw_s, sizeof xw_s, "%.2f", t.wall / ideal_wall);
      }
      std::printf("%7lld %-14s %9.1f %9.1f %9s %8s %8s %8.1f  %s\n", (long long)n, mode, t.wall * 1e3, t.cpu * 1e3,
                  ideal_s, x_s, xw_s, flops / t.cpu / 1e9 / omp_get_max_threads(), notes.c_str());
    };
    char buf[256];
    std::snprintf(buf, sizeof buf, "%.1f GFLOP (GFLOP/s per thread)", flops_of(st_fa) / 1e9);
    row("FA", t_fa, 0, 0, flops_of(st_fa), buf);

    const double ssa_per_token = t_ssa.cpu / n * 1e6;
    std::snprintf(buf, sizeof buf, "rho %.3f; cpu/N %.2f us/token%s; cpu per attended pair %.2f ns",
                  mean(st_ssa.rho), ssa_per_token,
                  prev_ssa_per_token > 0 ? (" (x" + std::to_string(ssa_per_token / prev_ssa_per_token).substr(0, 4) +
                                            " of previous N)").c_str()
                                         : "",
                  t_ssa.cpu / (flops_of(st_ssa) / (4.0 * d)) * 1e9);
    prev_ssa_per_token = ssa_per_token;
    const double ideal_ssa = flops_of(st_ssa) / rate;
    row("SSA", t_ssa, ideal_ssa, ideal_ssa * t_fa.wall / t_fa.cpu, flops_of(st_ssa), buf);

    const double est_flops = 2.0 * c.opt.xa.stride * d * double(st_xa.xa_estimate_scores);
    const double ideal_xa = (flops_of(st_xa) + est_flops) / rate;
    std::snprintf(buf, sizeof buf, "rho %.3f; estimation %.1f ms cpu = %.1f%% of FA", mean(st_xa.rho),
                  t_est.cpu * 1e3, 100.0 * t_est.cpu / t_fa.cpu);
    row("XA", t_xa, ideal_xa, ideal_xa * t_fa.wall / t_fa.cpu, flops_of(st_xa) + est_flops, buf);

    for (int i = 0; i < 3; ++i) {
      const double r = double(std::lround(ratios[i] * Hkv)) / Hkv;
      const double ideal = (1 - r) * t_fa.cpu + r * t_ssa.cpu;
      const double ideal_wall = (1 - r) * t_fa.wall + r * t_ssa.wall;
      char name[32];
      std::snprintf(name, sizeof name, "FA-SSA r=%.2f", r);
      std::snprintf(buf, sizeof buf, "%s", t_h[i].cpu / ideal <= 1.15 ? "within 1.15x" : "** above 1.15x **");
      row(name, t_h[i], ideal, ideal_wall, flops_of(st_h[i]), buf);
    }
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (++i >= argc) throw Error("option " + a + " needs a value");
        return argv[i];
      };
      if (a == "-h" || a == "--help") {
        usage();
        return 0;
      } else if (a == "--quick") {
        c.lengths = {4096, 8192};
      } else if (a == "--lengths") {
        c.lengths = parse_list(value());
      } else if (a == "--heads") {
        c.heads = std::stoll(value());
      } else if (a == "--kv-heads") {
        c.kv_heads = std::stoll(value());
      } else if (a == "--dim") {
        c.dim = std::stoll(value());
      } else if (a == "--flat") {
        c.flat = true;
      } else if (a == "--reps") {
        c.reps = std::max(1, std::stoi(value()));
      } else if (a == "--sink") {
        c.opt.ssa.sink_tokens = std::stoll(value());
      } else if (a == "--local") {
        c.opt.ssa.local_tokens = std::stoll(value());
      } else if (a == "--block") {
        c.opt.ssa.block = std::stoll(value());
      } else if (a == "--xa-block") {
        c.opt.xa.block = std::stoll(value());
      } else if (a == "--xa-stride") {
        c.opt.xa.stride = std::stoll(value());
      } else if (a == "--xa-threshold") {
        c.opt.xa.threshold = std::stod(value());
      } else if (a == "-t" || a == "--threads") {
        omp_set_num_threads(std::stoi(value()));
      } else {
        throw Error("unknown option '" + a + "' (see bench_attention --help)");
      }
    }
    if (c.kv_heads <= 0 || c.heads % c.kv_heads != 0) throw Error("--heads must be a multiple of --kv-heads");
    attn_options_validate(c.opt);
    return run(c);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_attention: error: %s\n", e.what());
    return 1;
  }
}

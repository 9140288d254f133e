// bench_attention: prefill attention of one layer on the CPU, per mode, beside the cost model
// of SPEC §9. For each length N: FA, SSA and XA with every KV head in that mode, then the
// FA-SSA hybrid at Omega_MSR in {0.25, 0.5, 0.75} (the first r*Hkv KV heads SSA) beside its
// ideal (1 - r) T_FA + r T_SSA from the FA and SSA times measured in the same run, SSA time
// per token (linear growth), and the XA estimation time as a share of FA.
// Inputs are random normal q, k, v (so XA's threshold keeps most blocks: the scores of random
// vectors are flat); times are the minimum over --reps runs.
#include <omp.h>

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
  AttnOptions opt;
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

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
      "  --reps R           runs per measurement, minimum taken (default 1)\n"
      "  --sink T --local T --block B          SSA (default 128, 2048, 128)\n"
      "  --xa-block B --xa-stride S --xa-threshold X   XA (default 128, 16, 0.9)\n"
      "  -t, --threads N    OpenMP threads (default: all)\n");
}

struct Inputs {
  std::vector<float> q, k, v, out;
};

double time_attention(const Config& c, Inputs& in, int64_t n, const std::vector<AttnMode>& modes,
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
  double best = INFINITY;
  for (int r = 0; r < c.reps; ++r) {
    const double t0 = now_s();
    attention_cpu(a);
    best = std::min(best, now_s() - t0);
  }
  return best;
}

// XA estimation alone for every query head (parallel over heads as in attention_cpu).
double time_xa_estimation(const Config& c, const Inputs& in, int64_t n) {
  const int64_t Hq = c.heads, Hkv = c.kv_heads, d = c.dim, G = Hq / Hkv;
  const float scale = 1.f / std::sqrt(static_cast<float>(d));
  double best = INFINITY;
  for (int r = 0; r < c.reps; ++r) {
    const double t0 = now_s();
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t h = 0; h < Hq; ++h) {
      RowSource qs{nullptr, 0, in.q.data() + h * d, Hq * d, 0};
      RowSource ks{nullptr, 0, in.k.data() + (h / G) * d, Hkv * d, 0};
      xa_select_blocks(qs, ks, 0, n, d, scale, c.opt.xa);
    }
    best = std::min(best, now_s() - t0);
  }
  return best;
}

double mean(const std::vector<double>& x) {
  double s = 0;
  for (double e : x) s += e;
  return x.empty() ? 0 : s / x.size();
}

int run(const Config& c) {
  const int64_t Hq = c.heads, Hkv = c.kv_heads, d = c.dim;
  std::printf("bench_attention: CPU prefill attention of one layer, Hq=%lld Hkv=%lld d=%lld, %d threads\n",
              (long long)Hq, (long long)Hkv, (long long)d, omp_get_max_threads());
  std::printf("SSA sink %lld local %lld block %lld; XA block %lld stride %lld threshold %.2f; random normal inputs; min of %d run(s)\n\n",
              (long long)c.opt.ssa.sink_tokens, (long long)c.opt.ssa.local_tokens,
              (long long)c.opt.ssa.block, (long long)c.opt.xa.block, (long long)c.opt.xa.stride,
              c.opt.xa.threshold, c.reps);
  std::printf("%7s %-16s %10s %10s %8s %9s  %s\n", "N", "mode", "time ms", "ideal ms", "x ideal",
              "GFLOP/s", "notes");
  for (int64_t n : c.lengths) {
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

    // FLOPs: 4 d per attended (query, key) pair and query head (QK^T and PV).
    const double dense_pairs = 0.5 * double(n) * double(n + 1);
    auto flops_of = [&](const AttnStats& st) {
      double f = 0;
      for (int64_t p : st.attended_pairs) f += 4.0 * d * p;
      return f;
    };
    AttnStats st_fa, st_ssa, st_xa;
    const double t_fa = time_attention(c, in, n, std::vector<AttnMode>(Hkv, AttnMode::fa), &st_fa);
    const double rate = flops_of(st_fa) / t_fa;  // FLOP/s of FA, the cost model's unit rate
    std::printf("%7lld %-16s %10.1f %10s %8s %9.1f  dense 2N^2d per head = %.1f GFLOP\n", (long long)n,
                "FA", t_fa * 1e3, "-", "-", rate / 1e9, flops_of(st_fa) / 1e9);

    const double t_ssa = time_attention(c, in, n, std::vector<AttnMode>(Hkv, AttnMode::ssa), &st_ssa);
    const double ideal_ssa = flops_of(st_ssa) / rate;
    std::printf("%7lld %-16s %10.1f %10.1f %8.2f %9.1f  rho %.3f, time/N %.3f us/token, FA/SSA %.2fx\n",
                (long long)n, "SSA", t_ssa * 1e3, ideal_ssa * 1e3, t_ssa / ideal_ssa,
                flops_of(st_ssa) / t_ssa / 1e9, mean(st_ssa.rho), t_ssa / n * 1e6, t_fa / t_ssa);

    const double t_xa = time_attention(c, in, n, std::vector<AttnMode>(Hkv, AttnMode::xa), &st_xa);
    const double t_est = time_xa_estimation(c, in, n);
    const double est_flops = 2.0 * c.opt.xa.stride * d * double(st_xa.xa_estimate_scores);
    const double ideal_xa = (flops_of(st_xa) + est_flops) / rate;
    std::printf("%7lld %-16s %10.1f %10.1f %8.2f %9.1f  rho %.3f, estimation %.1f ms = %.1f%% of FA\n",
                (long long)n, "XA", t_xa * 1e3, ideal_xa * 1e3, t_xa / ideal_xa,
                (flops_of(st_xa) + est_flops) / t_xa / 1e9, mean(st_xa.rho), t_est * 1e3,
                100.0 * t_est / t_fa);

    for (double r : {0.25, 0.5, 0.75}) {
      const int64_t sparse = static_cast<int64_t>(std::lround(r * Hkv));
      std::vector<AttnMode> modes(Hkv, AttnMode::fa);
      for (int64_t h = 0; h < sparse; ++h) modes[h] = AttnMode::ssa;
      const double rr = double(sparse) / Hkv;
      AttnStats st;
      const double t = time_attention(c, in, n, modes, &st);
      const double ideal = (1 - rr) * t_fa + rr * t_ssa;
      char name[32];
      std::snprintf(name, sizeof name, "FA-SSA r=%.2f", rr);
      std::printf("%7lld %-16s %10.1f %10.1f %8.2f %9.1f  ideal (1-r)T_FA + r T_SSA%s\n", (long long)n, name,
                  t * 1e3, ideal * 1e3, t / ideal, flops_of(st) / t / 1e9,
                  t / ideal <= 1.15 ? "" : "  ** above 1.15x **");
    }
    (void)dense_pairs;
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

// elastic bench: prefill and decode speed of a model (a folder, or a synthetic model with the
// shape of a known checkpoint), with the machine's memory bandwidth and fp32 FMA peak measured
// in the same run and the fraction of each that the forward pass achieves. After an untimed
// warm-up run of the same size, -r runs of prefill + decode are timed; speeds are mean ± sd
// over the runs (llama-bench's habit).
//   decode fraction  = (weight bytes + KV bytes read per token) x tokens/s / the bandwidth of
//                      reading those bytes: DRAM when a step's bytes exceed the caches (the
//                      median over decode steps, each against a bandwidth sample taken right
//                      after it), else the bandwidth of re-reading a working set of that size
//                      (the caches), so no fraction can pass 100 %
//   prefill fraction = (2 x matmul params x tokens + attention FLOPs) / seconds / FMA peak
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "backend_profile.h"
#include "cli_options.h"
#include "commands.h"
#include "elastic/cpu_peaks.h"
#include "elastic/model.h"
#include "elastic/sampling.h"
#include "progress.h"

namespace elastic::cli {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Causal attention FLOPs of queries at positions pos0..pos0+n-1 over all heads and layers:
// QK^T and PV are 2 x d FLOPs each per (query, key) pair.
// The L3 size one core sees, from sysfs (glibc's sysconf reads CPUID, which in this VM reports
// 320 MiB for a 32 MiB L3); 32 MiB when sysfs does not say.
double l3_cache_bytes() {
  std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index3/size");
  std::string text;
  if (in >> text && !text.empty()) {
    const double value = std::strtod(text.c_str(), nullptr);
    const char unit = text.back();
    const double scale = unit == 'K' ? 1024.0 : unit == 'M' ? 1024.0 * 1024 : 1.0;
    if (value > 0) return value * scale;
  }
  return 32.0 * (1 << 20);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t mid = v.size() / 2;
  return v.size() % 2 ? v[mid] : 0.5 * (v[mid - 1] + v[mid]);
}

struct MeanSd {
  double mean = 0, sd = 0;  // sd: sample standard deviation (0 for one value)
};

MeanSd mean_sd(const std::vector<double>& v) {
  MeanSd r;
  for (double x : v) r.mean += x;
  r.mean /= static_cast<double>(v.size());
  if (v.size() < 2) return r;
  double ss = 0;
  for (double x : v) ss += (x - r.mean) * (x - r.mean);
  r.sd = std::sqrt(ss / static_cast<double>(v.size() - 1));
  return r;
}

// The OpenMP wait settings the run has (tools/main.cpp sets GOMP_SPINCOUNT when the user set
// neither): null where unset.
nlohmann::json openmp_wait_settings() {
  nlohmann::json j;
  for (const char* name : {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"}) {
    const char* v = std::getenv(name);
    j[name] = v ? nlohmann::json(v) : nlohmann::json(nullptr);
  }
  return j;
}

double attention_flops(const ModelConfig& c, int64_t pos0, int64_t n) {
  double pairs = 0;
  for (int64_t i = 0; i < n; ++i) pairs += static_cast<double>(pos0 + i + 1);
  return 4.0 * static_cast<double>(c.head_dim) * pairs *
         static_cast<double>(c.num_heads * c.num_layers);
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  std::string names;
  for (const auto& n : model_synthetic_names()) names += (names.empty() ? "" : ", ") + n;
  CommandLine cl(
      "bench", "(--synthetic NAME | -m MODEL) [-p N] [-n N] [-r N] [-t N] [--profile] [--json]",
      "Measures prefill and decode tokens/s of the CPU forward pass, and in the same run the\n"
      "machine's memory bandwidth and fp32 FMA peak, and prints the fraction of each that\n"
      "the forward pass reaches. An untimed warm-up run of the same size comes first; then\n"
      "-r runs are timed and speeds are their mean ± sd (as llama-bench prints them).\n"
      "  decode:  (weight bytes + KV bytes read per token) x tok/s / the bandwidth of reading\n"
      "           those bytes: from DRAM (the median over decode steps, each against the\n"
      "           bandwidth sampled right after it) or, when a step's bytes fit in the\n"
      "           caches, of re-reading a working set of that size\n"
      "  prefill: (2 x matmul params x tokens + attention FLOPs) / time / FMA peak");
  std::string synthetic;
  ModelOptions mo;
  int64_t prompt_tokens = 512, decode_tokens = 32, repetitions = 5, threads = 0, seed = 1;
  bool json = false, profile = false;
  std::string step_bandwidth = "auto";
  const std::string synthetic_help =
      "random bf16 weights in memory with the shape of NAME, one of\n" + names +
      ";\nno download needed, output is labelled SYNTHETIC";
  cl.text("--synthetic", synthetic, "NAME", synthetic_help);
  model_options_add(cl, mo, /*tokenizer=*/false, "an HF model folder instead");
  cl.integer("-p,--n-prompt", prompt_tokens, "N", "prompt tokens for the prefill (default 512)",
             {1});
  cl.integer("-n,--n-gen", decode_tokens, "N", "tokens to decode after it (default 32)", {1});
  cl.integer("-r,--repetitions", repetitions, "N",
             "timed runs of prefill + decode (default 5); mean ± sd over them", {1, 1000});
  threads_option_add(cl, threads);
  cl.integer("--seed", seed, "S", "seed of the synthetic weights and prompt ids (default 1)", {0});
  cl.choice("--step-bandwidth", step_bandwidth, {"auto", "on", "off"},
            "sample the bandwidth after every decode step (auto: when a step\n"
            "reads more than 4x the L3 cache; a sample evicts a model that\n"
            "fits in the caches, so small models are timed without them)");
  cl.flag("--profile", profile,
          "also time every backend op during decode (ms per token, share,\n"
          "GB/s of each linear layer's weights)");
  json_option_add(cl, json, "print one JSON object instead of the table");
  if (!cl.parse(argc, argv)) return 0;
  const std::string& model_dir = mo.dir;
  if (model_dir.empty() == synthetic.empty())
    throw Error("give exactly one of --synthetic NAME or -m MODEL (see elastic bench --help)");
  if (!synthetic.empty()) {
    const auto names = model_synthetic_names();
    if (std::find(names.begin(), names.end(), synthetic) == names.end())
      model_synthetic(synthetic);  // throws, naming the known shapes
  }
  set_threads(threads);
  const int nthreads = omp_get_max_threads();

  auto t_load = Clock::now();
  std::fprintf(stderr, "bench: %s model %s ...\n", synthetic.empty() ? "loading" : "generating",
               synthetic.empty() ? model_dir.c_str() : synthetic.c_str());
  Model model = synthetic.empty() ? model_load(model_dir)
                                  : model_synthetic(synthetic, static_cast<uint64_t>(seed));
  const double load_s = seconds_since(t_load);
  const ModelConfig& c = model.config;
  std::shared_ptr<ProfilingBackend> profiler;
  if (profile) {  // every op of the model now passes through the profiler (CPU: synchronous)
    profiler = std::make_shared<ProfilingBackend>(model.backend);
    model.backend = profiler;
  }

  std::fprintf(stderr, "bench: measuring memory bandwidth and FMA peak ...\n");
  // Measured before and after the model runs; the larger of each pair is the machine's
  // capability (a core taken away by another process during one window only lowers it).
  const double bandwidth_before = measure_memory_bandwidth_gbs(nthreads);
  const double peak_before = measure_fma_peak_gflops(nthreads);

  // Prompt: deterministic random ids.
  std::mt19937_64 rng(static_cast<uint64_t>(seed));
  std::vector<int64_t> prompt(static_cast<size_t>(prompt_tokens));
  for (auto& t : prompt) t = static_cast<int64_t>(rng() % static_cast<uint64_t>(c.vocab_size));

  // Decode: every step is timed, and right after it the memory bandwidth is sampled (two
  // 128 MiB chunks, ~5 ms, outside the step's time), so that each step stands beside the
  // bandwidth the machine gave at that moment: a VM's bandwidth can move by 2x from one minute
  // to the next with its neighbours' load (docs/perf.md). Not for a model whose step fits in
  // the caches: the sample would evict it and slow the next step down.
  const double weight_bytes = static_cast<double>(model.weight_bytes_per_token());
  const double cache_bytes = l3_cache_bytes();
  const bool pair_steps =
      step_bandwidth == "on" || (step_bandwidth == "auto" && weight_bytes > 4 * cache_bytes);
  std::unique_ptr<BandwidthMeter> probe;
  if (pair_steps) probe = std::make_unique<BandwidthMeter>(size_t{256} << 20, nthreads);
  const double kv_bytes_per_position =
      static_cast<double>(c.num_layers * c.num_kv_heads * 2 * c.head_dim * sizeof(float));

  // One run: a fresh request, the prompt's prefill, then decode_tokens steps. timed = false is
  // the warm-up (page-in, caches, thread pool, workspace and KV cache sizes), same sizes.
  std::vector<double> prefill_s, decode_s;          // per timed run
  std::vector<double> step_s, step_bytes, step_bw;  // per decode step of every timed run
  double kv_bytes_read = 0;
  ProgressBar progress("bench");
  const int64_t total_steps = (repetitions + 1) * (decode_tokens + 1);
  auto run_once = [&](int64_t run) {
    const bool timed = run > 0;
    const std::string what = timed
                                 ? "run " + std::to_string(run) + "/" + std::to_string(repetitions)
                                 : std::string("warm-up");
    const int64_t done0 = run * (decode_tokens + 1);
    progress.update(done0, total_steps, what + ": prefill");
    Request req = request_start(model);
    auto t0 = Clock::now();
    const std::vector<float>* logits = &model_prefill(model, req, prompt.data(), prompt_tokens);
    if (timed) prefill_s.push_back(seconds_since(t0));
    int64_t tok = sample_greedy(logits->data(), c.vocab_size);
    if (timed && profiler) profiler->reset();  // the profile covers the last run's decode
    double run_decode_s = 0;
    for (int64_t i = 0; i < decode_tokens; ++i) {
      progress.update(done0 + 1 + i, total_steps, what + ": decode");
      const double kv = kv_bytes_per_position * static_cast<double>(req.length);  // keys < position
      auto t1 = Clock::now();
      logits = &model_prefill(model, req, &tok, 1);
      tok = sample_greedy(logits->data(), c.vocab_size);
      const double s = seconds_since(t1);
      if (!timed) continue;
      run_decode_s += s;
      kv_bytes_read += kv;
      step_s.push_back(s);
      step_bytes.push_back(weight_bytes + kv);
      if (probe) step_bw.push_back(probe->sample(1));
    }
    if (timed) decode_s.push_back(run_decode_s);
  };
  for (int64_t run = 0; run <= repetitions; ++run) run_once(run);
  progress.update(total_steps, total_steps, "done");
  const double bandwidth_after = measure_memory_bandwidth_gbs(nthreads);
  const double peak_after = measure_fma_peak_gflops(nthreads);
  double bandwidth_gbs = std::max(bandwidth_before, bandwidth_after);
  for (double b : step_bw) bandwidth_gbs = std::max(bandwidth_gbs, b);
  const double peak_gflops = std::max(peak_before, peak_after);
  const bool disturbed = std::min(bandwidth_before, bandwidth_after) < 0.8 * bandwidth_gbs ||
                         std::min(peak_before, peak_after) < 0.8 * peak_gflops;
  if (disturbed)
    std::fprintf(
        stderr,
        "bench: warning: the peaks moved by more than 20 %% during the run "
        "(bandwidth %.1f/%.1f GB/s, FMA %.1f/%.1f GFLOP/s before/after): other processes "
        "or the host are using the cores or memory, so the fractions of the best peak "
        "understate the engine%s\n",
        bandwidth_before, bandwidth_after, peak_before, peak_after,
        pair_steps ? " (the decode fraction pairs each step with its own bandwidth sample)" : "");

  // Prefill work: every linear layer on every prompt token, lm_head on the last one only.
  const double lm_head_params = static_cast<double>(c.vocab_size * c.hidden_size);
  const double layer_params = static_cast<double>(model.matmul_params_per_token()) - lm_head_params;
  const double prefill_flops = 2.0 * layer_params * static_cast<double>(prompt_tokens) +
                               2.0 * lm_head_params + attention_flops(c, 0, prompt_tokens);
  std::vector<double> prefill_tps_runs, decode_tps_runs;
  for (double s : prefill_s) prefill_tps_runs.push_back(static_cast<double>(prompt_tokens) / s);
  for (double s : decode_s) decode_tps_runs.push_back(static_cast<double>(decode_tokens) / s);
  const MeanSd prefill_tps = mean_sd(prefill_tps_runs), decode_tps = mean_sd(decode_tps_runs);
  const MeanSd prefill_seconds = mean_sd(prefill_s), decode_seconds = mean_sd(decode_s);
  const double prefill_gflops =
      prefill_flops / static_cast<double>(prompt_tokens) * prefill_tps.mean / 1e9;
  const double prefill_fraction = prefill_gflops / peak_gflops;
  // Decode: the bytes a step reads (weights + the KV cache of the positions before it) at the
  // mean speed, against the bandwidth of reading them. A step beyond the caches reads DRAM: the
  // median over steps of its GB/s / the bandwidth sampled right after it, and the run's best
  // DRAM bandwidth beside it. A step within the caches re-reads the same bytes every token: the
  // bandwidth of re-reading a working set of its size, measured now (no per-step samples: they
  // would evict the model).
  const double decode_bytes_per_token =
      weight_bytes + kv_bytes_read / static_cast<double>(step_s.size());
  const double read_bandwidth_gbs =
      pair_steps ? bandwidth_gbs
                 : measure_working_set_bandwidth_gbs(static_cast<size_t>(decode_bytes_per_token),
                                                     nthreads);
  const double decode_gbs = decode_bytes_per_token * decode_tps.mean / 1e9;
  const double decode_tps_median_step = 1.0 / median(step_s);
  const double decode_fraction_best_bw = decode_gbs / read_bandwidth_gbs;
  std::vector<double> step_fraction(step_bw.size());
  for (size_t i = 0; i < step_bw.size(); ++i)
    step_fraction[i] = step_bytes[i] / step_s[i] / 1e9 / step_bw[i];
  const double decode_fraction = pair_steps ? median(step_fraction) : decode_fraction_best_bw;
  const std::string read_source =
      pair_steps ? "DRAM"
                 : "a " + std::to_string(static_cast<int64_t>(decode_bytes_per_token / 1e3)) +
                       " KB working set (caches)";
  const std::string label = synthetic.empty() ? model_dir : "SYNTHETIC " + synthetic;

  if (json) {
    nlohmann::json j;
    j["model"] = label;
    j["synthetic"] = !synthetic.empty();
    j["threads"] = nthreads;
    j["openmp"] = openmp_wait_settings();
    j["load_seconds"] = load_s;
    j["repetitions"] = repetitions;
    j["params_matmul"] = model.matmul_params_per_token();
    j["weight_bytes_per_token"] = weight_bytes;
    j["memory_bandwidth_gbs"] = bandwidth_gbs;
    j["fma_peak_gflops"] = peak_gflops;
    j["peaks_disturbed"] = disturbed;
    j["prefill"] = {{"tokens", prompt_tokens},
                    {"seconds", prefill_seconds.mean},
                    {"tokens_per_s", prefill_tps.mean},
                    {"tokens_per_s_sd", prefill_tps.sd},
                    {"tokens_per_s_runs", prefill_tps_runs},
                    {"gflop", prefill_flops / 1e9},
                    {"gflops", prefill_gflops},
                    {"fraction_of_fma_peak", prefill_fraction}};
    j["decode"] = {{"tokens", decode_tokens},
                   {"seconds", decode_seconds.mean},
                   {"tokens_per_s", decode_tps.mean},
                   {"tokens_per_s_sd", decode_tps.sd},
                   {"tokens_per_s_runs", decode_tps_runs},
                   {"tokens_per_s_median_step", decode_tps_median_step},
                   {"bytes_per_token", decode_bytes_per_token},
                   {"gbs", decode_gbs},
                   {"read_bandwidth_gbs", read_bandwidth_gbs},
                   {"read_bandwidth_source", read_source},
                   {"fraction_of_bandwidth", decode_fraction},
                   {"fraction_of_best_bandwidth", decode_fraction_best_bw},
                   {"step_seconds", step_s},
                   {"step_bytes", step_bytes},
                   {"step_bandwidth_gbs", step_bw},
                   {"steps_paired", pair_steps}};
    if (profiler)
      for (const auto& [op, t] : profiler->times())
        j["decode"]["profile"][op] = {
            {"seconds", t.seconds}, {"calls", t.calls}, {"weight_bytes", t.bytes}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  if (!synthetic.empty())
    std::printf(
        "SYNTHETIC model '%s': random bf16 weights with this checkpoint's shape, not a "
        "trained model (speed only)\n",
        synthetic.c_str());
  std::printf(
      "model      %s: %lld layers, hidden %lld, ffn %lld, %lld/%lld heads x %lld, vocab %lld\n",
      label.c_str(), (long long)c.num_layers, (long long)c.hidden_size,
      (long long)c.intermediate_size, (long long)c.num_heads, (long long)c.num_kv_heads,
      (long long)c.head_dim, (long long)c.vocab_size);
  std::printf("weights    %.1f M matmul params, %.3f GB read per decoded token (%s)\n",
              model.matmul_params_per_token() / 1e6, weight_bytes / 1e9,
              std::string(dtype_name(model.weights.lm_head.dtype)).c_str());
  std::printf(
      "machine    %d threads, memory bandwidth %.1f GB/s, fp32 FMA peak %.1f GFLOP/s (measured "
      "now)\n",
      nthreads, bandwidth_gbs, peak_gflops);
  std::printf("runs       %lld timed after one warm-up run; tokens/s: mean ± sd over the runs\n\n",
              (long long)repetitions);
  // Ideal: the speed at 100 % of the measured peak (the cost model of the fractions above).
  std::printf(
      "| phase   | tokens | seconds | tokens/s          | ideal tok/s | work              | "
      "achieved        | of peak           |\n");
  std::printf(
      "|---------|--------|---------|-------------------|-------------|-------------------|"
      "-----------------|-------------------|\n");
  std::printf(
      "| prefill | %6lld | %7.3f | %8.1f ± %6.1f | %11.1f | %8.1f GFLOP    | %7.1f GFLOP/s | "
      "%5.1f %% FMA peak  |\n",
      (long long)prompt_tokens, prefill_seconds.mean, prefill_tps.mean, prefill_tps.sd,
      prefill_tps.mean / prefill_fraction, prefill_flops / 1e9, prefill_gflops,
      100 * prefill_fraction);
  std::printf(
      "| decode  | %6lld | %7.3f | %8.1f ± %6.1f | %11.1f | %8.4f GB/token | %7.1f GB/s    | "
      "%5.1f %% bandwidth |\n",
      (long long)decode_tokens, decode_seconds.mean, decode_tps.mean, decode_tps.sd,
      decode_tps.mean / decode_fraction_best_bw, decode_bytes_per_token / 1e9, decode_gbs,
      100 * decode_fraction);
  if (pair_steps)
    std::printf(
        "\ndecode: %% of bandwidth = median over steps of the step's GB/s / the DRAM bandwidth "
        "sampled right after it (%.1f-%.1f GB/s); against the best DRAM bandwidth of the run "
        "(%.1f GB/s): %.1f %%. median step: %.1f tokens/s\n",
        *std::min_element(step_bw.begin(), step_bw.end()),
        *std::max_element(step_bw.begin(), step_bw.end()), bandwidth_gbs,
        100 * decode_fraction_best_bw, decode_tps_median_step);
  else
    std::printf(
        "\ndecode: a step reads %.1f MB, within 4x the %.0f MiB L3, so it runs from the caches: "
        "%% of bandwidth = GB/s at the mean speed / %.1f GB/s, the bandwidth of re-reading %s "
        "over and over. "
        "median step: %.1f tokens/s\n",
        decode_bytes_per_token / 1e6, cache_bytes / (1 << 20), read_bandwidth_gbs,
        read_source.c_str(), decode_tps_median_step);
  if (profiler)
    std::printf("\ndecode profile (wall time per backend op, last run, %lld tokens):\n%s",
                (long long)decode_tokens,
                profile_table(profiler->times(), decode_s.back(), decode_tokens).c_str());
  std::fprintf(stderr,
               "bench: load/generate %.1f s; timings are wall clock, so other load on the "
               "machine lowers them\n",
               load_s);
  return 0;
}

}  // namespace elastic::cli

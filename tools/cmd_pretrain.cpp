// elastic train: trains a decoder from scratch (or from --init-from weights) on the evaluation
// suite's task generators (pretrain_run, train.h); writes an HF folder that every command loads.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_options.h"
#include "commands.h"
#include "elastic/error.h"
#include "elastic/eval.h"
#include "elastic/fileio.h"
#include "elastic/tokenizer.h"
#include "elastic/train.h"
#include "train_cli.h"

namespace elastic::cli {
int cmd_pretrain(int argc, char** argv) {
  CommandLine cl(
      "train", "--out DIR [options]",
      "Trains a small decoder (Qwen3 or Llama architecture, a word-level tokenizer of the task "
      "suite's\n"
      "vocabulary) from scratch on the evaluation suite's task generators and multi-query\n"
      "associative recall, packed into sequences of mixed lengths; AdamW with warm-up and\n"
      "cosine decay. --head-mix runs half of each layer's KV heads in SSA for a fraction of the\n"
      "samples so that every head works in both regimes. Checkpoints every --save-every steps,\n"
      "on Ctrl-C / SIGTERM and at --max-time; --resume continues exactly. The output folder is\n"
      "an HF model folder (config.json, model.safetensors in bf16, tokenizer.json).");
  PretrainConfig c;
  cl.text("--out", c.out_dir, "DIR", "output folder (model, training state, metrics)");
  cl.text("--init-from", c.init_from, "DIR",
          "start from this HF folder's weights and tokenizer (a curriculum's\nprevious stage); "
          "default: a fresh model");
  cl.flag("--resume", c.resume, "continue the run saved in DIR");
  bool write_tokenizer = false;
  cl.flag("--write-tokenizer", write_tokenizer,
          "only write the suite's tokenizer.json into DIR and exit");
  bool curves = false;
  cl.flag("--curves", curves, "only redraw DIR/curves.png from DIR/metrics.jsonl and exit");
  std::string export_path;
  int64_t export_n = 40;
  cl.text("--export-data", export_path, "FILE",
          "only write router-training data (JSON lines {prompt, answer, task})\n"
          "of the --tasks (eval tasks) at the --lengths and exit");
  cl.integer("--export-n", export_n, "N",
             "samples per task and length of --export-data (default 40)", {1, 1 << 24});
  std::string tokenizer_path;
  cl.text("--tokenizer", tokenizer_path, "PATH",
          "tokenizer of --export-data (default: the suite's word-level one)");
  cl.section("Model shape (fresh runs)");
  std::string arch;
  cl.choice("--arch", arch, {"qwen3", "llama"},
            "architecture (default qwen3): qwen3 has qk-norm, llama has none");
  cl.integer("--layers", c.layers, "N", "decoder layers (default 6)", {1, 1024});
  cl.integer("--hidden", c.hidden, "N", "hidden size (default 256)", {8, 1 << 16});
  cl.integer("--heads", c.heads, "N", "query heads (default 8)", {1, 1024});
  cl.integer("--kv-heads", c.kv_heads, "N", "KV heads (default 4)", {1, 1024});
  cl.integer("--head-dim", c.head_dim, "N", "head dimension (default 32)", {8, 256});
  cl.integer("--ffn", c.ffn, "N", "MLP intermediate size (default 768)", {8, 1 << 20});
  cl.real("--rope-theta", c.rope_theta, "X", "RoPE base (default 500000)", {1.0, 1e12});
  cl.real("--qk-gain", c.qk_gain, "G",
          "initial q_norm/k_norm gains (qwen3; default 1): logits up to G^2 sqrt(d)",
          {0.0, 1e3, true});
  cl.section("Data");
  std::string tasks, lengths = "256,512,1024";
  cl.text("--tasks", tasks, "A,B",
          "tasks to train on (default: every eval task); also assoc_recall,\ncopy_words, "
          "template_recall, restate_recall and copy_statements (training only)");
  cl.custom("--task-lengths", "TASK=L1,L2",
            "a task's own sample lengths in place of --lengths (repeatable;\n"
            "e.g. short samples for the tasks answered from the prompt's end)",
            [&c](const std::string& v) {
              const size_t eq = v.find('=');
              if (eq == std::string::npos || eq == 0)
                throw Error("option --task-lengths: expected TASK=L1,L2, got '" + v + "'");
              std::vector<int64_t>& out = c.task_lengths[v.substr(0, eq)];
              for (const std::string& s : split_list(v.substr(eq + 1)))
                out.push_back(parse_int("--task-lengths", s, IntRange{1, int64_t(1) << 30}));
            });
  cl.text("--lengths", lengths, "L1,L2",
          "sample lengths in tokens, drawn uniformly (default\n"
          "256,512,1024)");
  cl.integer("--max-tokens", c.max_tokens, "N", "tokens per packed sequence (default 8192)",
             {32, int64_t(1) << 30});
  cl.integer("--batch", c.batch, "N", "packed sequences per step (default 4)", {1, 1 << 20});
  std::string labels = "all";
  cl.choice("--labels", labels, {"all", "answer"},
            "CE over every next token, or over the answers only");
  cl.real("--head-mix", c.head_mix, "F",
          "fraction of samples with a random half of each layer's KV heads\nin SSA (default 0)",
          {0.0, 1.0});
  cl.integer("--block", c.ssa.block, "B", "SSA block size of head-mix (default 64)", {1, 1 << 20});
  cl.integer("--sink", c.ssa.sink_tokens, "T", "SSA sink tokens (default 64)", {0, 1 << 24});
  cl.integer("--local", c.ssa.local_tokens, "T", "SSA local window (default 512)", {1, 1 << 24});
  cl.section("Optimisation");
  cl.integer("--steps", c.steps, "N", "optimizer steps (default 1000)", {1, 1 << 30});
  cl.real("--lr", c.lr, "X", "peak learning rate (default 1e-3)", {0.0, 10.0});
  cl.real("--min-lr-ratio", c.min_lr_ratio, "F", "final lr / peak lr (default 0.1)", {0.0, 1.0});
  cl.real("--warmup", c.warmup, "F", "linear warm-up fraction of the steps (default 0.02)",
          {0.0, 1.0});
  cl.real("--clip", c.clip, "X", "gradient-norm clip (default 1)", {0.0, 1e9, true});
  cl.real("--weight-decay", c.weight_decay, "X", "AdamW weight decay (default 0)", {0.0, 10.0});
  int64_t seed = 1;
  cl.integer("--seed", seed, "N", "seed of the data, head-mix and init (default 1)",
             {0, std::numeric_limits<int64_t>::max()});
  cl.integer("--save-every", c.save_every, "N", "steps between checkpoints (default 100)",
             {1, 1 << 30});
  cl.integer("--eval-every", c.eval_every, "N",
             "steps between held-out probes: answer CE per task, every head\nFA and every head "
             "SSA (default 0: none)",
             {0, 1 << 30});
  cl.integer("--eval-samples", c.eval_samples, "N", "samples per task in a probe (default 8)",
             {1, 1 << 20});
  cl.real("--stop-ce", c.stop_ce, "X",
          "finish once every task's held-out answer CE (FA) is at most X at a\n"
          "probe (default 0: never)",
          {0.0, 100.0});
  cl.integer("--max-time", c.max_seconds, "S",
             "checkpoint and stop after S seconds (resume later; default 0:\nno limit)",
             {0, int64_t(1) << 40});
  backend_option_add(cl, c.backend);
  int64_t threads = 0;
  threads_option_add(cl, threads);
  bool json = false;
  json_option_add(cl, json, "print each step's metrics as a JSON line on stdout");
  cl.footer(
      "Outputs in DIR: config.json, model.safetensors (bf16), tokenizer.json,\n"
      "generation_config.json, train_state.safetensors (fp32 weights and AdamW moments: what\n"
      "--resume reads), metrics.jsonl (one line per step), curves.png.\n"
      "Tasks: " +
      [] {
        std::string s, line;
        for (const std::string& t : pretrain_task_names()) {
          if (!line.empty() && line.size() + t.size() + 2 > 80) s += line + ",\n  ", line.clear();
          line += (line.empty() ? "" : ", ") + t;
        }
        return s + line;
      }());
  // -1: not given (a fresh run takes PretrainConfig's defaults; --init-from and --resume take the
  // shape of the model they continue, so a given shape option there is an error, not ignored).
  const PretrainConfig defaults;
  c.layers = c.hidden = c.heads = c.kv_heads = c.head_dim = c.ffn = -1;
  c.rope_theta = -1;
  c.qk_gain = -1;
  if (!cl.parse(argc, argv)) return 0;
  set_threads(threads);
  if (c.out_dir.empty()) throw Error(cl.missing("--out DIR"));
  const std::pair<const char*, bool> shape[] = {
      {"--layers", c.layers >= 0},         {"--hidden", c.hidden >= 0},
      {"--heads", c.heads >= 0},           {"--kv-heads", c.kv_heads >= 0},
      {"--head-dim", c.head_dim >= 0},     {"--ffn", c.ffn >= 0},
      {"--rope-theta", c.rope_theta >= 0}, {"--arch", !arch.empty()},
      {"--qk-gain", c.qk_gain >= 0}};
  for (auto [opt, given] : shape)
    if (given && (c.resume || !c.init_from.empty()))
      throw Error(std::string("option ") + opt + ": the shape comes from " +
                  (c.resume ? "the run in --out" : "--init-from " + c.init_from) +
                  " (leave the shape options out)");
  if (c.layers < 0) c.layers = defaults.layers;
  if (c.hidden < 0) c.hidden = defaults.hidden;
  if (c.heads < 0) c.heads = defaults.heads;
  if (c.kv_heads < 0) c.kv_heads = defaults.kv_heads;
  if (c.head_dim < 0) c.head_dim = defaults.head_dim;
  if (c.ffn < 0) c.ffn = defaults.ffn;
  if (c.rope_theta < 0) c.rope_theta = defaults.rope_theta;
  if (c.qk_gain < 0) c.qk_gain = defaults.qk_gain;
  if (!arch.empty()) c.arch = arch;
  if (write_tokenizer) {
    std::filesystem::create_directories(c.out_dir);
    write_file_atomic(c.out_dir + "/tokenizer.json", eval_tokenizer_json());
    std::fprintf(stderr, "train: wrote %s/tokenizer.json\n", c.out_dir.c_str());
    return 0;
  }
  if (curves) {
    pretrain_curves_write(c.out_dir + "/metrics.jsonl", c.out_dir + "/curves.png");
    std::fprintf(stderr, "train: wrote %s/curves.png\n", c.out_dir.c_str());
    return 0;
  }
  c.tasks = split_list(tasks);
  c.lengths.clear();
  for (const std::string& s : split_list(lengths))
    c.lengths.push_back(parse_int("--lengths", s, IntRange{1, int64_t(1) << 30}));
  c.answer_only_labels = labels == "answer";
  if (!export_path.empty()) {
    std::vector<std::string> t = c.tasks;
    if (t.empty())
      for (const TaskInfo& info : eval_tasks()) t.push_back(info.name);
    const Tokenizer tok = tokenizer_path.empty()
                              ? Tokenizer::from_json_text(eval_tokenizer_json(), "suite tokenizer")
                              : Tokenizer::load(tokenizer_path);
    pretrain_export_samples(t, c.lengths, export_n, static_cast<uint64_t>(seed), tok, export_path);
    std::fprintf(stderr, "train: wrote %s\n", export_path.c_str());
    return 0;
  }
  c.seed = static_cast<uint64_t>(seed);
  train_cuda_engine_register();
  train_signals_install();
  const bool tty = isatty(STDERR_FILENO) != 0;
  TrainEta eta;
  PretrainCallbacks cb;
  cb.on_note = [](const std::string& s) { std::fprintf(stderr, "train: %s\n", s.c_str()); };
  cb.should_stop = [] { return train_stop_signal() != 0; };
  cb.on_step = [&](const PretrainMetrics& m) {
    char line[256];
    std::snprintf(line, sizeof line,
                  "step %lld/%lld  loss %.4f  |g| %.3f  lr %.2e  %.0f tok/s  ETA %s",
                  (long long)m.step, (long long)m.steps, m.loss, m.grad_norm, m.lr,
                  double(m.tokens) / m.seconds, eta.after(m.step, m.steps).c_str());
    if (tty && m.probe.empty())
      std::fprintf(stderr, "\r\033[K%s%s", line, m.step == m.steps ? "\n" : "");
    else
      std::fprintf(stderr, "%s%s\n", tty ? "\r\033[K" : "", line);
    if (!m.probe.empty()) {
      std::fprintf(stderr, "  held-out answer CE (nats):");
      for (size_t i = 0; i + 1 < m.probe.size(); i += 2)
        std::fprintf(stderr, "%s %s %.3f/%.3f", i % 8 == 0 ? "\n   " : "",
                     m.probe[i].first.substr(0, m.probe[i].first.size() - 3).c_str(),
                     m.probe[i].second, m.probe[i + 1].second);
      std::fprintf(stderr, "   (FA/SSA)\n");
    }
    if (json) {
      nlohmann::json j = {{"step", m.step}, {"loss", m.loss},     {"grad_norm", m.grad_norm},
                          {"lr", m.lr},     {"tokens", m.tokens}, {"seconds", m.seconds}};
      for (const auto& [k, v] : m.probe) j["probe"][k] = v;
      std::printf("%s\n", j.dump().c_str());
      std::fflush(stdout);
    }
  };
  const TrainStatus st = pretrain_run(c, cb);
  if (st == TrainStatus::interrupted) {
    if (train_stop_signal() != 0) {
      std::fprintf(stderr, "train: stopped by signal %d; resume with --resume\n",
                   train_stop_signal());
      return 128 + train_stop_signal();
    }
    std::fprintf(stderr, "train: --max-time reached; resume with --resume\n");
    return 0;
  }
  std::fprintf(stderr, "train: done; model in %s\n", c.out_dir.c_str());
  return 0;
}

}  // namespace elastic::cli

// elastic train-router: trains the Attention Routers of a frozen backbone (SPEC §7) and writes an
// Elastic checkpoint; elastic train-step: one verification step (forward + backward on a given
// batch with given Gumbel uniforms), printing the loss terms and writing every gradient.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_options.h"
#include "commands.h"
#include "elastic/error.h"
#include "elastic/safetensors.h"
#include "elastic/train.h"
#include "train_cli.h"

namespace elastic::cli {
namespace {

// "1,3" -> {1, 3}
std::vector<int64_t> parse_int_list(const std::string& opt, const std::string& text) {
  std::vector<int64_t> v;
  for (const std::string& item : split_list(text))
    v.push_back(parse_int(opt, item, IntRange{0, 1 << 20}));
  return v;
}

std::vector<double> parse_real_list(const std::string& opt, const std::string& text) {
  std::vector<double> v;
  for (const std::string& item : split_list(text))
    v.push_back(parse_real(opt, item, RealRange{0.0, 1.0}));
  return v;
}

void ssa_options_add(CommandLine& cl, SsaOptions& ssa, int64_t& pool_tokens) {
  cl.integer("--block", ssa.block, "B",
             "SSA block size in tokens (default: the config's block_size, else 128)", {1, 1 << 20});
  cl.integer("--sink", ssa.sink_tokens, "T", "SSA sink tokens (default: the config's sink_size)",
             {0, 1 << 24});
  cl.integer("--local", ssa.local_tokens, "T",
             "SSA local window tokens (default: the config's local_window_size)", {1, 1 << 24});
  cl.integer("--pool-tokens", pool_tokens, "P",
             "router boundary pooling: first and last P tokens "
             "(default 100)",
             {1, 1 << 24});
}

}  // namespace

int cmd_train_router(int argc, char** argv) {
  CommandLine cl(
      "train-router", "-m MODEL --data FILE.jsonl --out DIR [options]",
      "Trains the Attention Router of every layer on a frozen backbone (Elastic Attention, SPEC\n"
      "§7): Gumbel-softmax routing with a straight-through estimator, per-task target sparsity\n"
      "through Lagrange multipliers (maximised), AdamW. Writes an Elastic checkpoint to DIR that\n"
      "generate, route and chat load; checkpoints every --save-every steps and on Ctrl-C /\n"
      "SIGTERM; --resume continues a run exactly where its last checkpoint left off.");
  RouterTrainConfig c;
  ModelOptions mo;
  model_options_add(cl, mo, false, "backbone (HF folder), or an Elastic checkpoint to continue");
  cl.text("--data", c.data_path, "FILE",
          "training data, JSON lines {\"prompt\", \"answer\", \"task\"} or\n"
          "{\"messages\": [...], \"task\"}");
  cl.text("--out", c.out_dir, "DIR", "output folder (the Elastic checkpoint and training state)");
  cl.text("--task-targets", c.task_targets, "FILE",
          "JSON {\"task\": target Omega, ...} (default: qa-like tasks 0.7,\n"
          "summary/code/icl-like 1.0)");
  cl.text(
      "--eval-data", c.eval_path, "FILE",
      "held-out JSON lines: Omega per task with the trained router\n(written to DIR/eval.json)");
  cl.flag("--resume", c.resume, "continue the run saved in DIR");
  cl.section("Optimisation");
  cl.integer("--steps", c.steps, "N", "optimizer steps (default 300)", {1, 1 << 30});
  cl.integer("--batch", c.batch, "N", "packed sequences per step (default 48)", {1, 1 << 20});
  cl.integer("--max-tokens", c.max_tokens, "N", "tokens per packed sequence (default 65536)",
             {2, int64_t(1) << 30});
  cl.real("--lr", c.lr, "X", "router learning rate (default 5e-4)", {0.0, 10.0});
  cl.real("--lambda-lr", c.lambda_lr, "X", "multiplier learning rate (default 1e-3)", {0.0, 10.0});
  cl.real("--weight-decay", c.weight_decay, "X", "AdamW weight decay (default 0.1)", {0.0, 10.0});
  cl.real("--warmup", c.warmup, "F", "linear warm-up fraction of the steps (default 0.2)",
          {0.0, 1.0});
  cl.real("--clip", c.clip, "X", "gradient-norm clip (default 5)", {0.0, 1e9, true});
  cl.real("--temp-start", c.temp_start, "T", "Gumbel temperature at step 0 (default 1.5)",
          {0.0, 100.0, true});
  cl.real("--temp-end", c.temp_end, "T", "final temperature (default 1.0)", {0.0, 100.0, true});
  cl.real("--temp-fraction", c.temp_fraction, "F",
          "steps fraction of the cosine anneal (default 0.6)", {0.0, 1.0, true});
  cl.choice("--temp-schedule", c.temp_schedule, {"cosine", "exp"},
            "temperature schedule (default cosine)");
  std::string labels = "all", pooling = "boundary";
  cl.choice("--labels", labels, {"all", "answer"},
            "CE over every next token (the reference) or the answer only");
  cl.choice("--pooling", pooling, {"boundary", "segment-mean"},
            "router pooling in training: the inference rule, or the mean over\n"
            "the sample (the reference's training code)");
  cl.choice("--lambda-init", c.lambda_init, {"zero", "uniform"},
            "multipliers at 0, or U[0, 0.5) as the reference");
  cl.choice("--router-init", c.router_init, {"auto", "default", "fa-bias"},
            "auto: the checkpoint's router, else fa-bias (last layer zero,\n"
            "bias towards FA); default: PyTorch's Linear init");
  int64_t seed = 1;
  cl.integer("--seed", seed, "N", "seed of the data order, Gumbel noise and init (default 1)",
             {0, std::numeric_limits<int64_t>::max()});
  cl.integer("--save-every", c.save_every, "N", "steps between checkpoints (default 50)",
             {1, 1 << 30});
  cl.integer("--dp", c.data_parallel, "N",
             "data-parallel ranks (threads of this process, --backend cpu):\n"
             "each runs 1/N of a step's packs; the router gradient is\n"
             "all-reduced before the step (default 1)",
             {1, 1024});
  cl.choice("--dp-comm", c.comm, {"threads", "nccl"},
            "the ranks' communicator: threads of this process, or NCCL\n"
            "(CUDA builds with NCCL; one rank for now) (default threads)");
  cl.section("Attention and backend");
  ssa_options_add(cl, c.ssa, c.pool_tokens);
  cl.choice("--chat-template", c.chat_template, {"auto", "none", "chatml", "llama3"},
            "how records become tokens (auto: the model's template, else plain)");
  backend_option_add(cl, c.backend);
  int64_t threads = 0;
  threads_option_add(cl, threads);
  bool json = false;
  json_option_add(cl, json, "print each step's metrics as a JSON line on stdout");
  cl.footer(
      "Outputs in DIR: config.json, backbone.safetensors, router.safetensors,\n"
      "model.safetensors.index.json, tokenizer files, train_state.safetensors (resume),\n"
      "metrics.jsonl (one line per step), curves.png (training curves), eval.json.");
  c.ssa = SsaOptions{-1, -1, -1};  // -1: from the config
  if (!cl.parse(argc, argv)) return 0;
  set_threads(threads);
  if (mo.dir.empty()) throw Error(cl.missing("-m MODEL"));
  if (c.data_path.empty()) throw Error(cl.missing("--data FILE"));
  if (c.out_dir.empty()) throw Error(cl.missing("--out DIR"));
  c.model_dir = mo.dir;
  c.seed = static_cast<uint64_t>(seed);
  c.answer_only_labels = labels == "answer";
  c.segment_mean_pooling = pooling == "segment-mean";
  const ModelConfig config = config_load(mo.dir);
  if (c.ssa.block < 0) c.ssa.block = config.elastic.block_size;
  if (c.ssa.sink_tokens < 0) c.ssa.sink_tokens = config.elastic.sink_size;
  if (c.ssa.local_tokens < 0) c.ssa.local_tokens = config.elastic.local_window_size;

  train_cuda_engine_register();
  train_signals_install();
  const bool tty = isatty(STDERR_FILENO) != 0;
  TrainEta eta;
  RouterTrainCallbacks cb;
  cb.on_note = [](const std::string& s) { std::fprintf(stderr, "train-router: %s\n", s.c_str()); };
  cb.should_stop = [] { return train_stop_signal() != 0; };
  cb.on_step = [&](const RouterTrainMetrics& m) {
    std::string omega;
    for (size_t k = 0; k < m.tasks.size(); ++k)
      if (std::isfinite(m.omega[k])) {
        char buf[64];
        std::snprintf(buf, sizeof buf, " %s %.2f", m.tasks[k].c_str(), m.omega[k]);
        omega += buf;
      }
    char line[512];
    std::snprintf(line, sizeof line,
                  "step %lld/%lld  loss %.4f  ce %.4f  sparsity %.4f  omega%s  T %.2f  %.0f tok/s  "
                  "ETA %s",
                  (long long)m.step, (long long)m.steps, m.loss, m.ce, m.sparsity_loss,
                  omega.c_str(), m.temperature, double(m.tokens) / m.seconds,
                  eta.after(m.step, m.steps).c_str());
    if (tty)
      std::fprintf(stderr, "\r\033[K%s%s", line, m.step == m.steps ? "\n" : "");
    else
      std::fprintf(stderr, "%s\n", line);
    if (json) {
      nlohmann::json j = {{"step", m.step},
                          {"loss", m.loss},
                          {"ce", m.ce},
                          {"sparsity_loss", m.sparsity_loss},
                          {"temperature", m.temperature},
                          {"lr", m.lr},
                          {"grad_norm", m.grad_norm},
                          {"tokens", m.tokens},
                          {"seconds", m.seconds}};
      for (size_t k = 0; k < m.tasks.size(); ++k)
        j["omega"][m.tasks[k]] = std::isfinite(m.omega[k]) ? nlohmann::json(m.omega[k]) : nullptr;
      std::printf("%s\n", j.dump().c_str());
      std::fflush(stdout);
    }
  };
  const TrainStatus st = router_train_run(c, cb);
  if (st == TrainStatus::interrupted) {
    if (tty) std::fprintf(stderr, "\n");
    std::fprintf(stderr, "train-router: stopped by signal %d; resume with --resume\n",
                 train_stop_signal());
    return 128 + train_stop_signal();
  }
  std::fprintf(stderr, "train-router: done; Elastic checkpoint in %s\n", c.out_dir.c_str());
  return 0;
}

int cmd_train_step(int argc, char** argv) {
  CommandLine cl(
      "train-step", "-m MODEL --batch FILE.safetensors --tasks K,.. --targets T,.. [options]",
      "One router-training step for verification: forward + backward of an Elastic checkpoint\n"
      "on a given batch with given Gumbel uniforms and multipliers. Prints the loss terms and\n"
      "writes every gradient (grad.<parameter>, grad.lambda1/2), the loss terms, omega.i and\n"
      "decisions.i to --out. The batch file holds input_ids.i, labels.i (-100 = ignored) and\n"
      "gumbel_u.i [L, Hkv, 2] per sample i, and lambda1, lambda2 [tasks].");
  TrainStepRequest rq;
  ModelOptions mo;
  model_options_add(cl, mo, false, "an Elastic checkpoint (backbone + router tensors)");
  cl.text("--batch", rq.batch_path, "FILE", "the batch (safetensors)");
  std::string tasks, targets, out;
  cl.text("--tasks", tasks, "K,..", "task id of every sample");
  cl.text("--targets", targets, "T,..", "target Omega of every sample's task");
  cl.real("--temperature", rq.temperature, "T", "Gumbel-softmax temperature (default 1)",
          {0.0, 100.0, true});
  cl.text("--out", out, "FILE", "write every output to FILE (safetensors)");
  cl.flag("--segment-mean-pooling", rq.segment_mean_pooling,
          "pool the whole sample (the reference's training code)");
  cl.flag("--float64", rq.float64, "run the float64 reference (test mode)");
  bool json = false;
  json_option_add(cl, json, "print {loss, ce, sparsity_loss, omega [S], decisions [S][L*Hkv]}");
  backend_option_add(cl, rq.backend);
  int64_t threads = 0;
  threads_option_add(cl, threads);
  ssa_options_add(cl, rq.ssa, rq.pool_tokens);
  rq.ssa = SsaOptions{-1, -1, -1};  // -1: from the config
  if (!cl.parse(argc, argv)) return 0;
  set_threads(threads);
  if (mo.dir.empty()) throw Error(cl.missing("-m MODEL"));
  if (rq.batch_path.empty()) throw Error(cl.missing("--batch FILE"));
  if (tasks.empty()) throw Error(cl.missing("--tasks"));
  if (targets.empty()) throw Error(cl.missing("--targets"));
  rq.model_dir = mo.dir;
  rq.tasks = parse_int_list("--tasks", tasks);
  rq.targets = parse_real_list("--targets", targets);
  const ModelConfig config = config_load(mo.dir);
  if (rq.ssa.block < 0) rq.ssa.block = config.elastic.block_size;
  if (rq.ssa.sink_tokens < 0) rq.ssa.sink_tokens = config.elastic.sink_size;
  if (rq.ssa.local_tokens < 0) rq.ssa.local_tokens = config.elastic.local_window_size;
  train_cuda_engine_register();
  const TrainStepResult r = train_step_run(rq);
  if (!out.empty()) safetensors_write(out, r.items, {{"format", "pt"}});
  if (json) {
    nlohmann::json j = {{"loss", r.loss},
                        {"ce", r.ce},
                        {"sparsity_loss", r.sparsity_loss},
                        {"omega", r.omega},
                        {"decisions", r.decisions}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("loss %.8g  ce %.8g  sparsity_loss %.8g\n", r.loss, r.ce, r.sparsity_loss);
    for (size_t s = 0; s < r.omega.size(); ++s)
      std::printf("sample %zu: omega %.6g\n", s, r.omega[s]);
    if (!out.empty()) std::printf("wrote %zu tensors to %s\n", r.items.size(), out.c_str());
  }
  return 0;
}

}  // namespace elastic::cli

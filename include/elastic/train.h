// Router training (SPEC §5, §7): the public entry points of the training core (src/train/).
//
// train_step_run is the verification step behind `elastic train-step`: one forward + backward
// of an Elastic checkpoint on a given batch with given Gumbel uniforms and multipliers, returning
// the loss terms and every gradient under the fixture names (router-train-step's case.json):
// loss, ce, sparsity_loss, omega.i, decisions.i, grad.<parameter name>, grad.lambda1/2.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "elastic/attention.h"
#include "elastic/safetensors.h"

namespace elastic {

struct TrainStepRequest {
  std::string model_dir;   // an Elastic checkpoint (backbone + mask_allocator tensors)
  std::string batch_path;  // safetensors: input_ids.i, labels.i, gumbel_u.i [L, Hkv, 2], lambda1/2
  std::vector<int64_t> tasks;   // [samples] task id of every sample
  std::vector<double> targets;  // [samples] target Omega of every sample's task
  double temperature = 1.0;
  SsaOptions ssa;  // block, sink, local of the sparse mode
  int64_t pool_tokens = 100;
  bool segment_mean_pooling = false;  // the reference's training pooling instead of boundary
  bool float64 = false;               // the double-precision reference (test mode)
  std::string backend = "cpu";        // training engine (cpu, or cuda where registered)
};

struct TrainStepResult {
  double loss = 0, ce = 0, sparsity_loss = 0;
  std::vector<double> omega;                    // [samples]
  std::vector<std::vector<uint8_t>> decisions;  // [samples][L * Hkv] 1 = retrieval
  std::vector<SafetensorsWriteItem> items;      // every output under the fixture names (f32/i64)
};

// Throws elastic::Error naming the file and tensor for a malformed batch or checkpoint.
TrainStepResult train_step_run(const TrainStepRequest& request);

// `elastic train-router`: router training of a frozen backbone (SPEC §7). Defaults are the
// paper's (AdamW 0.9/0.95, weight decay 0.1, router lr 5e-4, multiplier lr 1e-3, cosine schedule
// with 20 % warm-up, grad-norm clip 5, temperature 1.5 -> 1.0 over the first 60 % of steps).
struct RouterTrainConfig {
  std::string model_dir;     // backbone, or an Elastic checkpoint whose router continues training
  std::string data_path;     // JSON lines (see src/train/data.h)
  std::string out_dir;       // the Elastic checkpoint and the training state
  std::string task_targets;  // JSON {"task": target}; empty = the defaults
  std::string eval_path;     // held-out JSON lines: Omega per task with the trained router
  std::string backend = "cpu";
  std::string chat_template = "auto";  // auto, none, chatml, llama3
  int64_t steps = 300;
  int64_t batch = 48;          // packed sequences per optimizer step (gradient accumulation)
  int64_t max_tokens = 65536;  // tokens per packed sequence
  double lr = 5e-4, lambda_lr = 1e-3, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95;
  double warmup = 0.2, clip = 5.0;
  double temp_start = 1.5, temp_end = 1.0, temp_fraction = 0.6;
  std::string temp_schedule = "cosine";  // cosine | exp
  bool answer_only_labels = false;
  bool segment_mean_pooling = false;
  std::string lambda_init = "zero";  // zero | uniform (the reference: U[0, 0.5))
  std::string router_init =
      "auto";  // auto (the checkpoint's router, else fa-bias), default, fa-bias
  uint64_t seed = 1;
  int64_t save_every = 50;  // optimizer steps between checkpoints (and at the end)
  bool resume = false;
  SsaOptions ssa;  // sink/local default to the model's Elastic config (or 128/2048)
  int64_t pool_tokens = 100;
};

struct RouterTrainMetrics {
  int64_t step = 0, steps = 0;  // 1-based step just finished, total
  double loss = 0, ce = 0, sparsity_loss = 0, grad_norm = 0, lr = 0, temperature = 0;
  std::vector<std::string> tasks;        // [K]
  std::vector<double> targets;           // [K]
  std::vector<double> omega;             // [K] mean Omega of the step's samples (NaN: none)
  std::vector<double> lambda1, lambda2;  // [K] after the update
  int64_t tokens = 0;                    // tokens of the step
  double seconds = 0;                    // wall time of the step
};

struct RouterTrainCallbacks {
  std::function<void(const RouterTrainMetrics&)> on_step;  // after every optimizer step
  std::function<void(const std::string&)> on_note;         // one-line notes (resume, saves)
  std::function<bool()> should_stop;                       // checked after every step
};

enum class TrainStatus { finished, interrupted };

// Writes OUT/: config.json (Elastic keys), model.safetensors (the backbone, once),
// router.safetensors, model.safetensors.index.json, tokenizer files, train_state.safetensors
// (everything a resume needs), metrics.jsonl, and eval.json when eval_path is set. Every file is
// written atomically. Resume continues bit-for-bit where the saved step left off.
TrainStatus router_train_run(const RouterTrainConfig& config, const RouterTrainCallbacks& cb = {});

// The training figure (PNG) of a run's metrics.jsonl; targets: (task, target Omega) of the run.
void router_train_curves_write(const std::string& metrics_path,
                               const std::vector<std::pair<std::string, double>>& targets,
                               const std::string& png_path);

// Held-out evaluation of an Elastic checkpoint: the mean Omega_MSR per task of the prompts of a
// JSON-lines file, routed by the inference engine (deterministic argmax, no noise).
struct RouterEvalSample {
  std::string task;
  std::vector<int64_t> prompt_ids;  // what was prefilled (elastic route --input-ids reproduces it)
  std::vector<uint8_t> decisions;   // [L * Hkv] 1 = retrieval
  double omega_msr = 0;
};
struct RouterEvalTask {
  std::string task;
  int64_t n = 0;
  double omega_msr = 0;  // mean over the task's samples
};
struct RouterEval {
  std::vector<RouterEvalTask> tasks;  // by task name
  std::vector<RouterEvalSample> samples;
};
RouterEval router_eval_omega(const std::string& checkpoint_dir, const std::string& data_path,
                             const std::string& chat_template = "auto");

}  // namespace elastic

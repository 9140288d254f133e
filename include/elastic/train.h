// Router training (SPEC §5, §7): the public entry points of the training core (src/train/).
//
// train_step_run is the verification step behind `elastic train-step`: one forward + backward
// of an Elastic checkpoint on a given batch with given Gumbel uniforms and multipliers, returning
// the loss terms and every gradient under the fixture names (router-train-step's case.json):
// loss, ce, sparsity_loss, omega.i, decisions.i, grad.<parameter name>, grad.lambda1/2.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
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
  // Data-parallel ranks (threads of this process, each with its own engine): rank r runs the
  // step's packs r, r + W, ...; the router gradients are all-reduced before every rank takes
  // the same AdamW step. The Gumbel noise is keyed by (seed, step, sample), not by rank, so a
  // run's checkpoints do not depend on W beyond the order of the gradient sums.
  int64_t data_parallel = 1;
  // The communicator group of the ranks (tensor_parallel.h): "threads", or "nccl" in builds with
  // NCCL. With "nccl" even one rank all-reduces through it (world size 1 through the NCCL path).
  std::string comm = "threads";
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

// ---- Backbone pretraining (`elastic train`) ----------------------------------------------
//
// Trains a decoder from scratch (or from --init-from weights) on the evaluation suite's task
// generators (eval.h) and the training-only task "assoc_recall" (multi-query associative recall:
// key-value pairs, then queries of those keys, each followed by its value), packed into
// sequences of at most max_tokens. "Head-mix" runs a random half of each layer's KV heads in SSA
// for a fraction of the samples, so that every head works in both regimes (issue 10).

// The tasks `elastic train --tasks` accepts: every eval task, then the training-only
// "assoc_recall", "copy_words" (N words, then the same N words again: induction heads) and
// "template_recall" (recall in kv_retrieval's and the needle tasks' templates: the value a few
// tokens after its key, a question per pair), "restate_recall" (the same, each question
// restating its statement up to the value: "The value of K is" -> V) and "copy_statements" (those
// statements, then the same statements again, every token of the copy an answer).
std::vector<std::string> pretrain_task_names();

struct PretrainConfig {
  std::string out_dir;
  std::string backend = "cpu";
  std::string init_from;  // an HF folder whose weights (and tokenizer) start the run; "" = random
  // Shape of a fresh model (the tokenizer is eval_tokenizer_json's). arch "qwen3" normalises q
  // and k per head (qk-norm: with unit gains a logit is at most sqrt(head_dim), too flat to pick
  // one token out of thousands until the gains grow); "llama" has no qk-norm.
  std::string arch = "qwen3";
  // Initial q_norm / k_norm gains of a fresh qwen3 model: a logit q.k/sqrt(d) is at most
  // qk_gain^2 * sqrt(d), so a gain above 1 lets a fresh model attend sharply from the start.
  double qk_gain = 1.0;
  int64_t layers = 6, hidden = 256, heads = 8, kv_heads = 4, head_dim = 32, ffn = 768;
  double rope_theta = 500000.0;
  int64_t max_position = 16384;
  // Data.
  std::vector<std::string> tasks;                   // empty = every eval task
  std::vector<int64_t> lengths = {256, 512, 1024};  // sample lengths drawn uniformly
  // A task's own sample lengths, in place of `lengths` for it (e.g. short samples for the tasks
  // answered from the prompt's end: more answers per token). With any, a pack's next sample
  // draws its task first (among those with a length that still fits), then its length.
  std::map<std::string, std::vector<int64_t>> task_lengths;
  int64_t max_tokens = 8192;                        // tokens per packed sequence
  int64_t batch = 4;                                // packed sequences per optimizer step
  bool answer_only_labels = false;  // CE on the completion only, else on every next token
  double head_mix = 0.0;            // fraction of samples with half of the KV heads in SSA
  SsaOptions ssa{64, 64, 512};      // the sparse mode of head-mix (block, sink, local)
  // Optimisation (AdamW, linear warm-up then cosine to min_lr_ratio x lr).
  int64_t steps = 1000;
  double lr = 1e-3, min_lr_ratio = 0.1, warmup = 0.02, clip = 1.0, weight_decay = 0.0;
  double beta1 = 0.9, beta2 = 0.95;
  uint64_t seed = 1;
  int64_t save_every = 100;
  int64_t eval_every = 0;    // steps between held-out accuracy probes (0 = none)
  int64_t eval_samples = 8;  // samples per task in a probe
  // Finish early once every task's held-out answer CE (full attention) is at most this at a
  // probe (0 = never): a curriculum stage ends when its task is learned, not at a guessed step.
  double stop_ce = 0.0;
  bool resume = false;
  int64_t max_seconds = 0;  // stop (checkpointed, resumable) after this wall time (0 = none)
};

struct PretrainMetrics {
  int64_t step = 0, steps = 0;
  double loss = 0, answer_loss = 0, grad_norm = 0, lr = 0, seconds = 0;
  int64_t tokens = 0, answer_tokens = 0;
  // Held-out probe after this step (empty when none): greedy accuracy per task, dense.
  std::vector<std::pair<std::string, double>> probe;
};

struct PretrainCallbacks {
  std::function<void(const PretrainMetrics&)> on_step;
  std::function<void(const std::string&)> on_note;
  std::function<bool()> should_stop;
};

// Writes OUT/: config.json (Qwen3), model.safetensors (bf16), tokenizer.json,
// generation_config.json, train_state.safetensors (fp32 weights and AdamW moments, step; what a
// resume reads), metrics.jsonl and curves.png. Every file is written atomically.
TrainStatus pretrain_run(const PretrainConfig& config, const PretrainCallbacks& cb = {});

// One packed sequence of step `step`, pack `pack` of a run (deterministic for the seed): token
// ids, next-token labels (-100 = ignored), sample boundaries (cu_seqlens) and whether each token
// is an answer token. For tests and tools.
struct PretrainPack {
  std::vector<int64_t> ids, labels, cu_seqlens;
  std::vector<uint8_t> answer;
  std::vector<std::string> tasks;  // per sample
};
class Tokenizer;
// The figure of a run's metrics.jsonl: training loss, held-out answer CE per task (FA, SSA).
void pretrain_curves_write(const std::string& metrics_path, const std::string& png_path);
// Router-training data from the suite's generators: n samples per eval task and length as
// JSON lines {"prompt", "answer" (eval_sample_completion), "task"}, lengths counted exactly
// with `tokenizer`; seeds disjoint from those of eval_generate_set with the same seed.
void pretrain_export_samples(const std::vector<std::string>& tasks,
                             const std::vector<int64_t>& lengths, int64_t n, uint64_t seed,
                             const Tokenizer& tokenizer, const std::string& path);
PretrainPack pretrain_make_pack(const PretrainConfig& config, const Tokenizer& tokenizer,
                                int64_t step, int64_t pack);

}  // namespace elastic

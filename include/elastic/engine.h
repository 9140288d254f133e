// A serving engine: many generation requests at once over one model, with continuous batching.
//
// One scheduler thread runs steps. A step packs into one Batch (batch.h) a decode row for every
// running sequence and whole prompts of newly admitted ones (or the recompute of a preempted
// one), runs model_forward_batch (batch_forward.h) and samples the next token of every sequence
// from its own Sampler. A request leaves the batch the step it finishes or is cancelled; a
// waiting one joins the next step: no step waits for the slowest request.
//
// Memory: the K/V of every sequence lives in one KvPool (kv_pool.h) of pages. Admission takes
// requests in arrival order while the pool has the pages the prompt could need (every head
// full) and keeps one page per head of every running sequence in reserve for their decode
// steps. When the running sequences' next rows need more pages than are free, the most recently
// admitted sequence is preempted: its pages go back, and it returns to the front of the queue to
// be recomputed (its tokens so far prefilled again with its routing decisions kept, so its
// output continues as if never interrupted, up to rounding).
//
// Routing: each request carries its own policy (shared_ptr: the server keeps a few, one per
// distinct "elastic" extension); its heads are routed at its first prefill and stay fixed.
//
// Thread safety: submit, cancel (via the stream), stats and shutdown may be called from any
// thread; the model's backend is used by the scheduler thread only.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "elastic/batch_forward.h"
#include "elastic/kv_pool.h"
#include "elastic/model.h"
#include "elastic/report.h"
#include "elastic/routing.h"
#include "elastic/sampling.h"

namespace elastic {

struct EngineOptions {
  int64_t kv_pages = 4096;          // pages in the pool
  int64_t page_rows = 16;           // positions per page
  int64_t max_batch_tokens = 1024;  // rows per step (a longer prompt runs in a step of its own)
  int64_t max_running = 64;         // sequences in the batch at once
  int64_t max_waiting = 256;        // queued requests; submit() refuses beyond
  AttnOptions attn;                 // SSA / XA sizes of every sequence
  // OpenMP threads of the scheduler's steps; 0: the thread count of the thread that makes the
  // engine (omp_get_max_threads() there, which `-t` sets). OpenMP's thread count is per thread:
  // the scheduler thread would otherwise run with OMP_NUM_THREADS or every core.
  int64_t threads = 0;
  // Threads of the steps with more than one row (prefill chunks, several sequences); `threads`
  // runs the steps of one row (one sequence decoding), where a fork/join of the OpenMP team can
  // cost more than the second thread saves. 0: `threads` for every step (llama.cpp's -tb).
  int64_t threads_batch = 0;
};

struct EngineRequest {
  std::vector<int64_t> prompt;  // token ids, at least one
  int64_t max_tokens = 16;      // new tokens at most (>= 1)
  SamplingParams sampling;
  std::shared_ptr<RoutingPolicy> routing;  // null: every head FA
  std::vector<int64_t> stop_ids;  // a sampled id in this list ends the request (not emitted)
};

enum class FinishReason { none, length, stop, cancelled, error };
const char* finish_reason_name(FinishReason r);  // "length", "stop", "cancelled", "error"

// What the engine tells one request: its tokens as they are sampled, then the end.
class EngineStream {
 public:
  // Waits up to `timeout` for news; moves new token ids into `out`. Returns true once finished
  // (then every token has been delivered).
  bool wait(std::vector<int64_t>& out, std::chrono::milliseconds timeout);
  void cancel() { cancel_requested_.store(true); }
  bool cancel_requested() const { return cancel_requested_.load(); }
  FinishReason finish_reason() const;
  std::string error() const;
  // The sparsity report of its first prefill (routing, Omega, prefill KV bytes), once it ran.
  std::optional<RequestReport> report() const;
  // K/V bytes the sequence holds in the pool at its end (or now), exact rows, and dense.
  uint64_t kv_bytes() const;
  uint64_t kv_bytes_dense() const;
  int64_t prompt_tokens() const { return prompt_tokens_; }
  int64_t id() const { return id_; }
  int64_t preemptions() const;

 private:
  friend class Engine;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<int64_t> tokens_;  // not yet taken by wait()
  bool finished_ = false;
  FinishReason reason_ = FinishReason::none;
  std::string error_;
  std::optional<RequestReport> report_;
  uint64_t kv_bytes_ = 0, kv_bytes_dense_ = 0;
  int64_t preemptions_ = 0;
  int64_t prompt_tokens_ = 0, id_ = 0;
  std::atomic<bool> cancel_requested_{false};
};

struct EngineStats {
  int64_t waiting = 0, running = 0;
  int64_t kv_pages_used = 0, kv_pages_total = 0;
  int64_t steps = 0, prompt_tokens = 0, generated_tokens = 0, preemptions = 0;
  int64_t finished = 0, cancelled = 0, failed = 0;
  double omega_msr_sum = 0, omega_esr_sum = 0;  // over requests whose first prefill ran
  int64_t routed = 0;
};

class Engine {
 public:
  Engine(const Model& model, EngineOptions options);
  ~Engine();  // cancels what is left and joins the scheduler
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request; null when the queue is full or the engine is shutting down. Throws
  // elastic::Error when the request can never run (empty prompt, max_tokens < 1, more pages than
  // the pool holds).
  std::shared_ptr<EngineStream> submit(EngineRequest request);
  EngineStats stats() const;
  // Stops accepting; waits up to `grace` for the requests in flight to finish, then cancels the
  // rest and stops the scheduler.
  void shutdown(std::chrono::milliseconds grace);
  const EngineOptions& options() const { return options_; }
  // Pages a prompt of `tokens` positions plus `new_tokens` generated ones needs at most.
  int64_t pages_for(int64_t tokens) const;

 private:
  struct Seq;
  void run();
  bool step();  // one forward; false when there was nothing to do
  void finish(Seq& s, FinishReason r, const std::string& error = "");
  void preempt(Seq& s);

  const Model& model_;
  EngineOptions options_;
  KvPool pool_;
  BatchWorkspace ws_;
  mutable std::mutex mutex_;  // guards waiting_, stats_, stopping_
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Seq>> waiting_;
  std::vector<std::unique_ptr<Seq>> running_;  // scheduler thread only
  EngineStats stats_;
  bool stopping_ = false, accepting_ = true;
  int64_t next_id_ = 1;
  std::thread thread_;
};

}  // namespace elastic

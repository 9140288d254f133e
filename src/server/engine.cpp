// The serving engine's scheduler (engine.h). Invariants: a running sequence's pool holds exactly
// state.length positions, and tokens[state.length..] are the rows it feeds next (one pending
// sampled token while decoding; everything after a preemption); a waiting sequence holds no
// pages; pages are only taken inside model_forward_batch, after step() checked them.
#include "elastic/engine.h"

#include <omp.h>

#include <algorithm>
#include <string>

#include "elastic/error.h"

namespace elastic {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::length:
      return "length";
    case FinishReason::stop:
      return "stop";
    case FinishReason::cancelled:
      return "cancelled";
    case FinishReason::error:
      return "error";
    case FinishReason::none:
      break;
  }
  return "none";
}

bool EngineStream::wait(std::vector<int64_t>& out, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait_for(lock, timeout, [&] { return !tokens_.empty() || finished_; });
  out.insert(out.end(), tokens_.begin(), tokens_.end());
  tokens_.clear();
  return finished_;
}

FinishReason EngineStream::finish_reason() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return reason_;
}
std::string EngineStream::error() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return error_;
}
std::optional<RequestReport> EngineStream::report() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return report_;
}
uint64_t EngineStream::kv_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return kv_bytes_;
}
uint64_t EngineStream::kv_bytes_dense() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return kv_bytes_dense_;
}
int64_t EngineStream::preemptions() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return preemptions_;
}

struct Engine::Seq {
  std::shared_ptr<EngineStream> stream;
  EngineRequest request;
  Sampler sampler;
  SeqState state;
  std::vector<int64_t> tokens;  // prompt, then every sampled token
  int64_t generated = 0;
};

Engine::Engine(const Model& model, EngineOptions options)
    : model_(model),
      options_(std::move(options)),
      pool_(options_.kv_pages, options_.page_rows, model.config.num_layers,
            model.config.num_kv_heads, model.config.head_dim, model.backend.get()) {
  attn_options_validate(options_.attn);
  if (options_.max_batch_tokens < 1 || options_.max_running < 1 || options_.max_waiting < 0)
    throw Error("engine: max batch tokens and max running sequences must be >= 1");
  if (options_.threads < 0) throw Error("engine: threads must be >= 0 (0: the caller's)");
  if (options_.threads == 0) options_.threads = omp_get_max_threads();
  if (options_.threads_batch < 0) throw Error("engine: threads_batch must be >= 0 (0: threads)");
  if (options_.threads_batch == 0) options_.threads_batch = options_.threads;
  if (!attention_paged_supported(*model.backend))
    throw Error("elastic serve: batched paged attention is not implemented on the " +
                std::string(model.backend->name()) + " backend");
  stats_.kv_pages_total = pool_.num_pages();
  thread_ = std::thread([this] { run(); });
}

Engine::~Engine() { shutdown(std::chrono::milliseconds(0)); }

int64_t Engine::pages_for(int64_t tokens) const {
  const ModelConfig& c = model_.config;
  return c.num_layers * c.num_kv_heads * ((tokens + options_.page_rows - 1) / options_.page_rows);
}

std::shared_ptr<EngineStream> Engine::submit(EngineRequest request) {
  if (request.prompt.empty()) throw Error("engine: the prompt has no tokens");
  if (request.max_tokens < 1) throw Error("engine: max_tokens must be >= 1");
  for (int64_t id : request.prompt)
    if (id < 0 || id >= model_.config.vocab_size)
      throw Error("engine: token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                  std::to_string(model_.config.vocab_size) + ")");
  const int64_t total = static_cast<int64_t>(request.prompt.size()) + request.max_tokens;
  if (pages_for(total) > pool_.num_pages())
    throw Error("engine: a request of " + std::to_string(total) + " positions needs up to " +
                std::to_string(pages_for(total)) + " KV pages; the pool has " +
                std::to_string(pool_.num_pages()));
  auto seq = std::make_unique<Seq>(Seq{nullptr, {}, Sampler(request.sampling), {}, {}, 0});
  seq->stream = std::make_shared<EngineStream>();
  seq->stream->prompt_tokens_ = static_cast<int64_t>(request.prompt.size());
  seq->tokens = request.prompt;
  seq->state.kv = pool_.make_seq();
  seq->state.routing = request.routing.get();
  seq->request = std::move(request);
  std::lock_guard<std::mutex> lock(mutex_);
  if (!accepting_ || static_cast<int64_t>(waiting_.size()) >= options_.max_waiting) return nullptr;
  seq->stream->id_ = next_id_++;
  std::shared_ptr<EngineStream> stream = seq->stream;
  waiting_.push_back(std::move(seq));
  stats_.waiting = static_cast<int64_t>(waiting_.size());
  cv_.notify_all();
  return stream;
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void Engine::shutdown(std::chrono::milliseconds grace) {
  std::unique_lock<std::mutex> lock(mutex_);
  accepting_ = false;
  const auto deadline = std::chrono::steady_clock::now() + grace;
  cv_.wait_until(lock, deadline, [&] { return stats_.waiting == 0 && stats_.running == 0; });
  stopping_ = true;
  cv_.notify_all();
  lock.unlock();
  if (thread_.joinable()) thread_.join();
}

void Engine::finish(Seq& s, FinishReason r, const std::string& error) {
  const uint64_t bytes = pool_.seq_bytes(s.state.kv), dense = pool_.seq_bytes_dense(s.state.kv);
  pool_.release(s.state.kv);
  {  // the engine's figures first: a client woken below sees them
    std::lock_guard<std::mutex> lock(mutex_);
    stats_.kv_pages_used = pool_.pages_used();
    if (r == FinishReason::cancelled)
      ++stats_.cancelled;
    else if (r == FinishReason::error)
      ++stats_.failed;
    else
      ++stats_.finished;
  }
  {
    std::lock_guard<std::mutex> lock(s.stream->mutex_);
    s.stream->finished_ = true;
    s.stream->reason_ = r;
    s.stream->error_ = error;
    if (bytes > 0) {  // a preempted sequence holds nothing: keep the figures it had
      s.stream->kv_bytes_ = bytes;
      s.stream->kv_bytes_dense_ = dense;
    }
  }
  s.stream->cv_.notify_all();
}

void Engine::preempt(Seq& s) {
  {
    std::lock_guard<std::mutex> lock(s.stream->mutex_);
    s.stream->kv_bytes_ = pool_.seq_bytes(s.state.kv);
    s.stream->kv_bytes_dense_ = pool_.seq_bytes_dense(s.state.kv);
    ++s.stream->preemptions_;
  }
  pool_.release(s.state.kv);
  s.state.length = 0;  // routes stay: the recompute reuses them
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.kv_pages_used = pool_.pages_used();
  ++stats_.preemptions;
}

void Engine::run() {
  while (true) {  // step() sets this thread's OpenMP count (threads or threads_batch) itself
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (stopping_) break;
    }
    bool worked = false;
    try {
      worked = step();
    } catch (const std::exception& e) {
      // A failed forward leaves the running sequences' pools inconsistent: end them all.
      for (auto& s : running_) finish(*s, FinishReason::error, e.what());
      running_.clear();
      std::lock_guard<std::mutex> lock(mutex_);
      stats_.running = 0;
      stats_.kv_pages_used = pool_.pages_used();
      cv_.notify_all();
    }
    if (!worked) {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait_for(lock, std::chrono::milliseconds(50),
                   [&] { return stopping_ || !waiting_.empty(); });
    }
  }
  // Stopping: whatever is left is cancelled.
  for (auto& s : running_) finish(*s, FinishReason::cancelled);
  running_.clear();
  std::deque<std::unique_ptr<Seq>> left;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    left.swap(waiting_);
  }
  for (auto& s : left) finish(*s, FinishReason::cancelled);
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.waiting = stats_.running = 0;
  stats_.kv_pages_used = pool_.pages_used();
  cv_.notify_all();
}

bool Engine::step() {
  const ModelConfig& c = model_.config;
  const int64_t heads = c.num_layers * c.num_kv_heads;
  // 1. Cancelled requests leave and give their pages back.
  for (auto it = running_.begin(); it != running_.end();) {
    if ((*it)->stream->cancel_requested()) {
      finish(**it, FinishReason::cancelled);
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
  std::vector<std::unique_ptr<Seq>> cancelled;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      if ((*it)->stream->cancel_requested()) {
        cancelled.push_back(std::move(*it));
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& s : cancelled) finish(*s, FinishReason::cancelled);

  // 2. The running sequences' next rows; preempt the latest admitted while pages are short.
  auto need_of = [&](const Seq& s) {
    return pool_.pages_needed(s.state.kv, static_cast<int64_t>(s.tokens.size()));
  };
  while (!running_.empty()) {
    int64_t need = 0;
    for (auto& s : running_) need += need_of(*s);
    if (need <= pool_.pages_free()) break;
    std::unique_ptr<Seq> victim = std::move(running_.back());
    running_.pop_back();
    preempt(*victim);
    std::lock_guard<std::mutex> lock(mutex_);
    waiting_.push_front(std::move(victim));
  }
  int64_t rows = 0, need = 0;
  for (auto& s : running_) {
    rows += static_cast<int64_t>(s->tokens.size()) - s->state.length;
    need += need_of(*s);
  }

  // 3. Admission in arrival order: pages for the whole prefill (every head counted full) and
  // one page per head of every running sequence kept back for decode.
  {
    std::lock_guard<std::mutex> lock(mutex_);
    while (!waiting_.empty() && static_cast<int64_t>(running_.size()) < options_.max_running) {
      Seq& s = *waiting_.front();
      const int64_t n = static_cast<int64_t>(s.tokens.size());
      const int64_t pages = pool_.pages_needed(s.state.kv, n);
      const int64_t reserve = static_cast<int64_t>(running_.size()) * heads;
      if (need + pages + reserve > pool_.pages_free() && !running_.empty()) break;
      if (need + pages > pool_.pages_free()) break;
      if (rows > 0 && rows + n > options_.max_batch_tokens) break;
      rows += n;
      need += pages;
      running_.push_back(std::move(waiting_.front()));
      waiting_.pop_front();
    }
    stats_.waiting = static_cast<int64_t>(waiting_.size());
    stats_.running = static_cast<int64_t>(running_.size());
  }
  if (running_.empty()) return false;

  // 4. One forward over every running sequence's rows (on -t threads for one row, -tb for more).
  omp_set_num_threads(static_cast<int>(rows > 1 ? options_.threads_batch : options_.threads));
  Batch batch;
  std::vector<SeqState*> states;
  std::vector<uint8_t> first_prefill, partial;
  for (size_t i = 0; i < running_.size(); ++i) {
    Seq& s = *running_[i];
    int64_t n = static_cast<int64_t>(s.tokens.size()) - s.state.length;
    // A recompute after a preemption feeds the prompt alone first, then its generated tokens as
    // decode replay (batch_forward.h: the two run under different rules); its logits in between
    // are not sampled (the next token is already known).
    const bool recompute_prompt = !s.state.routes.empty() && s.state.length == 0;
    if (recompute_prompt) n = std::min(n, s.state.prompt_length);
    ELASTIC_CHECK(n >= 1);
    partial.push_back(s.state.length + n < static_cast<int64_t>(s.tokens.size()));
    batch.add(s.tokens.data() + s.state.length, n, s.state.length, static_cast<int64_t>(i),
              BatchLogits::last);
    states.push_back(&s.state);
    first_prefill.push_back(s.state.routes.empty());
  }
  // 5. Sample, deliver, finish. A model with NaN/Inf in its weights (or an overflow) gives
  // non-finite logits: that request fails with an error instead of sampling from them (the
  // request path checks the same).
  const int64_t S = static_cast<int64_t>(running_.size());
  std::vector<int64_t> sampled(static_cast<size_t>(S));
  std::vector<uint8_t> finite(static_cast<size_t>(S), 1);
  bool any_random = false;
  for (auto& s : running_) any_random = any_random || s->request.sampling.temperature > 0.f;
  if (!any_random) {
    // Every sequence greedy: the argmax on the backend, only the ids come back (-1: non-finite).
    const std::vector<int64_t>& ids =
        model_forward_batch_greedy(model_, batch, states.data(), pool_, options_.attn, ws_);
    for (int64_t i = 0; i < S; ++i) {
      finite[static_cast<size_t>(i)] = ids[static_cast<size_t>(i)] >= 0;
      sampled[static_cast<size_t>(i)] = ids[static_cast<size_t>(i)];
    }
  } else {
    // Each sequence its own Sampler: independent, so side by side (a draw sorts the vocabulary).
    const std::vector<float>& logits =
        model_forward_batch(model_, batch, states.data(), pool_, options_.attn, ws_);
    for (int64_t i = 0; i < S; ++i)
      finite[static_cast<size_t>(i)] =
          host_all_finite(logits.data() + i * c.vocab_size, c.vocab_size);
#pragma omp parallel for schedule(dynamic, 1) if (S >= 4)
    for (int64_t i = 0; i < S; ++i)
      if (!partial[static_cast<size_t>(i)] && finite[static_cast<size_t>(i)])
        sampled[static_cast<size_t>(i)] = running_[static_cast<size_t>(i)]->sampler.sample(
            logits.data() + i * c.vocab_size, c.vocab_size);
  }
  int64_t prompt_tokens = 0, generated = 0;
  double msr = 0, esr = 0;
  int64_t routed = 0;
  std::vector<size_t> done;
  for (size_t i = 0; i < running_.size(); ++i) {
    Seq& s = *running_[i];
    if (first_prefill[i]) {
      const int64_t n = static_cast<int64_t>(s.request.prompt.size());
      RequestReport r = report_build(c.num_heads, c.num_kv_heads, c.head_dim, n, s.state.routes,
                                     s.state.prefill_stats, options_.attn);
      msr += r.omega_msr;
      esr += r.omega_esr_all;
      ++routed;
      prompt_tokens += n;
      std::lock_guard<std::mutex> lock(s.stream->mutex_);
      s.stream->report_ = std::move(r);
    }
    if (partial[i]) continue;  // a recomputed prompt: its generated tokens follow next step
    if (!finite[i]) {
      finish(s, FinishReason::error,
             "the logits at position " + std::to_string(s.state.length - 1) +
                 " are not finite (NaN or Inf in the model's weights, or an overflow in its "
                 "activations; `elastic inspect --check` scans the weights)");
      done.push_back(i);
      continue;
    }
    const int64_t token = sampled[i];
    const bool stop = std::find(s.request.stop_ids.begin(), s.request.stop_ids.end(), token) !=
                      s.request.stop_ids.end();
    if (!stop) {
      ++s.generated;
      ++generated;
      s.tokens.push_back(token);
      {
        std::lock_guard<std::mutex> lock(s.stream->mutex_);
        s.stream->tokens_.push_back(token);
      }
      s.stream->cv_.notify_all();
    }
    if (stop) {
      finish(s, FinishReason::stop);
      done.push_back(i);
    } else if (s.generated >= s.request.max_tokens) {
      finish(s, FinishReason::length);
      done.push_back(i);
    }
  }
  for (auto it = done.rbegin(); it != done.rend(); ++it)
    running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(*it));
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.steps;
  stats_.prompt_tokens += prompt_tokens;
  stats_.generated_tokens += generated;
  stats_.omega_msr_sum += msr;
  stats_.omega_esr_sum += esr;
  stats_.routed += routed;
  stats_.running = static_cast<int64_t>(running_.size());
  stats_.kv_pages_used = pool_.pages_used();
  cv_.notify_all();
  return true;
}

}  // namespace elastic

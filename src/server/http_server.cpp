// The HTTP layer of `elastic serve` (server.h) on cpp-httplib (Debian's libcpp-httplib-dev): one
// handler thread per connection, the serving engine behind them. A handler validates the body,
// tokenizes, submits to the engine and turns the engine's token stream into OpenAI responses:
// one JSON object, or server-sent events (one chunk per piece of text that is final: complete
// UTF-8, and not possibly the start of a stop string).
#include <httplib.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "dashboard_page.h"
#include "elastic/error.h"
#include "elastic/safetensors.h"
#include "elastic/server.h"

namespace elastic {
namespace {

using nlohmann::json;
using clock_type = std::chrono::steady_clock;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json error_body(const std::string& message, const std::string& type, const std::string& param) {
  json e = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) e["param"] = param;
  return json{{"error", e}};
}

const char* error_type(int status) {
  switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 413: return "invalid_request_error";
    case 429: return "rate_limit_error";
    case 503: return "service_unavailable";
    case 504: return "timeout";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

void send_error(httplib::Response& res, int status, const std::string& message,
                const std::string& param = "") {
  res.status = status;
  res.set_content(dump(error_body(message, error_type(status), param)), "application/json");
}

// One request the page lists (live, then among the recent ones).
struct Tracked {
  int64_t id = 0;
  std::shared_ptr<EngineStream> stream;
  std::atomic<int64_t> completion_tokens{0};
  std::atomic<bool> done{false};
};

}  // namespace

struct HttpServer::Impl {
  ServerModel sm;
  ServerOptions opt;
  RoutingSetup base;  // the server's own routing (and the attention sizes of every request)
  std::unique_ptr<Engine> engine;
  httplib::Server svr;
  std::atomic<bool> draining{false};
  std::string created_id_prefix;

  std::shared_ptr<RoutingPolicy> default_policy;  // the server's own (requests without "elastic")
  std::mutex policy_mutex;
  std::map<std::string, std::shared_ptr<RoutingPolicy>> policies;  // by extension key

  std::mutex seed_mutex;
  std::mt19937_64 seed_rng{std::random_device{}()};

  std::mutex tracked_mutex;
  std::deque<std::shared_ptr<Tracked>> tracked;  // live and the most recent finished
  std::atomic<int64_t> requests_ok{0}, requests_client_error{0}, requests_rejected{0},
      requests_cancelled{0}, requests_timeout{0}, requests_server_error{0};
  std::atomic<int64_t> completion_tokens_total{0}, prompt_tokens_total{0};

  Impl(ServerModel m, ServerOptions o) : sm(std::move(m)), opt(std::move(o)) {
    const ModelConfig& c = sm.model->config;
    base = routing_setup(opt.routing, c, WeightStore::open(sm.dir));
    opt.engine.attn = base.attn;
    if (opt.context_tokens <= 0) opt.context_tokens = c.max_position_embeddings;
    if (opt.model_id.empty()) opt.model_id = "elastic";
    default_policy = std::shared_ptr<RoutingPolicy>(std::move(base.policy));
    engine = std::make_unique<Engine>(*sm.model, opt.engine);
  }

  uint64_t next_seed() {
    std::lock_guard<std::mutex> lock(seed_mutex);
    return seed_rng();
  }

  // The policy of a request's "elastic" extension (built once per distinct extension).
  std::shared_ptr<RoutingPolicy> policy_for(const ApiRequest& r) {
    if (!r.sparsity_bias && !r.router && r.static_assignment.empty()) return default_policy;
    RoutingOptions o = opt.routing;
    std::string key;
    if (r.sparsity_bias) {
      o.sparsity_bias = *r.sparsity_bias;
      key += "bias=" + std::to_string(*r.sparsity_bias) + ";";
    }
    if (r.router) {
      o.router = *r.router;
      key += std::string("router=") + (*r.router ? "on;" : "off;");
      if (*r.router) o.static_assignment.clear(), o.static_scores.clear(), o.static_ratio.reset();
    }
    if (!r.static_assignment.empty()) {
      o.static_assignment = r.static_assignment;
      o.static_scores.clear();
      o.static_ratio.reset();
      o.router.reset();
      key += "static=" + r.static_assignment;
    }
    std::lock_guard<std::mutex> lock(policy_mutex);
    auto it = policies.find(key);
    if (it != policies.end()) return it->second;
    RoutingSetup s;
    try {
      s = routing_setup(o, sm.model->config, WeightStore::open(sm.dir));
    } catch (const Error& e) {
      throw ApiError(400, std::string("'elastic': ") + e.what(), "elastic");
    }
    if (policies.size() >= 64) policies.clear();  // bounded (live requests keep theirs)
    return policies[key] = std::shared_ptr<RoutingPolicy>(std::move(s.policy));
  }

  void track(const std::shared_ptr<Tracked>& t) {
    std::lock_guard<std::mutex> lock(tracked_mutex);
    tracked.push_back(t);
    // Keep every live request and the 24 most recent finished ones.
    int64_t finished = 0;
    for (const auto& x : tracked) finished += x->done ? 1 : 0;
    for (auto it = tracked.begin(); it != tracked.end() && finished > 24;) {
      if ((*it)->done) {
        it = tracked.erase(it);
        --finished;
      } else {
        ++it;
      }
    }
  }

  json usage_json(const EngineStream& s, int64_t completion_tokens) const {
    json e = {{"omega_msr", nullptr}, {"omega_esr", nullptr}, {"kv_bytes", s.kv_bytes()},
              {"kv_bytes_dense", s.kv_bytes_dense()}};
    if (auto r = s.report()) {
      e["omega_msr"] = r->omega_msr;
      e["omega_esr"] = r->omega_esr_all;
      e["omega_esr_last"] = r->omega_esr_last;
    }
    return json{{"prompt_tokens", s.prompt_tokens()},
                {"completion_tokens", completion_tokens},
                {"total_tokens", s.prompt_tokens() + completion_tokens},
                {"elastic", e}};
  }

  // --- /v1/completions and /v1/chat/completions ---------------------------------------------

  // What one generation shares between the handler and (when streaming) the content provider.
  struct Generation {
    bool chat = false, stream = false, include_usage = false;
    std::string id, model;
    int64_t created = 0;
    std::shared_ptr<EngineStream> stream_handle;
    std::shared_ptr<Tracked> tracked;
    std::optional<StreamDecoder> decoder;
    std::optional<StopMatcher> stop;
    clock_type::time_point deadline;
    int64_t completion_tokens = 0;
    std::string text;
    bool sent_role = false, stopped = false, timed_out = false, finished = false;
    FinishReason reason = FinishReason::none;
    // A text chunk's event around its text (see text_chunk_event); empty until first used.
    std::string chunk_prefix, chunk_suffix;
  };

  // Moves the engine's new tokens into g's text; returns the piece that became final.
  std::string advance(Generation& g, bool& finished) {
    std::vector<int64_t> ids;
    finished = g.stream_handle->wait(ids, std::chrono::milliseconds(100));
    std::string piece;
    for (int64_t id : ids) {
      if (g.stopped) break;
      ++g.completion_tokens;
      piece += g.stop->push(g.decoder->push(static_cast<int32_t>(id)));
      if (g.stop->stopped()) {
        g.stopped = true;
        g.stream_handle->cancel();  // the engine drops the sequence at its next step
      }
    }
    if (!g.stopped && clock_type::now() > g.deadline) {
      g.timed_out = true;
      g.stream_handle->cancel();
    }
    if (finished && !g.stopped) piece += g.stop->push(g.decoder->finish()) + g.stop->finish();
    if (g.stopped || g.timed_out) {
      // Wait (briefly) for the engine to drop the sequence, for its KV figures.
      std::vector<int64_t> ignored;
      for (int i = 0; i < 50 && !finished; ++i) finished = g.stream_handle->wait(ignored, std::chrono::milliseconds(20));
      finished = true;
    }
    g.tracked->completion_tokens = g.completion_tokens;
    g.text += piece;
    return piece;
  }

  std::string finish_reason(const Generation& g) const {
    if (g.stopped) return "stop";
    const FinishReason r = g.stream_handle->finish_reason();
    return r == FinishReason::length ? "length" : "stop";
  }

  void count_outcome(const Generation& g) {
    completion_tokens_total += g.completion_tokens;
    const FinishReason r = g.stream_handle->finish_reason();
    if (g.timed_out) ++requests_timeout;
    else if (r == FinishReason::cancelled && !g.stopped) ++requests_cancelled;
    else if (r == FinishReason::error) ++requests_server_error;
    else ++requests_ok;
    g.tracked->done = true;
  }

  json chunk_json(const Generation& g, const std::string& piece, const char* finish) const {
    json choice;
    if (g.chat) {
      json delta = json::object();
      if (!g.sent_role) delta["role"] = "assistant";
      if (!piece.empty() || !g.sent_role) delta["content"] = piece;
      choice = {{"index", 0}, {"delta", delta}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
    } else {
      choice = {{"index", 0}, {"text", piece}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
    }
    if (finish) choice["finish_reason"] = finish;
    return json{{"id", g.id},
                {"object", g.chat ? "chat.completion.chunk" : "text_completion"},
                {"created", g.created},
                {"model", g.model},
                {"choices", json::array({choice})}};
  }

  // The SSE event of a chunk carrying `piece` (after the chat role's chunk): the bytes of
  // "data: " + dump(chunk_json(g, piece)) + "\n\n", built without a JSON tree per token. The
  // chunk's other fields do not change during a stream, so the dump of a chunk with a marker
  // text is split once around the marker's dump, and each piece's JSON string (the same dump of
  // the string alone: escapes, invalid UTF-8 replaced) is spliced in between.
  std::string text_chunk_event(Generation& g, const std::string& piece) const {
    if (g.chunk_prefix.empty()) {
      static const std::string kMarker = "\x01elastic-chunk-text\x02";
      const std::string marker = dump(json(kMarker));
      const std::string event = "data: " + dump(chunk_json(g, kMarker, nullptr)) + "\n\n";
      const size_t at = event.find(marker);
      // The id and the model name are the server's own strings, never this marker; checked
      // anyway, and without a split every chunk is built as a tree.
      if (at == std::string::npos || event.find(marker, at + 1) != std::string::npos)
        return "data: " + dump(chunk_json(g, piece, nullptr)) + "\n\n";
      g.chunk_prefix = event.substr(0, at);
      g.chunk_suffix = event.substr(at + marker.size());
    }
    return g.chunk_prefix + dump(json(piece)) + g.chunk_suffix;
  }

  void handle_generate(const httplib::Request& req, httplib::Response& res, bool chat) {
    if (draining) return send_error(res, 503, "the server is shutting down");
    ApiRequest r;
    try {
      r = api_request_parse(req.body, chat);
    } catch (const ApiError& e) {
      ++requests_client_error;
      return send_error(res, e.status, e.what(), e.param);
    }
    try {
      submit_and_respond(r, res);
    } catch (const ApiError& e) {
      if (e.status == 429) ++requests_rejected;
      else ++requests_client_error;
      send_error(res, e.status, e.what(), e.param);
    }
  }

  void submit_and_respond(const ApiRequest& r, httplib::Response& res) {
    const ModelConfig& c = sm.model->config;
    if (r.model && *r.model != opt.model_id)
      throw ApiError(404, "model '" + *r.model + "' does not exist; this server serves '" + opt.model_id + "'", "model");
    // Prompt ids.
    std::vector<int64_t> prompt;
    std::vector<int64_t> stop_ids = c.eos_token_ids;
    if (r.chat) {
      if (!sm.chat) throw ApiError(400, "this model has no chat template; use /v1/completions", "messages");
      const std::string text = chat_format(*sm.chat, r.messages, /*add_generation_prompt=*/true);
      for (int32_t id : sm.tokenizer->encode(text)) prompt.push_back(id);
      for (const std::string& s : chat_end_of_turn(sm.chat->kind))
        if (auto id = sm.tokenizer->token_to_id(s)) stop_ids.push_back(*id);
    } else if (r.prompt_text) {
      EncodeOptions enc;
      enc.add_special = true;  // as `elastic generate -p` does
      for (int32_t id : sm.tokenizer->encode(*r.prompt_text, enc)) prompt.push_back(id);
    } else {
      prompt = r.prompt_ids;
      for (int64_t id : prompt)
        if (id >= c.vocab_size)
          throw ApiError(400, "'prompt': token id " + std::to_string(id) + " is outside the vocabulary (" +
                                  std::to_string(c.vocab_size) + " ids)", "prompt");
    }
    if (stop_ids.empty())
      if (auto eos = sm.tokenizer->eos_id()) stop_ids.push_back(*eos);
    const int64_t n = static_cast<int64_t>(prompt.size());
    if (n == 0) throw ApiError(400, "the prompt encodes to no tokens", r.chat ? "messages" : "prompt");
    if (n > opt.max_prompt_tokens)
      throw ApiError(400, "the prompt has " + std::to_string(n) + " tokens; the limit is " +
                              std::to_string(opt.max_prompt_tokens) + " (max prompt tokens)",
                     r.chat ? "messages" : "prompt");
    if (n >= opt.context_tokens)
      throw ApiError(400, "the prompt has " + std::to_string(n) + " tokens; the context length is " +
                              std::to_string(opt.context_tokens), r.chat ? "messages" : "prompt");
    int64_t max_tokens = 0;
    const char* max_field = "max_tokens";
    if (r.max_tokens) {
      max_tokens = *r.max_tokens;
      if (max_tokens > opt.max_output_tokens)
        throw ApiError(400, std::string(max_field) + " is " + std::to_string(max_tokens) +
                                "; the limit is " + std::to_string(opt.max_output_tokens) + " (max output tokens)",
                       max_field);
      if (n + max_tokens > opt.context_tokens)
        throw ApiError(400, "the prompt (" + std::to_string(n) + " tokens) plus max_tokens (" +
                                std::to_string(max_tokens) + ") exceeds the context length " +
                                std::to_string(opt.context_tokens), max_field);
    } else {
      max_tokens = std::min(r.chat ? opt.max_output_tokens : opt.default_max_tokens, opt.context_tokens - n);
      max_tokens = std::min(max_tokens, opt.max_output_tokens);
    }

    EngineRequest er;
    er.prompt = prompt;
    er.max_tokens = max_tokens;
    er.sampling.temperature = static_cast<float>(r.temperature);
    er.sampling.top_p = static_cast<float>(r.top_p);
    er.sampling.seed = r.seed ? *r.seed : next_seed();
    er.routing = policy_for(r);
    er.stop_ids = stop_ids;
    std::shared_ptr<EngineStream> stream;
    try {
      stream = engine->submit(std::move(er));
    } catch (const Error& e) {
      throw ApiError(400, e.what());
    }
    if (!stream) {
      if (draining) throw ApiError(503, "the server is shutting down");
      throw ApiError(429, "the request queue is full (" + std::to_string(opt.engine.max_waiting) +
                              " waiting); retry later");
    }
    prompt_tokens_total += n;

    auto g = std::make_shared<Generation>();
    g->chat = r.chat;
    g->stream = r.stream;
    g->include_usage = r.include_usage;
    g->id = std::string(r.chat ? "chatcmpl-" : "cmpl-") + std::to_string(stream->id());
    g->model = opt.model_id;
    g->created = static_cast<int64_t>(std::time(nullptr));
    g->stream_handle = stream;
    g->tracked = std::make_shared<Tracked>();
    g->tracked->id = stream->id();
    g->tracked->stream = stream;
    g->decoder.emplace(*sm.tokenizer, /*skip_special=*/true);
    g->stop.emplace(r.stop);
    g->deadline = clock_type::now() + std::chrono::milliseconds(static_cast<int64_t>(opt.request_timeout_s * 1000));
    track(g->tracked);

    if (!r.stream) {
      bool finished = false;
      while (!finished) advance(*g, finished);
      count_outcome(*g);
      if (g->timed_out)
        return send_error(res, 504, "the request timed out after " + std::to_string(opt.request_timeout_s) + " s");
      if (stream->finish_reason() == FinishReason::error)
        return send_error(res, 500, "generation failed: " + stream->error());
      if (stream->finish_reason() == FinishReason::cancelled && !g->stopped)
        return send_error(res, 503, "the request was cancelled (server shutting down)");
      json choice;
      if (r.chat)
        choice = {{"index", 0}, {"message", {{"role", "assistant"}, {"content", g->text}}},
                  {"logprobs", nullptr}, {"finish_reason", finish_reason(*g)}};
      else
        choice = {{"index", 0}, {"text", g->text}, {"logprobs", nullptr}, {"finish_reason", finish_reason(*g)}};
      json body = {{"id", g->id},
                   {"object", r.chat ? "chat.completion" : "text_completion"},
                   {"created", g->created},
                   {"model", g->model},
                   {"choices", json::array({choice})},
                   {"usage", usage_json(*stream, g->completion_tokens)}};
      res.set_content(dump(body), "application/json");
      return;
    }

    res.set_header("Cache-Control", "no-cache");
    res.set_chunked_content_provider(
        "text/event-stream",
        [this, g](size_t, httplib::DataSink& sink) {
          auto send = [&](const json& j) {
            const std::string event = "data: " + dump(j) + "\n\n";
            return sink.write(event.data(), event.size());
          };
          if (g->finished) return false;
          if (g->chat && !g->sent_role) {
            if (!send(chunk_json(*g, "", nullptr))) return false;
            g->sent_role = true;
          }
          bool finished = false;
          const std::string piece = advance(*g, finished);
          if (!piece.empty()) {
            const std::string event = text_chunk_event(*g, piece);
            if (!sink.write(event.data(), event.size())) return false;
          }
          if (!finished) return piece.empty() ? sink.is_writable() : true;
          g->finished = true;
          count_outcome(*g);
          const FinishReason fr = g->stream_handle->finish_reason();
          if (g->timed_out || fr == FinishReason::error || (fr == FinishReason::cancelled && !g->stopped)) {
            const std::string why = g->timed_out ? "the request timed out"
                                    : fr == FinishReason::error ? "generation failed: " + g->stream_handle->error()
                                                                : "the request was cancelled (server shutting down)";
            const int status = g->timed_out ? 504 : fr == FinishReason::error ? 500 : 503;
            if (!send(error_body(why, error_type(status), ""))) return false;
          } else {
            json last = chunk_json(*g, "", finish_reason(*g).c_str());
            if (g->chat) last["choices"][0]["delta"] = json::object();
            last["elastic"] = usage_json(*g->stream_handle, g->completion_tokens)["elastic"];
            if (!send(last)) return false;
            if (g->include_usage) {
              json u = chunk_json(*g, "", nullptr);
              u["choices"] = json::array();
              u["usage"] = usage_json(*g->stream_handle, g->completion_tokens);
              if (!send(u)) return false;
            }
          }
          const std::string done = "data: [DONE]\n\n";
          if (!sink.write(done.data(), done.size())) return false;
          sink.done();
          return true;
        },
        [this, g](bool success) {
          if (!g->finished) {  // the client went away mid-stream: free the sequence
            g->stream_handle->cancel();
            g->finished = true;
            ++requests_cancelled;
            g->tracked->done = true;
          }
        });
  }

  // --- the other endpoints ------------------------------------------------------------------

  json dashboard() {
    const EngineStats s = engine->stats();
    json stats = {{"running", s.running}, {"waiting", s.waiting}, {"kv_pages_used", s.kv_pages_used},
                  {"kv_pages_total", s.kv_pages_total}, {"finished", s.finished},
                  {"cancelled", s.cancelled}, {"generated_tokens", s.generated_tokens},
                  {"omega_msr_mean", s.routed ? json(s.omega_msr_sum / s.routed) : json(nullptr)}};
    json rows = json::array();
    std::lock_guard<std::mutex> lock(tracked_mutex);
    for (auto it = tracked.rbegin(); it != tracked.rend(); ++it) {
      const Tracked& t = **it;
      const auto rep = t.stream->report();
      json q = {{"id", t.id},
                {"state", t.done ? "finished" : rep ? "running" : "waiting"},
                {"prompt_tokens", t.stream->prompt_tokens()},
                {"completion_tokens", t.completion_tokens.load()},
                {"omega_msr", rep ? json(rep->omega_msr) : json(nullptr)},
                {"omega_esr", rep ? json(rep->omega_esr_all) : json(nullptr)},
                {"kv_bytes", t.stream->kv_bytes()},
                {"kv_bytes_dense", t.stream->kv_bytes_dense()},
                {"decisions", rep ? json(rep->decisions) : json::array()}};
      rows.push_back(q);
    }
    return json{{"model", opt.model_id}, {"stats", stats}, {"requests", rows}};
  }

  std::string metrics() {
    const EngineStats s = engine->stats();
    std::ostringstream o;
    auto metric = [&](const char* name, const char* type, const char* help) {
      o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
    };
    metric("elastic_requests_total", "counter", "HTTP generation requests by outcome");
    o << "elastic_requests_total{outcome=\"ok\"} " << requests_ok << '\n'
      << "elastic_requests_total{outcome=\"client_error\"} " << requests_client_error << '\n'
      << "elastic_requests_total{outcome=\"rejected\"} " << requests_rejected << '\n'
      << "elastic_requests_total{outcome=\"cancelled\"} " << requests_cancelled << '\n'
      << "elastic_requests_total{outcome=\"timeout\"} " << requests_timeout << '\n'
      << "elastic_requests_total{outcome=\"server_error\"} " << requests_server_error << '\n';
    metric("elastic_prompt_tokens_total", "counter", "prompt tokens of accepted requests");
    o << "elastic_prompt_tokens_total " << prompt_tokens_total << '\n';
    metric("elastic_generation_tokens_total", "counter", "tokens sampled by the engine");
    o << "elastic_generation_tokens_total " << s.generated_tokens << '\n';
    metric("elastic_queue_waiting", "gauge", "requests waiting for admission");
    o << "elastic_queue_waiting " << s.waiting << '\n';
    metric("elastic_requests_running", "gauge", "sequences in the batch");
    o << "elastic_requests_running " << s.running << '\n';
    metric("elastic_kv_pages_used", "gauge", "KV pool pages held by sequences");
    o << "elastic_kv_pages_used " << s.kv_pages_used << '\n';
    metric("elastic_kv_pages_total", "gauge", "KV pool pages");
    o << "elastic_kv_pages_total " << s.kv_pages_total << '\n';
    metric("elastic_engine_steps_total", "counter", "batched forward passes");
    o << "elastic_engine_steps_total " << s.steps << '\n';
    metric("elastic_preemptions_total", "counter", "sequences preempted for KV pages (recomputed)");
    o << "elastic_preemptions_total " << s.preemptions << '\n';
    metric("elastic_omega_msr_mean", "gauge", "mean Omega_MSR of the requests routed so far");
    o << "elastic_omega_msr_mean " << (s.routed ? s.omega_msr_sum / s.routed : 0.0) << '\n';
    metric("elastic_omega_esr_mean", "gauge", "mean Omega_ESR (all layers) of the requests routed so far");
    o << "elastic_omega_esr_mean " << (s.routed ? s.omega_esr_sum / s.routed : 0.0) << '\n';
    return o.str();
  }

  std::atomic<int> listen_fd{-1};

  void routes() {
    // httplib listens with a backlog of 5, which drops connections of a burst: remember the
    // socket and raise the backlog after the bind (listen() again updates it on Linux).
    svr.set_socket_options([this](socket_t sock) {
      httplib::default_socket_options(sock);
      listen_fd = static_cast<int>(sock);
    });
    const int threads = std::max(4, opt.http_threads);
    svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    svr.set_payload_max_length(opt.max_body_bytes);
    svr.set_read_timeout(10, 0);
    svr.set_write_timeout(10, 0);
    svr.set_keep_alive_timeout(5);
    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!opt.api_key.empty() && req.path.rfind("/v1/", 0) == 0 &&
          req.get_header_value("Authorization") != "Bearer " + opt.api_key) {
        send_error(res, 401, "a valid API key is required (Authorization: Bearer KEY)");
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      const std::string msg = res.status == 413 ? "the request body is too large"
                              : res.status == 404 ? "no such endpoint: " + req.method + " " + req.path
                                                  : "HTTP error " + std::to_string(res.status);
      res.set_content(dump(error_body(msg, error_type(res.status), "")), "application/json");
    });
    svr.set_exception_handler([this](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "internal error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      ++requests_server_error;
      send_error(res, 500, what);
    });
    svr.Post("/v1/completions", [this](const httplib::Request& q, httplib::Response& s) { handle_generate(q, s, false); });
    svr.Post("/v1/chat/completions", [this](const httplib::Request& q, httplib::Response& s) { handle_generate(q, s, true); });
    svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
      json m = {{"id", opt.model_id}, {"object", "model"}, {"created", 0}, {"owned_by", "elastic"}};
      res.set_content(dump(json{{"object", "list"}, {"data", json::array({m})}}), "application/json");
    });
    svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      if (draining) return send_error(res, 503, "shutting down");
      res.set_content("{\"status\":\"ok\"}", "application/json");
    });
    svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics(), "text/plain; version=0.0.4");
    });
    svr.Get("/dashboard.json", [this](const httplib::Request&, httplib::Response& res) {
      res.set_header("Cache-Control", "no-store");
      res.set_content(dump(dashboard()), "application/json");
    });
    svr.Get("/", [](const httplib::Request&, httplib::Response& res) {
      res.set_content(server_detail::kDashboardPage, "text/html; charset=utf-8");
    });
  }
};

HttpServer::HttpServer(ServerModel model, ServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(model), std::move(options))) {
  impl_->routes();
}

HttpServer::~HttpServer() {
  if (impl_) {
    impl_->svr.stop();
    impl_->engine->shutdown(std::chrono::milliseconds(0));
  }
}

int HttpServer::bind() {
  const ServerOptions& o = impl_->opt;
  int port = o.port;
  if (port == 0) {
    port = impl_->svr.bind_to_any_port(o.host);
    if (port < 0) throw Error("cannot bind " + o.host + " to any port");
  } else if (!impl_->svr.bind_to_port(o.host, port)) {
    throw Error("cannot bind " + o.host + ":" + std::to_string(port) + " (in use, or not an address of this host)");
  }
  if (impl_->listen_fd >= 0) ::listen(impl_->listen_fd, SOMAXCONN);
  return port;
}

void HttpServer::listen() { impl_->svr.listen_after_bind(); }

void HttpServer::stop(std::chrono::milliseconds grace) {
  impl_->draining = true;
  impl_->engine->shutdown(grace);  // finishes or cancels every sequence
  // Handlers see their streams end; give them a moment to write their last bytes.
  for (int i = 0; i < 100; ++i) {
    bool live = false;
    {
      std::lock_guard<std::mutex> lock(impl_->tracked_mutex);
      for (const auto& t : impl_->tracked) live = live || !t->done;
    }
    if (!live) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  impl_->svr.stop();
}

EngineStats HttpServer::engine_stats() const { return impl_->engine->stats(); }

}  // namespace elastic

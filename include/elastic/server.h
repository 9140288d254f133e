// `elastic serve`: an OpenAI-compatible HTTP server over the serving engine (engine.h).
//
// Endpoints: POST /v1/completions and /v1/chat/completions (non-streaming, and SSE streaming
// with stream_options.include_usage), GET /v1/models, /health, /metrics (Prometheus text), / (a
// live page: requests, their Omega and routing heatmaps) and /dashboard.json (what it polls).
// The request extension "elastic": {"sparsity_bias": b, "router": "on"|"off",
// "static": "all-fa"|"all-sa"} picks the request's routing; every response carries
// usage.elastic = {omega_msr, omega_esr, kv_bytes, kv_bytes_dense}.
//
// Request bodies are validated strictly (api_request_parse): malformed JSON, a wrong type, an
// out-of-range value or an unknown field is a 400 naming the field. Limits: body size (413),
// prompt and output tokens (400 naming the limit), a bounded queue (429), a per-request timeout,
// an optional API key (401); a client that disconnects cancels its sequence.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "elastic/chat.h"
#include "elastic/engine.h"
#include "elastic/error.h"
#include "elastic/model.h"
#include "elastic/routing_setup.h"
#include "elastic/tokenizer.h"

namespace elastic {

// A client error: HTTP status, a message for the client, the offending field (may be empty).
struct ApiError : Error {
  ApiError(int status, std::string message, std::string param = "", std::string type = "")
      : Error(message), status(status), param(std::move(param)), type(std::move(type)) {}
  int status;
  std::string param;
  std::string type;  // OpenAI's error type; empty: invalid_request_error
};

// A parsed and type-checked completion or chat completion request.
struct ApiRequest {
  bool chat = false;
  std::optional<std::string> model;
  std::optional<std::string> prompt_text;  // completions: a string
  std::vector<int64_t> prompt_ids;         // completions: token ids
  std::vector<ChatMessage> messages;       // chat
  std::optional<int64_t> max_tokens;       // >= 1
  double temperature = 1.0;                // [0, 2]; 0 = greedy
  double top_p = 1.0;                      // (0, 1]
  std::vector<std::string> stop;           // up to 4 non-empty strings
  std::optional<uint64_t> seed;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  // The "elastic" extension.
  std::optional<double> sparsity_bias;
  std::optional<bool> router;
  std::string static_assignment;  // "", "all-fa" or "all-sa"
};

// Parses a request body. Throws ApiError (400) naming the field for malformed JSON, a missing
// or unknown field, a wrong type or an out-of-range value; never anything else.
ApiRequest api_request_parse(std::string_view body, bool chat);

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                 // 0: any free port (reported by bind())
  std::string model_id;            // the name /v1/models lists and responses carry
  std::string api_key;             // empty: no key needed
  size_t max_body_bytes = 1 << 20;
  int64_t max_prompt_tokens = 4096;
  int64_t max_output_tokens = 1024;
  int64_t default_max_tokens = 16;  // completions without max_tokens (chat: up to the limit)
  int64_t context_tokens = 0;       // prompt + max_tokens at most; 0: the model's positions
  double request_timeout_s = 600;   // a request still running after this is cancelled
  int http_threads = 128;           // connections served at once
  RoutingOptions routing;           // the server's defaults, before a request's extension
  EngineOptions engine;
};

// Everything the server reads: the model (its weights folder for router weights), the tokenizer
// and the chat format (null: no chat endpoint).
struct ServerModel {
  const Model* model = nullptr;
  std::string dir;
  const Tokenizer* tokenizer = nullptr;
  std::optional<ChatFormat> chat;
};

class HttpServer {
 public:
  HttpServer(ServerModel model, ServerOptions options);
  ~HttpServer();
  // Binds the socket; returns the port. Throws elastic::Error when it cannot.
  int bind();
  // Serves until stop(); returns then.
  void listen();
  // Graceful stop (any thread, e.g. on SIGTERM): new requests get 503, requests in flight get
  // up to `grace` to finish and are then cancelled, then listen() returns.
  void stop(std::chrono::milliseconds grace);
  EngineStats engine_stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace elastic

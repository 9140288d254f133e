// elastic serve: the OpenAI-compatible server (server.h) over the continuous-batching engine
// (engine.h). SIGTERM or SIGINT stops it gracefully: new requests get 503, the requests in
// flight get --shutdown-grace seconds to finish and are then cancelled; the exit code is 0.
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>

#include "cli_options.h"
#include "commands.h"
#include "elastic/chat.h"
#include "elastic/dtype.h"
#include "elastic/model.h"
#include "elastic/server.h"
#include "elastic/tokenizer.h"
#include "elastic_options.h"

namespace elastic::cli {

int cmd_serve(int argc, char** argv) {
  CommandLine cl(
      "serve", "-m MODEL [--host 127.0.0.1] [--port 8080] [options]",
      "Serves MODEL over HTTP with OpenAI's API: POST /v1/completions and\n"
      "/v1/chat/completions (streaming with \"stream\": true), GET /v1/models, /health,\n"
      "/metrics (Prometheus) and a live page at /. Requests run together with continuous\n"
      "batching over a paged KV pool; each is routed by its own Elastic Attention policy\n"
      "(request field \"elastic\": {\"sparsity_bias\", \"router\", \"static\"}). CPU or CUDA\n"
      "backend (--backend cuda: the KV pool in device memory). SIGTERM/SIGINT: graceful stop,\n"
      "exit code 0.");
  ModelOptions mo;
  ServerOptions so;
  ElasticOptions eo;
  std::string backend = "cpu", template_name;
  int64_t threads = 0, port = 8080, http_threads = so.http_threads, max_body = 1 << 20;
  int64_t kv_mib = 256;
  double grace_s = 30;
  std::optional<int64_t> kv_pages;
  model_options_add(cl, mo, /*tokenizer=*/true,
                    "HF model folder (with its tokenizer, or --tokenizer)");
  cl.text("--host", so.host, "ADDR", "address to bind (default 127.0.0.1: this machine only)");
  cl.integer("--port", port, "N", "TCP port (default 8080; 0 = any free port, printed)",
             {0, 65535});
  cl.text("--api-key", so.api_key, "KEY",
          "require 'Authorization: Bearer KEY' on /v1/* (default: $ELASTIC_API_KEY, else none)");
  cl.text("--model-name", so.model_id, "NAME",
          "the model id clients name (default: the folder's name)");
  cl.choice("--chat-template", template_name, {"chatml", "llama3"},
            "chat format (default: detected; no chat endpoint when undetectable)");
  threads_option_add(cl, threads);
  cl.integer("--threads-batch", so.engine.threads_batch, "N",
             "CPU threads of the steps with more than one row (prefill, several\n"
             "sequences; llama.cpp's -tb); -t runs one sequence's decode steps\n(default: -t)",
             {0, 65536});
  backend_option_add(cl, backend);
  cl.section("Limits");
  cl.integer("--max-body-bytes", max_body, "N",
             "largest request body (default 1048576; 413 beyond)", {256, int64_t{1} << 30});
  cl.integer("--max-prompt-tokens", so.max_prompt_tokens, "N",
             "longest prompt (default 4096; 400 beyond)", {1});
  cl.integer("--max-output-tokens", so.max_output_tokens, "N",
             "largest max_tokens (default 1024; 400 beyond)", {1});
  cl.integer("--default-max-tokens", so.default_max_tokens, "N",
             "max_tokens of a completion that gives none (default 16)", {1});
  cl.integer("--ctx", so.context_tokens, "N",
             "prompt + max_tokens at most (default: the model's max positions)", {0});
  cl.real("--request-timeout", so.request_timeout_s, "S",
          "cancel a request still running after S seconds (default 600)", {0, 1e9, true});
  cl.real("--shutdown-grace", grace_s, "S",
          "on SIGTERM, seconds for requests in flight to finish (default 30)", {0, 1e6});
  cl.integer("--http-threads", http_threads, "N", "connections served at once (default 128)",
             {4, 4096});
  cl.section("Engine");
  cl.integer("--max-queue", so.engine.max_waiting, "N",
             "requests waiting at most (default 256; 429 beyond)", {0, 1000000});
  cl.integer("--max-running", so.engine.max_running, "N",
             "sequences per batch at most (default 64)", {1, 100000});
  cl.integer("--max-batch-tokens", so.engine.max_batch_tokens, "N",
             "rows per forward (default 1024; a longer prompt runs alone)", {1});
  cl.integer("--page-rows", so.engine.page_rows, "N", "positions per KV page (default 16)",
             {1, 65536});
  cl.integer("--kv-pages", kv_pages, "N", "KV pool size in pages (default: from --kv-mib)",
             {1, int64_t{1} << 30});
  cl.integer("--kv-mib", kv_mib, "MIB",
             "KV pool size in MiB when --kv-pages is not given (default 256)",
             {1, int64_t{1} << 24});
  elastic_options_add(cl, eo);
  if (!cl.parse(argc, argv)) return 0;
  // Signals go to one waiting thread only: blocked here, before any thread (OpenMP's workers
  // included, which inherit the mask) starts.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGUSR1);  // our own wake-up of the waiter when listen() ends by itself
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  set_threads(threads);
  if (mo.dir.empty()) throw Error(cl.missing("-m MODEL"));
  if (so.api_key.empty())
    if (const char* k = std::getenv("ELASTIC_API_KEY")) so.api_key = k;
  so.port = static_cast<int>(port);
  so.http_threads = static_cast<int>(http_threads);
  so.max_body_bytes = static_cast<size_t>(max_body);
  so.routing = eo.routing;
  if (so.model_id.empty())
    so.model_id = std::filesystem::path(mo.dir).lexically_normal().filename().string();
  if (so.model_id.empty())
    so.model_id = std::filesystem::path(mo.dir).parent_path().filename().string();

  // Many connections at once: raise the open-file limit to its hard maximum.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }

  const Tokenizer tok = Tokenizer::load(mo.tokenizer_path());
  ServerModel sm;
  if (!template_name.empty()) {
    sm.chat = ChatFormat{};
    sm.chat->kind = chat_template_from_name(template_name);
  } else {
    try {
      sm.chat = chat_format_detect(mo.tokenizer_path());
    } catch (const Error&) {
      sm.chat.reset();  // no chat template: /v1/chat/completions answers 400
    }
  }
  Model model = model_load(mo.dir, backend_create(backend));
  if (tok.vocab_size() > model.config.vocab_size)
    throw Error(tok.source() + ": tokenizer has " + std::to_string(tok.vocab_size()) +
                " ids but the model's vocab_size is " + std::to_string(model.config.vocab_size) +
                " (wrong --tokenizer?)");
  if (model.config.eos_token_ids.empty() && tok.eos_id())
    model.config.eos_token_ids.push_back(*tok.eos_id());
  const int64_t page_bytes = 2 * so.engine.page_rows * model.config.head_dim *
                             int64_t(dtype_size(model.backend->kv_pool_dtype()));
  so.engine.kv_pages = kv_pages ? *kv_pages : std::max<int64_t>(1, (kv_mib << 20) / page_bytes);

  sm.model = &model;
  sm.dir = mo.dir;
  sm.tokenizer = &tok;
  HttpServer server(sm, so);
  const int bound = server.bind();
  std::printf(
      "elastic serve: %s on http://%s:%d (model id '%s', %lld KV pages of %lld positions, "
      "%s)\n",
      mo.dir.c_str(), so.host.c_str(), bound, so.model_id.c_str(), (long long)so.engine.kv_pages,
      (long long)so.engine.page_rows, so.api_key.empty() ? "no API key" : "API key required");
  std::fflush(stdout);

  std::thread waiter([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (sig == SIGUSR1) return;
    std::fprintf(stderr, "elastic serve: signal %d, stopping (grace %.0f s)\n", sig, grace_s);
    server.stop(std::chrono::milliseconds(static_cast<int64_t>(grace_s * 1000)));
  });
  server.listen();
  pthread_kill(waiter.native_handle(), SIGUSR1);  // no-op when the waiter already returned
  waiter.join();
  const EngineStats st = server.engine_stats();
  std::fprintf(stderr, "elastic serve: stopped (%lld requests finished, %lld cancelled)\n",
               (long long)st.finished, (long long)st.cancelled);
  return 0;
}

}  // namespace elastic::cli

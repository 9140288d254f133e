// Load generator of scripts/serve-load.sh: N streaming clients against `elastic serve` on
// loopback, each issuing streaming completions back to back until a deadline. The same requests
// and measurements as the Python client of scripts/serve-load.py (prompts, 32-128 tokens,
// temperature 0.8, a seed each; tokens from the final usage chunk, time to first text chunk,
// gaps between text chunks), in C++ threads on cpp-httplib (the library the server uses):
// on a 2-core machine the Python client took about half a core for 16 clients, which the server
// then did not have, so the concurrent throughput measured the client as much as the server.
// Usage: serve_load_client HOST PORT CLIENTS SECONDS SEED
// Prints one JSON object: ok, failed, tokens, seconds, tokens_per_s, ttft/itl p50/p99 (seconds),
// their sample counts and up to 10 error messages.
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;
using json = nlohmann::json;

const char* const kPrompts[] = {
    "Once upon a time",     "The little dog",          "Tom and Lily went to the park",
    "One day, a bird",      "The sun was shining and", "Sam had a red ball",
    "There was a big tree", "Mia liked to paint",      "The cat saw a mouse",
    "A boy named Tim"};

struct Outcome {
  bool ok = false;
  int64_t tokens = 0;
  double ttft = -1;  // seconds; < 0: no text chunk
  std::vector<double> gaps;
  std::string error;
};

struct Totals {
  std::mutex mutex;
  int64_t ok = 0, failed = 0, tokens = 0;
  std::vector<double> ttft, gaps;
  std::vector<std::string> errors;
};

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// One streaming completion over a fresh connection (as the Python client: one per request).
Outcome stream_request(const std::string& host, int port, std::mt19937_64& rng) {
  Outcome o;
  json body = {{"prompt", kPrompts[rng() % std::size(kPrompts)]},
               {"max_tokens", 32 + static_cast<int>(rng() % 97)},
               {"temperature", 0.8},
               {"seed", static_cast<int64_t>(rng() % (1ull << 31))},
               {"stream", true},
               {"stream_options", {{"include_usage", true}}}};
  const auto t0 = clock_type::now();
  httplib::Client cli(host, port);
  cli.set_read_timeout(120, 0);
  cli.set_connection_timeout(10, 0);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  std::string buf, head;  // head: the start of an error body
  bool done = false, first = true;
  clock_type::time_point last;
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (head.size() < 200) head.append(data, std::min(n, 200 - head.size()));
    buf.append(data, n);
    size_t start = 0;
    for (size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1) {
      if (nl - start < 6 || buf.compare(start, 6, "data: ") != 0) continue;
      const std::string_view payload(buf.data() + start + 6, nl - start - 6);
      if (payload == "[DONE]") {
        done = true;
        continue;
      }
      const json ev = json::parse(payload, nullptr, false);
      if (ev.is_discarded()) {
        o.error = "unparsable event: " + std::string(payload.substr(0, 200));
        return false;
      }
      if (ev.contains("error")) {
        o.error = "error event: " + ev["error"].dump();
        return false;
      }
      if (ev.contains("usage") && ev["usage"].is_object())
        o.tokens = ev["usage"].value("completion_tokens", int64_t{0});
      const auto ch = ev.find("choices");
      if (ch != ev.end() && !ch->empty()) {
        const auto text = (*ch)[0].find("text");
        if (text != (*ch)[0].end() && text->is_string() &&
            !text->get_ref<const std::string&>().empty()) {
          const auto now = clock_type::now();
          if (first)
            o.ttft = std::chrono::duration<double>(now - t0).count();
          else
            o.gaps.push_back(std::chrono::duration<double>(now - last).count());
          first = false;
          last = now;
        }
      }
    }
    buf.erase(0, start);
    return true;
  };
  const httplib::Result res = cli.send(req);
  if (!o.error.empty()) return o;
  if (!res) {
    o.error = "request failed: " + httplib::to_string(res.error());
    return o;
  }
  if (res->status != 200) {
    o.error = "HTTP " + std::to_string(res->status) + ": " + head;
    return o;
  }
  if (!done) {
    o.error = "stream ended without [DONE]";
    return o;
  }
  o.ok = true;
  return o;
}

// The Python script's percentile: the element at p/100 * (n-1), rounded, of the sorted samples.
double pct(std::vector<double> xs, double p) {
  if (xs.empty()) return NAN;
  std::sort(xs.begin(), xs.end());
  const size_t i =
      static_cast<size_t>(std::llround(p / 100.0 * static_cast<double>(xs.size() - 1)));
  return xs[std::min(xs.size() - 1, i)];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: serve_load_client HOST PORT CLIENTS SECONDS SEED\n");
    return 2;
  }
  const std::string host = argv[1];
  const int port = std::atoi(argv[2]);
  const int clients = std::atoi(argv[3]);
  const double seconds = std::atof(argv[4]);
  const uint64_t seed = std::strtoull(argv[5], nullptr, 10);
  if (port <= 0 || clients <= 0 || !(seconds > 0)) {
    std::fprintf(stderr, "serve_load_client: PORT and CLIENTS must be > 0 and SECONDS > 0\n");
    return 2;
  }
  Totals t;
  const auto start = clock_type::now();
  const auto deadline = start + std::chrono::duration_cast<clock_type::duration>(
                                    std::chrono::duration<double>(seconds));
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i)
    threads.emplace_back([&, i] {
      std::mt19937_64 rng(seed * 1000 + static_cast<uint64_t>(i));
      while (clock_type::now() < deadline) {
        Outcome o = stream_request(host, port, rng);
        std::lock_guard<std::mutex> lock(t.mutex);
        (o.ok ? t.ok : t.failed) += 1;
        t.tokens += o.tokens;
        if (o.ttft >= 0) t.ttft.push_back(o.ttft);
        t.gaps.insert(t.gaps.end(), o.gaps.begin(), o.gaps.end());
        if (!o.error.empty() && t.errors.size() < 10) t.errors.push_back(o.error);
      }
    });
  for (auto& th : threads) th.join();
  const double elapsed = seconds_since(start);
  json out = {{"ok", t.ok},
              {"failed", t.failed},
              {"tokens", t.tokens},
              {"seconds", elapsed},
              {"tokens_per_s", static_cast<double>(t.tokens) / elapsed},
              {"ttft_p50", pct(t.ttft, 50)},
              {"ttft_p99", pct(t.ttft, 99)},
              {"itl_p50", pct(t.gaps, 50)},
              {"itl_p99", pct(t.gaps, 99)},
              {"ttft_count", t.ttft.size()},
              {"gap_count", t.gaps.size()},
              {"errors", t.errors}};
  std::printf("%s\n", out.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
  return 0;
}

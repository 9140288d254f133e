// The serving engine without HTTP: generated tokens per second with C concurrent sequences
// (all submitted at once, each generating T tokens) against C = 1 run sequentially, measured in
// the same run, greedy and sampled. The ratio is what continuous batching buys on this machine
// for this model; the HTTP server adds its own per-token work (scripts/serve-load.sh).
// Usage: bench_serve_engine [--threads-batch TB] [MODEL] [TOKENS] [CLIENTS...]
//   (default: tinystories, 64, 1 4 16 32; OMP_NUM_THREADS sets the one-row steps' threads,
//   --threads-batch those of steps with more rows, as `elastic serve --threads-batch`)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "elastic/engine.h"
#include "elastic/model.h"

using namespace elastic;

int main(int argc, char** argv) {
  EngineOptions eo;
  int a = 1;
  if (argc > 2 && std::string(argv[1]) == "--threads-batch") {
    eo.threads_batch = std::atoll(argv[2]);
    a = 3;
  }
  const std::string dir =
      argc > a ? argv[a] : std::string(ELASTIC_SHARED_DIR) + "/data/tinystories-656k";
  const int64_t tokens = argc > a + 1 ? std::atoll(argv[a + 1]) : 64;
  std::vector<int> clients;
  for (int i = a + 2; i < argc; ++i) clients.push_back(std::atoi(argv[i]));
  if (clients.empty()) clients = {1, 4, 16, 32};
  Model m = model_load(dir);
  eo.kv_pages = 65536;
  std::printf("%-8s %8s %12s %12s %8s\n", "sampling", "clients", "tokens", "tok/s", "x seq");
  for (float temp : {0.f, 0.8f}) {
    double base = 0;
    for (int c : clients) {
      Engine engine(m, eo);
      std::vector<std::shared_ptr<EngineStream>> streams;
      const auto t0 = std::chrono::steady_clock::now();
      int64_t total = 0;
      auto run = [&](int n) {
        streams.clear();
        for (int i = 0; i < n; ++i) {
          EngineRequest r;
          r.prompt = {1, int64_t(100 + i), int64_t(200 + 3 * i), 300, 17};
          r.max_tokens = tokens;
          r.sampling.temperature = temp;
          r.sampling.seed = uint64_t(i);
          streams.push_back(engine.submit(r));
        }
        for (auto& s : streams) {
          std::vector<int64_t> out;
          while (!s->wait(out, std::chrono::milliseconds(100))) {
          }
          total += static_cast<int64_t>(out.size());
        }
      };
      if (c == 1)
        for (int rep = 0; rep < 8; ++rep) run(1);  // sequential requests, one at a time
      else
        run(c);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double tps = total / s;
      if (c == 1) base = tps;
      std::printf("%-8s %8d %12lld %12.0f %8.2f\n", temp == 0.f ? "greedy" : "t=0.8", c,
                  (long long)total, tps, base > 0 ? tps / base : 0.0);
    }
  }
  return 0;
}

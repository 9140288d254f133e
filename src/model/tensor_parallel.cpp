// Tensor-parallel shards of an HF checkpoint and the in-process communicator (see the header).
#include "elastic/tensor_parallel.h"

#include <omp.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "elastic/error.h"
#include "elastic/safetensors.h"

namespace elastic {
namespace {

// The ranks of one group meet twice per all-reduce: once when every rank has published its
// buffer (then each sums all buffers, in rank order, into its own scratch), once when every rank
// has read them all (then each copies its sum over its buffer). Summing in the same order on
// every rank gives every rank the same bits. A rank that fails aborts the group: the others'
// meetings throw instead of waiting for it forever.
class InProcessGroup {
 public:
  explicit InProcessGroup(int world) : slots(static_cast<size_t>(world)) {}
  std::vector<const float*> slots;

  void meet() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (aborted_) throw TpGroupAborted(abort_message());
    const uint64_t gen = generation_;
    if (++arrived_ == slots.size()) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != gen || aborted_; });
    if (generation_ == gen) throw TpGroupAborted(abort_message());
  }
  void abort(int rank) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!aborted_) failed_rank_ = rank;
    aborted_ = true;
    cv_.notify_all();
  }

 private:
  std::string abort_message() const {
    return "tensor parallel: rank " + std::to_string(failed_rank_) + " failed";
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  size_t arrived_ = 0;
  uint64_t generation_ = 0;
  bool aborted_ = false;
  int failed_rank_ = -1;
};

class InProcessComm final : public TpComm {
 public:
  InProcessComm(std::shared_ptr<InProcessGroup> g, int rank) : g_(std::move(g)), rank_(rank) {}
  int rank() const override { return rank_; }
  int world() const override { return static_cast<int>(g_->slots.size()); }
  void all_reduce_sum(float* x, int64_t n) override {
    g_->slots[static_cast<size_t>(rank_)] = x;
    g_->meet();
    sum_.assign(static_cast<size_t>(n), 0.f);
    for (const float* s : g_->slots)
      for (int64_t i = 0; i < n; ++i) sum_[static_cast<size_t>(i)] += s[i];
    g_->meet();
    std::memcpy(x, sum_.data(), static_cast<size_t>(n) * sizeof(float));
  }
  void abort() override { g_->abort(rank_); }

 private:
  std::shared_ptr<InProcessGroup> g_;
  int rank_;
  std::vector<float> sum_;
};

// The checkpoint and the slices a shard copies (column slices are not contiguous), alive as
// long as the shard's Model.
struct ShardStorage {
  std::shared_ptr<WeightStore> store;
  std::vector<std::vector<unsigned char>> copies;
};

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// Rows [r0, r0 + rows) of a row-major matrix (or vector): a view, no copy.
TensorView rows_of(const TensorView& t, int64_t r0, int64_t rows) {
  TensorView v = t;
  const int64_t row_elems = t.shape.size() > 1 ? t.shape[1] : 1;
  v.data = static_cast<const unsigned char*>(t.data) +
           static_cast<size_t>(r0 * row_elems) * dtype_size(t.dtype);
  v.shape[0] = rows;
  return v;
}

// Columns [c0, c0 + cols) of a row-major matrix: a copy owned by `st`.
TensorView cols_of(const TensorView& t, int64_t c0, int64_t cols, ShardStorage& st) {
  const int64_t R = t.shape[0], C = t.shape[1];
  const size_t es = dtype_size(t.dtype);
  std::vector<unsigned char> out(static_cast<size_t>(R * cols) * es);
  const auto* src = static_cast<const unsigned char*>(t.data);
  for (int64_t r = 0; r < R; ++r)
    std::memcpy(out.data() + static_cast<size_t>(r * cols) * es,
                src + static_cast<size_t>(r * C + c0) * es, static_cast<size_t>(cols) * es);
  st.copies.push_back(std::move(out));
  TensorView v = t;
  v.data = st.copies.back().data();
  v.shape = {R, cols};
  return v;
}

TensorView zeros_like(const TensorView& t, ShardStorage& st) {
  st.copies.emplace_back(t.nbytes(), 0);
  TensorView v = t;
  v.data = st.copies.back().data();
  return v;
}

}  // namespace

std::vector<std::shared_ptr<TpComm>> tp_group_in_process(int world) {
  if (world < 1)
    throw Error("tensor parallel: the world size must be >= 1, got " + std::to_string(world));
  auto g = std::make_shared<InProcessGroup>(world);
  std::vector<std::shared_ptr<TpComm>> out;
  for (int r = 0; r < world; ++r) out.push_back(std::make_shared<InProcessComm>(g, r));
  return out;
}

namespace {

std::map<std::string, TpGroupFactory>& group_factories() {
  static std::map<std::string, TpGroupFactory> f = {{"threads", tp_group_in_process}};
  return f;
}
std::mutex g_group_mutex;

}  // namespace

void tp_group_register(const std::string& name, TpGroupFactory factory) {
  std::lock_guard<std::mutex> lock(g_group_mutex);
  group_factories()[name] = std::move(factory);
}

std::vector<std::shared_ptr<TpComm>> tp_group_create(const std::string& name, int world) {
  TpGroupFactory f;
  {
    std::lock_guard<std::mutex> lock(g_group_mutex);
    auto it = group_factories().find(name);
    if (it == group_factories().end()) {
      std::string known;
      for (const auto& [n, _] : group_factories()) known += (known.empty() ? "" : ", ") + n;
      throw Error("communicator '" + name + "' is not in this build (known: " + known + ")");
    }
    f = it->second;
  }
  return f(world);
}

void tp_run_in_process(int world, int threads_per_rank,
                       const std::function<void(std::shared_ptr<TpComm>)>& rank_main) {
  tp_run(tp_group_in_process(world), threads_per_rank, rank_main);
}

void tp_run(const std::vector<std::shared_ptr<TpComm>>& comms, int threads_per_rank,
            const std::function<void(std::shared_ptr<TpComm>)>& rank_main) {
  const int world = static_cast<int>(comms.size());
  std::vector<std::exception_ptr> errors(static_cast<size_t>(world));
  std::vector<std::thread> ranks;
  for (int r = 0; r < world; ++r)
    ranks.emplace_back([&, r] {
      omp_set_num_threads(std::max(1, threads_per_rank));  // this thread's own setting
      try {
        rank_main(comms[static_cast<size_t>(r)]);
      } catch (...) {
        errors[static_cast<size_t>(r)] = std::current_exception();
        comms[static_cast<size_t>(r)]->abort();
      }
    });
  for (std::thread& t : ranks) t.join();
  // The cause, not a rank that only saw the group abort: the aborting rank's error first.
  std::exception_ptr first, abort_seen;
  for (const std::exception_ptr& e : errors) {
    if (!e) continue;
    try {
      std::rethrow_exception(e);
    } catch (const TpGroupAborted&) {
      if (!abort_seen) abort_seen = e;
    } catch (...) {
      if (!first) first = e;
    }
  }
  if (first) std::rethrow_exception(first);
  if (abort_seen) std::rethrow_exception(abort_seen);
}

void tp_validate(const ModelConfig& c, int world, const std::string& source) {
  auto bad = [&](const std::string& what) {
    throw Error(source + ": cannot split " + std::to_string(world) +
                " ways for tensor parallelism: " + what);
  };
  if (world < 1) bad("the world size must be >= 1");
  if (c.num_kv_heads % world != 0)
    bad("num_key_value_heads " + std::to_string(c.num_kv_heads) +
        " is not a multiple of it (KV heads split across ranks)");
  if (c.intermediate_size % world != 0)
    bad("intermediate_size " + std::to_string(c.intermediate_size) + " is not a multiple of it");
  if (c.elastic.present && !c.elastic.use_softmax)
    bad("a sigmoid router normalises across the layer's KV heads (SPEC §5), which a rank holding "
        "some of them cannot decide alone");
}

std::vector<std::vector<uint8_t>> tp_heads_slice(const std::vector<std::vector<uint8_t>>& heads,
                                                 int rank, int world) {
  std::vector<std::vector<uint8_t>> out;
  for (size_t l = 0; l < heads.size(); ++l) {
    const int64_t H = static_cast<int64_t>(heads[l].size());
    if (world < 1 || H % world != 0 || rank < 0 || rank >= world)
      throw Error("tensor parallel: layer " + std::to_string(l) + " of the head list has " +
                  std::to_string(H) + " KV heads, which do not split " + std::to_string(world) +
                  " ways (rank " + std::to_string(rank) + ")");
    const int64_t h = H / world;
    out.emplace_back(heads[l].begin() + rank * h, heads[l].begin() + (rank + 1) * h);
  }
  return out;
}

void tp_routing_shard(RoutingSetup& setup, int rank, int world) {
  if (const auto* s = dynamic_cast<const StaticRouting*>(setup.policy.get()))
    setup.policy = std::make_unique<StaticRouting>(tp_heads_slice(s->assignment(), rank, world),
                                                   s->retrieval_mode(), s->sparse_mode());
}

TpRouting tp_gather_routing(const std::vector<TpRouting>& ranks) {
  TpRouting out;
  if (ranks.empty()) return out;
  const size_t L = ranks[0].routes.size();
  out.routes.resize(L);
  out.stats.resize(L);
  for (const TpRouting& r : ranks) {
    if (r.routes.size() != L || r.stats.size() != L)
      throw Error("tensor parallel: the ranks routed different layer counts (" +
                  std::to_string(r.routes.size()) + " vs " + std::to_string(L) + ")");
    for (size_t l = 0; l < L; ++l) {
      LayerRoute& o = out.routes[l];
      const LayerRoute& x = r.routes[l];
      // A route without retrieval flags means "retrieval = FA": spell it out once any rank has
      // them, so the concatenation stays aligned with the modes.
      auto flags = [](const LayerRoute& route) {
        if (!route.retrieval.empty()) return route.retrieval;
        std::vector<uint8_t> f;
        for (AttnMode m : route.modes) f.push_back(m == AttnMode::fa);
        return f;
      };
      if (!x.retrieval.empty() && o.retrieval.empty()) o.retrieval = flags(o);
      if (!o.retrieval.empty() || !x.retrieval.empty()) {
        const std::vector<uint8_t> f = flags(x);
        o.retrieval.insert(o.retrieval.end(), f.begin(), f.end());
      }
      o.modes.insert(o.modes.end(), x.modes.begin(), x.modes.end());
      o.router_logits.insert(o.router_logits.end(), x.router_logits.begin(), x.router_logits.end());
      AttnStats& s = out.stats[l];
      const AttnStats& y = r.stats[l];
      s.rho.insert(s.rho.end(), y.rho.begin(), y.rho.end());
      s.attended_pairs.insert(s.attended_pairs.end(), y.attended_pairs.begin(),
                              y.attended_pairs.end());
      s.xa_mask.insert(s.xa_mask.end(), y.xa_mask.begin(), y.xa_mask.end());
      s.causal_pairs = y.causal_pairs;
      s.xa_q_blocks = std::max(s.xa_q_blocks, y.xa_q_blocks);
      s.xa_k_blocks = std::max(s.xa_k_blocks, y.xa_k_blocks);
      s.xa_estimate_scores += y.xa_estimate_scores;
    }
  }
  return out;
}

Model model_load_tp(const std::string& dir, std::shared_ptr<TpComm> comm,
                    std::shared_ptr<Backend> backend) {
  if (!comm) throw Error("model_load_tp: no communicator");
  if (backend->name() != "cpu")
    throw Error(dir +
                ": the in-process tensor-parallel group works on host memory (--backend cpu)");
  const int W = comm->world(), r = comm->rank();
  const ModelConfig full = config_load(dir);
  tp_validate(full, W, dir);
  const int64_t d = full.head_dim, Hq = full.num_heads / W, Hkv = full.num_kv_heads / W;
  const int64_t F = full.intermediate_size / W;
  ModelConfig c = full;
  c.num_heads = Hq;
  c.num_kv_heads = Hkv;
  c.intermediate_size = F;

  auto st = std::make_shared<ShardStorage>();
  st->store = std::make_shared<WeightStore>(WeightStore::open(dir));
  ShardStorage& s = *st;
  const TensorLookup lookup = checkpoint_lookup(full, st->store, dir);
  TensorLookup shard = [&, lookup](const std::string& name) -> std::optional<TensorView> {
    std::optional<TensorView> t = lookup(name);
    if (!t || name.rfind("model.layers.", 0) != 0) return t;
    const bool matrix = t->shape.size() == 2;
    if (ends_with(name, "self_attn.q_proj.weight") || ends_with(name, "self_attn.q_proj.bias"))
      return rows_of(*t, r * Hq * d, Hq * d);
    if (ends_with(name, "self_attn.k_proj.weight") || ends_with(name, "self_attn.k_proj.bias") ||
        ends_with(name, "self_attn.v_proj.weight") || ends_with(name, "self_attn.v_proj.bias"))
      return rows_of(*t, r * Hkv * d, Hkv * d);
    if (ends_with(name, "self_attn.o_proj.weight") && matrix)
      return cols_of(*t, r * Hq * d, Hq * d, s);
    if (ends_with(name, "self_attn.o_proj.bias")) return r == 0 ? *t : zeros_like(*t, s);
    if (ends_with(name, "mlp.gate_proj.weight") || ends_with(name, "mlp.up_proj.weight"))
      return rows_of(*t, r * F, F);
    if (ends_with(name, "mlp.down_proj.weight") && matrix) return cols_of(*t, r * F, F, s);
    return t;  // norms, router weights: whole on every rank
  };
  Model m = model_build(
      c, shard, st,
      dir + " (tensor-parallel rank " + std::to_string(r) + " of " + std::to_string(W) + ")",
      std::move(backend));
  m.tp = std::move(comm);
  return m;
}

}  // namespace elastic

// Tensor-parallel shards of an HF checkpoint and the in-process communicator (see the header).
#include "elastic/tensor_parallel.h"

#include <barrier>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "elastic/error.h"
#include "elastic/safetensors.h"

namespace elastic {
namespace {

// The ranks of one group meet at a barrier twice per all-reduce: once when every rank has
// published its buffer (then each sums all buffers, in rank order, into its own scratch), once
// when every rank has read them all (then each copies its sum over its buffer). Summing in the
// same order on every rank gives every rank the same bits.
struct InProcessGroup {
  explicit InProcessGroup(int world) : slots(static_cast<size_t>(world)), meet(world) {}
  std::vector<const float*> slots;
  std::barrier<> meet;
};

class InProcessComm final : public TpComm {
 public:
  InProcessComm(std::shared_ptr<InProcessGroup> g, int rank) : g_(std::move(g)), rank_(rank) {}
  int rank() const override { return rank_; }
  int world() const override { return static_cast<int>(g_->slots.size()); }
  void all_reduce_sum(float* x, int64_t n) override {
    g_->slots[static_cast<size_t>(rank_)] = x;
    g_->meet.arrive_and_wait();
    sum_.assign(static_cast<size_t>(n), 0.f);
    for (const float* s : g_->slots)
      for (int64_t i = 0; i < n; ++i) sum_[static_cast<size_t>(i)] += s[i];
    g_->meet.arrive_and_wait();
    std::memcpy(x, sum_.data(), static_cast<size_t>(n) * sizeof(float));
  }

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

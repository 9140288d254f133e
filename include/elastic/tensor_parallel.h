// Tensor parallelism in the Megatron layout: rank r of W holds KV heads
// [r Hkv/W, (r+1) Hkv/W) with their G query heads each (q/k/v rows: column-parallel), the
// matching columns of o_proj (row-parallel), rows F/W of gate_proj and up_proj and those columns
// of down_proj; embeddings, norms, lm_head and the routers' weights (shared by a layer's KV
// heads, SPEC §5) are whole on every rank. A rank's shard is an ordinary Model with Hq/W, Hkv/W
// and F/W (model_load_tp): the forward runs unchanged, except that the outputs of o_proj and
// down_proj are partial sums that `Model::tp` all-reduces before the residual adds them. o_proj's
// bias is rank 0's alone (the others hold zeros), so the sum adds it once.
//
// The communicator is an interface: tp_group_in_process runs the ranks as threads of one
// process over host memory (the CPU reference, and the sharding logic's tests); an NCCL one
// for GPUs is issue 14's next step. Router decisions are taken where the heads live, from that
// rank's keys: exact for softmax routers (each head's decision reads its own pooled keys), not
// for sigmoid routers (their LayerNorm spans the layer's KV heads), which model_load_tp refuses.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "elastic/attention.h"
#include "elastic/error.h"
#include "elastic/model.h"
#include "elastic/routing.h"
#include "elastic/routing_setup.h"

namespace elastic {

// What a rank's all-reduce throws once another rank of its group failed (TpComm::abort): not
// the cause, which tp_run reports instead.
class TpGroupAborted : public Error {
 public:
  using Error::Error;
};

class TpComm {
 public:
  virtual ~TpComm() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  // x[0..n) (host memory) = the sum of every rank's x[0..n); all ranks get the same bits.
  // Every rank calls it with the same n, in the same order.
  virtual void all_reduce_sum(float* x, int64_t n) = 0;
  // Called on a rank that failed: the other ranks' pending and later all-reduces must end
  // (throw) rather than wait for it.
  virtual void abort() {}
};

// Communicator groups by name: "threads" (tp_group_in_process, always there) and, in builds
// with the CUDA backend and NCCL, "nccl" (tp_group_nccl_register: rank r on GPU r of this
// process). Throws naming the known groups for an unknown name.
using TpGroupFactory = std::function<std::vector<std::shared_ptr<TpComm>>(int world)>;
void tp_group_register(const std::string& name, TpGroupFactory factory);
std::vector<std::shared_ptr<TpComm>> tp_group_create(const std::string& name, int world);

// W communicators of one group whose ranks are threads of this process.
std::vector<std::shared_ptr<TpComm>> tp_group_in_process(int world);

// Runs rank_main on `world` threads of this process, one per rank of an in-process group, each
// with `threads_per_rank` OpenMP threads, and returns when all are done. A rank that throws
// aborts the group (the others' all-reduces throw rather than wait for it); the first rank's own
// error is then rethrown here.
void tp_run_in_process(int world, int threads_per_rank,
                       const std::function<void(std::shared_ptr<TpComm>)>& rank_main);
// The same over a group already made (one thread per communicator, in rank order).
void tp_run(const std::vector<std::shared_ptr<TpComm>>& comms, int threads_per_rank,
            const std::function<void(std::shared_ptr<TpComm>)>& rank_main);

// Throws naming the field when `c` cannot be split W ways (KV heads, intermediate size).
void tp_validate(const ModelConfig& c, int world, const std::string& source);

// Rank `rank`'s KV heads of a [L][Hkv] head list (a static routing assignment); throws when Hkv
// does not split `world` ways.
std::vector<std::vector<uint8_t>> tp_heads_slice(const std::vector<std::vector<uint8_t>>& heads,
                                                 int rank, int world);

// Makes a routing setup of the whole model rank `rank`'s: a static assignment is sliced to the
// rank's KV heads; dense routing and routers (which decide each head from its own keys) stay.
void tp_routing_shard(RoutingSetup& setup, int rank, int world);

// What a request routed and attended: its routes [L] and the stats of its prefill [L], of one
// rank (its heads) or of the whole model.
struct TpRouting {
  std::vector<LayerRoute> routes;
  std::vector<AttnStats> stats;
};
// The whole model's from the ranks' (in rank order): every layer's KV heads (modes, router
// logits, decisions) and query heads (rho, attended pairs) concatenated, the XA estimation
// scores summed; what report_build reads with the whole model's head counts.
TpRouting tp_gather_routing(const std::vector<TpRouting>& ranks);

// Rank `comm->rank()`'s shard of the HF folder `dir`, its forward tied to `comm`.
Model model_load_tp(const std::string& dir, std::shared_ptr<TpComm> comm,
                    std::shared_ptr<Backend> backend = backend_cpu());

}  // namespace elastic

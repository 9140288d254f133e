// Router training (SPEC §5, §7): the public entry points of the training core (src/train/).
//
// train_step_run is the verification step behind `elastic train-step`: one forward + backward
// of an Elastic checkpoint on a given batch with given Gumbel uniforms and multipliers, returning
// the loss terms and every gradient under the fixture names (router-train-step's case.json):
// loss, ce, sparsity_loss, omega.i, decisions.i, grad.<parameter name>, grad.lambda1/2.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "elastic/attention.h"
#include "elastic/safetensors.h"

namespace elastic {

struct TrainStepRequest {
  std::string model_dir;   // an Elastic checkpoint (backbone + mask_allocator tensors)
  std::string batch_path;  // safetensors: input_ids.i, labels.i, gumbel_u.i [L, Hkv, 2], lambda1/2
  std::vector<int64_t> tasks;    // [samples] task id of every sample
  std::vector<double> targets;   // [samples] target Omega of every sample's task
  double temperature = 1.0;
  SsaOptions ssa;                // block, sink, local of the sparse mode
  int64_t pool_tokens = 100;
  bool segment_mean_pooling = false;  // the reference's training pooling instead of boundary
  bool float64 = false;               // the double-precision reference (test mode)
};

struct TrainStepResult {
  double loss = 0, ce = 0, sparsity_loss = 0;
  std::vector<double> omega;                    // [samples]
  std::vector<std::vector<uint8_t>> decisions;  // [samples][L * Hkv] 1 = retrieval
  std::vector<SafetensorsWriteItem> items;      // every output under the fixture names (f32/i64)
};

// Throws elastic::Error naming the file and tensor for a malformed batch or checkpoint.
TrainStepResult train_step_run(const TrainStepRequest& request);

}  // namespace elastic

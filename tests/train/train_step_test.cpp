// train_step_run against ../shared/fixtures/hf/router-train-step: one router-training step of an
// Elastic checkpoint (HF transformers in float64 from bf16 weights): loss terms, decisions,
// Omega and the gradient of every router tensor and multiplier.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>

#include "elastic/safetensors.h"
#include "elastic/train.h"

namespace elastic {
namespace {

const std::string kCase = std::string(ELASTIC_SHARED_DIR) + "/fixtures/hf/router-train-step";

TrainStepRequest fixture_request() {
  TrainStepRequest rq;
  rq.model_dir = kCase;
  rq.batch_path = kCase + "/expected.safetensors";
  rq.tasks = {1, 3};
  rq.targets = {0.7, 1.0};
  rq.temperature = 1.3;
  rq.ssa.block = 32;
  rq.ssa.sink_tokens = 32;
  rq.ssa.local_tokens = 96;
  rq.pool_tokens = 100;
  return rq;
}

// Relative error of a tensor against the fixture: ||got - want|| / max(||want||, tiny).
double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

void expect_matches_fixture(const TrainStepResult& r, double tol) {
  const WeightStore want = WeightStore::open(kCase + "/expected.safetensors");
  int compared = 0;
  double worst = 0;
  std::string worst_name;
  for (const SafetensorsWriteItem& it : r.items) {
    ASSERT_TRUE(want.contains(it.name)) << it.name << " is not in the fixture";
    const TensorView w = want.get(it.name);
    ASSERT_EQ(w.shape, it.shape) << it.name;
    if (it.dtype == DType::i64) {
      std::vector<int64_t> got(it.bytes.size() / 8);
      std::memcpy(got.data(), it.bytes.data(), it.bytes.size());
      EXPECT_EQ(got, w.to_i64()) << it.name;
    } else {
      std::vector<float> got(it.bytes.size() / 4);
      std::memcpy(got.data(), it.bytes.data(), it.bytes.size());
      const double e = rel_error(got, w.to_f32());
      EXPECT_LE(e, tol) << it.name;
      if (e > worst) worst = e, worst_name = it.name;
    }
    ++compared;
  }
  // loss, ce, sparsity_loss, 2 x (omega, decisions), 30 router tensors, 2 multipliers
  EXPECT_EQ(compared, 3 + 4 + 30 + 2);
  std::printf("  worst relative error %.2e (%s)\n", worst, worst_name.c_str());
}

// fp32 reference: 1e-4 relative (the bar); the float path accumulates in double and
// rounds stored activations to fp32 (~6e-8 relative each), so it lands near 1e-6.
TEST(TrainStep, Fp32MatchesRouterTrainStepFixture) {
  expect_matches_fixture(train_step_run(fixture_request()), 1e-4);
}

// float64 mode: the same computation as the fixture's float64 run, up to summation order and
// the fixture's storage in float32 (6e-8 relative).
TEST(TrainStep, Float64MatchesRouterTrainStepFixture) {
  TrainStepRequest rq = fixture_request();
  rq.float64 = true;
  expect_matches_fixture(train_step_run(rq), 1e-5);
}

}  // namespace
}  // namespace elastic

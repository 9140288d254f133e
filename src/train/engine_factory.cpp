// The training engine of a backend name (cpu here; cuda when the CUDA trainer is built).
#include <string>

#include "elastic/error.h"
#include "train/engine.h"

namespace elastic::train {

std::unique_ptr<TrainEngine> train_engine_create(const std::string& backend, const ModelConfig& c,
                                                 ParamSet<float> backbone, ParamSet<float> router,
                                                 const TrainOptions& opt) {
  if (backend == "cpu") return train_engine_cpu(c, std::move(backbone), std::move(router), opt);
  throw Error("training backend '" + backend + "' is not available in this build (expected cpu)");
}

}  // namespace elastic::train

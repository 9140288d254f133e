// The training engine of a backend name (cpu here; cuda when the CUDA trainer is built).
#include <map>
#include <string>

#include "elastic/error.h"
#include "train/engine.h"

namespace elastic::train {

namespace {

std::map<std::string, TrainEngineFactory>& registry() {
  static std::map<std::string, TrainEngineFactory> r;
  return r;
}

}  // namespace

void train_engine_register(const std::string& backend, TrainEngineFactory factory) {
  registry()[backend] = std::move(factory);
}

std::unique_ptr<TrainEngine> train_engine_create(const std::string& backend, const ModelConfig& c,
                                                 ParamSet<float> backbone, ParamSet<float> router,
                                                 const TrainOptions& opt) {
  if (backend == "cpu") return train_engine_cpu(c, std::move(backbone), std::move(router), opt);
  auto it = registry().find(backend);
  if (it == registry().end())
    throw Error("training backend '" + backend + "' is not available in this build (expected cpu" +
                std::string(registry().empty() ? "" : " or a registered one") + ")");
  return it->second(c, std::move(backbone), std::move(router), opt);
}

}  // namespace elastic::train

// The CUDA training engine for front ends: registers it under the backend name "cuda" with the
// training core (src/train/engine.h), so `train-router --backend cuda` and train_step_run with
// backend "cuda" build it. The core library does not link the CUDA one; a front end that does
// calls this once.
#pragma once

namespace elastic {

void train_engine_cuda_register();

}  // namespace elastic

// The NCCL communicator group (issue 14): rank r of W on GPU r of this process, its
// all-reduce of host buffers staged through a device buffer of the rank's GPU. Registered
// under the name "nccl" with the communicator registry (tensor_parallel.h) by front ends of
// builds that found NCCL in the CUDA toolkit; NVLink multicast stays off (NCCL_NVLS_ENABLE=0).
#pragma once

#include <memory>
#include <vector>

#include "elastic/tensor_parallel.h"

namespace elastic {

// W communicators, rank r on CUDA device r (ncclCommInitAll); throws naming W and the GPU count
// when the machine has fewer than W GPUs.
std::vector<std::shared_ptr<TpComm>> tp_group_nccl(int world);

// tp_group_register("nccl", tp_group_nccl).
void tp_group_nccl_register();

}  // namespace elastic

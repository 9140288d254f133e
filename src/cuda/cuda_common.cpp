// Error reporting for CUDA calls and the device memory arena.
#include <string>

#include "elastic/cuda/arena.h"
#include "elastic/cuda/cuda_check.h"
#include "elastic/error.h"

namespace elastic::cuda {

void cuda_check_failed(cudaError_t err, const char* expr, const char* file, int line) {
  throw InternalError(std::string("CUDA call failed: ") + expr + ": " + cudaGetErrorName(err) +
                      " (" + cudaGetErrorString(err) + ") at " + file + ":" + std::to_string(line));
}

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return count;
}

DeviceArena::DeviceArena(size_t capacity_bytes) : capacity_(capacity_bytes) {
  if (capacity_ > 0) ELASTIC_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&base_), capacity_));
}

DeviceArena::~DeviceArena() {
  if (base_) cudaFree(base_);  // no throw from a destructor; a failure here is not actionable
}

void* DeviceArena::alloc(size_t bytes, size_t align) {
  ELASTIC_CHECK(align > 0 && (align & (align - 1)) == 0);
  const size_t start = (used_ + align - 1) & ~(align - 1);
  if (start + bytes > capacity_)
    throw Error("DeviceArena: request of " + std::to_string(bytes) + " bytes does not fit (" +
                std::to_string(capacity_ - used_) + " of " + std::to_string(capacity_) +
                " bytes left)");
  used_ = start + bytes;
  return base_ + start;
}

}  // namespace elastic::cuda

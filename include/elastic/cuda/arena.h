// Device memory arena: one cudaMalloc, bump allocation, freed as a whole. Plans and the model
// take their device buffers from an arena so that run() never allocates (and so never
// synchronises) and a whole forward pass can be captured in a CUDA graph.
#pragma once

#include <cstddef>
#include <cstdint>

namespace elastic::cuda {

class DeviceArena {
 public:
  explicit DeviceArena(size_t capacity_bytes);
  ~DeviceArena();
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;

  // Returns `bytes` of device memory aligned to `align` (a power of two). Throws elastic::Error
  // naming the request and the arena's capacity when it does not fit.
  void* alloc(size_t bytes, size_t align = 256);
  template <typename T>
  T* alloc_array(size_t count) {
    return static_cast<T*>(alloc(count * sizeof(T), alignof(T) > 256 ? alignof(T) : 256));
  }
  // Forgets every allocation (the memory stays reserved).
  void reset() { used_ = 0; }
  size_t used() const { return used_; }
  size_t capacity() const { return capacity_; }

 private:
  char* base_ = nullptr;
  size_t capacity_ = 0;
  size_t used_ = 0;
};

}  // namespace elastic::cuda

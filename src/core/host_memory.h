// Host buffers that the CPU kernels stream through (packed weights, the KV cache).
#pragma once

#include <cstddef>
#include <memory>

namespace elastic::detail {

// An owning buffer of `bytes` bytes, 64-byte aligned, contents indeterminate. Buffers of 2 MiB
// or more are 2 MiB aligned and advised as transparent huge pages before the first touch:
// a stream then crosses no 4 KiB page boundary, where the hardware prefetchers stop, and
// takes no TLB miss per 4 KiB (a 2-thread read of 4 KiB pages measured 41-45 GB/s here
// against 60-63 GB/s on huge pages). Throws elastic::Error when out of memory.
std::shared_ptr<void> host_stream_buffer(size_t bytes);

}  // namespace elastic::detail

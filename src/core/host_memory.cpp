#include "core/host_memory.h"

#include <sys/mman.h>

#include <cstdlib>
#include <string>

#include "elastic/error.h"

namespace elastic::detail {

std::shared_ptr<void> host_stream_buffer(size_t bytes) {
  constexpr size_t kHugePage = size_t{2} << 20;
  const size_t align = bytes >= kHugePage ? kHugePage : 64;
  const size_t size = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, size == 0 ? align : size);
  if (!p) throw Error("out of memory: cannot allocate " + std::to_string(bytes) + " bytes");
  if (align == kHugePage) madvise(p, size, MADV_HUGEPAGE);  // advisory; before first touch
  return std::shared_ptr<void>(p, std::free);
}

}  // namespace elastic::detail

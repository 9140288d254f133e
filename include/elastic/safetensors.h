// Safetensors: memory-mapped reading (single file or sharded via model.safetensors.index.json)
// with strict header validation, and atomic writing.
//
// File layout: u64 little-endian header length n, n bytes of UTF-8 JSON
//   {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}
// then the data section; offsets are relative to the data section.
// Invariants checked on open: header length <= kSafetensorsMaxHeaderBytes and inside the file;
// valid UTF-8 JSON object; unique tensor names; known dtype; non-negative shape; end - begin ==
// numel * dtype size; offsets inside the data section; no two tensors overlap; every tensor
// starts at a file offset that is a multiple of its element size (so mapped data can be read
// through typed pointers). Every violation throws elastic::Error naming the file and tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "elastic/fileio.h"
#include "elastic/tensor.h"

namespace elastic {

constexpr uint64_t kSafetensorsMaxHeaderBytes = 100ull << 20;  // 100 MiB, as upstream

struct SafetensorsEntry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
};

// Parses and validates a header (the JSON text) against a data section of data_bytes bytes.
// `source` names the file in error messages. Throws elastic::Error. Checks everything above
// except alignment, which needs the header's position in the file (see parse_buffer / open).
std::vector<SafetensorsEntry> safetensors_parse_header(
    std::string_view json, uint64_t data_bytes, const std::string& source,
    std::map<std::string, std::string>* metadata);

// Validates a whole in-memory file (header length prefix + header + data), including the
// alignment rule relative to the start of the buffer. For fuzzing/tests.
std::vector<SafetensorsEntry> safetensors_parse_buffer(const void* bytes, size_t size,
                                                       const std::string& source);

class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  // Throws naming the file and the tensor when absent.
  TensorView get(const std::string& name) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  void* map_slot_ = nullptr;             // this mapping's entry in the SIGBUS handler's table
  const unsigned char* data_ = nullptr;  // start of the data section
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a model folder: model.safetensors, or the shards named by
// model.safetensors.index.json ("weight_map": tensor -> shard file). A path to a single
// .safetensors file also works.
class WeightStore {
 public:
  static WeightStore open(const std::string& path);

  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  TensorView get(const std::string& name) const;  // throws naming the tensor and the folder
  std::vector<std::string> names() const;
  const std::string& source() const { return source_; }
  uint64_t total_bytes() const;

 private:
  void protect_inputs();

  std::string source_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
  // The weight files and the model folder's config and tokenizer files: outputs may not replace
  // them while the store (and a Model built on it) lives.
  std::shared_ptr<const ProtectedInputs> inputs_;
};

// One tensor to write; data holds numel * dtype_size bytes.
struct SafetensorsWriteItem {
  std::string name;
  DType dtype;
  Shape shape;
  std::vector<unsigned char> bytes;
};

SafetensorsWriteItem safetensors_item_f32(const std::string& name, const Shape& shape,
                                          const float* data);

// Writes atomically: a temporary file in the same folder, fsync, then rename over `path`.
// Data is laid out larger element types first, so every tensor is aligned; names must be
// unique, valid UTF-8 and not "__metadata__" (elastic::Error otherwise).
void safetensors_write(const std::string& path, const std::vector<SafetensorsWriteItem>& items,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace elastic

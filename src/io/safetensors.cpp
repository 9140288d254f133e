// Safetensors reader/writer. See include/elastic/safetensors.h for the format and invariants.
#include "elastic/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "elastic/error.h"
#include "elastic/fileio.h"

namespace elastic {
namespace {

using json = nlohmann::json;

std::string quote(const std::string& s) { return "'" + s + "'"; }

uint64_t read_u64_le(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

std::vector<SafetensorsEntry> safetensors_parse_header(std::string_view text, uint64_t data_bytes,
                                                       const std::string& source,
                                                       std::map<std::string, std::string>* metadata) {
  json header;
  try {
    header = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    throw Error(source + ": safetensors header is not valid UTF-8 JSON: " + e.what());
  }
  if (!header.is_object())
    throw Error(source + ": safetensors header must be a JSON object of tensors");

  std::vector<SafetensorsEntry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw Error(source + ": '__metadata__' must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw Error(source + ": '__metadata__." + m.key() + "' must be a string");
        if (metadata) (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    std::string where = source + ": tensor " + quote(name);
    if (!v.is_object()) throw Error(where + ": entry must be an object with dtype, shape, data_offsets");
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) throw Error(where + ": missing string field 'dtype'");
    auto dtype = dtype_from_name(dt->get<std::string>());
    if (!dtype)
      throw Error(where + ": unknown dtype '" + dt->get<std::string>() +
                  "' (expected F32, F16, BF16, F64, I64, I32, I16, I8, U8 or BOOL)");
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) throw Error(where + ": missing array field 'shape'");
    SafetensorsEntry e;
    e.name = name;
    e.dtype = *dtype;
    uint64_t numel = 1;
    for (const json& d : *sh) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
        throw Error(where + ": shape " + sh->dump() + " must hold non-negative integers");
      uint64_t dim = d.get<uint64_t>();
      if (dim > (1ull << 62) || __builtin_mul_overflow(numel, dim, &numel))
        throw Error(where + ": shape " + sh->dump() + " has too many elements");
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      throw Error(where + ": 'data_offsets' must be [begin, end] with non-negative integers");
    e.begin = (*off)[0].get<uint64_t>();
    e.end = (*off)[1].get<uint64_t>();
    if (e.end < e.begin)
      throw Error(where + ": data_offsets [" + std::to_string(e.begin) + ", " +
                  std::to_string(e.end) + "] end before begin");
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(e.dtype)), &nbytes) ||
        nbytes != e.end - e.begin)
      throw Error(where + ": shape " + shape_str(e.shape) + " x " +
                  std::string(dtype_name(e.dtype)) + " needs " + std::to_string(numel) + " x " +
                  std::to_string(dtype_size(e.dtype)) + " bytes but data_offsets span " +
                  std::to_string(e.end - e.begin));
    if (e.end > data_bytes)
      throw Error(where + ": data_offsets end " + std::to_string(e.end) +
                  " is beyond the data section of " + std::to_string(data_bytes) + " bytes");
    entries.push_back(std::move(e));
  }
  // No overlaps: sort by begin and compare neighbours (empty tensors overlap nothing).
  std::vector<const SafetensorsEntry*> order;
  for (const auto& e : entries)
    if (e.end > e.begin) order.push_back(&e);
  std::sort(order.begin(), order.end(),
            [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i]->begin < order[i - 1]->end)
      throw Error(source + ": tensors " + quote(order[i - 1]->name) + " and " +
                  quote(order[i]->name) + " overlap in the data section (bytes " +
                  std::to_string(order[i]->begin) + ".." + std::to_string(order[i - 1]->end) + ")");
  return entries;
}

std::vector<SafetensorsEntry> safetensors_parse_buffer(const void* bytes, size_t size,
                                                       const std::string& source) {
  const auto* p = static_cast<const unsigned char*>(bytes);
  if (size < 8)
    throw Error(source + ": file of " + std::to_string(size) +
                " bytes is too short for a safetensors header (needs at least 8)");
  uint64_t n = read_u64_le(p);
  if (n > kSafetensorsMaxHeaderBytes)
    throw Error(source + ": header length " + std::to_string(n) + " exceeds the limit of " +
                std::to_string(kSafetensorsMaxHeaderBytes) + " bytes");
  if (n > size - 8)
    throw Error(source + ": header length " + std::to_string(n) + " is beyond the end of the file (" +
                std::to_string(size) + " bytes)");
  std::string_view text(reinterpret_cast<const char*>(p + 8), n);
  return safetensors_parse_header(text, size - 8 - n, source, nullptr);
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open safetensors file: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw Error(path + ": cannot stat: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw Error(path + ": file of " + std::to_string(size) +
                " bytes is too short for a safetensors header (needs at least 8)");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) throw Error(path + ": mmap failed: " + std::strerror(errno));
  f->map_ = map;
  f->map_size_ = size;
  const auto* p = static_cast<const unsigned char*>(map);
  uint64_t n = read_u64_le(p);
  if (n > kSafetensorsMaxHeaderBytes)
    throw Error(path + ": header length " + std::to_string(n) + " exceeds the limit of " +
                std::to_string(kSafetensorsMaxHeaderBytes) + " bytes");
  if (n > size - 8)
    throw Error(path + ": header length " + std::to_string(n) +
                " is beyond the end of the file (" + std::to_string(size) + " bytes)");
  std::string_view text(reinterpret_cast<const char*>(p + 8), n);
  f->entries_ = safetensors_parse_header(text, size - 8 - n, path, &f->metadata_);
  f->data_ = p + 8 + n;
  for (size_t i = 0; i < f->entries_.size(); ++i) f->index_[f->entries_[i].name] = i;
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

TensorView SafetensorsFile::get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error(path_ + ": tensor '" + name + "' not found");
  const SafetensorsEntry& e = entries_[it->second];
  return TensorView{e.name, e.dtype, e.shape, data_ + e.begin};
}

WeightStore WeightStore::open(const std::string& path) {
  namespace fs = std::filesystem;
  WeightStore ws;
  ws.source_ = path;
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error(path + ": no such file or folder");
  if (!fs::is_directory(path, ec)) {
    ws.files_.push_back(SafetensorsFile::open(path));
  } else {
    fs::path dir(path);
    fs::path index = dir / "model.safetensors.index.json";
    fs::path single = dir / "model.safetensors";
    if (fs::exists(index, ec)) {
      json j;
      std::string text = read_file(index.string());
      try {
        j = json::parse(text);
      } catch (const json::exception& e) {
        throw Error(index.string() + ": not valid UTF-8 JSON: " + e.what());
      }
      if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
        throw Error(index.string() + ": expected an object with a 'weight_map' object");
      std::map<std::string, size_t> shard_index;
      for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
        if (!it.value().is_string())
          throw Error(index.string() + ": weight_map['" + it.key() + "'] must be a file name");
        std::string shard = it.value().get<std::string>();
        if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
          throw Error(index.string() + ": weight_map['" + it.key() + "'] = '" + shard +
                      "' must be a plain file name in the same folder");
        auto s = shard_index.find(shard);
        if (s == shard_index.end()) {
          fs::path sp = dir / shard;
          if (!fs::exists(sp, ec))
            throw Error(index.string() + ": shard '" + shard + "' (named for tensor '" + it.key() +
                        "') does not exist in " + dir.string());
          ws.files_.push_back(SafetensorsFile::open(sp.string()));
          s = shard_index.emplace(shard, ws.files_.size() - 1).first;
        }
        if (!ws.files_[s->second]->contains(it.key()))
          throw Error(index.string() + ": tensor '" + it.key() + "' is mapped to shard '" + shard +
                      "' but that file does not hold it");
        ws.where_[it.key()] = s->second;
      }
      return ws;
    }
    if (!fs::exists(single, ec))
      throw Error(path + ": no model.safetensors or model.safetensors.index.json in this folder");
    ws.files_.push_back(SafetensorsFile::open(single.string()));
  }
  for (size_t i = 0; i < ws.files_.size(); ++i)
    for (const auto& e : ws.files_[i]->entries()) ws.where_[e.name] = i;
  return ws;
}

TensorView WeightStore::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw Error(source_ + ": tensor '" + name + "' not found in the checkpoint");
  return files_[it->second]->get(name);
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> r;
  for (const auto& [n, i] : where_) r.push_back(n);
  return r;
}

uint64_t WeightStore::total_bytes() const {
  uint64_t b = 0;
  for (const auto& [n, i] : where_) {
    TensorView t = files_[i]->get(n);
    b += t.nbytes();
  }
  return b;
}

SafetensorsWriteItem safetensors_item_f32(const std::string& name, const Shape& shape,
                                          const float* data) {
  SafetensorsWriteItem it{name, DType::f32, shape, {}};
  size_t n = static_cast<size_t>(shape_numel(shape)) * sizeof(float);
  it.bytes.resize(n);
  if (n) std::memcpy(it.bytes.data(), data, n);
  return it;
}

void safetensors_write(const std::string& path, const std::vector<SafetensorsWriteItem>& items,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& it : items) {
    uint64_t n = static_cast<uint64_t>(shape_numel(it.shape)) * dtype_size(it.dtype);
    ELASTIC_CHECK_MSG(n == it.bytes.size(), it.name);
    header[it.name] = {{"dtype", std::string(dtype_name(it.dtype))},
                       {"shape", it.shape},
                       {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  while ((text.size() + 8) % 8) text.push_back(' ');  // align the data section to 8 bytes
  std::string blob;
  blob.reserve(8 + text.size() + offset);
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) blob.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  blob += text;
  for (const auto& it : items) blob.append(reinterpret_cast<const char*>(it.bytes.data()), it.bytes.size());
  write_file_atomic(path, blob);
}

}  // namespace elastic

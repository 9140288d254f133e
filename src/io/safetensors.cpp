// Safetensors reader/writer. See include/elastic/safetensors.h for the format and invariants.
#include "elastic/safetensors.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>

#include "elastic/error.h"
#include "elastic/fileio.h"
#include "io/message.h"

namespace elastic {
namespace {

using json = nlohmann::json;
using io_detail::json_error_text;
using io_detail::quote_name;

// ---- SIGBUS on a mapped file that shrank ----
// The size is checked against the header at open, but a file truncated (or rewritten in place)
// afterwards makes the kernel raise SIGBUS on the first access to a page past its new end, deep
// inside a matmul. A table of live mappings, readable by the handler without locks or
// allocation, turns that into a one-line error naming the file and exit status 1.

constexpr int kMapSlots = 256;
struct MapSlot {
  std::atomic<int> state{0};  // 0 free, 1 being filled, 2 live
  const char* begin = nullptr;
  size_t size = 0;
  char path[PATH_MAX];
};
MapSlot g_maps[kMapSlots];
struct sigaction g_previous_sigbus {};

void write_stderr(const char* s) {
  size_t n = std::strlen(s);
  while (n > 0) {
    ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<size_t>(w);
  }
}

extern "C" void mapped_file_sigbus(int sig, siginfo_t* info, void* uctx) {
  const char* addr = static_cast<const char*>(info->si_addr);
  for (const MapSlot& m : g_maps) {
    if (m.state.load() != 2 || addr < m.begin || addr >= m.begin + m.size) continue;
    write_stderr("elastic: error: ");
    write_stderr(m.path);
    write_stderr(
        ": the file became shorter while it was mapped (truncated or rewritten in place "
        "after it was opened); cannot read the weights\n");
    ::_exit(1);
  }
  // Not one of our mappings: whatever was installed before decides (by default, a core dump).
  if (g_previous_sigbus.sa_flags & SA_SIGINFO) {
    if (g_previous_sigbus.sa_sigaction) g_previous_sigbus.sa_sigaction(sig, info, uctx);
    return;
  }
  if (g_previous_sigbus.sa_handler != SIG_DFL && g_previous_sigbus.sa_handler != SIG_IGN) {
    g_previous_sigbus.sa_handler(sig);
    return;
  }
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(SIGBUS, &dfl, nullptr);  // returning re-executes the access: default action now
}

void install_sigbus_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = mapped_file_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGBUS, &sa, &g_previous_sigbus);
  });
}

MapSlot* register_mapping(const void* begin, size_t size, const std::string& path) {
  install_sigbus_handler();
  for (MapSlot& m : g_maps) {
    int expected = 0;
    if (!m.state.compare_exchange_strong(expected, 1)) continue;
    m.begin = static_cast<const char*>(begin);
    m.size = size;
    size_t n = std::min(path.size(), sizeof m.path - 1);
    std::memcpy(m.path, path.data(), n);
    m.path[n] = '\0';
    m.state.store(2);
    return &m;
  }
  return nullptr;  // table full: that mapping keeps the plain SIGBUS
}

uint64_t read_u64_le(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Splits a whole file (u64 length + header + data) and validates it. Also checks that every
// tensor starts at a file offset that is a multiple of its element size, so that a page-aligned
// mapping gives naturally aligned element pointers (HF's writer guarantees this by padding the
// header to 8 bytes and sorting tensors by alignment). *data_offset = 8 + header length.
std::vector<SafetensorsEntry> parse_file_bytes(const unsigned char* p, size_t size,
                                               const std::string& source,
                                               std::map<std::string, std::string>* metadata,
                                               size_t* data_offset) {
  if (size < 8)
    throw Error(source + ": file of " + std::to_string(size) +
                " bytes is too short for a safetensors header (needs at least 8)");
  uint64_t n = read_u64_le(p);
  if (n > kSafetensorsMaxHeaderBytes)
    throw Error(source + ": header length " + std::to_string(n) + " exceeds the limit of " +
                std::to_string(kSafetensorsMaxHeaderBytes) + " bytes");
  if (n > size - 8)
    throw Error(source + ": header length " + std::to_string(n) +
                " is beyond the end of the file (expected at most " + std::to_string(size - 8) +
                " for a file of " + std::to_string(size) + " bytes)");
  std::string_view text(reinterpret_cast<const char*>(p + 8), n);
  std::vector<SafetensorsEntry> entries =
      safetensors_parse_header(text, size - 8 - n, source, metadata);
  for (const auto& e : entries) {
    size_t align = dtype_size(e.dtype);
    if ((8 + n + e.begin) % align != 0)
      throw Error(source + ": tensor " + quote_name(e.name) + " starts at file byte " +
                  std::to_string(8 + n + e.begin) + ", expected a multiple of its element size " +
                  std::to_string(align) + " (" + std::string(dtype_name(e.dtype)) + ")");
  }
  *data_offset = 8 + n;
  return entries;
}

}  // namespace

std::vector<SafetensorsEntry> safetensors_parse_header(
    std::string_view text, uint64_t data_bytes, const std::string& source,
    std::map<std::string, std::string>* metadata) {
  // The parser callback sees every key of the top-level object (depth 1); a repeated tensor
  // name would otherwise silently replace the first entry.
  std::string duplicate;
  bool has_duplicate = false;
  std::map<std::string, bool> seen;
  json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!seen.emplace(key, true).second && !has_duplicate) {
        has_duplicate = true;
        duplicate = key;
      }
    }
    return true;
  };
  json header;
  try {
    header = json::parse(text.begin(), text.end(), on_event);
  } catch (const json::exception& e) {
    throw Error(source + ": safetensors header (" + std::to_string(text.size()) +
                " bytes) is not valid UTF-8 JSON: " + json_error_text(e.what()));
  }
  if (!header.is_object())
    throw Error(source + ": safetensors header must be a JSON object of tensors, got a " +
                header.type_name());
  if (has_duplicate)
    throw Error(source + ": safetensors header names " + quote_name(duplicate) +
                " twice (expected unique tensor names)");

  std::vector<SafetensorsEntry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw Error(source + ": '__metadata__' must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw Error(source + ": '__metadata__." + io_detail::printable(m.key()) +
                      "' must be a string");
        if (metadata) (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    std::string where = source + ": tensor " + quote_name(name);
    if (!v.is_object())
      throw Error(where + ": entry must be an object with dtype, shape, data_offsets");
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string())
      throw Error(where + ": missing string field 'dtype' (expected e.g. \"BF16\")");
    auto dtype = dtype_from_name(dt->get<std::string>());
    if (!dtype)
      throw Error(where + ": unknown dtype " + quote_name(dt->get<std::string>()) +
                  " (expected F32, F16, BF16, F64, I64, I32, I16, I8, U8 or BOOL)");
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array())
      throw Error(where +
                  ": missing array field 'shape' (expected a list of non-negative integers)");
    SafetensorsEntry e;
    e.name = name;
    e.dtype = *dtype;
    // Every dimension and every prefix product stays <= 2^62, so shape_numel (int64) and
    // numel * dtype size (uint64) cannot overflow.
    uint64_t numel = 1;
    for (const json& d : *sh) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
        throw Error(where + ": shape " + sh->dump() + " must hold non-negative integers");
      uint64_t dim = d.get<uint64_t>();
      if (dim > (1ull << 62) || __builtin_mul_overflow(numel, dim, &numel) || numel > (1ull << 62))
        throw Error(where + ": shape " + sh->dump() + " has too many elements (at most 2^62)");
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
                  std::to_string(e.end) + "] end before begin (expected begin <= end)");
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(e.dtype)), &nbytes) ||
        nbytes != e.end - e.begin)
      throw Error(where + ": shape " + shape_str(e.shape) + " x " +
                  std::string(dtype_name(e.dtype)) + " needs " + std::to_string(numel) + " x " +
                  std::to_string(dtype_size(e.dtype)) + " bytes but data_offsets span " +
                  std::to_string(e.end - e.begin));
    if (e.end > data_bytes)
      throw Error(where + ": data_offsets end " + std::to_string(e.end) +
                  " is beyond the data section of " + std::to_string(data_bytes) +
                  " bytes (file truncated or offsets out of range)");
    entries.push_back(std::move(e));
  }
  // No overlaps: sort by begin and compare neighbours (empty tensors overlap nothing).
  std::vector<const SafetensorsEntry*> order;
  for (const auto& e : entries)
    if (e.end > e.begin) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i]->begin < order[i - 1]->end)
      throw Error(source + ": tensors " + quote_name(order[i - 1]->name) + " and " +
                  quote_name(order[i]->name) + " overlap in the data section (bytes " +
                  std::to_string(order[i]->begin) + ".." + std::to_string(order[i - 1]->end) +
                  "; expected disjoint data_offsets)");
  return entries;
}

std::vector<SafetensorsEntry> safetensors_parse_buffer(const void* bytes, size_t size,
                                                       const std::string& source) {
  size_t data_offset = 0;
  return parse_file_bytes(static_cast<const unsigned char*>(bytes), size, source, nullptr,
                          &data_offset);
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  // O_NONBLOCK: a FIFO given as a path must not block here; it is rejected below.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw Error(path + ": cannot open safetensors file: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw Error(path + ": cannot stat: " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file (expected a .safetensors file)");
  }
  size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw Error(path + ": file of " + std::to_string(size) +
                " bytes is too short for a safetensors header (needs at least 8)");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  ::close(fd);
  if (map == MAP_FAILED) throw Error(path + ": mmap failed: " + std::strerror(map_errno));
  f->map_ = map;  // unmapped by the destructor, also when validation below throws
  f->map_size_ = size;
  f->map_slot_ = register_mapping(map, size, path);
  const auto* p = static_cast<const unsigned char*>(map);
  size_t data_offset = 0;
  f->entries_ = parse_file_bytes(p, size, path, &f->metadata_, &data_offset);
  f->data_ = p + data_offset;
  for (size_t i = 0; i < f->entries_.size(); ++i) f->index_[f->entries_[i].name] = i;
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_slot_) static_cast<MapSlot*>(map_slot_)->state.store(0);
  if (map_) ::munmap(map_, map_size_);
}

TensorView SafetensorsFile::get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw Error(path_ + ": tensor " + quote_name(name) + " not found");
  const SafetensorsEntry& e = entries_[it->second];
  return TensorView{e.name, e.dtype, e.shape, data_ + e.begin};
}

namespace {

// Opens the shards named by DIR/model.safetensors.index.json ("weight_map": tensor -> file).
void open_sharded(const std::filesystem::path& dir, const std::filesystem::path& index,
                  std::vector<std::shared_ptr<SafetensorsFile>>& files,
                  std::map<std::string, size_t>& where) {
  const std::string src = index.string();
  json j;
  std::string text = read_file(src);
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(src + ": not valid UTF-8 JSON: " + json_error_text(e.what()));
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw Error(src +
                ": expected an object with a 'weight_map' object (tensor name -> shard file)");
  const json& map = j["weight_map"];
  if (map.empty()) throw Error(src + ": 'weight_map' is empty (expected at least one tensor)");
  std::map<std::string, size_t> shard_index;  // shard file name -> index into files
  for (auto it = map.begin(); it != map.end(); ++it) {
    std::string field = "weight_map[" + quote_name(it.key()) + "]";
    if (!it.value().is_string()) throw Error(src + ": " + field + " must be a file name string");
    std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos ||
        shard.find('\0') != std::string::npos || shard == "." || shard == "..")
      throw Error(src + ": " + field + " = " + quote_name(shard) +
                  " must be a plain file name in the same folder");
    auto s = shard_index.find(shard);
    if (s == shard_index.end()) {
      std::filesystem::path sp = dir / shard;
      std::error_code ec;
      if (!std::filesystem::exists(sp, ec))
        throw Error(src + ": shard " + quote_name(shard) + " (named for tensor " +
                    quote_name(it.key()) + ") does not exist in " + dir.string());
      files.push_back(SafetensorsFile::open(sp.string()));
      s = shard_index.emplace(shard, files.size() - 1).first;
    }
    if (!files[s->second]->contains(it.key()))
      throw Error(src + ": tensor " + quote_name(it.key()) + " is mapped to shard " +
                  quote_name(shard) + " but that file does not hold it");
    where[it.key()] = s->second;
  }
}

}  // namespace

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
      open_sharded(dir, index, ws.files_, ws.where_);
      ws.protect_inputs();
      return ws;
    }
    if (!fs::exists(single, ec))
      throw Error(path + ": no model.safetensors or model.safetensors.index.json in this folder");
    ws.files_.push_back(SafetensorsFile::open(single.string()));
  }
  for (size_t i = 0; i < ws.files_.size(); ++i)
    for (const auto& e : ws.files_[i]->entries()) ws.where_[e.name] = i;
  ws.protect_inputs();
  return ws;
}

void WeightStore::protect_inputs() {
  std::vector<std::string> paths;
  for (const auto& f : files_) paths.push_back(f->path());
  std::error_code ec;
  if (std::filesystem::is_directory(source_, ec))
    for (const char* name : {"model.safetensors.index.json", "config.json", "tokenizer.json",
                             "tokenizer_config.json", "generation_config.json", "tokenizer.model"})
      paths.push_back((std::filesystem::path(source_) / name).string());
  inputs_ = std::make_shared<const ProtectedInputs>(paths);
}

TensorView WeightStore::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end())
    throw Error(source_ + ": tensor " + quote_name(name) + " not found in the checkpoint");
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
  // Data order: larger elements first (stable), so with the header padded to 8 bytes every
  // tensor starts at a multiple of its element size; offsets are contiguous from 0, as HF's
  // writer produces them.
  std::vector<const SafetensorsWriteItem*> order;
  for (const auto& it : items) order.push_back(&it);
  std::stable_sort(order.begin(), order.end(),
                   [](auto* a, auto* b) { return dtype_size(a->dtype) > dtype_size(b->dtype); });
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto* it : order) {
    for (int64_t d : it->shape) ELASTIC_CHECK_MSG(d >= 0, it->name);
    uint64_t n = static_cast<uint64_t>(shape_numel(it->shape)) * dtype_size(it->dtype);
    ELASTIC_CHECK_MSG(n == it->bytes.size(), it->name);
    if (it->name == "__metadata__" || header.contains(it->name))
      throw Error(
          path + ": cannot write tensor " + quote_name(it->name) +
          (it->name == "__metadata__" ? " (reserved name)" : " twice (names must be unique)"));
    header[it->name] = {{"dtype", std::string(dtype_name(it->dtype))},
                        {"shape", it->shape},
                        {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    throw Error(path + ": tensor names and metadata must be valid UTF-8 (" +
                json_error_text(e.what()) + ")");
  }
  while ((text.size() + 8) % 8) text.push_back(' ');  // align the data section to 8 bytes
  std::string blob;
  blob.reserve(8 + text.size() + offset);
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) blob.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  blob += text;
  for (const auto* it : order)
    blob.append(reinterpret_cast<const char*>(it->bytes.data()), it->bytes.size());
  write_file_atomic(path, blob);
}

}  // namespace elastic

// Whole-file reading and atomic writing (temporary file in the same folder, fsync, rename), so a
// crash never leaves a half-written output behind.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace elastic {

// Throws elastic::Error naming the path when it cannot be read, or when it holds more than
// kMaxReadBytes (a device like /dev/zero never ends).
inline constexpr size_t kMaxReadBytes = size_t(256) << 20;
std::string read_file(const std::string& path);

// Writes `contents` to `path` through a temporary file in the same folder, fsync and rename.
// Only a regular file (or a symbolic link to one, which stays a link) or a new path is written:
// a device, FIFO, socket or folder is refused (a rename would replace a device node such as
// /dev/null by a regular file), and so is a file protected by a live ProtectedInputs (the
// files a model was loaded from). SIGINT/SIGTERM while the temporary file exists remove it
// before the signal's default action, unless the program installed its own handler.
void write_file_atomic(const std::string& path, std::string_view contents);

// The files a model was loaded from (weights, config, tokenizer): while an object lives,
// write_file_atomic refuses to replace them. Identified by device and inode, so another name
// of the same file (a hard link, a symbolic link, a relative path) is recognised too. Paths that
// do not exist are skipped.
class ProtectedInputs {
 public:
  explicit ProtectedInputs(const std::vector<std::string>& paths);
  ~ProtectedInputs();
  ProtectedInputs(const ProtectedInputs&) = delete;
  ProtectedInputs& operator=(const ProtectedInputs&) = delete;

 private:
  std::vector<std::pair<dev_t, ino_t>> ids_;
};

}  // namespace elastic

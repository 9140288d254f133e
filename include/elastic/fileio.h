// Whole-file reading and atomic writing (temporary file in the same folder, fsync, rename), so a
// crash never leaves a half-written output behind.
#pragma once

#include <string>
#include <string_view>

namespace elastic {

// Throws elastic::Error naming the path when it cannot be read.
std::string read_file(const std::string& path);
void write_file_atomic(const std::string& path, std::string_view contents);

}  // namespace elastic

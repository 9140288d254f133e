// Shared helpers of the io tests: a temporary folder removed at scope exit, whole-file byte
// access, rewriting a safetensors header while keeping its data, and running the elastic CLI.
#pragma once

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

namespace elastic::test {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "elastic-io-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  std::string str(const std::string& name = "") const {
    return name.empty() ? path_.string() : (path_ / name).string();
  }

 private:
  fs::path path_;
};

inline std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + p.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + p.string());
}

inline uint64_t u64_le(const std::string& b, size_t at = 0) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
  return v;
}

inline std::string u64_le_bytes(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

struct SafetensorsParts {
  nlohmann::json header;
  std::string data;  // the data section
};

inline SafetensorsParts safetensors_split(const std::string& file) {
  uint64_t n = u64_le(file);
  return {nlohmann::json::parse(file.substr(8, n)), file.substr(8 + n)};
}

// Header text padded with spaces so the data section starts at a multiple of 8.
inline std::string safetensors_join(const std::string& header_text, const std::string& data) {
  std::string text = header_text;
  while ((text.size() + 8) % 8) text.push_back(' ');
  return u64_le_bytes(text.size()) + text + data;
}

// Parses p's header, lets `edit` change it, writes the file back with the same data section.
inline void safetensors_edit_header(const fs::path& p,
                                    const std::function<void(nlohmann::json&)>& edit) {
  SafetensorsParts parts = safetensors_split(read_bytes(p));
  edit(parts.header);
  write_bytes(p, safetensors_join(parts.header.dump(), parts.data));
}

struct CliResult {
  bool exited = false;  // false: killed by a signal
  int exit_code = -1;
  int signal = 0;
  std::string out;
  std::string err;
};

// Runs ELASTIC_BIN_DIR/elastic with args (fork + exec), stdout and stderr captured in files.
inline CliResult run_elastic(const std::vector<std::string>& args) {
  TempDir capture;
  std::string out_path = capture.str("stdout"), err_path = capture.str("stderr");
  std::string bin = std::string(ELASTIC_BIN_DIR) + "/elastic";
  std::vector<std::string> argv_store{bin};
  argv_store.insert(argv_store.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_store) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int o = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int e = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0) ::_exit(126);
    ::dup2(o, 1);
    ::dup2(e, 2);
    ::execv(bin.c_str(), argv.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) throw std::runtime_error("waitpid failed");
  CliResult r;
  r.exited = WIFEXITED(status);
  if (r.exited) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  r.out = read_bytes(out_path);
  r.err = read_bytes(err_path);
  return r;
}

}  // namespace elastic::test

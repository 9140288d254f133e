#include "elastic/fileio.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>

#include "elastic/error.h"

namespace elastic {

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(path + ": is a folder, expected a file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot open: " + std::strerror(errno));
  // Read in chunks up to a bound: a device such as /dev/zero (or a runaway pipe) would otherwise
  // grow the string until memory runs out. Every input read whole (configs, tokenizers, prompts,
  // task files) is far smaller.
  std::string out;
  char buf[1 << 16];
  while (f.read(buf, sizeof buf) || f.gcount() > 0) {
    if (out.size() + static_cast<size_t>(f.gcount()) > kMaxReadBytes)
      throw Error(path + ": larger than " + std::to_string(kMaxReadBytes >> 20) +
                  " MiB (is it the file you meant?)");
    out.append(buf, static_cast<size_t>(f.gcount()));
  }
  if (f.bad()) throw Error(path + ": read error");
  return out;
}

namespace {

// ---- Files a loaded model came from (ProtectedInputs) ----

struct InputRegistry {
  std::mutex mu;
  std::map<std::pair<dev_t, ino_t>, std::pair<std::string, int>> files;  // -> (path, count)
};

InputRegistry& inputs() {
  static InputRegistry* r = new InputRegistry();  // never destroyed: used until exit
  return *r;
}

// ---- Temporary files removed on SIGINT/SIGTERM ----
// A fixed table the signal handler can read without locks or allocation: a slot is claimed
// (state 1), filled, then published (state 2); the handler unlinks the published ones.

constexpr int kTempSlots = 32;
struct TempSlot {
  std::atomic<int> state{0};  // 0 free, 1 being filled, 2 live
  char path[PATH_MAX];
};
TempSlot g_temps[kTempSlots];

extern "C" void temp_cleanup_handler(int sig) {
  for (TempSlot& s : g_temps)
    if (s.state.load() == 2) ::unlink(s.path);
  // Re-raise with the default action, so the exit status still says "killed by SIGTERM".
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  ::raise(sig);
}

// Installs the cleanup handler for the signals still at their default action: a program that
// handles them itself (train-router stops gracefully at the next step, serve waits for them)
// keeps its handler, and its writes then run to completion and are renamed into place.
void install_temp_cleanup() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (int sig : {SIGINT, SIGTERM}) {
      struct sigaction old {};
      if (::sigaction(sig, nullptr, &old) != 0) continue;
      if (old.sa_handler != SIG_DFL || (old.sa_flags & SA_SIGINFO)) continue;
      struct sigaction sa {};
      sa.sa_handler = temp_cleanup_handler;
      sigemptyset(&sa.sa_mask);
      sigaddset(&sa.sa_mask, SIGINT);
      sigaddset(&sa.sa_mask, SIGTERM);
      ::sigaction(sig, &sa, nullptr);
    }
  });
}

// Owns one slot of g_temps for the lifetime of a temporary file (no slot free: the file is
// simply not cleaned on a signal, as before).
class TempRegistration {
 public:
  explicit TempRegistration(const std::string& path) {
    if (path.empty() || path.size() >= PATH_MAX) return;
    for (TempSlot& s : g_temps) {
      int expected = 0;
      if (!s.state.compare_exchange_strong(expected, 1)) continue;
      std::memcpy(s.path, path.c_str(), path.size() + 1);
      s.state.store(2);
      slot_ = &s;
      return;
    }
  }
  ~TempRegistration() {
    if (slot_) slot_->state.store(0);
  }
  TempRegistration(const TempRegistration&) = delete;
  TempRegistration& operator=(const TempRegistration&) = delete;

 private:
  TempSlot* slot_ = nullptr;
};

const char* special_kind(mode_t mode) {
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

// The path to replace: `path` itself, or the file a symbolic link points to (so the link stays).
// Throws for folders, special files and protected inputs.
std::string checked_target(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      struct stat lst {};
      if (::lstat(path.c_str(), &lst) == 0)  // a dangling link: rename would replace the link
        throw Error(path + ": is a symbolic link to a missing file; give a regular file path");
      return path;  // a new file
    }
    throw Error(path + ": cannot check the output path: " + std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) throw Error(path + ": is a folder, expected an output file path");
  if (!S_ISREG(st.st_mode))
    throw Error(path + ": is " + special_kind(st.st_mode) +
                "; refusing to write output onto a special file (give a regular file path)");
  {
    InputRegistry& r = inputs();
    std::lock_guard<std::mutex> lock(r.mu);
    auto it = r.files.find({st.st_dev, st.st_ino});
    if (it != r.files.end())
      throw Error(path + ": is " + it->second.first +
                  ", a file the model was loaded from; refusing to overwrite it (choose "
                  "another output path)");
  }
  struct stat lst {};
  if (::lstat(path.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode)) {
    std::error_code ec;
    std::filesystem::path real = std::filesystem::canonical(path, ec);
    if (!ec) return real.string();
  }
  return path;
}

// Six random letters and digits, as mkstemp's XXXXXX.
std::string temp_suffix() {
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}() ^ static_cast<uint64_t>(::getpid()) << 32};
  std::lock_guard<std::mutex> lock(mu);
  std::string out(6, 'x');
  for (char& c : out) c = kChars[rng() % (sizeof kChars - 1)];
  return out;
}

}  // namespace

ProtectedInputs::ProtectedInputs(const std::vector<std::string>& paths) {
  InputRegistry& r = inputs();
  std::lock_guard<std::mutex> lock(r.mu);
  for (const std::string& p : paths) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    auto& entry = r.files[{st.st_dev, st.st_ino}];
    if (entry.second++ == 0) entry.first = p;
    ids_.emplace_back(st.st_dev, st.st_ino);
  }
}

ProtectedInputs::~ProtectedInputs() {
  InputRegistry& r = inputs();
  std::lock_guard<std::mutex> lock(r.mu);
  for (const auto& id : ids_) {
    auto it = r.files.find(id);
    if (it != r.files.end() && --it->second.second == 0) r.files.erase(it);
  }
}

void write_file_atomic(const std::string& path, std::string_view contents) {
  namespace fs = std::filesystem;
  const fs::path target(checked_target(path));
  fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::string name = ".";  // appended piecewise: GCC 12 warns falsely (-Wrestrict) on "." + s
  name += target.filename().string();
  name += ".tmp.";
  const std::string base = (dir / name).string();
  install_temp_cleanup();
  // The name is registered before the file exists (then created with O_EXCL), so a SIGINT or
  // SIGTERM handled on any thread (an OpenMP worker's too: a mask on this thread would not
  // cover them) never misses a temporary file; unlinking a name not yet created is harmless.
  std::string tmpl;
  std::optional<TempRegistration> reg;
  int fd = -1, mk_errno = 0;
  for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
    tmpl = base + temp_suffix();
    reg.emplace(tmpl);
    fd = ::open(tmpl.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      mk_errno = errno;
      reg.reset();
      if (mk_errno != EEXIST) break;
    }
  }
  if (fd < 0)
    throw Error(path + ": cannot create a temporary file in " + dir.string() + ": " +
                std::strerror(mk_errno));
  size_t done = 0;
  while (done < contents.size()) {
    ssize_t w = ::write(fd, contents.data() + done, contents.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      ::unlink(tmpl.c_str());
      throw Error(path + ": write failed: " + std::strerror(err));
    }
    done += static_cast<size_t>(w);
  }
  ::fchmod(fd, 0644);
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int err = errno;
    ::unlink(tmpl.c_str());
    throw Error(path + ": cannot flush to disk: " + std::strerror(err));
  }
  if (::rename(tmpl.c_str(), target.c_str()) != 0) {
    int err = errno;
    ::unlink(tmpl.c_str());
    throw Error(path + ": cannot rename temporary file into place: " + std::strerror(err));
  }
}

}  // namespace elastic

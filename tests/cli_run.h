// Runs the built `elastic` binary for CLI tests: exit code, stdout, and stderr kept apart.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace elastic::test {

struct CliResult {
  int exit_code = -1;  // -1 when the process did not exit normally (a signal)
  std::string out;
  std::string err;
};

// args is appended to the command line as-is (quote it for the shell); stdin_text is fed to it.
inline CliResult cli_run(const std::string& args, const std::string& stdin_text = "") {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("elastic_cli_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const fs::path in = dir / "stdin", out = dir / "stdout", err = dir / "stderr";
  std::ofstream(in) << stdin_text;
  const std::string cmd = std::string(ELASTIC_BIN_DIR) + "/elastic " + args + " <" + in.string() +
                          " >" + out.string() + " 2>" + err.string();
  const int status = std::system(cmd.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  auto slurp = [](const fs::path& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  };
  r.out = slurp(out);
  r.err = slurp(err);
  fs::remove_all(dir);
  return r;
}

}  // namespace elastic::test

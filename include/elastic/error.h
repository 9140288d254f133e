// Errors: bad input (files, configs, requests) throws elastic::Error with a message that names
// the file / tensor / field and what was expected. Internal invariants use ELASTIC_CHECK, which
// throws elastic::InternalError carrying file and line. Library code never calls exit().
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace elastic {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

class InternalError : public std::logic_error {
 public:
  explicit InternalError(const std::string& message) : std::logic_error(message) {}
};

[[noreturn]] void check_failed(const char* expr, const char* file, int line, std::string_view msg);

}  // namespace elastic

#define ELASTIC_CHECK(cond)                                                   \
  do {                                                                        \
    if (!(cond)) ::elastic::check_failed(#cond, __FILE__, __LINE__, {});      \
  } while (0)

#define ELASTIC_CHECK_MSG(cond, msg)                                          \
  do {                                                                        \
    if (!(cond)) ::elastic::check_failed(#cond, __FILE__, __LINE__, (msg));   \
  } while (0)

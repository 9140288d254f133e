#include "elastic/error.h"

#include <string>

namespace elastic {

void check_failed(const char* expr, const char* file, int line, std::string_view msg) {
  std::string m = std::string(file) + ":" + std::to_string(line) + ": internal check failed: " + expr;
  if (!msg.empty()) m += std::string(" (") + std::string(msg) + ")";
  throw InternalError(m);
}

}  // namespace elastic

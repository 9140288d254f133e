// Helpers of the model tests: fixture paths, expected tensors, the relative error measure.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "elastic/fileio.h"
#include "elastic/safetensors.h"

namespace elastic::test {

inline std::string fixture_dir(const std::string& rel) {
  return std::string(ELASTIC_SHARED_DIR) + "/fixtures/" + rel;
}

inline nlohmann::json read_case(const std::string& dir) {
  return nlohmann::json::parse(read_file(dir + "/case.json"));
}

// max |a - b| / max |b|: the error measure of the acceptance criteria.
inline double relative_error(const float* a, const float* b, size_t n) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < n; ++i) {
    err = std::max(err, std::fabs(static_cast<double>(a[i]) - b[i]));
    ref = std::max(ref, std::fabs(static_cast<double>(b[i])));
  }
  return ref > 0 ? err / ref : err;
}

inline double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  return relative_error(a.data(), b.data(), std::min(a.size(), b.size()));
}

}  // namespace elastic::test

// gtest parameter names for suites instantiated over fixture names ("qwen3-tiny"): test names
// allow only letters, digits and '_', so '-' becomes '_'.
#pragma once

#include <gtest/gtest.h>

#include <string>

namespace elastic::test {

struct FixtureParamName {
  template <class Param>
  std::string operator()(const ::testing::TestParamInfo<Param>& info) const {
    std::string s = info.param;
    for (char& c : s)
      if (c == '-') c = '_';
    return s;
  }
};

}  // namespace elastic::test

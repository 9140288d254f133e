// libFuzzer target: arbitrary bytes as an eval task file (`elastic eval --import FILE`, one JSON
// object per line). eval_samples_parse_jsonl must either reject them with elastic::Error or
// return samples whose invariants hold (task and prompt non-empty, at least one answer, none
// blank); exporting those samples and importing the export must give the same export (the
// --export format round-trips). Any other exception or a broken invariant is a finding.
#include <cstdint>
#include <string>
#include <string_view>

#include "elastic/error.h"
#include "elastic/eval.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<elastic::EvalSample> samples;
  try {
    samples = elastic::eval_samples_parse_jsonl(text, "fuzz/tasks.jsonl");
  } catch (const elastic::Error&) {
    return 0;  // clean rejection
  }
  if (samples.empty()) __builtin_trap();
  for (const auto& s : samples) {
    if (s.task.empty() || s.prompt.empty() || s.answers.empty() || s.length < 0) __builtin_trap();
    for (const auto& a : s.answers)
      if (elastic::eval_normalize(a).empty()) __builtin_trap();
  }
  const std::string exported = elastic::eval_samples_to_jsonl(samples);
  const auto again = elastic::eval_samples_parse_jsonl(exported, "fuzz/export.jsonl");
  if (elastic::eval_samples_to_jsonl(again) != exported) __builtin_trap();
  return 0;
}

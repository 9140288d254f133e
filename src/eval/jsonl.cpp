// JSON-lines task files: import with errors naming the file and line, export in the same format.
#include <nlohmann/json.hpp>

#include "elastic/error.h"
#include "elastic/eval.h"
#include "elastic/fileio.h"

namespace elastic {

namespace {

using json = nlohmann::json;

EvalSample parse_record(const std::string& line, const std::string& where) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for 1e400-like numbers
    throw Error(where + ": bad JSON: " + e.what());
  }
  if (!j.is_object()) throw Error(where + ": expected a JSON object, got " + j.type_name());
  auto field = [&](const char* name) -> const json& {
    if (!j.contains(name)) throw Error(where + ": missing field \"" + name + "\"");
    return j[name];
  };
  auto string_field = [&](const char* name) {
    const json& v = field(name);
    if (!v.is_string())
      throw Error(where + ": field \"" + name + "\" must be a string, got " + v.type_name());
    if (v.get<std::string>().empty()) throw Error(where + ": field \"" + name + "\" is empty");
    return v.get<std::string>();
  };
  EvalSample s;
  s.prompt = string_field("prompt");
  s.task = string_field("task");
  const json& a = field("answer");
  if (a.is_string()) {
    s.answers = {a.get<std::string>()};
  } else if (a.is_array()) {
    for (const json& x : a) {
      if (!x.is_string())
        throw Error(where +
                    ": field \"answer\" must be a string or a list of strings; the list holds a " +
                    std::string(x.type_name()));
      s.answers.push_back(x.get<std::string>());
    }
  } else {
    throw Error(where + ": field \"answer\" must be a string or a list of strings, got " +
                a.type_name());
  }
  if (s.answers.empty()) throw Error(where + ": empty answer (an empty list)");
  for (const std::string& x : s.answers)
    if (eval_normalize(x).empty()) throw Error(where + ": empty answer (a blank string)");
  s.score = a.is_array() ? ScoreRule::all_of : ScoreRule::contains;
  if (j.contains("score")) {
    const json& r = j["score"];
    if (!r.is_string())
      throw Error(where + ": field \"score\" must be a string (exact, contains or all-of), got " +
                  r.type_name());
    s.score = score_rule_parse(r.get<std::string>(), where);
  }
  if (j.contains("length")) {
    const json& l = j["length"];
    if (!l.is_number_integer() || l.get<int64_t>() < 0)
      throw Error(where + ": field \"length\" must be an integer >= 0, got " + l.dump());
    s.length = l.get<int64_t>();
  }
  return s;
}

}  // namespace

std::vector<EvalSample> eval_samples_parse_jsonl(std::string_view text, const std::string& source) {
  std::vector<EvalSample> out;
  size_t pos = 0;
  for (int64_t line_no = 1; pos < text.size(); ++line_no) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string line(text.substr(pos, end - pos));
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    out.push_back(parse_record(line, source + ":" + std::to_string(line_no)));
  }
  if (out.empty()) throw Error(source + ": no records (expected one JSON object per line)");
  return out;
}

std::vector<EvalSample> eval_samples_read_jsonl(const std::string& path) {
  return eval_samples_parse_jsonl(read_file(path), path);
}

std::string eval_samples_to_jsonl(const std::vector<EvalSample>& samples) {
  std::string out;
  for (const EvalSample& s : samples) {
    json j;
    j["task"] = s.task;
    j["prompt"] = s.prompt;
    j["answer"] = s.answers.size() == 1 ? json(s.answers[0]) : json(s.answers);
    j["score"] = score_rule_name(s.score);
    j["length"] = s.length;
    out += j.dump() + "\n";
  }
  return out;
}

void eval_samples_write_jsonl(const std::string& path, const std::vector<EvalSample>& samples) {
  write_file_atomic(path, eval_samples_to_jsonl(samples));
}

}  // namespace elastic

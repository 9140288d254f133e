#include "train/data.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "elastic/chat.h"
#include "elastic/error.h"
#include "elastic/fileio.h"
#include "train/rng.h"

namespace elastic::train {

using json = nlohmann::json;

int64_t TaskTable::id(const std::string& name, const std::string& where) const {
  for (size_t i = 0; i < tasks.size(); ++i)
    if (tasks[i].name == name) return static_cast<int64_t>(i);
  std::string known;
  for (const TaskSpec& t : tasks) known += (known.empty() ? "" : ", ") + t.name;
  throw Error(where + ": unknown task \"" + name + "\" (tasks with a target: " + known +
              "; give a task file with --task-targets)");
}

namespace {

TaskTable sorted(std::map<std::string, double> m) {
  TaskTable t;
  for (const auto& [name, target] : m) t.tasks.push_back(TaskSpec{name, target});
  return t;
}

}  // namespace

TaskTable task_table_default() {
  std::map<std::string, double> m;
  for (const char* s : {"qa", "single-doc-qa", "multi-doc-qa", "multi-hop-qa", "retrieval"})
    m[s] = 0.7;
  for (const char* s : {"summary", "summarization", "code", "icl", "few-shot"}) m[s] = 1.0;
  return sorted(m);
}

TaskTable task_table_load(const std::string& path) {
  json j;
  try {
    j = json::parse(read_file(path));
  } catch (const json::exception& e) {
    throw Error(path + ": not valid JSON: " + e.what());
  }
  if (j.is_object() && j.contains("tasks")) j = j["tasks"];
  if (!j.is_object() || j.empty())
    throw Error(path + ": expected a JSON object {\"task\": target, ...} with at least one task");
  std::map<std::string, double> m;
  for (const auto& [name, v] : j.items()) {
    if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < 0 ||
        v.get<double>() > 1)
      throw Error(path + ": task \"" + name + "\": target must be a number in [0, 1], got " +
                  v.dump());
    m[name] = v.get<double>();
  }
  return sorted(m);
}

namespace {

std::string field_string(const json& rec, const char* key, const std::string& where) {
  if (!rec.contains(key)) throw Error(where + ": missing field \"" + key + "\"");
  if (!rec[key].is_string())
    throw Error(where + ": field \"" + key + "\" must be a string, got " +
                std::string(rec[key].type_name()));
  return rec[key].get<std::string>();
}

std::vector<int64_t> encode(const Tokenizer& tok, const std::string& text, bool add_special,
                            bool parse_special) {
  EncodeOptions o;
  o.add_special = add_special;
  o.parse_special = parse_special;
  const std::vector<int32_t> ids = tok.encode(text, o);
  return {ids.begin(), ids.end()};
}

}  // namespace

std::vector<EncodedRecord> records_load(const std::string& path, const Tokenizer& tok,
                                        const std::string& chat_template,
                                        const std::string& model_dir) {
  std::ifstream f(path);
  if (!f) throw Error(path + ": cannot open the data file");
  bool chat = false;
  ChatFormat format;
  if (chat_template == "auto") {
    try {
      format = chat_format_detect(model_dir);
      chat = true;
    } catch (const Error&) {
      chat = false;  // a base model without a chat template: plain text
    }
  } else if (chat_template != "none") {
    format.kind = chat_template_from_name(chat_template);
    chat = true;
  }
  std::vector<EncodedRecord> out;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(f, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(lineno);
    json rec;
    try {
      rec = json::parse(line);
    } catch (const json::exception& e) {
      throw Error(where + ": not valid JSON: " + e.what());
    }
    if (!rec.is_object()) throw Error(where + ": expected a JSON object");
    EncodedRecord r;
    r.line = lineno;
    r.task = field_string(rec, "task", where);
    std::vector<ChatMessage> messages;
    std::string answer;
    if (rec.contains("messages")) {
      if (!rec["messages"].is_array() || rec["messages"].empty())
        throw Error(where + ": field \"messages\" must be a non-empty array");
      for (const json& m : rec["messages"]) {
        if (!m.is_object()) throw Error(where + ": every message must be an object");
        messages.push_back({field_string(m, "role", where), field_string(m, "content", where)});
      }
      if (messages.back().role != "assistant")
        throw Error(where + ": the last message must be the assistant's answer");
      answer = messages.back().content;
      messages.pop_back();
    } else {
      messages.push_back({"user", field_string(rec, "prompt", where)});
      answer = field_string(rec, "answer", where);
    }
    if (answer.find_first_not_of(" \t\r\n") == std::string::npos)
      throw Error(where + ": the answer is empty");
    // Prompt and answer are cut from the encoding of prompt + answer, as the model reads the
    // whole text: the prompt is its longest common prefix with the prompt's own encoding, the
    // answer the rest. (A tokenizer whose tokens span the boundary, such as one with "was_" as
    // a token, moves those tokens to the answer; a lone answer would get a spurious word-start
    // marker instead.)
    std::string prompt_text, answer_text;
    bool add_special = false;
    if (chat) {
      prompt_text = chat_format(format, messages, true);
      answer_text = answer + chat_end_of_turn(format.kind)[0];
    } else {
      if (messages.size() != 1)
        throw Error(where + ": a conversation needs a chat template (the model has none)");
      prompt_text = messages[0].content;
      answer_text = answer;
      add_special = true;
    }
    const std::vector<int64_t> alone = encode(tok, prompt_text, add_special, chat);
    const std::vector<int64_t> joint = encode(tok, prompt_text + answer_text, add_special, chat);
    size_t lcp = 0;
    while (lcp < alone.size() && lcp < joint.size() && alone[lcp] == joint[lcp]) ++lcp;
    if (lcp == 0 || lcp == joint.size())
      throw Error(where + ": the prompt and the answer do not tokenize apart");
    r.prompt.assign(joint.begin(), joint.begin() + static_cast<std::ptrdiff_t>(lcp));
    r.answer.assign(joint.begin() + static_cast<std::ptrdiff_t>(lcp), joint.end());
    if (!chat && tok.eos_id()) r.answer.push_back(*tok.eos_id());
    if (r.prompt.empty()) throw Error(where + ": the prompt encodes to no tokens");
    out.push_back(std::move(r));
  }
  if (out.empty()) throw Error(path + ": no records");
  return out;
}

std::vector<TrainSample> dataset_load(const std::string& path, const Tokenizer& tok,
                                      const TaskTable& tasks, const DatasetOptions& opt) {
  std::vector<TrainSample> out;
  for (EncodedRecord& r : records_load(path, tok, opt.chat_template, opt.model_dir)) {
    const std::string where = path + ":" + std::to_string(r.line);
    TrainSample s;
    s.index = static_cast<int64_t>(out.size());
    s.line = r.line;
    s.task = tasks.id(r.task, where);
    s.prompt_tokens = static_cast<int64_t>(r.prompt.size());
    s.ids = std::move(r.prompt);
    s.ids.insert(s.ids.end(), r.answer.begin(), r.answer.end());
    const int64_t n = static_cast<int64_t>(s.ids.size());
    if (n > opt.max_tokens)
      throw Error(where + ": the sample has " + std::to_string(n) +
                  " tokens, more than --max-tokens " + std::to_string(opt.max_tokens));
    s.labels.assign(size_t(n), -100);
    for (int64_t i = 0; i + 1 < n; ++i)
      if (opt.labels == LabelMode::all || i + 1 >= s.prompt_tokens)
        s.labels[size_t(i)] = s.ids[size_t(i + 1)];
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<Pack> packs_for_epoch(const std::vector<TrainSample>& data, int64_t max_tokens,
                                  uint64_t seed, int64_t epoch) {
  // Fisher-Yates with Philox draws (counter: epoch, position; stream "SHUF"), portable.
  std::vector<int64_t> order(data.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  const std::array<uint32_t, 2> key = {uint32_t(seed), uint32_t(seed >> 32)};
  for (size_t i = order.size(); i > 1; --i) {
    const auto r = philox4x32_10({uint32_t(epoch), uint32_t(i), 0, 0x53485546u}, key);
    const uint64_t x = (uint64_t(r[0]) << 32) | r[1];
    std::swap(order[i - 1], order[size_t(x % i)]);
  }
  std::vector<Pack> packs;
  Pack cur;
  for (int64_t s : order) {
    const int64_t n = static_cast<int64_t>(data[size_t(s)].ids.size());
    if (cur.tokens + n > max_tokens && !cur.samples.empty()) {
      packs.push_back(std::move(cur));
      cur = Pack{};
    }
    cur.samples.push_back(s);
    cur.tokens += n;
  }
  if (!cur.samples.empty()) packs.push_back(std::move(cur));
  return packs;
}

}  // namespace elastic::train

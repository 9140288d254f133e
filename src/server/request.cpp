// Strict parsing of OpenAI completion and chat completion request bodies (server.h). Every field
// is checked for its type and range; an unknown field is an error (a typo must not be ignored
// silently). JSON null means "not given" for optional fields, as OpenAI's API treats it.
#include <cmath>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "elastic/server.h"

namespace elastic {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& field, const std::string& what) {
  throw ApiError(400, "'" + field + "': " + what, field);
}

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a number";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    default: return "an unsupported value";
  }
}

std::string number_text(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

std::string get_string(const json& v, const std::string& field) {
  if (!v.is_string()) bad(field, std::string("expected a string, got ") + type_name(v));
  return v.get<std::string>();
}

bool get_bool(const json& v, const std::string& field) {
  if (!v.is_boolean()) bad(field, std::string("expected a boolean, got ") + type_name(v));
  return v.get<bool>();
}

double get_number(const json& v, const std::string& field, double lo, double hi) {
  if (!v.is_number()) bad(field, std::string("expected a number, got ") + type_name(v));
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    bad(field, "expected a number in [" + number_text(lo) + ", " + number_text(hi) + "], got " + v.dump());
  return x;
}

int64_t get_integer(const json& v, const std::string& field, int64_t lo, int64_t hi) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(hi) || (lo > 0 && u < static_cast<uint64_t>(lo)))
      bad(field, "expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + v.dump());
    return static_cast<int64_t>(u);
  }
  if (!v.is_number_integer()) bad(field, std::string("expected an integer, got ") + type_name(v));
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    bad(field, "expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + v.dump());
  return x;
}

void check_keys(const json& obj, const std::string& where, const std::set<std::string>& known) {
  for (auto it = obj.begin(); it != obj.end(); ++it)
    if (!known.count(it.key()))
      throw ApiError(400, "unknown field '" + (where.empty() ? "" : where + ".") + it.key() + "'",
                     (where.empty() ? "" : where + ".") + it.key());
}

std::string message_content(const json& v, const std::string& field) {
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_array()) bad(field, std::string("expected a string or an array of text parts, got ") + type_name(v));
  std::string text;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string f = field + "[" + std::to_string(i) + "]";
    const json& part = v[i];
    if (!part.is_object()) bad(f, std::string("expected an object, got ") + type_name(part));
    check_keys(part, f, {"type", "text"});
    if (!part.contains("type") || get_string(part["type"], f + ".type") != "text")
      bad(f + ".type", "only \"text\" parts are supported");
    if (!part.contains("text")) bad(f + ".text", "missing");
    text += get_string(part["text"], f + ".text");
  }
  return text;
}

}  // namespace

ApiRequest api_request_parse(std::string_view body, bool chat) {
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Parse again for the position and reason of the first error.
    try {
      (void)json::parse(body.begin(), body.end());
    } catch (const json::exception& e) {
      throw ApiError(400, std::string("malformed JSON: ") + e.what());
    }
    throw ApiError(400, "malformed JSON");
  }
  if (!j.is_object()) throw ApiError(400, std::string("the body must be a JSON object, got ") + type_name(j));
  std::set<std::string> known = {"model", "max_tokens", "temperature", "top_p", "stop", "seed",
                                 "n", "stream", "stream_options", "elastic", "user"};
  if (chat) {
    known.insert({"messages", "max_completion_tokens"});
  } else {
    known.insert("prompt");
  }
  check_keys(j, "", known);

  ApiRequest r;
  r.chat = chat;
  auto given = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
  if (given("model")) r.model = get_string(j["model"], "model");
  if (given("user")) (void)get_string(j["user"], "user");

  if (chat) {
    if (!given("messages")) throw ApiError(400, "'messages': missing", "messages");
    const json& m = j["messages"];
    if (!m.is_array()) bad("messages", std::string("expected an array, got ") + type_name(m));
    if (m.empty()) bad("messages", "expected at least one message");
    for (size_t i = 0; i < m.size(); ++i) {
      const std::string f = "messages[" + std::to_string(i) + "]";
      if (!m[i].is_object()) bad(f, std::string("expected an object, got ") + type_name(m[i]));
      check_keys(m[i], f, {"role", "content", "name"});
      if (!m[i].contains("role")) bad(f + ".role", "missing");
      ChatMessage msg;
      msg.role = get_string(m[i]["role"], f + ".role");
      if (msg.role != "system" && msg.role != "user" && msg.role != "assistant" && msg.role != "developer")
        bad(f + ".role", "expected system, developer, user or assistant, got \"" + msg.role + "\"");
      if (msg.role == "developer") msg.role = "system";
      if (m[i].contains("name") && !m[i]["name"].is_null()) (void)get_string(m[i]["name"], f + ".name");
      if (!m[i].contains("content") || m[i]["content"].is_null()) bad(f + ".content", "missing");
      msg.content = message_content(m[i]["content"], f + ".content");
      r.messages.push_back(std::move(msg));
    }
  } else {
    if (!given("prompt")) throw ApiError(400, "'prompt': missing", "prompt");
    const json& p = j["prompt"];
    if (p.is_string()) {
      r.prompt_text = p.get<std::string>();
    } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
      r.prompt_text = p[0].get<std::string>();
    } else if (p.is_array() && !p.empty() && (p[0].is_number() || p[0].is_array() || p[0].is_string())) {
      if (!p[0].is_number()) bad("prompt", "a batch of prompts is not supported (n = 1, one prompt)");
      for (size_t i = 0; i < p.size(); ++i)
        r.prompt_ids.push_back(get_integer(p[i], "prompt[" + std::to_string(i) + "]", 0,
                                           std::numeric_limits<int32_t>::max()));
    } else {
      bad("prompt", std::string("expected a string or an array of token ids, got ") +
                        (p.is_array() && p.empty() ? "an empty array" : type_name(p)));
    }
    if (r.prompt_text && r.prompt_text->empty()) bad("prompt", "the prompt is empty");
  }

  if (given("max_tokens")) r.max_tokens = get_integer(j["max_tokens"], "max_tokens", 1, std::numeric_limits<int32_t>::max());
  if (chat && given("max_completion_tokens")) {
    if (r.max_tokens) bad("max_completion_tokens", "give max_tokens or max_completion_tokens, not both");
    r.max_tokens = get_integer(j["max_completion_tokens"], "max_completion_tokens", 1,
                               std::numeric_limits<int32_t>::max());
  }
  if (given("temperature")) r.temperature = get_number(j["temperature"], "temperature", 0, 2);
  if (given("top_p")) {
    r.top_p = get_number(j["top_p"], "top_p", 0, 1);
    if (r.top_p <= 0) bad("top_p", "expected a number in (0, 1], got " + j["top_p"].dump());
  }
  if (given("stop")) {
    const json& s = j["stop"];
    if (s.is_string()) {
      r.stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      if (s.size() > 4) bad("stop", "at most 4 stop strings, got " + std::to_string(s.size()));
      for (size_t i = 0; i < s.size(); ++i) r.stop.push_back(get_string(s[i], "stop[" + std::to_string(i) + "]"));
    } else {
      bad("stop", std::string("expected a string or an array of strings, got ") + type_name(s));
    }
    for (const std::string& x : r.stop)
      if (x.empty()) bad("stop", "stop strings must not be empty");
  }
  if (given("seed")) {
    const json& s = j["seed"];
    if (s.is_number_unsigned()) r.seed = s.get<uint64_t>();
    else r.seed = static_cast<uint64_t>(get_integer(s, "seed", std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()));
  }
  if (given("n") && get_integer(j["n"], "n", 1, std::numeric_limits<int32_t>::max()) != 1)
    bad("n", "only n = 1 is supported");
  if (given("stream")) r.stream = get_bool(j["stream"], "stream");
  if (given("stream_options")) {
    const json& o = j["stream_options"];
    if (!o.is_object()) bad("stream_options", std::string("expected an object, got ") + type_name(o));
    check_keys(o, "stream_options", {"include_usage"});
    if (!r.stream) bad("stream_options", "only allowed when stream is true");
    if (o.contains("include_usage") && !o["include_usage"].is_null())
      r.include_usage = get_bool(o["include_usage"], "stream_options.include_usage");
  }
  if (given("elastic")) {
    const json& e = j["elastic"];
    if (!e.is_object()) bad("elastic", std::string("expected an object, got ") + type_name(e));
    check_keys(e, "elastic", {"sparsity_bias", "router", "static"});
    if (e.contains("sparsity_bias") && !e["sparsity_bias"].is_null())
      r.sparsity_bias = get_number(e["sparsity_bias"], "elastic.sparsity_bias", -100, 100);
    if (e.contains("router") && !e["router"].is_null()) {
      const std::string v = get_string(e["router"], "elastic.router");
      if (v != "on" && v != "off") bad("elastic.router", "expected \"on\" or \"off\", got \"" + v + "\"");
      r.router = v == "on";
    }
    if (e.contains("static") && !e["static"].is_null()) {
      r.static_assignment = get_string(e["static"], "elastic.static");
      if (r.static_assignment != "all-fa" && r.static_assignment != "all-sa")
        bad("elastic.static", "expected \"all-fa\" or \"all-sa\", got \"" + r.static_assignment + "\"");
    }
    if (!r.static_assignment.empty() && r.router == true)
      bad("elastic.router", "\"on\" excludes elastic.static");
  }
  return r;
}

}  // namespace elastic

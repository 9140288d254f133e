// Chat formats. ChatML (Qwen):
//   <|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n
//   <|im_start|>assistant\n
// Llama 3 (Meta's template; contents are trimmed):
//   <|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>
//   <|start_header_id|>user<|end_header_id|>\n\n{text}<|eot_id|>
//   <|start_header_id|>assistant<|end_header_id|>\n\n
#include "elastic/chat.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "elastic/error.h"
#include "elastic/fileio.h"
#include "elastic/tokenizer.h"

namespace elastic {

namespace fs = std::filesystem;

ChatTemplate chat_template_from_name(std::string_view name) {
  if (name == "chatml") return ChatTemplate::chatml;
  if (name == "llama3") return ChatTemplate::llama3;
  throw Error("unknown chat template \"" + std::string(name) + "\" (expected chatml or llama3)");
}

std::string_view chat_template_name(ChatTemplate t) {
  return t == ChatTemplate::chatml ? "chatml" : "llama3";
}

namespace {

std::string trim(std::string_view s) {
  const char* ws = " \t\n\r\f\v";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  size_t e = s.find_last_not_of(ws);
  return std::string(s.substr(b, e - b + 1));
}

// A default system prompt written into a ChatML template: either
// "set system_message = '...'" or a literal "<|im_start|>system\n...<|im_end|>" string.
std::optional<std::string> chatml_default_system(const std::string& tpl) {
  const std::string set = "set system_message = '";
  size_t at = tpl.find(set);
  if (at != std::string::npos) {
    size_t b = at + set.size(), e = tpl.find('\'', b);
    if (e != std::string::npos) return tpl.substr(b, e - b);
  }
  for (const std::string head : {"<|im_start|>system\n", "<|im_start|>system\\n"}) {
    size_t h = tpl.find(head);
    if (h == std::string::npos) continue;
    size_t b = h + head.size(), e = tpl.find("<|im_end|>", b);
    if (e == std::string::npos) continue;
    std::string body = tpl.substr(b, e - b);
    // Only a literal text (not a variable splice like "' + message['content'] + '").
    if (!body.empty() && body.find('\'') == std::string::npos &&
        body.find('{') == std::string::npos && body.find('"') == std::string::npos) {
      return body;
    }
  }
  return std::nullopt;
}

}  // namespace

ChatFormat chat_format_detect(const std::string& model_path) {
  std::error_code ec;
  fs::path dir =
      fs::is_directory(model_path, ec) ? fs::path(model_path) : fs::path(model_path).parent_path();
  fs::path config = dir / "tokenizer_config.json";
  ChatFormat f;
  std::string tpl, cls;
  if (fs::is_regular_file(config, ec)) {
    auto doc = nlohmann::json::parse(read_file(config.string()), nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) {
      throw Error(config.string() + ": invalid JSON (expected an object)");
    }
    if (doc.contains("chat_template") && doc["chat_template"].is_string()) {
      tpl = doc["chat_template"].get<std::string>();
    }
    if (doc.contains("tokenizer_class") && doc["tokenizer_class"].is_string()) {
      cls = doc["tokenizer_class"].get<std::string>();
    }
  }
  if (tpl.find("<|im_start|>") != std::string::npos) {
    f.kind = ChatTemplate::chatml;
    f.default_system = chatml_default_system(tpl);
    return f;
  }
  if (tpl.find("<|start_header_id|>") != std::string::npos) {
    f.kind = ChatTemplate::llama3;
    return f;
  }
  if (cls.rfind("Qwen2", 0) == 0) {
    f.kind = ChatTemplate::chatml;
    return f;
  }
  // No template text: decide by the special tokens the tokenizer has.
  Tokenizer tok = Tokenizer::load(dir.string());
  if (tok.token_to_id("<|start_header_id|>") && tok.token_to_id("<|eot_id|>")) {
    f.kind = ChatTemplate::llama3;
    return f;
  }
  if (tok.token_to_id("<|im_start|>") && tok.token_to_id("<|im_end|>")) {
    f.kind = ChatTemplate::chatml;
    return f;
  }
  throw Error(model_path +
              ": cannot tell the chat format (no ChatML or Llama 3 markers in "
              "tokenizer_config.json or the vocabulary); pass --chat-template");
}

std::string chat_format(const ChatFormat& format, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt) {
  bool has_system = !messages.empty() && messages.front().role == "system";
  std::string out;
  if (format.kind == ChatTemplate::chatml) {
    if (!has_system && format.default_system) {
      out += "<|im_start|>system\n" + *format.default_system + "<|im_end|>\n";
    }
    for (const ChatMessage& m : messages) {
      out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
    }
    if (add_generation_prompt) out += "<|im_start|>assistant\n";
  } else {
    out += "<|begin_of_text|>";
    if (!has_system && format.default_system) {
      out += "<|start_header_id|>system<|end_header_id|>\n\n" + trim(*format.default_system) +
             "<|eot_id|>";
    }
    for (const ChatMessage& m : messages) {
      out +=
          "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + trim(m.content) + "<|eot_id|>";
    }
    if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  }
  return out;
}

std::vector<std::string> chat_end_of_turn(ChatTemplate t) {
  if (t == ChatTemplate::chatml) return {"<|im_end|>"};
  return {"<|eot_id|>", "<|eom_id|>"};
}

}  // namespace elastic

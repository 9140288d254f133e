// Chat prompt formatting for the families we load: Qwen ChatML and Llama 3 headers.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace elastic {

enum class ChatTemplate { chatml, llama3 };

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

struct ChatFormat {
  ChatTemplate kind = ChatTemplate::chatml;
  // System prompt used when the messages carry none (ChatML of Qwen2 / Qwen2.5 templates put
  // one in; Qwen3 and Llama 3 have none).
  std::optional<std::string> default_system;
};

// "chatml" | "llama3"; anything else is an elastic::Error listing the names.
ChatTemplate chat_template_from_name(std::string_view name);
std::string_view chat_template_name(ChatTemplate t);

// Detects the format of a model folder (or the folder of a tokenizer file) from
// tokenizer_config.json: the chat_template text (ChatML / Llama 3 header markers, a default
// system message), else tokenizer_class / the special tokens present. Error when undecidable.
ChatFormat chat_format_detect(const std::string& model_path);

// The prompt text (special tokens written out; encode it with parse_special = true).
// Llama 3 starts with <|begin_of_text|> and trims message contents as Meta's template does.
// add_generation_prompt appends the assistant header so the model answers next.
std::string chat_format(const ChatFormat& format, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt);
// The strings that end an assistant turn (for stop handling): "<|im_end|>" or "<|eot_id|>".
std::vector<std::string> chat_end_of_turn(ChatTemplate t);

}  // namespace elastic

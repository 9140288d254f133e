// elastic tokenize / detokenize: text <-> token ids with a model's tokenizer.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli_options.h"
#include "commands.h"
#include "elastic/error.h"
#include "elastic/tokenizer.h"

namespace elastic::cli {

namespace {

std::string read_stdin() {
  std::ios::sync_with_stdio(false);
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

std::string ids_line(const std::vector<int32_t>& ids) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ' ';
    out += std::to_string(ids[i]);
  }
  return out;
}

}  // namespace

int cmd_tokenize(int argc, char** argv) {
  CommandLine cl(
      "tokenize", "-m MODEL [--json] [--no-special] [--add-special] [--text TEXT]",
      "Encodes text with the tokenizer of MODEL (a model folder, or a tokenizer.json /\n"
      "tokenizer.model / vocab.json file) and prints the token ids, space separated, on\n"
      "one line. The text is --text, else all of standard input, byte for byte (a trailing\n"
      "newline is text).");
  std::string model;
  std::optional<std::string> text;
  bool json_mode = false;
  EncodeOptions opt;
  cl.text("-m,--model", model, "MODEL", "model folder or tokenizer file");
  cl.text("--text", text, "TEXT", "the text to encode (default: standard input)");
  json_option_add(cl, json_mode,
                  "read JSON lines {\"text\": ...} from stdin and write one line\n"
                  "{\"ids\": [...]} per input line, in order (empty lines are skipped)");
  cl.flag("--no-special", opt.parse_special,
          "special-token strings in the text are plain text, not special ids", false);
  cl.flag("--add-special", opt.add_special, "apply the post-processor (e.g. prepend BOS)");
  if (!cl.parse(argc, argv)) return 0;
  if (model.empty()) throw Error(cl.missing("-m MODEL"));
  Tokenizer tok = Tokenizer::load(model);
  if (!json_mode) {
    if (!text) text = read_stdin();
    std::string line = ids_line(tok.encode(*text, opt)) + "\n";
    std::fwrite(line.data(), 1, line.size(), stdout);
    return 0;
  }
  std::string line;
  size_t line_no = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    nlohmann::json doc = nlohmann::json::parse(line, nullptr, false);
    if (doc.is_discarded() || !doc.is_object() || !doc.contains("text") ||
        !doc["text"].is_string()) {
      throw Error("stdin line " + std::to_string(line_no) +
                  ": expected a JSON object with a string field \"text\"");
    }
    nlohmann::json out = {{"ids", tok.encode(doc["text"].get<std::string>(), opt)}};
    std::string s = out.dump() + "\n";
    std::fwrite(s.data(), 1, s.size(), stdout);
    std::fflush(stdout);
  }
  return 0;
}

int cmd_detokenize(int argc, char** argv) {
  CommandLine cl(
      "detokenize", "-m MODEL [--ids \"1 2 3\"] [--skip-special]",
      "Decodes token ids (from --ids, else standard input; separated by spaces, commas or\n"
      "newlines) and writes the text to stdout exactly, with no newline added.");
  std::string model;
  std::optional<std::string> ids_arg;
  bool skip_special = false;
  cl.text("-m,--model", model, "MODEL", "model folder or tokenizer file");
  cl.text("--ids", ids_arg, "IDS", "token ids (default: standard input)");
  cl.flag("--skip-special", skip_special, "leave special tokens out of the text");
  if (!cl.parse(argc, argv)) return 0;
  if (model.empty()) throw Error(cl.missing("-m MODEL"));
  const std::string ids_text = ids_arg ? *ids_arg : read_stdin();
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < ids_text.size()) {
    char c = ids_text[i];
    if (c == ' ' || c == ',' || c == '\n' || c == '\r' || c == '\t') {
      ++i;
      continue;
    }
    size_t j = i;
    int64_t v = 0;
    while (j < ids_text.size() && ids_text[j] >= '0' && ids_text[j] <= '9' && j - i < 10) {
      v = v * 10 + (ids_text[j] - '0');
      ++j;
    }
    bool ended = j == ids_text.size() || ids_text[j] == ' ' || ids_text[j] == ',' ||
                 ids_text[j] == '\n' || ids_text[j] == '\r' || ids_text[j] == '\t';
    if (j == i || !ended || v > INT32_MAX) {
      throw Error("ids: expected non-negative integers separated by spaces or commas, got '" +
                  ids_text.substr(i, 20) + "'");
    }
    ids.push_back(static_cast<int32_t>(v));
    i = j;
  }
  Tokenizer tok = Tokenizer::load(model);
  std::string text = tok.decode(ids, skip_special);
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

}  // namespace elastic::cli

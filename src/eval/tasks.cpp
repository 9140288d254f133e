// The task registry, the task templates and the default vocabularies of the evaluation suite.
#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include "elastic/error.h"
#include "elastic/eval.h"
#include "eval_internal.h"

namespace elastic {

using namespace eval_detail;

const char* task_kind_name(TaskKind k) { return k == TaskKind::sensitive ? "sensitive" : "robust"; }

const char* score_rule_name(ScoreRule r) {
  switch (r) {
    case ScoreRule::exact:
      return "exact";
    case ScoreRule::contains:
      return "contains";
    case ScoreRule::all_of:
      return "all-of";
  }
  return "?";
}

ScoreRule score_rule_parse(const std::string& text, const std::string& what) {
  for (ScoreRule r : {ScoreRule::exact, ScoreRule::contains, ScoreRule::all_of})
    if (text == score_rule_name(r)) return r;
  throw Error(what + ": unknown score rule '" + text + "' (expected exact, contains or all-of)");
}

const std::vector<TaskInfo>& eval_tasks() {
  using K = TaskKind;
  using S = ScoreRule;
  static const std::vector<TaskInfo> tasks = {
      {"niah_single", K::sensitive, S::contains,
       "one needle (key, value) in the noise haystack; asks its value"},
      {"niah_multikey", K::sensitive, S::contains,
       "four needles with different keys in a random-word haystack; asks one key's value"},
      {"niah_multivalue", K::sensitive, S::all_of,
       "four values of one key in the noise haystack; asks all of them"},
      {"niah_multiquery", K::sensitive, S::all_of,
       "four needles in the noise haystack; asks the values of all four keys"},
      {"kv_retrieval", K::sensitive, S::contains,
       "key-value pairs (one per 64 tokens, 2 to 32) in a random-word haystack; asks one value"},
      {"variable_tracking", K::sensitive, S::all_of,
       "two chains of four assignments in the noise haystack; asks every variable of one value"},
      {"common_words", K::sensitive, S::all_of,
       "a word list; asks the 5 most common words (decoys dominate the list's last quarter)"},
      {"frequent_words", K::sensitive, S::all_of,
       "Zipf-distributed words; asks the 3 most frequent (absent from the text's last quarter)"},
      {"repeat_last_line", K::robust, S::exact, "random-word lines; asks to repeat the last line"},
      {"continue_pattern", K::robust, S::exact,
       "random-word lines ending in a repeating word pattern; asks the next word"},
      {"arithmetic_last", K::robust, S::exact,
       "lines mentioning numbers; asks the sum of the last two numbers"},
      {"count_word", K::robust, S::exact,
       "paragraphs of random words; asks how often a word occurs in the last paragraph"},
  };
  return tasks;
}

const TaskInfo& eval_task_find(const std::string& name) {
  for (const TaskInfo& t : eval_tasks())
    if (t.name == name) return t;
  std::string known;
  for (const TaskInfo& t : eval_tasks()) known += (known.empty() ? "" : ", ") + t.name;
  throw Error("unknown task '" + name + "' (tasks: " + known + ")");
}

namespace eval_detail {

namespace {

constexpr const char* kNiahInstruction =
    "Some special magic words are hidden within the following text. Make sure to memorize them. "
    "I will quiz you about the words afterwards.";
constexpr const char* kNiahStatement = "The special magic word for {key} is {value}.";
constexpr const char* kNiahQuestion =
    "Question: What is the special magic word for {key} mentioned in the provided text? Answer:";
constexpr const char* kNiahAllQuestion =
    "Question: What are all the special magic words for {keys} mentioned in the provided text? "
    "Answer:";
constexpr const char* kLineInstruction = "Read the text below.";

const std::map<std::string, TaskTemplates>& templates() {
  static const std::map<std::string, TaskTemplates> t = {
      {"niah_single", {kNiahInstruction, kNiahStatement, kNiahQuestion}},
      {"niah_multikey", {kNiahInstruction, kNiahStatement, kNiahQuestion}},
      {"niah_multivalue",
       {kNiahInstruction, "One of the special magic words for {key} is {value}.",
        kNiahAllQuestion}},
      {"niah_multiquery", {kNiahInstruction, kNiahStatement, kNiahAllQuestion}},
      {"kv_retrieval",
       {"The text below gives a value for many keys. Remember every value. I will ask you about "
        "one key afterwards.",
        "The value of {key} is {value}.", "Question: What is the value of {key}? Answer:"}},
      {"variable_tracking",
       {"Memorize and track the chain of variable assignments hidden in the following text.",
        "Let {key} be {value}.",
        "Question: Find all variables that are assigned the value {value} in the text above. "
        "Answer:"}},
      {"common_words",
       {"Below is a list of words. Some words appear more often than others. Memorize the ones "
        "that appear most often.",
        "", "Question: What are the {n} most common words in the list above? Answer:"}},
      {"frequent_words",
       {"Read the following coded text and track the frequency of each coded word. Find the {n} "
        "most frequently appeared coded words.",
        "",
        "Question: What are the {n} most frequently appeared coded words in the text above? "
        "Answer:"}},
      {"repeat_last_line",
       {"Read the text below. At the end, repeat its last line exactly.", "",
        "Question: What is the last line of the text above? Answer:"}},
      {"continue_pattern",
       {"Read the text below. Its last line is a pattern of words. At the end, continue the "
        "pattern.",
        "", "Question: What word comes next in the pattern? Answer:"}},
      {"arithmetic_last",
       {"Read the text below. It mentions many numbers. At the end, add up the last two numbers.",
        "the number is {value}.",
        "Question: What is the sum of the last two numbers in the text above? Answer:"}},
      {"count_word",
       {"Read the text below. At the end, count how many times a word appears in its last "
        "paragraph.",
        "", "Question: How many times does the word {key} appear in the last paragraph? Answer:"}},
  };
  return t;
}

}  // namespace

const TaskTemplates& task_templates(const std::string& name) {
  const auto& t = templates();
  const auto it = t.find(name);
  ELASTIC_CHECK_MSG(it != t.end(), "no templates for task " + name);
  return it->second;
}

std::vector<std::string> task_template_texts() {
  std::vector<std::string> out = {kLineInstruction};
  for (const auto& [name, t] : templates())
    for (const char* s : {t.instruction, t.statement, t.question}) out.push_back(s);
  return out;
}

std::string template_fill(std::string text,
                          const std::vector<std::pair<std::string, std::string>>& values) {
  for (const auto& [name, value] : values) {
    const std::string slot = "{" + name + "}";
    for (size_t at = text.find(slot); at != std::string::npos; at = text.find(slot, at))
      text.replace(at, slot.size(), value), at += value.size();
  }
  return text;
}

std::vector<std::string> text_words(std::string_view text) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : text) {
    if (std::isalnum(static_cast<unsigned char>(ch))) {
      cur += ch;
    } else if (!cur.empty()) {
      out.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

}  // namespace eval_detail

const EvalVocab& eval_vocab_default() {
  static const EvalVocab v = {
      // keys: concrete nouns
      {"apple",  "banana", "bear",   "bell",   "bird",   "boat",   "book",   "bottle", "bread",
       "bridge", "brush",  "button", "cake",   "camera", "candle", "car",    "carpet", "castle",
       "chair",  "cheese", "clock",  "cloud",  "coat",   "cookie", "crown",  "cup",    "desk",
       "doll",   "drum",   "duck",   "eagle",  "egg",    "engine", "fish",   "flag",   "flower",
       "fork",   "fox",    "frog",   "ghost",  "glove",  "goat",   "guitar", "hammer", "hat",
       "horse",  "jacket", "kettle", "kite",   "ladder", "lamp",   "lemon",  "lion",   "mirror",
       "monkey", "mouse",  "nest",   "owl",    "onion",  "panda",  "pencil", "piano",  "pillow",
       "pizza",  "rabbit", "robot",  "rocket", "rose",   "shoe",   "snake",  "sock",   "spoon",
       "tiger",  "tomato", "towel",  "train",  "truck",  "turtle", "violin", "wagon",  "wallet",
       "whale",  "window", "wolf",   "zebra"},
      // values: adjectives
      {"amber",  "brave",  "bright", "calm",   "clever", "crisp",  "curly",  "dusty",  "eager",
       "fancy",  "fierce", "fluffy", "frozen", "gentle", "giant",  "glossy", "golden", "grumpy",
       "hollow", "humble", "icy",    "jolly",  "kind",   "lazy",   "lively", "lucky",  "merry",
       "misty",  "muddy",  "narrow", "noble",  "polite", "proud",  "purple", "rapid",  "rusty",
       "salty",  "shiny",  "silent", "silver", "sleepy", "smooth", "sneaky", "sour",   "spicy",
       "steady", "sticky", "stormy", "sunny",  "sweet",  "swift",  "tidy",   "tiny",   "wild",
       "windy",  "wise",   "witty",  "wooden"},
      // filler: plain words for random sentences
      {"the",     "a",       "man",    "woman",   "boy",    "girl",  "friend", "mother",
       "father",  "teacher", "went",   "walked",  "ran",    "saw",   "found",  "liked",
       "made",    "took",    "gave",   "played",  "sang",   "with",  "on",     "under",
       "near",    "over",    "to",     "from",    "house",  "road",  "town",   "park",
       "school",  "field",   "forest", "village", "shop",   "day",   "night",  "morning",
       "evening", "then",    "but",    "very",    "little", "big",   "old",    "new",
       "good",    "long",    "small",  "warm",    "cold",   "early", "late",   "together"},
      // noise: RULER's noise haystack
      {"The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
       "There and back again."},
  };
  return v;
}

void eval_vocab_validate(const EvalVocab& v) {
  const std::pair<const char*, const std::vector<std::string>*> lists[] = {
      {"keys", &v.keys}, {"values", &v.values}, {"filler", &v.filler}};
  std::map<std::string, std::string> owner;  // word -> list
  for (const auto& [name, list] : lists) {
    if (list->empty()) throw Error(std::string("eval vocabulary: the ") + name + " list is empty");
    for (const std::string& w : *list) {
      const bool plain = !w.empty() && std::all_of(w.begin(), w.end(),
                                                   [](char c) { return c >= 'a' && c <= 'z'; });
      if (!plain)
        throw Error(std::string("eval vocabulary: ") + name + " entry '" + w +
                    "' is not one lower-case word of letters a-z");
      const auto [it, fresh] = owner.emplace(w, name);
      if (!fresh)
        throw Error(std::string("eval vocabulary: '") + w + "' is in both " + it->second + " and " +
                    name + " (or twice)");
    }
  }
  if (v.keys.size() < 8 || v.values.size() < 8)
    throw Error("eval vocabulary: at least 8 keys and 8 values are needed");
  if (v.noise.empty()) throw Error("eval vocabulary: the noise list is empty");
  std::set<std::string> template_words;
  std::vector<std::string> texts = eval_detail::task_template_texts();
  texts.insert(texts.end(), v.noise.begin(), v.noise.end());
  for (const std::string& t : texts) {
    // Placeholders are not words of the text.
    std::string s = t;
    for (size_t a; (a = s.find('{')) != std::string::npos;) s.erase(a, s.find('}', a) - a + 1);
    for (std::string w : eval_detail::text_words(s)) {
      std::transform(w.begin(), w.end(), w.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      template_words.insert(w);
    }
  }
  for (const auto* list : {&v.keys, &v.values})
    for (const std::string& w : *list)
      if (template_words.count(w))
        throw Error(
            "eval vocabulary: '" + w +
            "' is a word of a task template or noise sentence; keys and values must not be");
}

std::vector<std::string> eval_vocab_words(const EvalVocab& v) {
  std::set<std::string> words(v.keys.begin(), v.keys.end());
  words.insert(v.values.begin(), v.values.end());
  words.insert(v.filler.begin(), v.filler.end());
  std::vector<std::string> texts = eval_detail::task_template_texts();
  texts.insert(texts.end(), v.noise.begin(), v.noise.end());
  for (std::string t : texts) {
    for (size_t a; (a = t.find('{')) != std::string::npos;) t.erase(a, t.find('}', a) - a + 1);
    for (const std::string& w : eval_detail::text_words(t)) words.insert(w);
  }
  // Numbers: digits 0..9 (arithmetic operands, counts, "{n}") and sums up to 18.
  for (int i = 0; i <= 18; ++i) words.insert(std::to_string(i));
  return {words.begin(), words.end()};
}

}  // namespace elastic

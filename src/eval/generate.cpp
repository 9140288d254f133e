// Generators of the evaluation suite (RULER families and sparsity-robust tasks).
//
// A generator draws a plan from the sample's PRNG (keys, values, needle depths) and returns a
// body builder: body(k) is the prompt body for k haystack units. Unit i of a haystack depends
// only on (sample seed, i), and a needle at depth D (permille, drawn once) sits before unit
// floor(D * k / 1000), so bodies for growing k grow by units and keep their needles at the same
// relative depth. eval_generate fits k to the token budget by bracketing and bisection.
#include <algorithm>
#include <functional>

#include "elastic/error.h"
#include "elastic/eval.h"
#include "elastic/tokenizer.h"
#include "eval_internal.h"

namespace elastic {

using namespace eval_detail;

namespace {

struct Body {
  std::string text;                  // lines between the instruction and the question (no final
                                     // newline; one more makes a blank line before the question)
  std::vector<std::string> answers;  // may depend on k (repeat_last_line)
};

struct Plan {
  std::string instruction, question;
  std::vector<std::string> answers;     // when body() returns none
  std::function<Body(int64_t k)> body;  // k >= min_units
  int64_t min_units = 0;
};

// Seed-stream tags (any distinct constants).
constexpr uint64_t kFillerStream = 0xF111E5, kUnitStream = 0x0417, kListStream = 0x1157;

// Sentence i of the random-word haystack: 6..10 filler words and a period.
std::string filler_sentence(uint64_t seed, int64_t i, const EvalVocab& v) {
  EvalRng r(seed_of(seed, kFillerStream, static_cast<uint64_t>(i)));
  const int64_t n = r.range(6, 10);
  std::string s;
  for (int64_t j = 0; j < n; ++j) s += (j ? " " : "") + r.pick(v.filler);
  return s + ".";
}

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string s;
  for (size_t i = 0; i < parts.size(); ++i) s += (i ? sep : "") + parts[i];
  return s;
}

// "a", "a and b", "a, b and c".
std::string join_and(const std::vector<std::string>& parts) {
  if (parts.size() <= 1) return join(parts, "");
  return join({parts.begin(), parts.end() - 1}, ", ") + " and " + parts.back();
}

struct Insert {
  int64_t depth = 0;  // permille of the haystack, [0, 1000]
  std::string text;
};

// Lines of a haystack of k units with the inserts placed before unit floor(depth * k / 1000);
// inserts at the same place keep the order of (depth, index in `inserts`).
std::vector<std::string> haystack_lines(int64_t k, const std::function<std::string(int64_t)>& unit,
                                        std::vector<Insert> inserts) {
  std::stable_sort(inserts.begin(), inserts.end(),
                   [](const Insert& a, const Insert& b) { return a.depth < b.depth; });
  std::vector<std::string> lines;
  size_t next = 0;
  for (int64_t i = 0; i <= k; ++i) {
    while (next < inserts.size() && inserts[next].depth * k / 1000 <= i)
      lines.push_back(inserts[next++].text);
    if (i < k) lines.push_back(unit(i));
  }
  return lines;
}

std::function<std::string(int64_t)> noise_units(const EvalVocab& v) {
  return [&v](int64_t i) { return v.noise[static_cast<size_t>(i) % v.noise.size()]; };
}

std::function<std::string(int64_t)> filler_units(uint64_t seed, const EvalVocab& v) {
  return [seed, &v](int64_t i) { return filler_sentence(seed, i, v); };
}

// Needle tasks: (key, value) statements at random depths of a haystack; the question fills
// {key} / {keys}. Answers are given, or all values in the order the text states them.
Plan plan_needles(const TaskTemplates& t, EvalRng& rng, const std::vector<std::string>& keys,
                  const std::vector<std::string>& values, std::function<std::string(int64_t)> unit,
                  const std::vector<std::string>& asked, std::vector<std::string> answers,
                  bool answers_in_text_order = false) {
  std::vector<Insert> inserts;
  for (size_t i = 0; i < keys.size(); ++i)
    inserts.push_back({static_cast<int64_t>(rng.below(1001)),
                       template_fill(t.statement, {{"key", keys[i]}, {"value", values[i]}})});
  if (answers_in_text_order) {  // answers = values, listed as the text states them
    std::vector<size_t> order(keys.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return inserts[a].depth < inserts[b].depth; });
    answers.clear();
    for (size_t i : order) answers.push_back(values[i]);
  }
  Plan p;
  p.instruction = t.instruction;
  p.question = template_fill(t.question, {{"key", asked[0]}, {"keys", join_and(asked)}});
  p.answers = std::move(answers);
  p.body = [inserts, unit](int64_t k) {
    return Body{join(haystack_lines(k, unit, inserts), "\n"), {}};
  };
  return p;
}

// Lines of 10 words each.
std::string word_lines(const std::vector<std::string>& words) {
  std::string s;
  for (size_t i = 0; i < words.size(); ++i) s += (i == 0 ? "" : i % 10 ? " " : "\n") + words[i];
  return s;
}

// A word list of k words in two segments: head (the first k - k/4 words) holds `head_words`,
// the tail (the last k/4) `tail_words`, the rest of both filled from `spread` (occurrences in a
// random order: the head's free places first). Each segment is shuffled.
std::string two_segment_list(int64_t k, std::vector<std::string> head_words,
                             std::vector<std::string> tail_words, std::vector<std::string> spread,
                             EvalRng& rng) {
  const size_t tail_n = static_cast<size_t>(k / 4), head_n = static_cast<size_t>(k) - tail_n;
  ELASTIC_CHECK(head_words.size() <= head_n && tail_words.size() <= tail_n);
  ELASTIC_CHECK(head_words.size() + tail_words.size() + spread.size() == static_cast<size_t>(k));
  rng.shuffle(spread);
  size_t s = 0;
  while (head_words.size() < head_n) head_words.push_back(spread[s++]);
  while (tail_words.size() < tail_n) tail_words.push_back(spread[s++]);
  rng.shuffle(head_words);
  rng.shuffle(tail_words);
  head_words.insert(head_words.end(), tail_words.begin(), tail_words.end());
  return word_lines(head_words);
}

// common_words: 5 common words (keys), c >= max(3, k/10) times each, all in the head; 5 decoys
// (keys), d = max(2, c/3) times each, all in the tail (locally the most common: a model that
// sees only the end answers the decoys); the rest from every other word of the vocabulary
// (keys, values, filler), each fewer than d times.
Plan plan_common_words(const TaskTemplates& t, EvalRng& rng, uint64_t sseed, const EvalVocab& v) {
  if (v.keys.size() < 10) throw Error("task common_words needs at least 10 keys in the vocabulary");
  std::vector<std::string> words = rng.sample(v.keys, v.keys.size());
  for (const auto* list : {&v.values, &v.filler})
    words.insert(words.end(), list->begin(), list->end());
  Plan p;
  p.instruction = t.instruction;
  p.question = template_fill(t.question, {{"n", "5"}});
  p.answers.assign(words.begin(), words.begin() + 5);
  p.min_units = 40;
  p.body = [words, sseed](int64_t k) {
    // c grows past k/10 when the other words are too few to stay below d each.
    const int64_t types = static_cast<int64_t>(words.size()) - 10;
    int64_t c = std::max<int64_t>(3, k / 10), d = 0, rest = 0;
    for (;; ++c) {
      d = std::max<int64_t>(2, c / 3);
      rest = k - 5 * c - 5 * d;
      if (types < 1 || rest < 0 || 5 * c > k - k / 4 || 5 * d > k / 4)
        throw Error("task common_words: too few words in the vocabulary for a list of " +
                    std::to_string(k) + " words");
      if ((rest + types - 1) / types < d) break;
    }
    std::vector<std::string> head, tail, spread;
    for (int i = 0; i < 5; ++i) head.insert(head.end(), c, words[i]);
    for (int i = 5; i < 10; ++i) tail.insert(tail.end(), d, words[i]);
    for (int64_t i = 0; i < rest; ++i) spread.push_back(words[10 + i % types]);
    EvalRng r(seed_of(sseed, kListStream, static_cast<uint64_t>(k)));
    return Body{two_segment_list(k, head, tail, spread, r), {}};
  };
  return p;
}

// frequent_words: T = min(20, values) words with Zipf counts (count_r ~ k / (r + 1), leftover to
// rank 0; the top 4 strictly decreasing); every occurrence of the top 3 lies in the head, the
// tail holds only lower ranks (so the end of the text alone gives a wrong answer).
Plan plan_frequent_words(const TaskTemplates& t, EvalRng& rng, uint64_t sseed, const EvalVocab& v) {
  const size_t T = std::min<size_t>(20, v.values.size());
  const std::vector<std::string> words = rng.sample(v.values, T);
  Plan p;
  p.instruction = template_fill(t.instruction, {{"n", "3"}});
  p.question = template_fill(t.question, {{"n", "3"}});
  p.answers.assign(words.begin(), words.begin() + 3);
  p.min_units = 60;
  p.body = [words, sseed, T](int64_t k) {
    std::vector<int64_t> count(T);
    int64_t total_w = 0, used = 0;
    for (size_t r = 0; r < T; ++r) total_w += 720720 / static_cast<int64_t>(r + 1);
    for (size_t r = 0; r < T; ++r) used += count[r] = k * (720720 / int64_t(r + 1)) / total_w;
    count[0] += k - used;
    int64_t low = 0;  // occurrences of ranks >= 3
    for (size_t r = 3; r < T; ++r) low += count[r];
    if (count[1] <= count[2] || count[2] <= count[3] || low < k / 4)
      throw Error("task frequent_words: too few values in the vocabulary or too short a text (" +
                  std::to_string(k) + " words)");
    std::vector<std::string> head, spread;
    for (size_t r = 0; r < 3; ++r) head.insert(head.end(), count[r], words[r]);
    for (size_t r = 3; r < T; ++r) spread.insert(spread.end(), count[r], words[r]);
    // The tail is filled from `spread` first, so it gets only ranks >= 3: place the tail's share
    // by giving two_segment_list an empty head share of spread.
    EvalRng rr(seed_of(sseed, kListStream, static_cast<uint64_t>(k)));
    rr.shuffle(spread);
    const size_t tail_n = static_cast<size_t>(k / 4);
    std::vector<std::string> tail(spread.begin(), spread.begin() + tail_n);
    spread.erase(spread.begin(), spread.begin() + tail_n);
    head.insert(head.end(), spread.begin(), spread.end());
    return Body{two_segment_list(k, head, tail, {}, rr), {}};
  };
  return p;
}

Plan plan_variable_tracking(const TaskTemplates& t, EvalRng& rng, const EvalVocab& v) {
  constexpr int kChains = 2, kHops = 4;
  const std::vector<std::string> names = rng.sample(v.keys, kChains * (kHops + 1));
  const std::vector<std::string> vals = rng.sample(v.values, kChains);
  std::vector<Insert> inserts;
  for (int c = 0; c < kChains; ++c) {
    std::vector<int64_t> depths;
    for (int h = 0; h <= kHops; ++h) depths.push_back(static_cast<int64_t>(rng.below(1001)));
    std::sort(depths.begin(), depths.end());  // a chain is stated in order
    for (int h = 0; h <= kHops; ++h) {
      const std::string& from = h == 0 ? vals[c] : names[c * (kHops + 1) + h - 1];
      inserts.push_back({depths[h], template_fill(t.statement, {{"key", names[c * (kHops + 1) + h]},
                                                                {"value", from}})});
    }
  }
  Plan p;
  p.instruction = t.instruction;
  p.question = template_fill(t.question, {{"value", vals[0]}});
  p.answers.assign(names.begin(), names.begin() + kHops + 1);
  auto unit = noise_units(v);
  p.body = [inserts, unit](int64_t k) {
    return Body{join(haystack_lines(k, unit, inserts), "\n"), {}};
  };
  return p;
}

Plan plan_repeat_last_line(const TaskTemplates& t, uint64_t sseed, const EvalVocab& v) {
  Plan p;
  p.instruction = t.instruction;
  p.question = t.question;
  p.min_units = 1;
  p.body = [sseed, &v](int64_t k) {
    std::vector<std::string> lines;
    for (int64_t i = 0; i < k; ++i) lines.push_back(filler_sentence(sseed, i, v));
    return Body{join(lines, "\n"), {lines.back()}};
  };
  return p;
}

Plan plan_continue_pattern(const TaskTemplates& t, EvalRng& rng, uint64_t sseed,
                           const EvalVocab& v) {
  const int64_t m = rng.range(2, 4), reps = rng.range(3, 5),
                extra = static_cast<int64_t>(rng.below(m));
  const std::vector<std::string> cycle = rng.sample(v.values, static_cast<size_t>(m));
  std::vector<std::string> pattern;
  for (int64_t i = 0; i < m * reps + extra; ++i) pattern.push_back(cycle[i % m]);
  Plan p;
  p.instruction = t.instruction;
  p.question = t.question;
  p.answers = {cycle[extra]};
  const std::string last = join(pattern, " ");
  p.body = [sseed, &v, last](int64_t k) {
    std::vector<std::string> lines;
    for (int64_t i = 0; i < k; ++i) lines.push_back(filler_sentence(sseed, i, v));
    lines.push_back(last);
    return Body{join(lines, "\n"), {}};
  };
  return p;
}

// Haystack units: a filler sentence, or (one in four) "the number is D."; then a fixed tail of
// three lines: "the number is A.", a filler sentence, "the number is B."; answer A + B.
Plan plan_arithmetic_last(const TaskTemplates& t, EvalRng& rng, uint64_t sseed,
                          const EvalVocab& v) {
  const int64_t a = rng.range(0, 9), b = rng.range(0, 9);
  const std::string statement = t.statement;
  auto number = [statement](int64_t x) {
    return template_fill(statement, {{"value", std::to_string(x)}});
  };
  const std::vector<std::string> tail = {number(a), filler_sentence(sseed, -1, v), number(b)};
  Plan p;
  p.instruction = t.instruction;
  p.question = t.question;
  p.answers = {std::to_string(a + b)};
  p.body = [sseed, &v, tail, number](int64_t k) {
    std::vector<std::string> lines;
    for (int64_t i = 0; i < k; ++i) {
      EvalRng r(seed_of(sseed, kUnitStream, static_cast<uint64_t>(i)));
      lines.push_back(r.below(4) == 0 ? number(r.range(0, 9)) : filler_sentence(sseed, i, v));
    }
    lines.insert(lines.end(), tail.begin(), tail.end());
    return Body{join(lines, "\n"), {}};
  };
  return p;
}

// Paragraphs of 5 filler sentences separated by blank lines (one sentence in three has the
// counted word inserted, as a distractor); the last paragraph has 4 sentences and the word
// 1..5 times.
Plan plan_count_word(const TaskTemplates& t, EvalRng& rng, uint64_t sseed, const EvalVocab& v) {
  const std::string word = rng.pick(v.keys);
  const int64_t times = rng.range(1, 5);
  auto split = [](const std::string& sentence) {  // words without the final period
    std::vector<std::string> w = text_words(sentence);
    return w;
  };
  std::vector<std::vector<std::string>> last(4);
  for (int64_t s = 0; s < 4; ++s) last[s] = split(filler_sentence(sseed, -1 - s, v));
  for (int64_t i = 0; i < times; ++i) {
    auto& s = last[rng.below(4)];
    s.insert(s.begin() + static_cast<int64_t>(rng.below(s.size() + 1)), word);
  }
  std::vector<std::string> last_lines;
  for (const auto& s : last) last_lines.push_back(join(s, " ") + ".");
  Plan p;
  p.instruction = t.instruction;
  p.question = template_fill(t.question, {{"key", word}});
  p.answers = {std::to_string(times)};
  p.body = [sseed, &v, word, split, last_lines](int64_t k) {
    std::string text;
    for (int64_t i = 0; i < k; ++i) {
      EvalRng r(seed_of(sseed, kUnitStream, static_cast<uint64_t>(i)));
      std::string line = filler_sentence(sseed, i, v);
      if (r.below(3) == 0) {
        std::vector<std::string> w = split(line);
        w.insert(w.begin() + static_cast<int64_t>(r.below(w.size() + 1)), word);
        line = join(w, " ") + ".";
      }
      text += line + (i % 5 == 4 ? "\n\n" : "\n");
    }
    if (k % 5 != 0) text += "\n";
    return Body{text + join(last_lines, "\n") + "\n", {}};
  };
  return p;
}

Plan plan_task(const std::string& task, int64_t target_tokens, uint64_t sseed, const EvalVocab& v) {
  const TaskTemplates& t = task_templates(task);
  EvalRng rng(seed_of(sseed, kUnitStream, 0xA11));  // the plan's own stream
  if (task == "niah_single") {
    const std::string key = rng.pick(v.keys), value = rng.pick(v.values);
    return plan_needles(t, rng, {key}, {value}, noise_units(v), {key}, {value});
  }
  if (task == "niah_multikey" || task == "niah_multiquery" || task == "kv_retrieval") {
    // kv_retrieval: one pair per 64 tokens of the budget, 2 to 32 pairs.
    const size_t pairs = static_cast<size_t>(std::clamp<int64_t>(target_tokens / 64, 2, 32));
    const size_t n = task == "kv_retrieval" ? std::min({pairs, v.keys.size(), v.values.size()}) : 4;
    const std::vector<std::string> keys = rng.sample(v.keys, n), vals = rng.sample(v.values, n);
    if (task == "niah_multiquery")
      return plan_needles(t, rng, keys, vals, noise_units(v), keys, vals);
    const size_t q = rng.below(n);
    return plan_needles(t, rng, keys, vals, filler_units(sseed, v), {keys[q]}, {vals[q]});
  }
  if (task == "niah_multivalue") {
    const std::string key = rng.pick(v.keys);
    const std::vector<std::string> vals = rng.sample(v.values, 4);
    return plan_needles(t, rng, std::vector<std::string>(4, key), vals, noise_units(v), {key}, {},
                        true);
  }
  if (task == "variable_tracking") return plan_variable_tracking(t, rng, v);
  if (task == "common_words") return plan_common_words(t, rng, sseed, v);
  if (task == "frequent_words") return plan_frequent_words(t, rng, sseed, v);
  if (task == "repeat_last_line") return plan_repeat_last_line(t, sseed, v);
  if (task == "continue_pattern") return plan_continue_pattern(t, rng, sseed, v);
  if (task == "arithmetic_last") return plan_arithmetic_last(t, rng, sseed, v);
  if (task == "count_word") return plan_count_word(t, rng, sseed, v);
  ELASTIC_CHECK_MSG(false, "no generator for task " + task);
  return {};
}

}  // namespace

std::string eval_sample_completion(const EvalSample& s) {
  if (s.answers.empty()) return "";
  return " " + (s.score == ScoreRule::all_of ? join(s.answers, ", ") : s.answers[0]);
}

TokenCounter eval_token_counter(const Tokenizer& tokenizer, bool add_special) {
  return [&tokenizer, add_special](const std::string& text) {
    EncodeOptions eo;
    eo.add_special = add_special;
    return static_cast<int64_t>(tokenizer.encode(text, eo).size());
  };
}

EvalSample eval_generate(const std::string& task, int64_t target_tokens, uint64_t seed,
                         int64_t index, const TokenCounter& count, const EvalVocab& vocab) {
  const TaskInfo& info = eval_task_find(task);
  eval_vocab_validate(vocab);
  if (target_tokens < 1) throw Error("eval: the target length must be >= 1 token");
  const uint64_t sseed = seed_of(seed ^ hash64(task), static_cast<uint64_t>(target_tokens),
                                 static_cast<uint64_t>(index));
  const Plan plan = plan_task(task, target_tokens, sseed, vocab);

  auto build = [&](int64_t k, std::vector<std::string>* answers) {
    Body b = plan.body(k);
    if (answers) *answers = b.answers.empty() ? plan.answers : b.answers;
    return plan.instruction + "\n" + (b.text.empty() ? "" : b.text + "\n") + plan.question;
  };
  auto fits = [&](int64_t k) { return count(build(k, nullptr)) <= target_tokens; };

  // Invariant of the search: fits(lo), and !fits(hi) unless hi == kMaxUnits.
  constexpr int64_t kMaxUnits = int64_t(1) << 24;
  int64_t lo = plan.min_units;
  const int64_t c0 = count(build(lo, nullptr));
  if (c0 > target_tokens)
    throw Error("task " + task + ": a length of " + std::to_string(target_tokens) +
                " tokens is too short (its smallest prompt has " + std::to_string(c0) + " tokens)");
  // Guess from the growth over 16 units, then bracket around the guess.
  const int64_t c16 = count(build(lo + 16, nullptr));
  int64_t guess = lo + (target_tokens - c0) * 16 / std::max<int64_t>(1, c16 - c0);
  guess = std::clamp<int64_t>(guess, lo, kMaxUnits);
  int64_t hi = kMaxUnits;
  if (fits(guess)) {
    lo = guess;
    for (int64_t step = std::max<int64_t>(1, guess / 64);; step *= 2) {
      const int64_t next = std::min(kMaxUnits, lo + step);
      if (next == lo || !fits(next)) {
        hi = next;
        break;
      }
      lo = next;
    }
  } else {
    hi = guess;
    for (int64_t step = std::max<int64_t>(1, guess / 64);; step *= 2) {
      const int64_t next = std::max(lo, hi - step);
      if (next == lo || fits(next)) {
        lo = next;
        break;
      }
      hi = next;
    }
  }
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    (fits(mid) ? lo : hi) = mid;
  }
  EvalSample s;
  s.task = task;
  s.score = info.score;
  s.length = target_tokens;
  s.prompt = build(lo, &s.answers);
  return s;
}

std::vector<EvalSample> eval_generate_set(const std::string& task, int64_t target_tokens, int64_t n,
                                          uint64_t seed, const TokenCounter& count,
                                          const EvalVocab& vocab) {
  std::vector<EvalSample> out;
  for (int64_t i = 0; i < n; ++i)
    out.push_back(eval_generate(task, target_tokens, seed, i, count, vocab));
  return out;
}

}  // namespace elastic

// The option table of the elastic command on CLI11, and the option groups shared by commands.
#include "cli_options.h"

#include <omp.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <utility>

#include "elastic/error.h"
#ifdef ELASTIC_HAVE_CUDA
#include "elastic/cuda/backend_cuda.h"
#endif

namespace elastic::cli {
namespace {

// Width of the option column of --help; longer names put their text on the next line.
constexpr size_t kHelpColumn = 25;

// The help layout of every command:
//   usage: elastic COMMAND SYNOPSIS
//   <description>
//   <section>:
//     -m, --model DIR        text
//   <footer>
class HelpFormatter final : public CLI::Formatter {
 public:
  HelpFormatter(std::string command, std::string synopsis)
      : command_(std::move(command)), synopsis_(std::move(synopsis)) {
    column_width(kHelpColumn);
    label("Positionals", "Arguments");
  }
  std::string make_help(const CLI::App* app, std::string, CLI::AppFormatMode) const override {
    std::ostringstream out;
    out << "usage: elastic " << command_ << (synopsis_.empty() ? "" : " ") << synopsis_ << "\n";
    if (!app->get_description().empty()) out << "\n" << app->get_description() << "\n";
    out << make_positionals(app);
    for (const std::string& group : app->get_groups()) {
      const auto opts = app->get_options(
          [&](const CLI::Option* o) { return o->get_group() == group && o->nonpositional(); });
      if (!opts.empty()) out << make_group(group, false, opts);
    }
    if (!app->get_footer().empty()) out << "\n" << app->get_footer() << "\n";
    return out.str();
  }
  std::string make_option_name(const CLI::Option* opt, bool positional) const override {
    if (positional) return opt->get_name(true, false);
    std::string names = opt->get_name(false, true);
    for (size_t at = names.find(','); at != std::string::npos; at = names.find(',', at + 2))
      names.replace(at, 1, ", ");
    return names;
  }
  std::string make_option_opts(const CLI::Option* opt) const override {
    return opt->get_option_text().empty() ? "" : " " + opt->get_option_text();
  }

 private:
  std::string command_, synopsis_;
};

std::string format_number(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

std::string range_text(IntRange r) {
  if (r.max == std::numeric_limits<int64_t>::max()) return "an integer >= " + std::to_string(r.min);
  return "an integer in [" + std::to_string(r.min) + ", " + std::to_string(r.max) + "]";
}

std::string range_text(const RealRange& r) {
  const bool low = r.min > -std::numeric_limits<double>::max();
  const bool high = r.max < std::numeric_limits<double>::max();
  if (low && high)
    return std::string("a number in ") + (r.min_open ? "(" : "[") + format_number(r.min) + ", " +
           format_number(r.max) + (r.max_open ? ")" : "]");
  if (low) return std::string("a number ") + (r.min_open ? "> " : ">= ") + format_number(r.min);
  if (high) return std::string("a number ") + (r.max_open ? "< " : "<= ") + format_number(r.max);
  return "a finite number";
}

std::string choices_text(const std::vector<std::string>& choices) {
  std::string s;
  for (size_t i = 0; i < choices.size(); ++i)
    s += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + choices[i];
  return s;
}

// The message for an argument no option took: "--bogus=1" names "--bogus".
std::string unknown_argument_message(const std::string& arg, const std::string& command) {
  const std::string see = " (see elastic " + command + " --help)";
  if (arg.size() > 1 && arg[0] == '-')
    return "unknown option '" + arg.substr(0, arg.find('=')) + "'" + see;
  return "unexpected argument '" + arg + "'" + see;
}

}  // namespace

std::string option_display_name(const std::string& names) {
  std::string best;
  std::stringstream ss(names);
  for (std::string name; std::getline(ss, name, ',');)
    if (best.empty() || (name.rfind("--", 0) == 0 && best.rfind("--", 0) != 0)) best = name;
  return best;
}

int64_t parse_int(const std::string& opt, const std::string& text, IntRange range) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0 || v < range.min || v > range.max)
    throw Error("option " + opt + ": expected " + range_text(range) + ", got '" + text + "'");
  return v;
}

double parse_real(const std::string& opt, const std::string& text, RealRange range) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  // strtod takes "nan" and "inf", and overflows ("1e400") to inf: neither is a usable value.
  if (text.empty() || *end != '\0' || !std::isfinite(v))
    throw Error("option " + opt + ": expected a finite number, got '" + text + "'");
  const bool below = range.min_open ? v <= range.min : v < range.min;
  const bool above = range.max_open ? v >= range.max : v > range.max;
  if (below || above)
    throw Error("option " + opt + ": expected " + range_text(range) + ", got '" + text + "'");
  return v;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : text + ",") {
    if (c != ',') {
      if (c != ' ') cur += c;
    } else if (!cur.empty()) {
      out.push_back(cur);
      cur.clear();
    }
  }
  return out;
}

std::vector<int64_t> parse_ids(const std::string& opt, const std::string& text) {
  std::vector<int64_t> ids;
  std::string cur;
  auto flush = [&] {
    if (!cur.empty()) ids.push_back(parse_int(opt, cur, {0}));
    cur.clear();
  };
  for (char ch : text) {
    if (ch == ' ' || ch == ',' || ch == '\t' || ch == '\n')
      flush();
    else
      cur += ch;
  }
  flush();
  if (ids.empty())
    throw Error("option " + opt + ": expected token ids such as \"1 2 3\", got none");
  return ids;
}

// --- CommandLine ----------------------------------------------------------------------------

CommandLine::CommandLine(std::string command, std::string synopsis, std::string description)
    : command_(std::move(command)), app_(std::move(description), "elastic " + command_) {
  app_.formatter(std::make_shared<HelpFormatter>(command_, std::move(synopsis)));
  app_.set_help_flag("-h,--help", "print this help and exit");
  app_.get_help_ptr()->group(section_);
}

void CommandLine::section(std::string title) { section_ = std::move(title); }

void CommandLine::footer(std::string text) { app_.footer(std::move(text)); }

CLI::Option* CommandLine::add(const std::string& names, const std::string& metavar,
                              const std::string& help,
                              std::function<void(const std::string&)> set) {
  // Called once per occurrence, in command-line order (trigger_on_parse): a later occurrence
  // overwrites an earlier one, and the first bad value is the one reported.
  CLI::Option* opt = app_.add_option(
      names,
      [set = std::move(set)](const CLI::results_t& values) {
        for (const std::string& v : values) set(v);
        return true;
      },
      help);
  opt->type_size(1)->expected(1)->trigger_on_parse()->group(section_);
  opt->option_text(metavar);
  return opt;
}

CLI::Option* CommandLine::flag(const std::string& names, bool& target, const std::string& help,
                               bool value) {
  CLI::Option* opt = app_.add_flag_callback(
      names, [&target, value] { target = value; }, help);
  // A flag takes no value: "--json=false" is an error, not a silent no-op.
  opt->disable_flag_override()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  opt->group(section_);
  return opt;
}

CLI::Option* CommandLine::text(const std::string& names, std::string& target,
                               const std::string& metavar, const std::string& help) {
  return add(names, metavar, help, [&target](const std::string& v) { target = v; });
}

CLI::Option* CommandLine::text(const std::string& names, std::optional<std::string>& target,
                               const std::string& metavar, const std::string& help) {
  return add(names, metavar, help, [&target](const std::string& v) { target = v; });
}

CLI::Option* CommandLine::texts(const std::string& names, std::vector<std::string>& target,
                                const std::string& metavar, const std::string& help) {
  return add(names, metavar, help, [&target](const std::string& v) { target.push_back(v); });
}

CLI::Option* CommandLine::integer(const std::string& names, int64_t& target,
                                  const std::string& metavar, const std::string& help,
                                  IntRange range) {
  const std::string name = option_display_name(names);
  return add(names, metavar, help,
             [&target, name, range](const std::string& v) { target = parse_int(name, v, range); });
}

CLI::Option* CommandLine::integer(const std::string& names, std::optional<int64_t>& target,
                                  const std::string& metavar, const std::string& help,
                                  IntRange range) {
  const std::string name = option_display_name(names);
  return add(names, metavar, help,
             [&target, name, range](const std::string& v) { target = parse_int(name, v, range); });
}

CLI::Option* CommandLine::real(const std::string& names, double& target, const std::string& metavar,
                               const std::string& help, RealRange range) {
  const std::string name = option_display_name(names);
  return add(names, metavar, help,
             [&target, name, range](const std::string& v) { target = parse_real(name, v, range); });
}

CLI::Option* CommandLine::real(const std::string& names, std::optional<double>& target,
                               const std::string& metavar, const std::string& help,
                               RealRange range) {
  const std::string name = option_display_name(names);
  return add(names, metavar, help,
             [&target, name, range](const std::string& v) { target = parse_real(name, v, range); });
}

CLI::Option* CommandLine::real(const std::string& names, float& target, const std::string& metavar,
                               const std::string& help, RealRange range) {
  const std::string name = option_display_name(names);
  return add(names, metavar, help, [&target, name, range](const std::string& v) {
    const double x = parse_real(name, v, range);
    if (!std::isfinite(static_cast<float>(x)))  // beyond float's range
      throw Error("option " + name + ": expected a finite number, got '" + v + "'");
    target = static_cast<float>(x);
  });
}

CLI::Option* CommandLine::choice(const std::string& names, std::string& target,
                                 const std::vector<std::string>& choices, const std::string& help) {
  return choice(names, choices, help, [&target](const std::string& v) { target = v; });
}

CLI::Option* CommandLine::choice(const std::string& names, const std::vector<std::string>& choices,
                                 const std::string& help,
                                 std::function<void(const std::string&)> set) {
  std::string metavar;
  for (const auto& c : choices) metavar += (metavar.empty() ? "" : "|") + c;
  const std::string name = option_display_name(names);
  return add(names, metavar, help, [name, choices, set = std::move(set)](const std::string& v) {
    if (std::find(choices.begin(), choices.end(), v) == choices.end())
      throw Error("option " + name + ": expected " + choices_text(choices) + ", got '" + v + "'");
    set(v);
  });
}

CLI::Option* CommandLine::custom(const std::string& names, const std::string& metavar,
                                 const std::string& help,
                                 std::function<void(const std::string&)> set) {
  return add(names, metavar, help, std::move(set));
}

CLI::Option* CommandLine::positional(const std::string& name, std::string& target,
                                     const std::string& help) {
  CLI::Option* opt = app_.add_option(name, target, help);
  opt->group(section_);
  return opt;
}

bool CommandLine::parse(int argc, char** argv) {
  try {
    app_.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::fputs(help().c_str(), stdout);
    return false;
  } catch (const CLI::ExtrasError&) {
    std::vector<std::string> rest = app_.remaining();
    rest.erase(std::remove(rest.begin(), rest.end(), "--"), rest.end());
    throw Error(unknown_argument_message(rest.empty() ? "--" : rest.front(), command_));
  } catch (const CLI::ArgumentMismatch& e) {
    // "--block: 1 required  missing": the value is missing at the end of the command line;
    // "--json was given a disallowed flag override": a value given to a flag.
    const std::string what = e.what();
    const size_t colon = what.find(':');
    if (colon != std::string::npos && what.find("required") != std::string::npos)
      throw Error("option " + what.substr(0, colon) + " needs a value");
    const size_t flag_end = what.find(" was given a disallowed flag override");
    if (flag_end != std::string::npos) {  // CLI11 names the flag without its dashes
      const std::string flag = what.substr(0, flag_end);
      throw Error("option " + std::string(flag.size() == 1 ? "-" : "--") + flag +
                  " takes no value");
    }
    throw Error(what + " (see elastic " + command_ + " --help)");
  } catch (const CLI::ParseError& e) {
    throw Error(std::string(e.what()) + " (see elastic " + command_ + " --help)");
  }
  return true;
}

std::string CommandLine::help() const { return app_.help(); }

std::string CommandLine::missing(const std::string& what) const {
  return "missing " + what + " (see elastic " + command_ + " --help)";
}

// --- Shared option groups -------------------------------------------------------------------

void model_options_add(CommandLine& cl, ModelOptions& o, bool tokenizer,
                       const std::string& model_help) {
  cl.text("-m,--model", o.dir, "DIR",
          model_help.empty() ? "HF model folder (config.json + *.safetensors)" : model_help);
  if (tokenizer)
    cl.text("--tokenizer", o.tokenizer, "PATH",
            "tokenizer folder or file (default: the model folder)");
}

void sampling_options_add(CommandLine& cl, SamplingParams& sp) {
  cl.section("Sampling (filters apply in this order: temperature, top-k, top-p, min-p)");
  cl.real("--temp", sp.temperature, "T", "temperature; 0 = greedy, the default", {0.0});
  cl.integer("--top-k", sp.top_k, "K", "keep the K most likely tokens (0 = off, default)", {0});
  cl.real("--top-p", sp.top_p, "P",
          "keep the smallest set with probability >= P (1 = off, default)",
          {0.0, 1.0, /*min_open=*/true});
  cl.real("--min-p", sp.min_p, "P", "drop tokens less likely than P x the most likely (0 = off)",
          {0.0, 1.0});
  cl.custom("--seed", "S", "random seed for sampling (default 0); same seed, same output",
            [&sp](const std::string& v) {
              sp.seed = static_cast<uint64_t>(parse_int("--seed", v, {0}));
            });
  cl.section("Options");
}

void threads_option_add(CommandLine& cl, int64_t& threads) {
  cl.integer("-t,--threads", threads, "N", "CPU threads (default: all cores)", {0, 65536});
}

void set_threads(int64_t threads) {
  if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
}

void backend_option_add(CommandLine& cl, std::string& backend) {
  cl.choice("--backend", backend, {"cpu", "cuda"},
            "compute backend (default cpu); cuda keeps the KV cache, the router\n"
            "and sampling on the GPU (builds with the CUDA backend only)");
}

std::shared_ptr<Backend> backend_create(const std::string& backend) {
  if (backend == "cuda") {
#ifdef ELASTIC_HAVE_CUDA
    return backend_cuda(CudaBackendOptions{/*host_visible=*/false});
#else
    throw Error(
        "option --backend cuda: this build has no CUDA backend (configure with -DELASTIC_CUDA=ON)");
#endif
  }
  return backend_cpu();
}

void json_option_add(CommandLine& cl, bool& json, const std::string& help) {
  cl.flag("--json", json, help);
}

void input_ids_option_add(CommandLine& cl, std::vector<int64_t>& ids) {
  cl.custom("--input-ids", "IDS", "prompt token ids, separated by spaces or commas",
            [&ids](const std::string& v) { ids = parse_ids("--input-ids", v); });
}

}  // namespace elastic::cli

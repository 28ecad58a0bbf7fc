// Every option of qwen3-pretrain, once: its command-line name (a --config INI key and a qwen3-sweep key is the same
// name with '_' for '-'), where its value lives in RunConfig, its help, its check, and its key in the results file's
// /config. The command line and the INI file (app/common/run_options.cpp), RunConfig::validate and key_values, and
// `qwen3-pretrain --list-options` (which qwen3-sweep reads for the keys it passes through) are all derived from it.
#pragma once
#include <functional>
#include <string>
#include <variant>
#include <vector>

namespace qwen3 {

struct RunConfig;

struct RunOption {
  enum class Section { general, run };           // general: the command line only; run: also --config and sweep keys
  enum class Kind { value, flag, negated_flag };  // negated_flag: --no-x sets its bool field false
  using Field = std::variant<std::monostate, std::string RunConfig::*, std::int64_t RunConfig::*, int RunConfig::*,
                             double RunConfig::*, bool RunConfig::*>;
  std::string name;  // "global-batch"
  Section section = Section::run;
  Kind kind = Kind::value;
  Field field;                // the RunConfig member it fills (monostate: `resolve` takes its text)
  bool shows_default = true;  // the default is the value when not given (else: not given is its own state)
  std::string help;
  std::string config_key;  // its /config key ("": not recorded)
  std::string implicit;    // the value of a bare --name (--offload-optimizer means 1); "" when a value is required
  std::string value_name;  // shown in --help for the value ("" : Boost's "arg")
  // Text-only options (model, seed, pp-layers): the given text into the config, checked. Others: unused.
  std::function<void(RunConfig&, const std::string&)> resolve;
  // How /config records it, when not the field as text.
  std::function<std::string(const RunConfig&)> recorded;
  // Throws UsageError naming the option when the config's value is invalid: checked where the command line and
  // --config are parsed, when given; RunConfig::validate runs every run option's again (a config built in code).
  std::function<void(const RunConfig&)> check;
  bool layout = false;  // its check is the layout's: --plan runs it too (RunConfig::validate_layout)
  std::vector<std::string> choices;  // a choice option's values (its check refuses the rest); listed for tools
};

const std::vector<RunOption>& run_option_table();
// The option by command-line name; InternalError when there is none.
const RunOption& run_option(const std::string& name);
// The field of `c` as text (numbers as the shortest text that reads back the same; flags true/false).
std::string field_text(const RunConfig& c, const RunOption::Field& field);
// The value /config records for it.
std::string recorded_value(const RunConfig& c, const RunOption& o);
// --list-options --format json: one array of {"name", "key", "section", "type" (integer, number, text, flag), "default"
// (null when not given is its own state), "help", "config_key"} in the table's order; text: one line each.
std::string run_options_json();
std::string run_options_text();

}  // namespace qwen3

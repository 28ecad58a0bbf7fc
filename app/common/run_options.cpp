// Option table of qwen3-pretrain (see run_options.h and docs/cli.md).
#include "common/run_options.h"

#include <boost/program_options.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>
#include <iostream>
#include <map>
#include <variant>

#include "common/help.h"
#include "common/options_util.h"
#include "config/ini.h"
#include "core/error.h"
#include "model/memory_policy.h"
#include "core/format.h"
#include "io/hf_checkpoint.h"
#include "model/pipeline_split.h"
#include "train/engine.h"
#include "train/memory_plan.h"
#include "train/run_option_table.h"

namespace po = boost::program_options;

namespace qwen3 {
namespace {

// The --config file: keys as on the command line without '--', or with '_' for '-' as sweep specifications spell
// them (global_batch = 32); an unknown key is refused naming the closest valid one.
po::parsed_options parse_run_config_file(const std::string& path, const po::options_description& run,
                                         const po::options_description& general) {
  std::ifstream in(path);
  if (!in) throw UsageError("--config: cannot read '" + path + "'");
  po::parsed_options parsed = po::parse_config_file(in, run, /*allow_unregistered=*/true);
  std::vector<std::string> keys;
  for (const auto& o : run.options()) keys.push_back(o->long_name());
  for (auto& o : parsed.options) {
    if (!o.unregistered) continue;
    std::string key = o.string_key;
    std::replace(key.begin(), key.end(), '_', '-');
    if (run.find_nothrow(key, false) != nullptr) {
      o.string_key = key;
      o.unregistered = false;
    } else if (general.find_nothrow(key, false) != nullptr) {
      throw UsageError("--config '" + path + "': '" + o.string_key + "' is a command-line option only (--" + key + ")");
    } else {
      throw UsageError("--config '" + path + "': " + unknown_key_message(o.string_key, keys));
    }
  }
  return parsed;
}

// The exit codes qwen3-pretrain ends with, for --help.
std::string pretrain_exit_codes() {
  return exit_codes_help({{ExitCode::ok, "--plan: the plan fits"},
                          {ExitCode::internal},
                          {ExitCode::usage},
                          {ExitCode::input, "--plan: the plan does not fit the device memory"},
                          {ExitCode::output},
                          {ExitCode::out_of_memory},
                          {ExitCode::preempted, "only with --save"},
                          {ExitCode::diverged, "a loss or gradient norm was not finite (status diverged)"}});
}

// The text of the options that fill no field directly (the model, the seed, the stages, --config), by name.
using OptionTexts = std::map<std::string, std::string>;

// One option of the table (train/run_option_table.h) as Boost declares it, bound to its RunConfig field or, for the
// text-only ones, to its entry in `texts`.
po::value_semantic* option_value(const RunOption& o, RunConfig& c, OptionTexts& texts) {
  static const RunConfig defaults;
  return std::visit(
      [&](auto m) -> po::value_semantic* {
        using M = decltype(m);
        if constexpr (std::is_same_v<M, std::monostate>) {
          auto* v = po::value(&texts[o.name]);
          return o.shows_default ? v->default_value(recorded_value(defaults, o)) : v;
        } else if constexpr (std::is_same_v<M, bool RunConfig::*>) {
          if (o.kind == RunOption::Kind::flag) return po::bool_switch(&(c.*m));
          return po::bool_switch()->notifier([&c, m](bool on) {  // --no-x
            if (on) c.*m = false;
          });
        } else if constexpr (std::is_same_v<M, double RunConfig::*>) {
          if (o.shows_default) return number_value(&(c.*m));
          auto* v = po::value(&(c.*m));
          if (!o.implicit.empty()) v->implicit_value(std::stod(o.implicit), o.implicit);
          return o.value_name.empty() ? v : v->value_name(o.value_name);
        } else {
          auto* v = po::value(&(c.*m));
          return o.shows_default && !field_text(defaults, o.field).empty() ? v->default_value(c.*m) : v;
        }
      },
      o.field);
}

// The table's options of one section added to d, as Boost declares them.
void add_table_options(po::options_description& d, RunOption::Section section, RunConfig& c, OptionTexts& texts) {
  for (const auto& o : run_option_table())
    if (o.section == section) d.add_options()(o.name.c_str(), option_value(o, c, texts), o.help.c_str());
}

// The command-line-only options: the answers instead of a run, then the table's general section (the plan's and the
// run's machine).
po::options_description general_options(RunConfig& c, OptionTexts& texts) {
  po::options_description general("General");
  general.add_options()("help,h", "show this help")(
      "list-devices", "print the backends that can run on this host (one per line) and exit")(
      "list-models", "print the model presets (name, vocabulary, layers, parameters) and exit")(
      "list-options", "print every option (name, --config key, type, default) and exit; --format json for tools");
  add_table_options(general, RunOption::Section::general, c, texts);
  return general;
}

// The run's options, also keys of --config (and of qwen3-sweep's specifications).
po::options_description run_options(RunConfig& c, OptionTexts& texts) {
  po::options_description run("Run (also valid as keys in --config)");
  add_table_options(run, RunOption::Section::run, c, texts);
  return run;
}

// --list-models: the presets, one line each (text) or as one JSON array (qwen3-sweep reads it).
void print_model_presets(const std::string& format) {
  if (format == "json") {
    std::cout << presets_json() << "\n";
    return;
  }
  for (const auto& name : preset_names()) {
    const ModelConfig m = model_preset(name);
    std::printf("%-5s vocab %6lld, %2lld layers, hidden %5lld, %s parameters\n", name.c_str(),
                static_cast<long long>(m.vocab_size), static_cast<long long>(m.num_layers),
                static_cast<long long>(m.hidden_size), format_parameter_count(m.parameter_count()).c_str());
  }
}

// --list-devices: the backends that run here on stdout; those built in but not usable here said apart, on stderr.
void print_usable_devices() {
  for (const auto& d : usable_devices()) std::cout << d << "\n";
  for (const auto& d : available_devices())
    if (const std::string why = device_unusable_reason(d); !why.empty())
      std::cerr << "qwen3-pretrain: " << d << " is built in but cannot run here: " << why << "\n";
}

// The model (a preset, an INI config or a Hugging Face folder's config.json) and every value that needs resolving,
// then each given option's check (train/run_option_table.h): a bad value is refused before anything runs.
// from_file: the options whose value came from --config's `file` (not overridden on the command line): a refusal of
// one of their values names the file.
void resolve_run_options(RunConfig& c, const OptionTexts& texts, const po::variables_map& vm,
                         const std::set<std::string>& from_file, const std::string& file) {
  if (vm.count("model-config") && !vm["model"].defaulted())
    throw UsageError("--model and --model-config are exclusive: give one");
  if (vm.count("init-from-hf") && (vm.count("model-config") || !vm["model"].defaulted()))
    throw UsageError("--init-from-hf takes the model from the folder's config.json: drop --model / --model-config");
  for (const auto& o : run_option_table())
    if (o.resolve && vm.count(o.name) && !(o.name == "model" && vm.count("model-config")))
      o.resolve(c, texts.at(o.name));
  if (vm.count("init-from-hf")) {
    c.model = read_hf_config(c.init_from_hf);
    c.model_source = c.init_from_hf;
  }
  if (c.plan && vm["device"].defaulted()) c.device = "cuda";  // --plan plans the CUDA engine's run unless told cpu
  if (!vm.count("seq-len")) throw UsageError("--seq-len is required (the dataset bucket to train on)");
  for (const auto& o : run_option_table()) {
    if (!o.check || !vm.count(o.name) || vm[o.name].defaulted()) continue;
    try {
      o.check(c);
    } catch (const UsageError& e) {
      if (!from_file.count(o.name)) throw;
      throw UsageError("--config '" + file + "': " + e.what());
    }
  }
}

}  // namespace

std::optional<RunConfig> parse_run_options(int argc, char** argv) {
  RunConfig c;
  OptionTexts texts;
  const po::options_description general = general_options(c, texts), run = run_options(c, texts);
  po::options_description all(
      "qwen3-pretrain: pretrain a Qwen3 dense model (launch under mpirun: one rank per device)\n"
      "Usage: mpirun -np N qwen3-pretrain --data FILE --seq-len L --out FILE [options]");
  all.add(general).add(run);
  po::variables_map vm;
  if (!parse_command_line(argc, argv, all, vm, nullptr, pretrain_exit_codes())) return std::nullopt;
  run_option("format").check(c);
  if (vm.count("list-models") || vm.count("list-devices") || vm.count("list-options")) {  // an answer instead of a run
    if (vm.count("list-models")) print_model_presets(c.format);
    else if (vm.count("list-options")) std::cout << (c.format == "json" ? run_options_json() + "\n" : run_options_text());
    else print_usable_devices();
    return std::nullopt;
  }
  std::set<std::string> from_file;
  const std::string file = texts["config"];
  if (!file.empty()) {
    try {
      const po::parsed_options parsed = parse_run_config_file(file, run, general);
      for (const auto& o : parsed.options)
        if (!vm.count(o.string_key) || vm[o.string_key].defaulted()) from_file.insert(o.string_key);
      po::store(parsed, vm);  // values given on the command line win
      po::notify(vm);
    } catch (const po::error& e) {
      throw UsageError("--config '" + file + "': " + e.what());
    }
  }
  resolve_run_options(c, texts, vm, from_file, file);
  return c;
}

}  // namespace qwen3

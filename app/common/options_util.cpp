// Implementation of the option helpers (see options_util.h).
#include "common/options_util.h"

#include <iostream>
#include <sstream>

#include "core/error.h"

namespace po = boost::program_options;

namespace qwen3 {

bool parse_command_line(int argc, char** argv, const po::options_description& desc, po::variables_map& vm,
                        const po::positional_options_description* positional) {
  try {
    po::command_line_parser parser(argc, argv);
    parser.options(desc);
    if (positional) parser.positional(*positional);
    po::store(parser.run(), vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(std::string(e.what()) + " (see --help)");
  }
  return true;
}

void require_choice(const std::string& option, const std::string& value, const std::vector<std::string>& choices) {
  for (auto& c : choices)
    if (c == value) return;
  std::string valid;
  for (auto& c : choices) valid += (valid.empty() ? "" : ", ") + c;
  throw UsageError(option + ": invalid value '" + value + "' (valid: " + valid + ")");
}

std::vector<std::int64_t> parse_positive_list(const std::string& option, const std::string& text) {
  std::vector<std::int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size() || v <= 0)
      throw UsageError(option + ": '" + item + "' is not a positive integer (expected a list like 1024,2048)");
    out.push_back(v);
  }
  if (out.empty()) throw UsageError(option + ": empty list (expected a list like 1024,2048)");
  return out;
}

void require_positive(const std::string& option, double value) {
  if (!(value > 0)) {
    std::ostringstream s;
    s << option << " must be positive, got " << value;
    throw UsageError(s.str());
  }
}

}  // namespace qwen3
